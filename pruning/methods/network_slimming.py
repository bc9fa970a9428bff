"""Network Slimming.

Liu, Li, Shen, Huang, Yan, Zhang. "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017; the setting of "Rethinking the Value of Network Pruning" (Liu et al.,
ICLR 2019, cifar/network-slimming).

1. Sparsity training: the dense baseline is trained with an L1 penalty on every BN scaling
   factor (gradient += s * sign(gamma); s = 1e-4 for VGG, 1e-5 for PreResNet/DenseNet): every
   BatchNorm2d (cifar/network-slimming/main.py ``updateBN``) and every BatchNorm1d whose units
   are ranked (the FC units of the ImageNet VGG-11, imagenet/network-slimming/main.py). It is a
   pretraining variant, so the baseline cache keys on s.
2. One global threshold over |gamma| of all prunable channels at the requested percentage.
3. Channels with |gamma| at or below it are removed; a layer never loses all its channels
   (the original scripts crash there): its largest-|gamma| channel is kept.
4. The automatic per-layer widths become the pruned spec; weights are copied by the generic
   surgery, then the pipeline fine-tunes or retrains from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.models import channel_groups
from pruning.surgery import shrink


class NetworkSlimming(Method):
    name = "network_slimming"
    data_free_architecture = False  # widths follow the trained BN scales

    def __init__(self, ratio: float = 0.7, sparsity: float = 1e-4, **_: Any):
        self.ratio = check_ratio(ratio, "method.ratio")
        if not float(sparsity) >= 0:
            raise PruneLabError(f"method.sparsity={sparsity!r} must be >= 0 (the L1 weight s on BN scales)")
        self.sparsity = float(sparsity)

    def key(self) -> dict[str, Any]:
        return {"variant": None, "ratio": self.ratio}

    def settings(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity}

    def validate(self, model_name: str, spec: dict) -> None:
        if not any(g.bn_scale for g in channel_groups(spec)):
            raise PruneLabError(f"network_slimming needs BN layers on prunable channels; {model_name} has none")

    def pretrain_extras(self) -> dict[str, Any]:
        return {"bn_l1_sparsity": self.sparsity}

    def pretrain_grad_hook(self) -> Callable[[nn.Module], None] | None:
        if self.sparsity == 0:
            return None
        s = self.sparsity
        ranked_1d: dict[int, set[str]] = {}  # per model: names of BN1d modules whose units are ranked

        def add_l1_subgradient(model: nn.Module) -> None:
            if id(model) not in ranked_1d:
                ranked_1d[id(model)] = {g.bn_scale.rsplit(".", 1)[0] for g in channel_groups(model.spec) if g.bn_scale}
            for name, m in model.named_modules():
                penalised = isinstance(m, nn.BatchNorm2d) or (
                    isinstance(m, nn.BatchNorm1d) and name in ranked_1d[id(model)]
                )
                if penalised and m.weight.grad is not None:
                    m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=s)

        return add_l1_subgradient

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        params = dict(model.named_parameters())
        groups = [g for g in channel_groups(model.spec) if g.bn_scale]
        scales = {}
        for g in groups:
            scale = params[g.bn_scale].detach().abs()  # (C,) over the BN's channels
            if "bn_index" in g.meta:  # a channel-selection group: its channels are a subset of the BN's
                scale = scale[torch.as_tensor(g.meta["bn_index"], device=scale.device)]  # (size,)
            scales[g.name] = scale
        everything = torch.cat(list(scales.values())).sort().values
        threshold = everything[int(everything.numel() * self.ratio)] if self.ratio > 0 else everything.new_tensor(-1.0)
        keep, guarded = {}, []
        for g in groups:
            kept = (scales[g.name] > threshold).nonzero().flatten()
            if kept.numel() == 0:  # never empty a layer
                kept = scales[g.name].argmax().view(1)
                guarded.append(g.name)
            keep[g.name] = kept.tolist()
        small = shrink(model, keep)
        removed = sum(g.size - len(keep[g.name]) for g in groups)
        return PruneResult(
            model=small,
            spec=small.spec,
            keep=keep,
            extras={
                "bn_threshold": float(threshold),
                "channels_removed": removed,
                "channels_total": int(everything.numel()),
                "layers_kept_one_channel": guarded,
            },
        )
