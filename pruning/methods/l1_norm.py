"""L1-norm filter pruning.

Li, Kadav, Durdanovic, Samet, Graf. "Pruning Filters for Efficient ConvNets", ICLR 2017;
variants as defined by the "Rethinking the Value of Network Pruning" code (Liu et al., ICLR
2019, cifar/l1-norm-pruning/{vggprune,res56prune,res110prune}.py); their per-layer constants
(skip lists, per-stage ratios, VGG widths) are config: conf/paper/l1_norm.yaml.

1. For each prunable conv, score each output filter by the sum of its absolute weights.
2. Keep the top-k filters, k given per layer by the paper variant (or a uniform ratio).
3. Remove the other filters with their BN channels and the next layer's input channels.
4. One shot, no iteration; the pipeline then fine-tunes or retrains from scratch.
5. ResNets: only the first conv of each basic block is pruned (the trunk stays intact).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.models import channel_groups
from pruning.paper import method_variants
from pruning.surgery import shrink


def l1_scores(weight: torch.Tensor) -> torch.Tensor:
    """Sum of |W| over (in, kh, kw) for each output filter: (out,)."""
    return weight.detach().abs().flatten(1).sum(dim=1)


def variants_for(spec: dict, variants: Mapping[str, Any]) -> dict[str, Any]:
    """The paper variants defined for this model (by arch and depth): name -> definition."""
    return dict((variants.get(spec["arch"]) or {}).get(spec["depth"]) or {})


def _default_width(spec: dict) -> bool:
    """Variants are defined on the paper's dense widths only."""
    from pruning.models import default_spec

    dense = default_spec(
        spec["arch"], depth=spec["depth"], num_classes=spec["num_classes"], in_channels=spec["in_channels"]
    )
    return dense == spec


class L1Norm(Method):
    name = "l1_norm"
    data_free_architecture = True  # per-layer keep counts come from the variant / ratio

    def __init__(
        self,
        variant: str | None = None,
        ratio: float | None = None,
        variants: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        # paper variants: arch -> depth -> name -> definition (default: conf/paper/l1_norm.yaml)
        self.variants = method_variants(self.name) if variants is None else variants
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
                    "method=network_slimming, which selects channels by their BN scales"
                )
            return
        known = variants_for(spec, self.variants)
        if self.variant not in known:
            options = ", ".join(sorted(known)) if known else "none (use method.ratio for a uniform sweep)"
            raise PruneLabError(
                f"method.variant={self.variant!r} does not exist for model {model_name!r}; "
                f"paper variants for it: {options}"
            )
        if not _default_width(spec):
            raise PruneLabError(
                f"variant {self.variant} is defined on the dense {model_name}; the model spec was changed"
            )

    def target_widths(self, spec: dict) -> dict[str, int]:
        """Number of filters to keep per channel group."""
        groups = channel_groups(spec)
        if self.variant is None:  # uniform: every conv group (FC hidden units of VGG-ImageNet stay)
            # every conv's filters: not VGG-ImageNet's FC hidden units, not PreResNet/DenseNet
            # channel selections (they pick a BN's outputs and have no filters to score)
            return {
                g.name: max(1, int(g.size * (1 - self.ratio)))
                for g in groups
                if "fc_index" not in g.meta and not g.meta.get("selection")
            }
        v = variants_for(spec, self.variants)[self.variant]
        if "widths" in v:  # VGG: filters kept per conv, in order
            return {g.name: v["widths"][g.meta["conv_index"]] for g in groups}
        widths = {}  # ResNets: the first conv of each block, by stage, except the skipped layers
        for g in groups:
            if g.meta["layer_id"] in v["skip"] or g.meta.get("k", 0) != 0:
                continue
            widths[g.name] = int(g.size * (1 - v["stage_ratio"][g.meta["stage"]]))
        return widths

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
