"""Hard-concrete L0 masks and the masked (factorised) linear layers of FLOP.

Louizos, Welling & Kingma, "Learning Sparse Neural Networks through L0 Regularization", ICLR 2018 (the
hard-concrete distribution); Wang, Wohlwend & Lei, "Structured Pruning of Large Language Models", EMNLP
2020 (its use on factorised layers). Written from the constants and formulas of github:asappresearch/flop
(HEAD bdfc184) flop/hardconcrete.py and flop/linear.py, read and re-implemented (the PyPI ``flop``
package does not install with modern torch; shared/reference/papers-pfs-anp-sanp-flop.md section 4):

* ``HardConcrete(n)``: log_alpha (n,) ~ N(log(1 - m) - log m, init_std), m = ``init_mean``;
  temperature beta 1.0, stretch (l, r) = (-0.1, 1.1), eps 1e-6.
  training: one u ~ U(eps, 1 - eps) per entry per call (not per example),
  s = sigmoid((log(u / (1 - u)) + log_alpha) / beta), z = clamp(s (r - l) + l, 0, 1);
  expected L0 = sum sigmoid(log_alpha - beta log(-l / r)) (= P(z != 0) summed);
  eval: num_zeros = round(n - L0), soft = sigmoid(0.8 log_alpha / beta), the num_zeros smallest
  soft values set to 0, the others keep their soft value (the mask is not binary).
  The official module caches this "compiled" eval mask until the next training call; here it is
  recomputed on every eval call (a sigmoid and a top-k over n entries), which gives the same values.
* ``HardConcreteProjectedLinear``: x -> linear2(z * linear1(x)), a mask over the r rank-1
  components (official: x P (diag(z) Q) + b); expected size (in + out) E[L0], prunable (in + out) r.
* ``HardConcreteLinear``: x -> (W diag(z)) x + b, a mask over the *input* features; expected size
  out E[L0], prunable in * out.
  (The official forwards index-select the non-zero components when fewer than 80% survive, a speed
  path with the same result; these compute the masked product directly.)
* ``compact()`` of either layer: the kept component indices and their eval-mask values, so that a
  physically smaller layer with the values folded into Q (or W's columns) computes exactly what the
  masked layer computes in eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TEMPERATURE = 1.0  # beta
STRETCH = 0.1  # l = -0.1, r = 1.1
EPS = 1e-6
EVAL_SOFTNESS = 0.8  # soft = sigmoid(0.8 * log_alpha / beta): the official "empirically validated magic number"


class HardConcrete(nn.Module):
    """A hard-concrete mask over ``n`` entries (see the module docstring)."""

    def __init__(
        self,
        n: int,
        init_mean: float = 0.5,
        init_std: float = 0.01,
        temperature: float = TEMPERATURE,
        stretch: float = STRETCH,
        eps: float = EPS,
    ):
        super().__init__()
        if not 0.0 < init_mean < 1.0:
            raise ValueError(f"init_mean must be in (0, 1), got {init_mean}")
        self.n = int(n)
        self.init_mean, self.init_std = float(init_mean), float(init_std)
        self.beta = float(temperature)
        self.limit_l, self.limit_r = -float(stretch), 1.0 + float(stretch)
        self.eps = float(eps)
        self.l0_shift = -self.beta * math.log(-self.limit_l / self.limit_r)  # 2.3979 with the defaults
        self.log_alpha = nn.Parameter(torch.empty(self.n))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            mean = math.log(1.0 - self.init_mean) - math.log(self.init_mean)
            self.log_alpha.normal_(mean, self.init_std)

    def keep_probability(self) -> torch.Tensor:
        """P(z != 0) per entry: sigmoid(log_alpha - beta log(-l / r)), (n,)."""
        return torch.sigmoid(self.log_alpha + self.l0_shift)

    def l0_norm(self) -> torch.Tensor:
        """Expected number of non-zero entries (differentiable)."""
        return self.keep_probability().sum()

    def sample(self) -> torch.Tensor:
        """A training mask (n,): one uniform draw per entry."""
        u = torch.empty_like(self.log_alpha).uniform_(self.eps, 1.0 - self.eps)
        s = torch.sigmoid((torch.log(u / (1.0 - u)) + self.log_alpha) / self.beta)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    @torch.no_grad()
    def eval_mask(self) -> torch.Tensor:
        """The deterministic evaluation mask (n,): soft values, the round(n - E[L0]) smallest zeroed."""
        num_zeros = round(self.n - float(self.l0_norm()))  # Python's round, as the official
        soft = torch.sigmoid(self.log_alpha / self.beta * EVAL_SOFTNESS)
        if num_zeros > 0:
            soft[torch.topk(soft, k=num_zeros, largest=False).indices] = 0.0
        return soft

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.eval_mask()

    def extra_repr(self) -> str:
        return f"n={self.n}, init_mean={self.init_mean}"


class HardConcreteProjectedLinear(nn.Module):
    """linear2(z * linear1(x)) with a hard-concrete mask over the rank-1 components (FLOP's
    HardConcreteProjectedLinear); ``linear1`` (r, in) without bias, ``linear2`` (out, r) with the
    layer's bias. Built around existing Linear modules (their weights are kept, not copied)."""

    def __init__(self, linear1: nn.Linear, linear2: nn.Linear, **mask_kwargs):
        super().__init__()
        self.linear1, self.linear2 = linear1, linear2
        self.in_features, self.rank, self.out_features = linear1.in_features, linear1.out_features, linear2.out_features
        self.mask = HardConcrete(self.rank, **mask_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mask()  # (r,)
        return self.linear2(self.linear1(x) * z)  # (..., in) -> (..., r) -> (..., out)

    def component_size(self) -> int:
        return self.in_features + self.out_features

    def prunable_size(self) -> int:
        return self.component_size() * self.rank

    def expected_size(self) -> torch.Tensor:
        return self.component_size() * self.mask.l0_norm()

    @torch.no_grad()
    def compact(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept component indices (k,) and their eval-mask values (k,)."""
        z = self.mask.eval_mask()
        keep = z.nonzero().flatten()
        return keep, z[keep]


class HardConcreteLinear(nn.Module):
    """A Linear whose input features carry a hard-concrete mask (FLOP's HardConcreteLinear):
    y = x (W diag(z))^T + b. ``weight`` (out, in) and ``bias`` are the wrapped Linear's."""

    def __init__(self, linear: nn.Linear, **mask_kwargs):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.mask = HardConcrete(self.in_features, **mask_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mask()  # (in,)
        return F.linear(x, self.weight * z, self.bias)  # (..., in) -> (..., out)

    def component_size(self) -> int:
        return self.out_features

    def prunable_size(self) -> int:
        return self.in_features * self.out_features

    def expected_size(self) -> torch.Tensor:
        return self.component_size() * self.mask.l0_norm()

    @torch.no_grad()
    def compact(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept input indices (k,) and their eval-mask values (k,)."""
        z = self.mask.eval_mask()
        keep = z.nonzero().flatten()
        return keep, z[keep]


HardConcreteLayer = HardConcreteProjectedLinear | HardConcreteLinear


def hard_size(layer: HardConcreteLayer) -> int:
    """Parameters the layer keeps once its zero components are removed (eval mask)."""
    keep, _ = layer.compact()
    return layer.component_size() * int(keep.numel())
