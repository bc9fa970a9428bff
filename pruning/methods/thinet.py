"""ThiNet: channel selection by next-layer reconstruction.

Luo, Wu, Lin. "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression",
ICCV 2017 (a pruned-model source in "Rethinking the Value of Network Pruning").

1. Run the network on sampled training images and record, for every channel group, the input
   of the layer that consumes those channels (the next conv, or a linear layer).
2. At sampled (image, position, output channel) sites, split the consumer's output into
   per-input-channel contributions z_c (the kernel window of channel c alone).
3. Greedily pick the channels to remove: each step adds the channel whose removal keeps the
   squared reconstruction error smallest, until the group's quota is removed.
4. Least squares: rescale the kept channels' consumer weights by w = argmin ||y - Z_keep w||^2.
5. mode=oneshot: all groups from the dense activations; mode=layerwise (the paper, without
   its fine-tuning between layers): groups in forward order, inputs from the network pruned
   so far, the dense output as target. Widths: a uniform ratio, or the Rethinking code's
   ImageNet architectures (ThiNet-30/50/70 for ResNet-50; ThiNet-Conv/GAP/Tiny for VGG-16;
   their widths in conf/paper/thinet.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.methods.base import PruneContext, PruneResult
from pruning.methods.reconstruction import (
    ReconstructionMethod,
    draw_sites,
    prune_by_reconstruction,
    windows_at,
)
from pruning.models import build, channel_groups
from pruning.surgery import spec_with_widths

__all__ = ["ThiNet", "contributions", "greedy_remove", "variant_spec"]


def contributions(module: nn.Module, inputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Per-input-channel contributions to ``samples`` random outputs (image, position, output
    channel drawn in that order): (samples, C_in)."""
    channels = inputs.shape[1]
    sites = draw_sites(module, inputs, samples, generator)
    out_features = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    outs = torch.randint(0, out_features, (samples,), generator=generator)
    windows = windows_at(module, inputs, sites, channels)  # (S, C, K)
    weight = module.weight.reshape(out_features, channels, -1)[outs]  # (S, C, K)
    return (windows * weight).sum(-1)  # (S, C)


def greedy_remove(z: torch.Tensor, n_remove: int, offset: torch.Tensor | None = None) -> list[int]:
    """Channels whose removal keeps ||offset + sum of removed contributions||^2 smallest
    (ThiNet's greedy step). ``offset`` = target - sum of all contributions: zero when the
    target is the network's own output (one shot), the accumulated error in layer-wise mode."""
    removed: list[int] = []
    acc = torch.zeros(z.shape[0], dtype=z.dtype) if offset is None else offset.to(z.dtype).clone()  # (S,)
    available = torch.ones(z.shape[1], dtype=torch.bool)
    for _ in range(n_remove):
        cost = ((acc[:, None] + z) ** 2).sum(0)  # (C,)
        cost[~available] = float("inf")
        best = int(cost.argmin())
        removed.append(best)
        available[best] = False
        acc += z[:, best]
    return removed


def variant_spec(variant: str, spec: dict, variants: Mapping[str, Any]) -> tuple[dict[str, int], dict]:
    """(kept channels per group, pruned spec) of a named variant (``variants[variant]``, as in
    conf/paper/thinet.yaml) on its dense model."""
    definition = variants[variant]
    arch, depth = definition["arch"], definition["depth"]
    if spec.get("arch") != arch or spec.get("depth") != depth:
        raise PruneLabError(
            f"method.variant={variant} is defined for {arch} depth {depth}; "
            f"got {spec.get('arch')} depth {spec.get('depth')}"
        )
    groups = channel_groups(spec)
    if "stage_widths" in definition:  # ResNet-50: the first two convs of each bottleneck, per stage
        per_stage = definition["stage_widths"]
        widths = {g.name: per_stage[g.meta["stage"]] for g in groups}
        return widths, spec_with_widths(spec, widths)
    convs, head = definition["conv_widths"], definition["head"]
    if spec.get("head") != "fc":
        raise PruneLabError(f"method.variant={variant} starts from VGG-16 with the FC head (model=vgg16_imagenet)")
    widths = {g.name: w for g, w in zip([g for g in groups if g.name.startswith("features.")], convs, strict=True)}
    pruned = spec_with_widths(spec, widths)
    if head == "gap":
        cfg = list(pruned["cfg"])
        if cfg and cfg[-1] == "M":
            cfg = cfg[:-1]  # global pooling over the last conv's map, as the Rethinking model does
        pruned = {**pruned, "cfg": cfg, "head": "gap", "fc": []}
    return widths, pruned


@torch.no_grad()
def replace_head_by_gap(
    small: nn.Module, dense: nn.Module, gap_spec: dict, images: torch.Tensor, ridge: float = 1e-3
) -> nn.Module:
    """ThiNet-GAP/Tiny: the pruned convs with a global-average-pool classifier. Conv weights are
    copied; the new Linear(C_last, classes) is fitted by ridge least squares to the dense
    network's logits on the sampled images (a starting point for fine-tuning)."""
    new = build(gap_spec).to(images.device)
    old_state, new_state = small.state_dict(), new.state_dict()
    for key, value in new_state.items():
        if key.startswith("features.") and key in old_state and old_state[key].shape == value.shape:
            value.copy_(old_state[key])
    was = dense.training, new.training
    dense.eval()
    new.eval()
    logits = dense(images).double()  # (N, classes)
    pooled = new.features(images).mean(dim=(2, 3)).double()  # (N, C)
    dense.train(was[0])
    new.train(was[1])
    x = torch.cat([pooled, torch.ones(len(pooled), 1, dtype=pooled.dtype, device=pooled.device)], 1)  # (N, C+1)
    gram = x.T @ x
    gram += torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) * ridge * gram.diagonal().mean()
    solution = torch.linalg.solve(gram, x.T @ logits)  # (C+1, classes)
    fc = new.classifier[0]
    fc.weight.copy_(solution[:-1].T.to(fc.weight.dtype))
    fc.bias.copy_(solution[-1].to(fc.bias.dtype))
    return new


class ThiNet(ReconstructionMethod):
    name = "thinet"
    display_name = "ThiNet"

    def __init__(
        self,
        ratio: float | None = 0.5,
        variant: str | None = None,
        mode: str = "oneshot",
        samples: int = 4096,
        images: int = 256,
        rescale: bool = True,
        variants: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        super().__init__(ratio, variant, mode, samples, images, variants)
        self.rescale = bool(rescale)

    def target(self, spec: dict) -> tuple[dict[str, int], dict]:
        return super().target(spec) if self.variant is None else variant_spec(self.variant, spec, self.variants)

    def _select(
        self, windows: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, n_keep: int
    ) -> tuple[list[int], torch.Tensor | None]:
        s, c = windows.shape[0], windows.shape[1]
        outs = torch.randint(0, weight.shape[0], (s,), generator=self._generator)  # one output per site
        z = torch.cat(
            [
                torch.einsum("sck,sck->sc", windows[i : i + 512].double(), weight[outs[i : i + 512]].double())
                for i in range(0, s, 512)
            ]
        )  # (S, C)
        y = target[torch.arange(s), outs].double()  # (S,)
        removed = set(greedy_remove(z, c - n_keep, offset=y - z.sum(1)))
        kept = [ch for ch in range(c) if ch not in removed]
        if not self.rescale:
            return kept, None
        scale = torch.linalg.lstsq(z[:, kept], y[:, None]).solution.flatten()  # (C_keep,)
        return kept, weight[:, kept] * scale.to(weight.dtype)[None, :, None]  # (O, C_keep, K)

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        images = self.sample(ctx)  # (N, C, H, W)
        widths, pruned_spec = self.target(model.spec)
        small, keep = prune_by_reconstruction(
            model, widths, images, self.samples, self._generator, self._select, self.mode, **self.progress_args(ctx)
        )
        if pruned_spec.get("head") != small.spec.get("head"):
            small = replace_head_by_gap(small, model, pruned_spec, images)
        return PruneResult(
            model=small,
            spec=small.spec,
            keep=keep,
            extras={"mode": self.mode, "samples": self.samples, "images": self.images, "rescaled": self.rescale},
        )
