"""Channel pruning by LASSO regression and least-squares reconstruction.

He, Zhang, Sun. "Channel Pruning for Accelerating Very Deep Neural Networks", ICCV 2017
(the "regression-based feature reconstruction" source in "Rethinking the Value of Network
Pruning", Liu et al., ICLR 2019).

1. On sampled training images, take the layer that consumes a channel group and, at sampled
   output positions, its per-input-channel contributions z_c for every output channel
   (sum_c z_c = the layer's output Y).
2. LASSO on channel coefficients: min_beta ||Y - sum_c beta_c z_c||^2 + lambda ||beta||_1,
   lambda raised (bisection) until at most the target number of betas are non-zero; keep
   exactly the target count (largest |beta|).
3. Least-squares refit of the consumer's weights on the kept channels over the unfolded
   windows: W' = argmin ||Y - X_keep W'||^2.
4. mode=layerwise (the paper): groups in forward order, inputs from the network pruned so
   far and the dense network's output as target; mode=oneshot: all groups from dense inputs.
5. Targets: a uniform ratio for any model, or the Rethinking code's architectures
   VGG-16-5x and ResNet-50-2x (ImageNet; widths in conf/paper/channel_pruning.yaml); the
   pipeline then fine-tunes or retrains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.methods.base import PruneContext, PruneResult
from pruning.methods.reconstruction import (
    GRAM_LIMIT,
    ReconstructionMethod,
    contribution_gram,
    prune_by_reconstruction,
    refit_consumer,
    window_gram,
)
from pruning.models import channel_groups
from pruning.surgery import spec_with_widths


def variant_widths(variant: str, spec: dict, variants: Mapping[str, Any]) -> dict[str, int]:
    """Kept channels per group for a named variant (``variants[variant]``, as in
    conf/paper/channel_pruning.yaml) on its dense model."""
    definition = variants[variant]
    arch, depth = definition["arch"], definition["depth"]
    if spec.get("arch") != arch or spec.get("depth") != depth:
        raise PruneLabError(
            f"method.variant={variant} is defined for {arch} depth {depth}; "
            f"got {spec.get('arch')} depth {spec.get('depth')}"
        )
    groups = channel_groups(spec)
    if "conv_widths" in definition:  # VGG-16-5x: conv widths in order
        convs = [g for g in groups if g.name.startswith("features.")]
        return {g.name: w for g, w in zip(convs, definition["conv_widths"], strict=True)}
    bottlenecks = definition["bottlenecks"]  # ResNet-50-2x: (trunk input kept, conv1 out, conv2 out)
    blocks = [(s, b) for s, stage in enumerate(spec["stages"]) for b in range(len(stage["mid"]))]
    if len(blocks) != len(bottlenecks):
        raise PruneLabError(f"{variant} expects {len(bottlenecks)} bottlenecks, the spec has {len(blocks)}")
    index = {sb: i for i, sb in enumerate(blocks)}
    widths = {}
    for g in groups:
        s, b, k = g.meta["stage"], g.meta["block"], g.meta["k"]
        widths[g.name] = bottlenecks[index[(s, b)]][1 + k]  # conv1 / conv2 output widths
    return widths


def lasso_select(
    gram: torch.Tensor, corr: torch.Tensor, n_keep: int, iterations: int = 30
) -> tuple[list[int], np.ndarray]:
    """Channels chosen by LASSO on the normal equations of ||Y - Z beta||^2 (gram = Z'Z, corr = Z'Y).

    The problem is solved in an equivalent C-row form (gram = L L', y' = L^-1 corr, so
    ||y' - L' beta||^2 = ||Y - Z beta||^2 - const) with columns scaled to unit norm, by
    sklearn's Lasso; lambda is bisected until at most ``n_keep`` betas are non-zero. The kept
    set is those non-zeros, topped up to exactly ``n_keep`` by |beta| at the largest lambda
    that still had more. Returns (kept indices, beta of the final solution in the original scale)."""
    from sklearn.linear_model import Lasso

    c = gram.shape[0]
    scale = gram.diagonal().clamp_min(1e-30).sqrt()  # (C,) column norms of Z
    g = (gram / scale[:, None] / scale[None, :]).cpu().numpy()  # (C, C), unit diagonal
    b = (corr / scale).cpu().numpy()  # (C,)
    lower = np.linalg.cholesky(g + np.eye(c) * 1e-10)  # (C, C)
    design = lower.T  # (C, C): design' design = g
    y = np.linalg.solve(lower, b)  # (C,): design' y = b

    def fit(alpha: float) -> np.ndarray:
        if alpha <= 0:
            return np.linalg.lstsq(design, y, rcond=None)[0]
        return Lasso(alpha=alpha, fit_intercept=False, max_iter=5000, tol=1e-6).fit(design, y).coef_

    lo, hi = 0.0, float(np.abs(design.T @ y).max()) / c * 1.01  # hi: all betas zero
    beta_lo, beta_hi = fit(lo), np.zeros(c)
    if np.count_nonzero(beta_lo) <= n_keep:
        beta_hi = beta_lo
    else:
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            beta = fit(mid)
            nnz = np.count_nonzero(beta)
            if nnz > n_keep:
                lo, beta_lo = mid, beta
            else:
                hi, beta_hi = mid, beta
                if nnz == n_keep:
                    break
    rank = np.lexsort((-np.abs(beta_lo), -np.abs(beta_hi)))  # by |beta_hi|, ties by |beta_lo|
    kept = sorted(int(i) for i in rank[:n_keep])
    return kept, beta_hi / scale.cpu().numpy()


class ChannelPruning(ReconstructionMethod):
    name = "channel_pruning"
    display_name = "LASSO channel pruning"

    def __init__(
        self,
        ratio: float | None = 0.5,
        variant: str | None = None,
        mode: str = "layerwise",
        samples: int = 2048,
        images: int = 256,
        refit: bool = True,
        variants: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        super().__init__(ratio, variant, mode, samples, images, variants)
        self.refit = bool(refit)

    def target(self, spec: dict) -> tuple[dict[str, int], dict]:
        if self.variant is None:
            return super().target(spec)
        widths = variant_widths(self.variant, spec, self.variants)
        return widths, spec_with_widths(spec, widths)

    def _select(
        self, windows: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, n_keep: int
    ) -> tuple[list[int], torch.Tensor | None]:
        c, k = windows.shape[1], windows.shape[2]
        xtx = window_gram(windows) if c * k <= GRAM_LIMIT else None  # (C*K, C*K)
        gram, corr = contribution_gram(windows, weight, target, xtx=xtx, generator=self._generator)  # (C, C), (C,)
        kept, _ = lasso_select(gram, corr, n_keep)
        if not self.refit or xtx is None:  # no refit of a linear layer reading a whole feature map
            return kept, None
        return kept, refit_consumer(windows, target, kept, xtx=xtx)  # (O, C_keep, K)

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        images = self.sample(ctx)  # (N, C, H, W)
        small, keep = prune_by_reconstruction(
            model,
            self.target(model.spec)[0],
            images,
            self.samples,
            self._generator,
            self._select,
            self.mode,
            **self.progress_args(ctx),
        )
        return PruneResult(
            model=small,
            spec=small.spec,
            keep=keep,
            extras={"mode": self.mode, "samples": self.samples, "images": self.images, "refit": self.refit},
        )
