"""Unstructured magnitude pruning.

Han, Pool, Tran, Dally. "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015; the weight-level setting of "Rethinking the Value of Network
Pruning" (Liu et al., ICLR 2019, cifar/weight-level).

1. Collect |w| of every conv weight (conv layers only, as in Rethinking).
2. One global threshold: the ``ratio`` quantile of all those magnitudes.
3. Masks keep the weights above it; the network's shape does not change.
4. Masks stay fixed: the pipeline re-applies them after every optimiser step, through
   fine-tuning and scratch training, so pruned weights stay exactly zero.
5. Size and FLOPs count non-zero weights only; for scratch training the conv weights are
   re-drawn with He init scaled to each layer's remaining fan-in, then masked.

Language models (SRU, Transformer-XL): the pruned weights are the matrices of the recurrent /
attention layers (``model.prunable_linears()``: every nn.Linear inside the SRU or the Transformer
layers; embedding and output layer kept), one global threshold as above; this is the one-shot
form of the unstructured baseline FLOP compares with (its AGP prunes all ``model.rnn``
parameters gradually). Scratch training keeps the model's own initialisation, masked.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio


def conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights magnitude pruning ranks: a language model's layer matrices, else every conv's."""
    if hasattr(model, "prunable_linears"):
        return {f"{name}.weight": m.weight for name, m in model.prunable_linears()}
    return conv_weights(model)


class Magnitude(Method):
    name = "magnitude"
    data_free_architecture = False  # the sparsity pattern depends on the trained weights
    language_models = True

    def __init__(self, ratio: float = 0.5, **_: Any):
        self.ratio = check_ratio(ratio)

    def key(self) -> dict[str, Any]:
        return {"variant": None, "ratio": self.ratio}

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        weights = prunable_weights(model)
        magnitudes = torch.cat([w.abs().flatten() for w in weights.values()])
        k = int(magnitudes.numel() * self.ratio)
        threshold = magnitudes.kthvalue(k).values if k > 0 else magnitudes.new_tensor(-1.0)
        masks = {name: (w.abs() > threshold).to(w.dtype) for name, w in weights.items()}
        pruned = copy.deepcopy(model)
        params = dict(pruned.named_parameters())
        for name, mask in masks.items():
            params[name].mul_(mask)
        kept = sum(int(m.sum()) for m in masks.values())
        return PruneResult(
            model=pruned,
            spec=model.spec,
            masks=masks,
            extras={"conv_weights_kept": kept, "conv_weights_total": magnitudes.numel(), "threshold": float(threshold)},
        )

    @torch.no_grad()
    def scratch_init(self, model: nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
        """He-normal init with the fan-in each conv keeps after masking (cifar_B.py's rule:
        std = sqrt(2 / (kept weights / in_channels))). A language model keeps its own
        initialisation (the pipeline masks it)."""
        if hasattr(model, "prunable_linears"):
            for name, w in prunable_weights(model).items():
                w.mul_(masks[name])
            return
        for name, w in conv_weights(model).items():
            mask = masks[name]
            fan = max(float(mask.sum()) / w.shape[1], 1.0)
            w.normal_(0, math.sqrt(2.0 / fan)).mul_(mask)
