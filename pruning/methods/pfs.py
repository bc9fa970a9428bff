"""Pruning from Scratch.

Wang, Zhang, Xie, Zhou, Su, Zhang, Hu. "Pruning from Scratch", AAAI 2020 (arXiv 1909.12579);
official code frankwang345/pruning-from-scratch (gate.py, script/learn_gates.py,
script/prune_model.py, script/train_pruned.py, models/*.py, flop_counter.py, datasets.py).

1. Build the network at an expanded width e (VGG: e/2e/4e/8e per stage; CIFAR ResNet: trunk
   e/2e/4e and block mids as wide) with random, frozen weights.
2. Learn a gate per channel, multiplied after BN and before ReLU (VGG: every conv; ResNet: the
   block mid channels): only the gates are optimised (Adam, lr 0.01) on
   CE + lambda * (mean over all gates of |g| - s)^2, clamped to [0, 1] after each step, BN in
   train mode, on the first 90% of the training set (CIFAR: 45k); after each epoch the last 10%
   (5k) validates, and the gates are kept from the epoch with the best validation accuracy
   among those whose fraction of non-zero gates is <= s (none: the last epoch's).
3. Binary-search the global number of kept gates (the largest, over all layers together) until
   the network built from the kept counts removes ``ratio`` of the FLOPs of the default-width
   network, |achieved - ratio| / ratio <= 0.001.
4. Train that architecture from scratch (the pipeline's scratch-B by default: no pretraining).

Departures from the official code, each recorded in ``extras``: a layer never loses all its
channels (its largest gate is kept; the official search builds 0-channel blocks and crashes);
when the official 10 halvings of the kept fraction miss the tolerance, the search continues on
the integer number of kept gates and, if one channel is still too coarse a step, fills the
remaining budget with the next-ranked gates that fit, then exchanges single channels between
layers until the budget is met (``out_of_order_gates``: kept gates outside the global top-k).
Equal gates (exact zeros from the clamp, exact ones) are ordered by an explicit rule, where the
official ``topk`` leaves the choice to its selection algorithm (``rank_gates``; default ``spread``:
each layer keeps about the same share of its tied gates; ``tied_kept_gates`` in ``extras`` counts
the kept gates the rule chose). It decides a lot when most gates are 0: VGG-16 at e = 80 with 27% of
its 5,280 gates non-zero (a full-length gate learning's level; measured on learnt gates with the
rest zeroed), p = 0.5 keeps ~1,560 tied zeros (30% of all gates); at the same 156.5M MACs, CPU
``topk`` (torch 2.14) takes them from the last layers (12.6M parameters, widths 22..640), ``spread``
gives every layer ~56% of its width (7.4M), ``position`` fills the first layers (2.0M); all 13
widths differ between ``spread`` and ``topk``. With few zeros (10 short epochs: 35% zeros, none at
the cut) the three agree. The FLOPs ratio is measured as the official flop_counter.py counts it
(``official_macs``: it also counts the ResNets' pooling module, which ``count_macs`` does not;
``achieved_flops_reduction`` is the pipeline's count, ``..._official_counter`` the search's): on the
committed ResNet-20 runs (e = 32, p = 0.4914) it moves one channel between blocks in each seed (2-3
of 9 widths), the official-counter ratio 0.49089 (outside the 0.1% tolerance) -> 0.49180.

ImageNet nets (MobileNet-V1/V2, ResNet-50: where the official code gates them, their expanded
forms, closed-form MACs, the per-class validation split ``val_per_class``): ``pfs_imagenet``.

Gate learning depends on the model, the data, the seed and its own settings but not on the
ratio: it is cached under ``<cache_dir>/pfs_gates/`` and shared by every ratio and policy.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError, rng
from pruning.cache import cached, digest
from pruning.io import atomic_copy, load_checkpoint, load_or_quarantine, save_checkpoint, write_json
from pruning.measure import count_macs
from pruning.methods import pfs_imagenet
from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.methods.targets import target_record, warn_if_missed
from pruning.models import build, channel_groups, default_spec
from pruning.progress import StageProgress, eval_steps
from pruning.run_plots import (
    draw_safely,
    layer_figure_width,
    legend_outside,
    new_figure,
    save_figure,
    set_layer_ticks,
    short_layer_name,
)
from pruning.train import evaluate

SUPPORTED = (
    "resnet_pfs (model=resnet20_pfs|resnet32_pfs|resnet56_pfs|resnet110_pfs; model=resnet20|... maps "
    "to PFS's projection-shortcut ResNet of the same depth)",
    "vgg_cifar (model=vgg16_pfs|vgg19; model=vgg16 maps to PFS's VGG-16 with one Linear classifier)",
    *pfs_imagenet.SUPPORTED,
)
# default per-architecture expansion e and sparsity level s (the YAML's per_arch overrides these)
PER_ARCH = {
    "vgg_cifar": {"expansion": 80, "sparsity_level": 0.2},
    "resnet_pfs": {"expansion": 32, "sparsity_level": 0.2},
    **pfs_imagenet.PER_ARCH,
}
DEFAULT_WIDTH = {"vgg_cifar": 64, "resnet_pfs": 16, **pfs_imagenet.DEFAULT_WIDTH}  # e of the dense (reference) network


# ----------------------------------------------------------------------------- architectures
def pfs_dense_spec(spec: dict) -> dict:
    """The PFS network for a model config's spec: ``resnet_cifar`` (option A) -> PFS's
    ``resnet_pfs`` (projection shortcuts) of the same depth and widths; ``vgg_cifar`` -> the
    same conv widths with PFS's head (one Linear, ``hidden: 0``); PFS specs unchanged."""
    arch = spec.get("arch")
    if arch == "resnet_pfs":
        return spec
    if arch == "resnet_cifar":
        out = {k: copy.deepcopy(spec[k]) for k in ("depth", "num_classes", "in_channels", "stem", "stages")}
        return {"arch": "resnet_pfs", **out}
    if arch == "vgg_cifar":
        return {**copy.deepcopy(spec), "hidden": 0}
    if arch in pfs_imagenet.ARCHS:
        return pfs_imagenet.dense_spec(spec)
    raise PruneLabError(f"Pruning from Scratch has no gated form of arch {arch!r}; supported: " + "; ".join(SUPPORTED))


def expanded_spec(spec: dict, expansion: int) -> dict:
    """The network gates are learnt on (official ``models.<arch>(10, e)``): ResNet trunk and
    mids e/2e/4e; VGG every conv of the dense cfg scaled by e/64 (``expanded_cfg(e)`` for the
    default cfg: e/2e/4e/8e)."""
    if spec["arch"] == "resnet_pfs":
        return default_spec(
            "resnet_pfs",
            depth=spec["depth"],
            num_classes=spec["num_classes"],
            in_channels=spec["in_channels"],
            base_width=expansion,
        )
    if spec["arch"] == "vgg_cifar":  # the dense cfg's widths times e / 64 (64: its first conv)
        cfg = [v if v == "M" else max(1, int(v) * expansion // DEFAULT_WIDTH["vgg_cifar"]) for v in spec["cfg"]]
        return default_spec(
            "vgg_cifar",
            depth=spec["depth"],
            num_classes=spec["num_classes"],
            in_channels=spec["in_channels"],
            hidden=0,
            cfg=cfg,
        )
    if spec["arch"] in pfs_imagenet.ARCHS:
        return pfs_imagenet.expanded_spec(spec, expansion)
    raise PruneLabError(f"no expanded form of arch {spec['arch']!r}")


def spec_macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """Forward MACs of ``build(spec)`` as ``count_macs`` counts them, in closed form for the
    PFS families (the budget search evaluates hundreds of specs), else by building the net."""
    if spec["arch"] == "resnet_pfs":
        from pruning.models.resnet_pfs import macs

        return macs(spec, input_shape)
    if spec["arch"] == "vgg_cifar":
        c, h, w = (int(v) for v in input_shape)
        total = 0
        for v in spec["cfg"]:
            if v == "M":
                h, w = h // 2, w // 2
            else:
                total += h * w * int(v) * c * 9
                c = int(v)
        hidden = int(spec.get("hidden") or 0)
        return total + (c * hidden + hidden * spec["num_classes"] if hidden else c * spec["num_classes"])
    if spec["arch"] in pfs_imagenet.ARCHS:
        return pfs_imagenet.macs(spec, input_shape)
    return count_macs(build(spec), input_shape)


def official_pool_macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """What the official flop_counter.py adds for pooling: it counts ``nn.AvgPool2d`` /
    ``AdaptiveAvgPool2d`` modules as their input's numel. The ResNets' head pools with a module
    (CIFAR ``AvgPool2d(8)``: 4e * 8 * 8 at 32x32; ImageNet ``AvgPool2d(7)``) and is counted; the
    CIFAR VGG pools with an ``nn.AvgPool2d(2)`` created inline in ``forward``, which the counter
    never sees (0). ``count_macs`` counts no pooling."""
    if spec["arch"] == "resnet_pfs":
        from pruning.models.resnet_pfs import _out

        _, h, w = (int(v) for v in input_shape)
        for stage in spec["stages"]:
            h, w = _out(h, int(stage["stride"])), _out(w, int(stage["stride"]))
        return int(spec["stages"][-1]["width"]) * h * w
    if spec["arch"] in pfs_imagenet.ARCHS:
        return pfs_imagenet.official_avgpool_macs(spec, input_shape)
    return 0


def official_macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """MACs as the official counter counts them (``spec_macs`` + ``official_pool_macs``): what
    prune_model.py's ratio, and so our budget search, is measured in."""
    return spec_macs(spec, input_shape) + official_pool_macs(spec, input_shape)


def _set(spec: dict, path: tuple, value: int) -> None:
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = int(value)


def spec_with_widths(spec: dict, paths: list[tuple], widths: list[int]) -> dict:
    out = copy.deepcopy(spec)
    for path, width in zip(paths, widths, strict=True):
        _set(out, path, width)
    return out


# ----------------------------------------------------------------------------- gates
class Gates:
    """One gate vector per channel group of a network, multiplied into the output of the
    group's BN (after BN, before the ReLU that follows it) by forward hooks."""

    def __init__(self, model: nn.Module, device: torch.device | str):
        groups = [g for g in channel_groups(model.spec) if not g.meta.get("selection")]
        if not groups or any(g.bn_scale is None for g in groups):
            raise PruneLabError(f"arch {model.spec['arch']!r}: PFS gates need a BN after every gated conv")
        self.groups = groups
        self.names = [g.name for g in groups]
        self.params = [nn.Parameter(torch.ones(g.size, device=device)) for g in groups]
        modules = dict(model.named_modules())
        self.bns = [modules[g.bn_scale.rsplit(".", 1)[0]] for g in groups]
        self.handles = [bn.register_forward_hook(self._hook(p)) for bn, p in zip(self.bns, self.params, strict=True)]

    @staticmethod
    def _hook(gate: nn.Parameter) -> Callable:
        def multiply(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
            return out * gate.view(1, -1, 1, 1)  # (N, C, H, W) * (1, C, 1, 1)

        return multiply

    def cat(self) -> torch.Tensor:
        return torch.cat(list(self.params))  # (total gates,)

    def regulariser(self, lambd: float, sparsity_level: float) -> torch.Tensor:
        """lambda * (mean over ALL gates concatenated of |g| - s)^2 (learn_gates.py)."""
        return lambd * (self.cat().abs().mean() - sparsity_level) ** 2

    @torch.no_grad()
    def clamp(self) -> None:
        for p in self.params:
            p.clamp_(0, 1)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def split_train_val(data: Any, val_fraction: float) -> tuple[Any, Any]:
    """(train part, validation part): the first (1 - f) of the training items train, the last f
    validate (official datasets.py: the first 45,000 CIFAR training images / the last 5,000).
    The validation part is a copy whose *test* split is those images (no augmentation)."""
    n = len(data.train)
    n_val = int(round(n * val_fraction))
    if not 1 <= n_val < n:
        raise PruneLabError(f"method.val_fraction={val_fraction} leaves no training or no validation images of {n}")
    cut = n - n_val
    train = data.subset_train(cut)
    val = data._replace(test=data.train.subset(list(range(cut, n))))
    return train, val


# ----------------------------------------------------------------------------- budget search
def exchange_moves(
    mask: torch.Tensor,
    rank: torch.Tensor,
    bounds: list[int],
    macs_of: Callable[[torch.Tensor], int],
    lo_macs: float,
    hi_macs: float,
    max_moves: int = 100,
) -> int:
    """Move ``mask`` (in place) into the MACs window [lo_macs, hi_macs] when single channels are
    too coarse a step: each move adds the best-ranked unkept gate of one layer, drops the
    worst-ranked kept gate of another (never the last one), or both; the move taken is the one
    that ends closest to the window, ties to the least disturbance of the ranking. Returns the
    number of moves (0 when already inside)."""

    def distance(macs: float) -> float:
        return max(lo_macs - macs, macs - hi_macs, 0.0)

    layers = list(zip(bounds[:-1], bounds[1:], strict=True))
    current = distance(macs_of(mask))
    moves = 0
    while current > 0 and moves < max_moves:
        adds, drops = [None], [None]
        for lo, hi in layers:
            kept, free = mask[lo:hi].nonzero().flatten(), (~mask[lo:hi]).nonzero().flatten()
            if len(free):
                adds.append(lo + int(free[torch.argmin(rank[lo:hi][free])]))
            if len(kept) > 1:
                drops.append(lo + int(kept[torch.argmax(rank[lo:hi][kept])]))
        best = None
        for add in adds:
            for drop in drops:
                if add is None and drop is None:
                    continue
                trial = mask.clone()
                if add is not None:
                    trial[add] = True
                if drop is not None:
                    trial[drop] = False
                key = (
                    distance(macs_of(trial)),
                    (int(rank[add]) if add is not None else 0) - (int(rank[drop]) if drop is not None else 0),
                )
                if best is None or key < best[0]:
                    best = (key, trial)
        if best is None or best[0][0] >= current:
            break
        mask.copy_(best[1])
        current = best[0][0]
        moves += 1
    return moves


TIE_BREAKS = ("spread", "position")


def rank_gates(values: torch.Tensor, sizes: list[int], tie_break: str = "spread") -> torch.Tensor:
    """Gate indices, largest gate first; ``values`` (N,) is the concatenation of layers of ``sizes``.

    The official search keeps ``all_gates.topk(k)``, whose choice among equal values is unspecified
    (it depends on the torch version and device: the CPU kernel's selection algorithm returns tied
    gates from the middle of the vector). Ties are common: gates clamped to exactly 0 (for VGG-16 at
    e = 80 most of them) and to exactly 1. Ours is explicit:

    * ``spread`` (default): the gates that share one value are interleaved across layers: within a
      layer they are taken in position order, and the j-th of the T tied gates of a layer ranks at
      (j + 0.5) / T, so any prefix of the ties keeps about the same fraction of every layer's tied
      gates (the expected result of picking tied gates at random, without the randomness);
      remaining ties by layer order.
    * ``position``: earliest gate first (a stable sort), which gives all kept ties to the first
      layers.
    """
    if tie_break not in TIE_BREAKS:
        raise PruneLabError(f"tie_break={tie_break!r}: use one of {', '.join(TIE_BREAKS)}")
    flat = values.tolist()
    if tie_break == "position":
        return torch.sort(values, descending=True, stable=True).indices
    layer = [i for i, size in enumerate(sizes) for _ in range(size)]
    counts: dict[tuple[int, float], int] = {}
    for i, v in enumerate(flat):
        counts[(layer[i], v)] = counts.get((layer[i], v), 0) + 1
    seen: dict[tuple[int, float], int] = {}
    keys = []
    for i, v in enumerate(flat):
        j = seen.get((layer[i], v), 0)
        seen[(layer[i], v)] = j + 1
        keys.append((-v, (j + 0.5) / counts[(layer[i], v)], layer[i], i))
    return torch.tensor([k[3] for k in sorted(keys)], dtype=torch.long)


def budget_search(
    gates: list[torch.Tensor],
    cost: Callable[[list[int]], int],
    flops_dense: int,
    ratio: float,
    max_iter: int = 10,
    tolerance: float = 0.001,
    refine: bool = True,
    tie_break: str = "spread",
) -> dict:
    """Kept channels per layer for ``ratio`` of ``flops_dense`` removed (prune_model.py).

    ``gates``: one vector per layer; ``cost(widths)``: MACs of the net with those layer widths.
    Official part: ``max_iter`` halvings of the pruned fraction of gates (start 0, end 1), keeping
    the round(N * (1 - cur)) largest gates; stop when |achieved - ratio| / ratio <= tolerance.
    Ours: a layer keeps at least its largest gate; if still outside the tolerance, bisection on
    the integer count, then (one channel too coarse) the next-ranked gates that fit the budget.
    Equal gates are ordered by ``tie_break`` (``rank_gates``), where the official ``topk`` leaves
    the order unspecified.
    """
    sizes = [int(g.numel()) for g in gates]
    values = torch.cat([g.detach().float().cpu().flatten() for g in gates])  # (N,)
    n = int(values.numel())
    order = rank_gates(values, sizes, tie_break)  # (N,) gate indices, best first
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)

    def mask_of(k: int) -> torch.Tensor:
        mask = rank < k
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if not mask[lo:hi].any():  # never an empty layer: keep its largest gate
                mask[lo + int(torch.argmin(rank[lo:hi]))] = True
        return mask

    def widths_of(mask: torch.Tensor) -> list[int]:
        return [int(mask[lo:hi].sum()) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def achieved(mask: torch.Tensor) -> float:
        return 1.0 - cost(widths_of(mask)) / flops_dense

    def within(r: float) -> bool:
        return abs(r - ratio) / ratio <= tolerance

    trace = []
    start, end = 0.0, 1.0
    mask = mask_of(n)
    r = achieved(mask)
    for _ in range(max_iter):  # the official search
        cur = (start + end) / 2
        mask = mask_of(round(n * (1 - cur)))
        r = achieved(mask)
        trace.append(r)
        if within(r):
            break
        if r > ratio:
            end = cur
        else:
            start = cur
    official = within(r)
    moves = 0
    if not official and refine:
        hi_macs = flops_dense * (1 - ratio + tolerance * ratio)  # most MACs allowed
        lo_macs = flops_dense * (1 - ratio - tolerance * ratio)  # fewest MACs allowed
        if cost(widths_of(mask_of(0))) > hi_macs:
            raise PruneLabError(
                f"cannot remove {100 * ratio:.1f}% of the FLOPs: even one channel per gated layer keeps "
                f"{100 * cost(widths_of(mask_of(0))) / flops_dense:.1f}% (the ungated trunk is too wide); "
                "use a smaller method.expansion"
            )
        if cost(widths_of(mask_of(n))) < lo_macs:
            raise PruneLabError(
                f"cannot remove only {100 * ratio:.1f}% of the FLOPs: the whole gated network keeps "
                f"{100 * cost(widths_of(mask_of(n))) / flops_dense:.1f}%; use a larger method.expansion"
            )
        lo, hi = 0, n  # largest k with MACs <= hi_macs lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cost(widths_of(mask_of(mid))) <= hi_macs:
                lo = mid
            else:
                hi = mid - 1
        mask = mask_of(lo)
        macs = cost(widths_of(mask))
        for index in order[lo:].tolist():  # fill with the next-ranked gates that still fit
            if macs >= lo_macs:
                break
            if mask[index]:
                continue
            mask[index] = True
            trial = cost(widths_of(mask))
            if trial <= hi_macs:
                macs = trial
            else:
                mask[index] = False
        moves = exchange_moves(mask, rank, bounds, lambda m: cost(widths_of(m)), lo_macs, hi_macs)
        r = achieved(mask)
    widths = widths_of(mask)
    kept = int(mask.sum())
    out_of_order = int((mask & (rank >= kept)).sum())  # kept although outside the global top-`kept`
    straddling = set(values[mask].tolist()) & set(values[~mask].tolist())  # values cut by the budget
    tied_kept = sum(1 for v in values[mask].tolist() if v in straddling)  # kept by the tie-break alone
    keep = [torch.nonzero(mask[lo:hi]).flatten().tolist() for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return {
        "widths": widths,
        "keep": keep,
        "achieved": r,
        "within_tolerance": within(r),
        "official_converged": official,
        "official_trace": trace,
        "iterations": len(trace),
        "out_of_order_gates": out_of_order,
        "exchange_moves": moves,
        "kept_gates": kept,
        "total_gates": n,
        "one_channel_layers": sum(1 for w in widths if w == 1),
        "tie_break": tie_break,
        "tied_kept_gates": tied_kept,
    }


# ----------------------------------------------------------------------------- the method
class PFS(Method):
    name = "pfs"
    needs_pretrained = False  # gates are learnt on random weights: no dense pretraining

    def __init__(
        self,
        ratio: float = 0.5,
        expansion: int | None = None,
        sparsity_level: float | None = None,
        lambd: float = 0.5,
        lr: float = 0.01,
        gate_epochs: int = 10,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        val_per_class: int | None = None,
        max_iter: int = 10,
        tolerance: float = 0.001,
        refine: bool = True,
        per_arch: dict | None = None,
        second_stage: str | None = None,
        **_: Any,
    ):
        self.ratio = check_ratio(ratio, "method.ratio")
        if self.ratio <= 0:
            raise PruneLabError("method.ratio=0: PFS searches a FLOPs reduction; use a fraction in (0, 1), e.g. 0.5")
        self.expansion = None if expansion is None else int(expansion)
        self.sparsity_level = None if sparsity_level is None else float(sparsity_level)
        if self.expansion is not None and self.expansion < 1:
            raise PruneLabError(f"method.expansion={expansion} must be >= 1 (channels of the first stage)")
        if self.sparsity_level is not None and not 0.0 <= self.sparsity_level <= 1.0:
            raise PruneLabError(f"method.sparsity_level={sparsity_level} must be in [0, 1]")
        if int(gate_epochs) < 0 or int(batch_size) < 1 or int(max_iter) < 1:
            raise PruneLabError("method.gate_epochs must be >= 0, method.batch_size and method.max_iter >= 1")
        if not 0.0 < float(val_fraction) < 1.0:
            raise PruneLabError(f"method.val_fraction={val_fraction} must be in (0, 1) (official: 5k of 50k = 0.1)")
        if not float(tolerance) > 0:
            raise PruneLabError(f"method.tolerance={tolerance} must be > 0 (official eps 0.001)")
        self.lambd, self.lr, self.gate_epochs = float(lambd), float(lr), int(gate_epochs)
        self.batch_size, self.val_fraction = int(batch_size), float(val_fraction)
        if val_per_class is not None and int(val_per_class) < 1:
            raise PruneLabError(f"method.val_per_class={val_per_class} must be >= 1 (official ImageNet: 50) or null")
        self.val_per_class = None if val_per_class is None else int(val_per_class)
        self.max_iter, self.tolerance, self.refine = int(max_iter), float(tolerance), bool(refine)
        self.per_arch = {**copy.deepcopy(PER_ARCH), **copy.deepcopy(dict(per_arch or {}))}
        self.second_stage = second_stage

    def key(self) -> dict[str, Any]:
        return {"variant": None, "ratio": self.ratio}

    def settings(self) -> dict[str, Any]:
        return {"expansion": self.expansion, "sparsity_level": self.sparsity_level, "gate_epochs": self.gate_epochs}

    def dense_spec(self, spec: dict) -> dict:
        return pfs_dense_spec(spec)

    def validate(self, model_name: str, spec: dict) -> None:
        if self.second_stage == "finetune":
            raise PruneLabError(
                "finetune=finetune does not apply to method=pfs: its pruned network has no trained weights to "
                "fine-tune (gates are learnt on random, frozen weights); use finetune=scratch_b (the paper's "
                "default) or finetune=scratch_e"
            )
        try:
            arch = pfs_dense_spec(spec)["arch"]
        except PruneLabError as e:
            raise PruneLabError(f"method=pfs does not support model={model_name}: {e}") from None
        defaults = self.per_arch.get(arch) or {}
        if self.expansion is None:
            self.expansion = int(defaults.get("expansion", DEFAULT_WIDTH[arch]))
        if self.sparsity_level is None:
            self.sparsity_level = float(defaults.get("sparsity_level", 0.2))

    # ------------------------------------------------------------------------- prune
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        if ctx.data is None:
            raise PruneLabError("PFS learns gates on training data: PruneContext.data is required")
        dense = pfs_dense_spec(model.spec)
        if self.expansion is None or self.sparsity_level is None:
            self.validate(dense["arch"], dense)
        wide = expanded_spec(dense, self.expansion)
        flops_dense = spec_macs(dense, ctx.input_shape)  # the default-width net (prune_model.py)
        flops_dense_official = official_macs(dense, ctx.input_shape)  # + the pool the official counter counts
        learnt = self.cached_gates(dense, wide, ctx)
        gates = [torch.as_tensor(g) for g in learnt["gates"]]
        paths = [tuple(g.spec_path) for g in channel_groups(wide)]

        def cost(widths: list[int]) -> int:
            return official_macs(spec_with_widths(wide, paths, widths), ctx.input_shape)

        search = budget_search(
            gates, cost, flops_dense_official, self.ratio, self.max_iter, self.tolerance, self.refine
        )
        pruned_spec = spec_with_widths(wide, paths, search["widths"])
        torch.manual_seed(ctx.seed + 1)
        pruned = build(pruned_spec)
        achieved = 1.0 - spec_macs(pruned_spec, ctx.input_shape) / flops_dense
        target = target_record(
            "flops_reduction",
            self.ratio,
            search["achieved"],  # by the official counter, as the search measures it
            search["within_tolerance"],
            f"|achieved - asked| <= {100 * self.tolerance:g}% of asked (method.tolerance; official eps)",
        )
        warn_if_missed(target, ctx.say, "PFS")
        layers = [
            {
                "name": name,
                "size": int(g.numel()),
                "kept": w,
                "dense": _dense_width(dense, path),
                "nonzero": int((g != 0).sum()),
                "mean": float(g.float().mean()),
                "values": [round(float(v), 4) for v in g.flatten()],
            }
            for name, g, w, path in zip(learnt["names"], gates, search["widths"], paths, strict=True)
        ]
        if ctx.work_dir is not None:
            record = {
                "ratio": self.ratio,
                "achieved": achieved,
                "expansion": self.expansion,
                "sparsity_level": self.sparsity_level,
                "saved_epoch": learnt["saved_epoch"],
                "history": learnt["history"],
                "layers": layers,
            }
            write_json(Path(ctx.work_dir) / "pfs_gates.json", record)
            draw_safely(
                plot_gates,
                layers,
                Path(ctx.work_dir) / "pfs_gates.png",
                gates_title(
                    net_name(dense),
                    self.expansion,
                    self.sparsity_level,
                    learnt["epochs"],
                    learnt["saved_epoch"],
                    self.ratio,
                    achieved,
                ),
                say=ctx.say,
                what="pfs_gates.png",
            )
        extras = {
            "target": target,
            "requested_flops_reduction": 100.0 * self.ratio,
            "achieved_flops_reduction": 100.0 * achieved,
            "flops_dense_reference": flops_dense,
            # the search's own measure: the official counter, which also counts the ResNets' pool
            "achieved_flops_reduction_official_counter": 100.0 * search["achieved"],
            "flops_dense_reference_official_counter": flops_dense_official,
            "tie_break": search["tie_break"],
            "tied_kept_gates": search["tied_kept_gates"],
            "within_tolerance": search["within_tolerance"],
            "tolerance": self.tolerance,
            "search_iterations": search["iterations"],
            "official_search_converged": search["official_converged"],
            "out_of_order_gates": search["out_of_order_gates"],
            "exchange_moves": search["exchange_moves"],
            "one_channel_layers": search["one_channel_layers"],
            "kept_gates": search["kept_gates"],
            "total_gates": search["total_gates"],
            "expansion": self.expansion,
            "sparsity_level": self.sparsity_level,
            "gated_spec": wide,
            "gated_macs": learnt["macs_per_sample"],
            "gate_saved_epoch": learnt["saved_epoch"],
            "gate_val_top1": learnt["val_top1"],
            "gate_nonzero_fraction": learnt["nonzero_fraction"],
            "gate_mean": learnt["mean_gate"],
            "gates_cached": learnt["cached"],
            "gates_entry": learnt.get("entry"),
        }
        own_stage = {
            "name": "gates",
            "epochs": learnt["epochs"],
            "samples": learnt["samples"],
            "macs_per_sample": learnt["macs_per_sample"],
            "wall_s": learnt["wall_s"],
            "cached": bool(learnt["cached"]),
            "val_top1": learnt["val_top1"],
        }
        keep = {name: idx for name, idx in zip(learnt["names"], search["keep"], strict=True)}
        return PruneResult(model=pruned, spec=pruned_spec, keep=keep, extras=extras, own_stage=own_stage)

    # ------------------------------------------------------------------------- gate learning
    def gate_identity(self, dense: dict, wide: dict, ctx: PruneContext) -> dict[str, Any]:
        """What the learnt gates depend on (not the ratio, the search or the second stage)."""
        data = ctx.data
        return {
            "dense_spec": dense,
            "gated_spec": wide,
            "seed": ctx.seed,
            "input_shape": list(ctx.input_shape),
            "data": {
                "name": data.name,
                "fingerprint": data.info.get("fingerprint"),
                "train_subset": data.info.get("train_subset"),
                "train_size": len(data.train),
                "augment": data.augment,
            },
            "settings": {
                "expansion": self.expansion,
                "sparsity_level": self.sparsity_level,
                "lambd": self.lambd,
                "lr": self.lr,
                "epochs": self.gate_epochs,
                "batch_size": self.batch_size,
                "val_fraction": self.val_fraction,
                # only when set, so that existing gate caches keep their identity
                **({"val_per_class": self.val_per_class} if self.val_per_class else {}),
            },
        }

    def cached_gates(self, dense: dict, wide: dict, ctx: PruneContext) -> dict:
        """Learn the gates, or load them from ``<cache_dir>/pfs_gates/<id>`` (file-locked; a
        corrupt entry is rebuilt); resumable from the per-epoch checkpoint in the entry."""
        if ctx.cache_dir is None:
            work = Path(ctx.work_dir) if ctx.work_dir is not None else None
            return {**self.learn_gates(wide, ctx, work), "cached": False}
        name = (
            f"{dense['arch']}{dense.get('depth', '')}-e{self.expansion}-{digest(self.gate_identity(dense, wide, ctx))}"
        )
        entry_dir = Path(ctx.cache_dir) / "pfs_gates" / name

        def load(entry: Path) -> dict:
            state = load_checkpoint(entry / "gates.pt", map_location="cpu")
            if len(state["gates"]) != len(state["names"]):
                raise KeyError("gates")
            return {**state, "cached": True, "entry": entry.name}

        def learn(entry: Path) -> dict:
            result = self.learn_gates(wide, ctx, entry)
            save_checkpoint(entry / "gates.pt", result)
            write_json(entry / "identity.json", self.gate_identity(dense, wide, ctx))
            (entry / "ckpt_gates.pt").unlink(missing_ok=True)
            return {**result, "cached": False, "entry": entry.name}

        result, hit = cached(
            entry_dir, load=load, build=learn, files=("gates.pt",), say=ctx.say, what="cached PFS gates"
        )
        if hit and not ctx.quiet:
            ctx.say(f"PFS gates: cached ({entry_dir.name})")
        if ctx.work_dir is not None and (entry_dir / "gates_history.json").exists():
            atomic_copy(entry_dir / "gates_history.json", Path(ctx.work_dir) / "pfs_gates_history.json")
        return result

    def learn_gates(self, wide: dict, ctx: PruneContext, work: Path | None) -> dict:
        """Official learn_gates.py on the expanded net (module docstring, step 2), checkpointed
        every epoch in ``work``. Returns the kept gates (CPU lists) and what the stage cost."""
        device = ctx.device
        if self.val_per_class:  # official ImageNet: the last 50 training images of every class validate
            train, val = pfs_imagenet.split_last_per_class(ctx.data, self.val_per_class)
        else:
            train, val = split_train_val(ctx.data, self.val_fraction)
        torch.manual_seed(ctx.seed)
        model = build(wide).to(device)
        for p in model.parameters():  # weights stay at their random init; only gates learn
            p.requires_grad_(False)
        gates = Gates(model, device)
        optimizer = torch.optim.Adam(gates.params, lr=self.lr)
        ckpt = work / "ckpt_gates.pt" if work is not None else None
        state = (
            load_or_quarantine(ckpt, ctx.say, map_location=device, what="gate-learning checkpoint") if ckpt else None
        )
        history: list[dict] = []
        start, wall_before, best_acc, saved, saved_epoch = 0, 0.0, 0.0, None, None
        if state is not None:
            model.load_state_dict(state["model"])  # BN running statistics
            with torch.no_grad():
                for p, v in zip(gates.params, state["gates"], strict=True):
                    p.copy_(v)
            optimizer.load_state_dict(state["optimizer"])
            history, start, wall_before = state["history"], state["epoch"], state["wall_s"]
            best_acc, saved, saved_epoch = state["best_acc"], state["saved"], state["saved_epoch"]
            rng.restore(state, ctx.say, what=f"gate-learning checkpoint {ckpt}")
        t0 = time.perf_counter()
        test_batch = max(self.batch_size, 100)
        progress = StageProgress(
            "PFS gates",
            epochs=self.gate_epochs,
            steps_per_epoch=math.ceil(len(train.train) / self.batch_size),
            quiet=ctx.quiet,
            start_epoch=start,
            eval_steps=eval_steps(len(val.test), self.batch_size),
            evals_per_epoch=1,
            say=ctx.say,
        )
        with progress:
            for epoch in range(start, self.gate_epochs):
                t_epoch = time.perf_counter()
                model.train()  # BN: batch statistics, running stats updated (as the official code)
                generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
                sums = {"ce": 0.0, "reg": 0.0, "correct": 0, "seen": 0}
                for images, labels in train.train_batches(self.batch_size, generator):
                    logits = model(images)  # (N, K)
                    ce = F.cross_entropy(logits, labels)
                    reg = gates.regulariser(self.lambd, self.sparsity_level)
                    optimizer.zero_grad(set_to_none=True)
                    (ce + reg).backward()
                    optimizer.step()
                    gates.clamp()
                    sums["ce"] += ce.item() * len(labels)
                    sums["reg"] += reg.item() * len(labels)
                    sums["correct"] += int((logits.argmax(1) == labels).sum())
                    sums["seen"] += len(labels)
                    progress.step()
                with progress.evaluating():
                    val_top1 = evaluate(model, val, test_batch, device=device)["top1"]
                with torch.no_grad():
                    flat = gates.cat()
                    nonzero = float((flat != 0).float().mean())
                    mean_gate = float(flat.mean())
                kept = nonzero <= self.sparsity_level and val_top1 > best_acc  # learn_gates.py's save rule
                if kept:
                    best_acc, saved_epoch = val_top1, epoch + 1
                    saved = [p.detach().cpu().clone() for p in gates.params]
                seen = max(1, sums["seen"])
                row = {
                    "epoch": epoch + 1,
                    "ce": sums["ce"] / seen,
                    "reg": sums["reg"] / seen,
                    "train_top1": 100.0 * sums["correct"] / seen,
                    "val_top1": val_top1,
                    "nonzero_fraction": nonzero,
                    "mean_gate": mean_gate,
                    "saved": kept,
                    "epoch_s": round(time.perf_counter() - t_epoch, 2),
                }
                history.append(row)
                progress.end_epoch(f"CE {row['ce']:.3f} val {val_top1:.1f}% non-zero {nonzero:.3f}")
                if not ctx.quiet:
                    ctx.say(
                        f"PFS gates: epoch {epoch + 1}/{self.gate_epochs} CE {row['ce']:.3f} "
                        f"train {row['train_top1']:.1f}% val {val_top1:.1f}% non-zero {nonzero:.3f} "
                        f"mean gate {mean_gate:.3f}{' (kept)' if kept else ''}"
                    )
                if ckpt is not None:
                    save_checkpoint(
                        ckpt,
                        {
                            "model": model.state_dict(),
                            "gates": [p.detach() for p in gates.params],
                            "optimizer": optimizer.state_dict(),
                            "history": history,
                            "epoch": epoch + 1,
                            "wall_s": wall_before + time.perf_counter() - t0,
                            "best_acc": best_acc,
                            "saved": saved,
                            "saved_epoch": saved_epoch,
                            rng.RNG_KEY: rng.capture(),
                        },
                    )
                    write_json(work / "gates_history.json", {"history": history})
        if saved is None:  # no epoch met the rule: the last epoch's gates (learn_gates.py)
            saved, saved_epoch = [p.detach().cpu().clone() for p in gates.params], "last"
        gates.remove()
        flat = torch.cat(saved)
        saved_row = next((r for r in history if r["epoch"] == saved_epoch), history[-1] if history else {})
        return {
            "gates": [g.tolist() for g in saved],
            "names": gates.names,
            "history": history,
            "saved_epoch": saved_epoch,
            "val_top1": saved_row.get("val_top1"),
            "nonzero_fraction": float((flat != 0).float().mean()),
            "mean_gate": float(flat.mean()),
            "epochs": self.gate_epochs,
            "samples": self.gate_epochs * len(train.train),
            "macs_per_sample": spec_macs(wide, ctx.input_shape),
            "wall_s": round(wall_before + time.perf_counter() - t0, 2),
        }


def net_name(spec: dict) -> str:
    """``resnet_pfs-56``, ``mobilenet_v2``: the arch and, where it has one, the depth."""
    return f"{spec['arch']}-{spec['depth']}" if "depth" in spec else spec["arch"]


def _dense_width(dense: dict, path: tuple) -> int | None:
    node: Any = dense
    try:
        for key in path:
            node = node[key]
    except (KeyError, IndexError, TypeError):
        return None
    return int(node) if isinstance(node, int) else None


def gates_title(
    net: str, expansion: int, sparsity_level: float, epochs: int, saved_epoch: Any, ratio: float, achieved: float
) -> str:
    """The title of ``pfs_gates.png`` (also used by ``scripts/replot_run_figures.py``)."""
    kept = (
        "the last epoch's gates: no epoch met the save rule"
        if saved_epoch == "last"
        else f"gates kept from epoch {saved_epoch}"
    )
    return (
        f"PFS gates ({net}, e={expansion}, s={sparsity_level:g}, {epochs} gate epoch{'s' * (epochs != 1)}; {kept})\n"
        f"target {100 * ratio:.1f}% FLOPs removed, achieved {100 * achieved:.2f}%"
    )


def plot_gates(layers: list[dict], path: Path, title: str) -> Any:
    """``pfs_gates.png``: per gated layer (named on the x axis) the distribution of its learnt gates
    (box + points), and its widths: expanded (gated) net, default-width net, kept at this ratio.
    Returns the Figure."""
    import numpy as np

    names = [short_layer_name(layer["name"]).replace("features.", "conv@") for layer in layers]
    figure = new_figure(layer_figure_width(len(layers)), 8.0)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    xs = np.arange(len(layers))
    top.boxplot(
        [layer["values"] for layer in layers],
        positions=xs,
        widths=0.6,
        showfliers=False,
        medianprops={"color": "C1"},
    )
    rng = np.random.default_rng(0)
    for x, layer in zip(xs, layers, strict=True):
        values = np.asarray(layer["values"])
        top.scatter(x + rng.uniform(-0.25, 0.25, len(values)), values, s=3, alpha=0.35, color="C0", linewidths=0)
    top.plot([], [], color="C1", label="median")
    top.scatter([], [], s=12, color="C0", alpha=0.6, label="one gate (channel)")
    top.plot([], [], color="black", lw=1, label="box: quartiles,\nwhiskers: 1.5 IQR")
    top.set_ylabel("gate value")
    top.set_ylim(-0.05, 1.05)
    set_layer_ticks(top, names)
    top.set_title("learnt gate values per layer (the budget search keeps the largest gates across layers)", fontsize=9)
    legend_outside(top)
    bottom.bar(xs, [layer["size"] for layer in layers], color="lightgray", label="gated (expanded) net")
    bottom.bar(xs, [layer["kept"] for layer in layers], color="C0", label="kept (pruned net)")
    dense = [layer.get("dense") for layer in layers]
    if all(d is not None for d in dense):
        bottom.scatter(xs, dense, marker="_", s=160, color="black", linewidths=2, label="default-width net", zorder=3)
    if len(layers) <= 40:
        for x, layer in zip(xs, layers, strict=True):
            bottom.annotate(
                f"{layer['kept']}",
                (x, layer["kept"]),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    bottom.set_ylabel("channels")
    set_layer_ticks(bottom, names)
    bottom.set_xlabel("gated layer")
    legend_outside(bottom)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)
    return figure
