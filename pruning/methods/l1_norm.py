"""L1-norm filter pruning.

Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets", ICLR 2017;
variants as defined by the "Rethinking the Value of Network Pruning" code (Liu et al., ICLR
2019, cifar/l1-norm-pruning/{vggprune,res56prune,res110prune}.py).

1. For each prunable conv, score each output filter by the sum of its absolute weights.
2. Keep the top-k filters, k given per layer by the paper variant (or a uniform ratio).
3. Remove the other filters with their BN channels and the next layer's input channels.
4. One shot, no iteration; the pipeline then fine-tunes or retrains from scratch.
5. ResNets: only the first conv of each basic block is pruned (the trunk stays intact).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.models import channel_groups
from pruning.surgery import shrink

# Rethinking code: per-stage prune fraction, and conv-layer ids (stem = 1, counted over all
# convs) that are left untouched ("sensitive" layers).
RESNET_VARIANTS: dict[int, dict[str, dict[str, list]]] = {
    56: {
        "A": {"stage_ratio": [0.1, 0.1, 0.1], "skip": [16, 20, 38, 54]},
        "B": {"stage_ratio": [0.6, 0.3, 0.1], "skip": [16, 18, 20, 34, 38, 54]},
    },
    110: {
        "A": {"stage_ratio": [0.5, 0.0, 0.0], "skip": [36]},
        "B": {"stage_ratio": [0.5, 0.4, 0.3], "skip": [36, 38, 74]},
    },
}
# ImageNet ResNet-34 (imagenet/l1-norm-pruning/prune.py): per-stage fraction of the first conv
# of each basic block; ids count the non-1x1 convs (stem = 1), so block conv1s are 2, 4, ..., 32.
IMAGENET_RESNET_VARIANTS: dict[int, dict[str, dict[str, list]]] = {
    34: {
        "A": {"stage_ratio": [0.3, 0.3, 0.3, 0.0], "skip": [2, 8, 14, 16, 26, 28, 30, 32]},
        "B": {"stage_ratio": [0.5, 0.6, 0.4, 0.0], "skip": [2, 8, 14, 16, 26, 28, 30, 32]},
    },
}
# VGG-16-A: conv1 and conv8-13 halved (vggprune.py); widths per conv in order.
VGG_VARIANTS: dict[int, dict[str, list[int]]] = {
    16: {"A": [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]},
}


def l1_scores(weight: torch.Tensor) -> torch.Tensor:
    """Sum of |W| over (in, kh, kw) for each output filter: (out,)."""
    return weight.detach().abs().flatten(1).sum(dim=1)


def variants_for(spec: dict) -> dict[str, Any]:
    if spec["arch"] == "resnet_cifar":
        return RESNET_VARIANTS.get(spec["depth"], {})
    if spec["arch"] == "vgg_cifar":
        return VGG_VARIANTS.get(spec["depth"], {})
    if spec["arch"] == "resnet_imagenet":
        return IMAGENET_RESNET_VARIANTS.get(spec["depth"], {})
    return {}


def _default_width(spec: dict) -> bool:
    """Variants are defined on the paper's dense widths only."""
    from pruning.models import default_spec

    dense = default_spec(spec["arch"], depth=spec["depth"], num_classes=spec["num_classes"], in_channels=spec["in_channels"])
    return dense == spec


class L1Norm(Method):
    name = "l1_norm"
    data_free_architecture = True  # per-layer keep counts come from the variant / ratio

    def __init__(self, variant: str | None = None, ratio: float | None = None, **_: Any):
        self.variant = None if variant in (None, "", "null") else str(variant)
        self.ratio = None if self.variant is not None or ratio is None else check_ratio(ratio)
        if self.variant is None and self.ratio is None:
            raise PruneLabError("l1_norm needs method.variant (a paper variant such as A) or method.ratio in [0, 1)")

    def key(self) -> dict[str, Any]:
        return {"variant": self.variant, "ratio": self.ratio}

    def validate(self, model_name: str, spec: dict) -> None:
        if self.variant is None:
            if not self.target_widths(spec):
                raise PruneLabError(
                    f"method=l1_norm has no conv filters to prune in model {model_name!r} (its channel groups "
                    "are channel selections, e.g. DenseNet's concatenated features); use "
                    "method=network_slimming, which selects channels by their BN scales")
            return
        known = variants_for(spec)
        if self.variant not in known:
            options = ", ".join(sorted(known)) if known else "none (use method.ratio for a uniform sweep)"
            raise PruneLabError(
                f"method.variant={self.variant!r} does not exist for model {model_name!r}; "
                f"paper variants for it: {options}"
            )
        if not _default_width(spec):
            raise PruneLabError(f"variant {self.variant} is defined on the dense {model_name}; the model spec was changed")

    def target_widths(self, spec: dict) -> dict[str, int]:
        """Number of filters to keep per channel group."""
        groups = channel_groups(spec)
        if self.variant is None:  # uniform: every conv group (FC hidden units of VGG-ImageNet stay)
            # every conv's filters: not VGG-ImageNet's FC hidden units, not PreResNet/DenseNet
            # channel selections (they pick a BN's outputs and have no filters to score)
            return {g.name: max(1, int(g.size * (1 - self.ratio))) for g in groups
                    if "fc_index" not in g.meta and not g.meta.get("selection")}
        if spec["arch"] in ("resnet_cifar", "resnet_imagenet"):
            table = RESNET_VARIANTS if spec["arch"] == "resnet_cifar" else IMAGENET_RESNET_VARIANTS
            v = table[spec["depth"]][self.variant]
            widths = {}
            for g in groups:
                if g.meta["layer_id"] in v["skip"] or g.meta.get("k", 0) != 0:
                    continue
                widths[g.name] = int(g.size * (1 - v["stage_ratio"][g.meta["stage"]]))
            return widths
        cfg = VGG_VARIANTS[spec["depth"]][self.variant]
        return {g.name: cfg[g.meta["conv_index"]] for g in groups}

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        params = dict(model.named_parameters())
        keep = {}
        widths = self.target_widths(model.spec)
        for g in channel_groups(model.spec):
            if g.name not in widths:
                continue
            k = widths[g.name]
            scores = l1_scores(params[g.producer])
            keep[g.name] = sorted(scores.argsort(descending=True)[:k].tolist())
        small = shrink(model, keep)
        return PruneResult(model=small, spec=small.spec, keep=keep)
