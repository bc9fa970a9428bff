"""TAS: Network Pruning via Transformable Architecture Search.

Dong & Yang, "Network Pruning via Transformable Architecture Search", NeurIPS 2019
(arXiv 1905.09717); official code D-X-Y/AutoDL-Projects (exps/TAS, xautodl/models/shape_searchs).

1. Build a supernet over the dense ResNet: per conv a distribution over widths int(C*0.3..1.0),
   per stage a distribution over block counts (pruning/models/tas_search.py).
2. Each step: one SGD step on the weights (CE, first half of the training split) and one Adam
   step on the architecture logits (CE + flop_weight * L_cost, second half); Gumbel-softmax
   samples two candidates per layer, mixed by channel-wise interpolation; tau cosine 5 -> 0.1.
3. L_cost = log E[FLOPs] while the most probable net is above the target, -log E[FLOPs] while it
   is more than flop_tolerance below it, 0 inside the band.
4. The pruned net is the most probable width/depth per layer/stage (a ``resnet_tas`` spec);
   ``fit_budget`` (our addition for short searches) then steps it into the FLOPs band if needed.
5. Transfer: the pipeline trains it with knowledge distillation from the dense net (alpha 0.9,
   T 4; ``kd=False`` for the ablation) under the usual finetune / scratch policy.

``ratio`` is the fraction of FLOPs *removed* (0.527 for the paper's ResNet-56 row); the official
scripts take the *kept* fraction instead (0.47 there). For the ``finetune`` policy the pruned net
starts from the supernet's weights: each conv's first filters/inputs and the chosen candidate's
BN; a projection shortcut that the supernet did not have starts as the zero-padded identity that
the supernet's residual addition was.

Dense network and FLOPs reference: TAS prunes the official TAS CIFAR ResNet (xautodl
CifarResNet: a 2x2 average pool + 1x1 conv shortcut where the stride is 2, no BN there), not the
option-A ResNet of Li et al. ``TAS.dense_spec`` gives that network for a ``resnet_cifar`` config
(the pipeline trains it as the dense baseline and KD teacher where it applies the hook), and every
FLOPs ratio here -- the search target, ``fit_budget``, the achieved reduction -- is measured against
the full-width net of that family (ResNet-56: 125,747,840 MACs), whatever dense net was passed in.

``fit_budget`` (default on, not in the paper): a long search ends with its most probable net
inside the FLOPs band; a short one may not. Then single-candidate steps that give up the least
log-probability per FLOP move it into the band; ``extras`` record the search's own argmax
reduction and the number of such moves next to the requested and achieved reductions.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError, rng
from pruning.cache import cached, digest
from pruning.io import atomic_copy, load_checkpoint, load_or_quarantine, save_checkpoint, write_json
from pruning.measure import count_macs
from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.models import build
from pruning.models.tas_search import WIDTH_RATIOS, TASSupernet
from pruning.progress import StageProgress
from pruning.run_plots import (
    colorbar_outside,
    draw_safely,
    layer_figure_width,
    legend_outside,
    new_figure,
    save_figure,
    set_layer_ticks,
    short_layer_name,
)

SUPPORTED = (
    "resnet_cifar (CIFAR ResNet-20/32/56/110: model=resnet20|resnet32|resnet56|resnet110)",
    "resnet_imagenet (ResNet-18/34/50: model=resnet18|resnet34|resnet50)",
)


def tas_dense_spec(spec: dict) -> dict:
    """The ``resnet_tas`` layout of a dense ``resnet_cifar`` / ``resnet_imagenet`` spec (same
    widths): CIFAR nets get the official TAS shortcuts (``shortcut: tas``), ImageNet nets keep
    torchvision's projections so that torchvision weights map onto it exactly. A ``resnet_tas``
    spec is returned as it is."""
    if spec.get("arch") == "resnet_tas":
        return spec
    if spec.get("arch") == "resnet_cifar":
        stages = [
            {"stride": st["stride"], "blocks": [[int(m), st["width"]] for m in st["mid"]]} for st in spec["stages"]
        ]
        return {
            "arch": "resnet_tas",
            "block": "basic",
            "stem_type": "cifar",
            "shortcut": "tas",
            "depth": spec["depth"],
            "num_classes": spec["num_classes"],
            "in_channels": spec["in_channels"],
            "stem": spec["stem"],
            "stages": stages,
        }
    if spec.get("arch") == "resnet_imagenet":
        stages = [
            {"stride": st["stride"], "blocks": [[*map(int, m), st["width"]] for m in st["mid"]]}
            for st in spec["stages"]
        ]
        return {
            "arch": "resnet_tas",
            "block": spec["block"],
            "stem_type": "imagenet",
            "shortcut": "projection",
            "depth": spec["depth"],
            "num_classes": spec["num_classes"],
            "in_channels": spec["in_channels"],
            "stem": spec["stem"],
            "stages": stages,
        }
    raise PruneLabError(f"TAS searches ResNets only, not arch {spec.get('arch')!r}; supported: " + "; ".join(SUPPORTED))


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every conv of a dense net in the supernet's order (stem; per block its convs, then its
    shortcut) with the BN that follows it (None: no BN, e.g. TAS's down-sampling shortcut)."""
    if getattr(model, "spec", {}).get("arch") == "resnet_tas":
        pairs = [(model.stem[0], model.stem[1])]
        for stage in model.stages:
            for blk in stage:
                pairs += list(zip(blk.convs, blk.bns, strict=True))
                if hasattr(blk.shortcut, "conv"):
                    pairs.append((blk.shortcut.conv, blk.shortcut.bn))
        return pairs
    modules = list(model.modules())
    pairs = []
    for i, m in enumerate(modules):
        if isinstance(m, nn.Conv2d):
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            pairs.append((m, nxt if isinstance(nxt, nn.BatchNorm2d) else None))
    return pairs


def _supernet_convs(net: TASSupernet) -> list[tuple[Any, bool]]:
    """Supernet convs in the dense nets' module order: (SearchConv, is_shortcut)."""
    out = [(net.stem, False)]
    for stage in net.stages:
        for blk in stage:
            out += [(c, False) for c in blk.convs]
            if blk.shortcut is not None:
                out.append((blk.shortcut, True))
    return out


@torch.no_grad()
def init_from_dense(net: TASSupernet, dense: nn.Module) -> None:
    """Copy the dense weights into the supernet (every candidate BN gets the dense BN's prefix);
    a supernet projection the dense net lacks (option-A shortcuts) keeps its random init."""
    pairs, at = _conv_bn_pairs(dense), 0
    for search_conv, is_shortcut in _supernet_convs(net):
        if at < len(pairs) and pairs[at][0].weight.shape == search_conv.conv.weight.shape:
            conv, bn = pairs[at]
            search_conv.conv.weight.copy_(conv.weight)
            if bn is not None:
                for width, cand in zip(search_conv.choices, search_conv.bns, strict=True):
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(cand, name).copy_(getattr(bn, name)[:width])
            at += 1
        elif not is_shortcut:
            raise PruneLabError(
                "dense net and TAS supernet layouts differ: cannot copy weights "
                f"(conv {tuple(search_conv.conv.weight.shape)})"
            )
    if at != len(pairs):
        raise PruneLabError(f"copied {at} of the dense net's {len(pairs)} convs into the supernet")
    fc = [m for m in dense.modules() if isinstance(m, nn.Linear)][-1]
    net.fc.weight.copy_(fc.weight)
    net.fc.bias.copy_(fc.bias)


@torch.no_grad()
def extract(net: TASSupernet, widths: list[int], depths: list[int]) -> nn.Module:
    """The chosen net as a ``resnet_tas`` model, weights from the supernet (module docstring)."""
    model = build(net.to_spec(widths, depths)).to(net.fc.weight.device)

    def copy(search_conv, index: int, conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> None:
        conv.weight.copy_(search_conv.conv.weight[: conv.out_channels, : conv.in_channels])
        if bn is not None:  # TAS's down-sampling shortcut has no BN in the inference net
            bn.load_state_dict(search_conv.bns[index].state_dict())

    copy(net.stem, widths[0], model.stem[0], model.stem[1])
    at = 1
    for stage, inf_stage in zip(net.stages, model.stages, strict=True):
        for b, blk in enumerate(stage):
            if b < len(inf_stage):
                inf = inf_stage[b]
                for j, search_conv in enumerate(blk.convs):
                    copy(search_conv, widths[at + j], inf.convs[j], inf.bns[j])
                if isinstance(inf.shortcut, nn.Module) and hasattr(inf.shortcut, "conv"):
                    if blk.shortcut is not None:
                        copy(blk.shortcut, widths[at + len(blk.convs) - 1], inf.shortcut.conv, inf.shortcut.bn)
                    else:  # the supernet added the input over the common channels
                        w = inf.shortcut.conv.weight  # (out, in, 1, 1)
                        w.zero_()
                        n = min(w.shape[0], w.shape[1])
                        w[range(n), range(n), 0, 0] = 1.0
            at += len(blk.convs)
    model.fc.weight.copy_(net.fc.weight[:, : model.fc.in_features])
    model.fc.bias.copy_(net.fc.bias)
    return model


def flop_loss(expected: torch.Tensor, current: float, target: float, tolerance: float) -> torch.Tensor | None:
    """TAS's cost: log E[F] if the current net is above the target, -log E[F] if it is more than
    ``tolerance`` below it, None inside the band (all as fractions of the dense FLOPs)."""
    if current > target:
        return torch.log(expected)
    if current < target - tolerance:
        return -torch.log(expected)
    return None


@torch.no_grad()
def fit_budget(
    net: TASSupernet,
    widths: list[int],
    depths: list[int],
    flops_dense: int,
    target: float,
    tolerance: float,
    max_moves: int = 10_000,
) -> tuple[list[int], list[int], int]:
    """Move a discrete architecture into the FLOPs band [target - tolerance, target] (kept
    fractions) one candidate step at a time, each time taking the step (one width or depth
    candidate up or down) that gives up the least log-probability per unit of FLOPs changed.
    Returns the new indices and the number of moves (0 when already inside the band)."""
    widths, depths = list(widths), list(depths)
    log_w = [F.log_softmax(p, dim=0) for p in net.width_logits]
    log_d = [F.log_softmax(p, dim=0) for p in net.depth_logits]

    def ratio(w: list[int], d: list[int]) -> float:
        return float(net.expected_flops(*net.one_hot(w, d))) / flops_dense

    current, moves = ratio(widths, depths), 0
    while moves < max_moves and not target - tolerance <= current <= target:
        step = -1 if current > target else 1
        best = None
        for kind, idx, logp in [("w", i, lp) for i, lp in enumerate(log_w)] + [
            ("d", i, lp) for i, lp in enumerate(log_d)
        ]:
            here = widths if kind == "w" else depths
            new = here[idx] + step
            if not 0 <= new < len(logp):
                continue
            trial_w, trial_d = list(widths), list(depths)
            (trial_w if kind == "w" else trial_d)[idx] = new
            r = ratio(trial_w, trial_d)
            gain = abs(r - current)
            if gain <= 0:
                continue
            overshoots = r < target - tolerance if step < 0 else r > target
            score = (overshoots, float(logp[here[idx]] - logp[new]) / gain)
            if best is None or score < best[0]:
                best = (score, trial_w, trial_d, r)
        if best is None:
            break
        _, widths, depths, current = best
        moves += 1
    return widths, depths, moves


@torch.no_grad()
def distribution_record(net: TASSupernet) -> dict:
    """Per searched layer: candidate widths, their probabilities, the dense and chosen width;
    per stage: depth candidates and probabilities."""
    widths, depths = net.genotype()
    layers = []
    for name, conv, probs, pick in zip(net.layer_names(), net.searched, net.width_probs(), widths, strict=True):
        layers.append(
            {
                "name": name,
                "dense": conv.choices[-1],
                "choices": list(conv.choices),
                "probs": [round(float(p), 5) for p in probs],
                "chosen": conv.choices[pick],
            }
        )
    stages = [
        {"stage": s, "choices": list(c), "probs": [round(float(p), 5) for p in q], "chosen": c[d]}
        for s, (c, q, d) in enumerate(zip(net.depths, net.depth_probs(), depths, strict=True))
    ]
    return {"layers": layers, "depth": stages}


def widths_title(
    search_epochs: int, ratio: float, flops_ratio_argmax: float, trained_reduction: float | None = None
) -> str:
    """The title of ``tas_widths.png`` (also used by ``scripts/replot_run_figures.py``);
    ``trained_reduction``: the FLOPs reduction (%) of the network that was trained, when the
    picture shows it (after ``fit_budget``)."""
    title = (
        f"TAS width distributions after {search_epochs} search epochs "
        f"(target: remove {100 * ratio:.1f}% FLOPs; search argmax removes {100 * (1 - flops_ratio_argmax):.1f}%"
    )
    if trained_reduction is not None:
        title += f"; the trained net removes {trained_reduction:.1f}%"
    return title + ")"


def trained_widths(spec: dict) -> tuple[dict[str, int], list[int]]:
    """A ``resnet_tas`` spec (the network that was trained) as the search record's layer names ->
    width (``stem``, ``stages.<s>.<b>.conv<j>``; a removed block's layers are absent) and the
    blocks kept per stage."""
    widths = {"stem": int(spec["stem"])}
    depths = []
    for s, stage in enumerate(spec["stages"]):
        depths.append(len(stage["blocks"]))
        for b, block in enumerate(stage["blocks"]):
            widths.update({f"stages.{s}.{b}.conv{j}": int(width) for j, width in enumerate(block)})
    return widths, depths


def plot_distributions(record: dict, path: Path, title: str, trained_spec: dict | None = None) -> Any:
    """``tas_widths.png``: per searched layer (named on the x axis) the probability of each candidate
    width (colour centred on the uniform 1/K, so that a near-uniform search shows as pale and the
    argmax is marked), the widths vs the dense ones, and the depth distribution of each stage.
    With ``trained_spec`` (the ``resnet_tas`` spec that was trained, after ``fit_budget``) the
    middle panel shows that network's widths and removed blocks, the search's own argmax drawn
    behind them in a lighter shade (it can differ far: 85.5% vs 49.9% removed); without it, the
    argmax (a search-cache picture). Returns the Figure."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    layers = record["layers"]
    stages = record.get("depth") or []
    names = [short_layer_name(layer["name"]) for layer in layers]
    k = max(len(layer["choices"]) for layer in layers)
    grid = np.full((k, len(layers)), np.nan)  # rows: candidate index (narrowest first), columns: layers
    for j, layer in enumerate(layers):
        grid[: len(layer["probs"]), j] = layer["probs"]
    uniform = 1.0 / k
    spread = max(1e-3, float(np.nanmax(np.abs(grid - uniform))))
    norm = TwoSlopeNorm(vcenter=uniform, vmin=max(0.0, uniform - spread), vmax=min(1.0, uniform + spread))
    n_rows = 3 if stages else 2
    figure = new_figure(layer_figure_width(len(layers)), 9.5 if stages else 7.0)
    axes = figure.subplots(n_rows, 1, gridspec_kw={"height_ratios": [3, 2, 1.6][:n_rows]}, sharex=False, squeeze=True)
    top, mid = axes[0], axes[1]
    image = top.imshow(grid, aspect="auto", origin="lower", cmap="PuOr_r", norm=norm, interpolation="nearest")
    picks = [layer["probs"].index(max(layer["probs"])) for layer in layers]
    top.scatter(range(len(layers)), picks, marker="x", s=28, color="black", linewidths=1.2)
    if len(layers[0]["choices"]) == len(WIDTH_RATIOS) and all(len(layer["choices"]) == k for layer in layers):
        top.set_yticks(range(k), [f"{r:.2f}".rstrip("0").rstrip(".") for r in WIDTH_RATIOS])
        top.set_ylabel("candidate width\n/ dense width")
    else:
        top.set_yticks(range(k), [str(i) for i in range(k)])
        top.set_ylabel("candidate width\n(index, narrowest first)")
    set_layer_ticks(top, names)
    top.set_title(
        f"P(width) per layer, x = argmax: largest {float(np.nanmax(grid)):.3f}, smallest "
        f"{float(np.nanmin(grid)):.3f} (uniform over {k} candidates: {uniform:.3f})",
        fontsize=9,
    )
    colorbar_outside(figure, image, top, f"probability (white: uniform 1/{k})")

    xs = np.arange(len(layers))
    mid.bar(xs, [layer["dense"] for layer in layers], color="lightgray", label="dense")

    def removed(depth_of: dict[int, int]) -> list[bool]:  # layers of the blocks beyond a stage's depth
        out = []
        for layer in layers:
            parts = layer["name"].split(".")
            inside = len(parts) >= 3 and parts[0] == "stages" and parts[1].isdigit() and parts[2].isdigit()
            out.append(inside and int(parts[2]) >= depth_of.get(int(parts[1]), len(layers)))
        return out

    argmax_dropped = removed({s["stage"]: s["chosen"] for s in stages})
    argmax = [0 if d else layer["chosen"] for layer, d in zip(layers, argmax_dropped, strict=True)]
    if trained_spec is None:
        dropped = argmax_dropped
        mid.bar(xs, argmax, color="C0", label="searched (argmax)")
        what = "searched widths (argmax of each layer's distribution) vs dense"
        removed_label = "block removed by\nthe depth argmax"
    else:
        widths, depths = trained_widths(trained_spec)
        dropped = removed(dict(enumerate(depths)))
        trained = [0 if d else widths.get(layer["name"], 0) for layer, d in zip(layers, dropped, strict=True)]
        mid.bar(
            xs,
            argmax,
            width=0.8,
            color="#aec7e8",
            edgecolor="#6d9ccf",
            linewidth=0.6,
            label="search argmax\n(before the budget fit)",
        )
        mid.bar(xs, trained, width=0.5, color="C0", label="trained net")
        what = "widths of the trained net (after the budget fit) vs the search's argmax and dense"
        removed_label = "block not in the\ntrained net"
    if any(dropped):
        mid.bar(
            [x for x, d in zip(xs, dropped, strict=True) if d],
            [layer["dense"] for layer, d in zip(layers, dropped, strict=True) if d],
            color="none",
            edgecolor="gray",
            hatch="///",
            label=removed_label,
        )
    mid.set_ylabel("channels")
    set_layer_ticks(mid, names)
    mid.set_xlabel("searched layer (stage.block.conv)")
    mid.set_title(what, fontsize=9)
    legend_outside(mid)
    if stages:
        bottom = axes[2]
        depth_k = max(len(s["choices"]) for s in stages)
        bar_w = 0.8 / depth_k
        for i in range(depth_k):
            pos = [s["stage"] + (i - (depth_k - 1) / 2) * bar_w for s in stages if i < len(s["choices"])]
            probs = [s["probs"][i] for s in stages if i < len(s["choices"])]
            counts = {s["choices"][i] for s in stages if i < len(s["choices"])}
            label = f"{counts.pop()} block(s)" if len(counts) == 1 else f"candidate {i}"
            bottom.bar(pos, probs, width=bar_w * 0.95, color=f"C{i + 1}", label=label)
        for s in stages:
            i = s["choices"].index(s["chosen"])
            x = s["stage"] + (i - (depth_k - 1) / 2) * bar_w
            bottom.scatter([x], [s["probs"][i] + 0.03], marker="v", s=30, color="black", zorder=3)
        bottom.scatter([], [], marker="v", s=30, color="black", label="argmax (searched)")
        bottom.axhline(1.0 / depth_k, color="gray", lw=0.8, ls="--", label=f"uniform 1/{depth_k}")
        bottom.set_xticks([s["stage"] for s in stages], [f"stage {s['stage']}" for s in stages], fontsize=9)
        bottom.set_ylabel("P(depth)")
        bottom.set_ylim(0, min(1.05, max(max(s["probs"]) for s in stages) + 0.12))
        bottom.set_title("depth distribution per stage (blocks kept)", fontsize=9)
        legend_outside(bottom)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)
    return figure


class TAS(Method):
    name = "tas"

    def __init__(
        self,
        ratio: float = 0.45,
        search_epochs: int = 10,
        batch_size: int = 256,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        arch_lr: float = 1e-3,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        tau_max: float = 5.0,
        tau_min: float = 0.1,
        flop_weight: float = 2.0,
        flop_tolerance: float = 0.05,
        depth_choices: str = "odd",
        init_from_dense: bool = True,
        kd: bool = True,
        kd_alpha: float = 0.9,
        kd_temperature: float = 4.0,
        split: float = 0.5,
        fit_budget: bool = True,
        **_: Any,
    ):
        self.ratio = check_ratio(ratio, "method.ratio")
        if int(search_epochs) < 1:
            raise PruneLabError(f"method.search_epochs={search_epochs} must be >= 1")
        if not 0.0 <= float(flop_tolerance) < 1.0:
            raise PruneLabError(f"method.flop_tolerance={flop_tolerance} must be in [0, 1) (fraction of dense FLOPs)")
        if not 0.0 < float(tau_min) <= float(tau_max):
            raise PruneLabError(f"method.tau_min={tau_min} / tau_max={tau_max}: need 0 < tau_min <= tau_max")
        if not 0.0 <= float(kd_alpha) <= 1.0:
            raise PruneLabError(f"method.kd_alpha={kd_alpha} must be in [0, 1]")
        if depth_choices not in ("odd", "thirds"):
            raise PruneLabError(f"method.depth_choices={depth_choices!r}: use odd or thirds")
        self.search_epochs, self.batch_size = int(search_epochs), int(batch_size)
        self.lr, self.momentum, self.weight_decay, self.nesterov = (
            float(lr),
            float(momentum),
            float(weight_decay),
            bool(nesterov),
        )
        self.arch_lr, self.arch_betas = float(arch_lr), tuple(float(b) for b in arch_betas)
        self.arch_weight_decay = float(arch_weight_decay)
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.flop_weight, self.flop_tolerance = float(flop_weight), float(flop_tolerance)
        self.depth_mode, self.init_from_dense = depth_choices, bool(init_from_dense)
        self.kd, self.kd_alpha, self.kd_temperature = bool(kd), float(kd_alpha), float(kd_temperature)
        self.split, self.fit_budget = float(split), bool(fit_budget)

    def key(self) -> dict[str, Any]:
        return {"variant": "kd" if self.kd else "nokd", "ratio": self.ratio}

    def settings(self) -> dict[str, Any]:
        # the search budget and our two departures from the paper change the searched net
        return {
            "search_epochs": self.search_epochs,
            "init_from_dense": self.init_from_dense,
            "fit_budget": self.fit_budget,
        }

    def tag(self) -> str:
        return f"r{self.ratio:g}" + ("" if self.kd else "-nokd")

    def dense_spec(self, spec: dict) -> dict:
        """The dense network TAS starts from (baseline, KD teacher, FLOPs reference) for a model
        config's spec: the official TAS CIFAR ResNet (``resnet_tas`` with ``shortcut: tas``) for
        a ``resnet_cifar`` config; ImageNet ResNets stay torchvision's (their full-width
        ``resnet_tas`` has the same convs, so the same MACs)."""
        return tas_dense_spec(spec) if spec.get("arch") == "resnet_cifar" else spec

    def validate(self, model_name: str, spec: dict) -> None:
        if spec.get("arch") not in ("resnet_cifar", "resnet_imagenet", "resnet_tas"):
            raise PruneLabError(
                f"method=tas does not support model={model_name} (arch {spec.get('arch')!r}); "
                "supported: " + "; ".join(SUPPORTED)
            )
        tas_dense_spec(spec)

    def distillation(self) -> dict[str, float] | None:
        return {"alpha": self.kd_alpha, "temperature": self.kd_temperature} if self.kd else None

    # ------------------------------------------------------------------------------ search
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        if ctx.data is None:
            raise PruneLabError("TAS searches on training data: PruneContext.data is required")
        device = ctx.device
        reference = tas_dense_spec(model.spec)  # the full-width net of the TAS family
        flops_dense = count_macs(build(reference), ctx.input_shape)
        torch.manual_seed(ctx.seed)
        net = TASSupernet(reference, self.depth_mode, image_size=ctx.input_shape[-1]).to(device)
        if self.init_from_dense:
            init_from_dense(net, model)
        search = self.cached_search(net, flops_dense, ctx)
        widths, depths = net.genotype()
        moves = 0
        if self.fit_budget:
            widths, depths, moves = fit_budget(net, widths, depths, flops_dense, 1.0 - self.ratio, self.flop_tolerance)
        pruned = extract(net, widths, depths)
        flops_pruned = count_macs(pruned, ctx.input_shape)
        if ctx.work_dir is not None:  # the run's picture: the net that is trained, the argmax behind it
            draw_safely(
                plot_distributions,
                search["record"],
                Path(ctx.work_dir) / "tas_widths.png",
                widths_title(
                    self.search_epochs,
                    self.ratio,
                    search["flops_ratio_argmax"],
                    100.0 * (1 - flops_pruned / flops_dense),
                ),
                pruned.spec,
                say=ctx.say,
                what="tas_widths.png",
            )
        extras = {
            "requested_flops_reduction": 100.0 * self.ratio,
            "achieved_flops_reduction": 100.0 * (1 - flops_pruned / flops_dense),
            "flops_dense_reference": flops_dense,  # what the reductions are measured against
            "search_argmax_flops_reduction": 100.0 * (1 - search["flops_ratio_argmax"]),
            "budget_fit_moves": moves,
            "search_epochs": self.search_epochs,
            "search_s": search["wall_s"],
            "final_tau": net.tau,
            "search_cached": search.get("cached", False),
            "chosen_spec": pruned.spec,
            "kd": self.distillation(),
        }
        # the search's cost: every epoch runs the supernet (at most the full-width net's MACs per
        # sample: an upper bound, as the candidates are mixed) over both halves of the training set
        own_stage = {
            "name": "search",
            "epochs": self.search_epochs,
            "wall_s": search["wall_s"],
            "samples": self.search_epochs * len(ctx.data.train),
            "macs_per_sample": flops_dense,
            "cached": bool(search.get("cached")),
        }
        return PruneResult(model=pruned, spec=pruned.spec, extras=extras, own_stage=own_stage)

    def search_identity(self, ctx: PruneContext) -> dict[str, Any]:
        """What the search result depends on: the dense baseline (its cache id covers data,
        subset, model, schedule and seed), the input shape and every search setting. The
        transfer settings (kd, kd_alpha, kd_temperature) and fit_budget are not in it, so the
        KD ablation and the finetune / scratch policies of one row share one search."""
        transfer = {"kd", "kd_alpha", "kd_temperature", "fit_budget"}
        settings = {k: v for k, v in vars(self).items() if k not in transfer}
        return {"source": ctx.source_id, "seed": ctx.seed, "input_shape": list(ctx.input_shape), "settings": settings}

    def cached_search(self, net: TASSupernet, flops_dense: int, ctx: PruneContext) -> dict:
        """Run the search, or load it from ``ctx.cache_dir/tas_searches/`` when the same search
        (``search_identity``) has finished before; a file lock makes concurrent sweep jobs wait
        for one searcher. The distributions and their plot are copied into the run directory."""
        if ctx.cache_dir is None or ctx.source_id is None:  # no cache: search in the run dir
            weight_half, arch_half = ctx.data.split_train(self.split, ctx.seed)
            return self.search(
                net, weight_half, arch_half, flops_dense, ctx, Path(ctx.work_dir) if ctx.work_dir is not None else None
            )
        work = Path(ctx.cache_dir) / "tas_searches" / f"{ctx.source_id}-{digest(self.search_identity(ctx))}"

        def load(entry: Path) -> dict:
            state = load_checkpoint(entry / "search.pt", map_location=ctx.device)
            net.load_state_dict(state["supernet"])
            net.tau = state["tau"]
            return {**state["result"], "cached": entry.name}

        def run_search(entry: Path) -> dict:
            weight_half, arch_half = ctx.data.split_train(self.split, ctx.seed)
            result = self.search(net, weight_half, arch_half, flops_dense, ctx, entry)
            save_checkpoint(
                entry / "search.pt", {"supernet": net.state_dict(), "tau": float(net.tau), "result": result}
            )
            (entry / "ckpt_tas_search.pt").unlink(missing_ok=True)
            return {**result, "cached": False}

        result, hit = cached(
            work, load=load, build=run_search, files=("search.pt",), say=ctx.say, what="cached TAS search"
        )
        if hit and not ctx.quiet:
            ctx.say(f"TAS search: cached ({work})")
        if ctx.work_dir is not None:
            for name in ("tas_search.json", "tas_widths.png"):
                if (work / name).exists():
                    atomic_copy(work / name, Path(ctx.work_dir) / name)  # never through a link
        return result

    def search(
        self, net: TASSupernet, weight_half, arch_half, flops_dense: int, ctx: PruneContext, work: Path | None
    ) -> dict:
        """The alternating weight / architecture search, checkpointed every epoch in ``work``
        (resumed when a checkpoint is there); writes the per-epoch distributions
        (``tas_search.json``) and their plot (``tas_widths.png``) there."""
        w_opt = torch.optim.SGD(
            net.weight_parameters(),
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
        )
        a_opt = torch.optim.Adam(
            net.arch_parameters(), lr=self.arch_lr, betas=self.arch_betas, weight_decay=self.arch_weight_decay
        )
        ckpt = work / "ckpt_tas_search.pt" if work else None
        history: list[dict] = []
        start, wall_before = 0, 0.0
        state = load_or_quarantine(ckpt, ctx.say, map_location=ctx.device, what="search checkpoint") if ckpt else None
        if state is not None:
            net.load_state_dict(state["supernet"])
            w_opt.load_state_dict(state["w_opt"])
            a_opt.load_state_dict(state["a_opt"])
            history, start, wall_before = state["history"], state["epoch"], state["wall_s"]
            rng.restore(state, ctx.say, what=f"TAS search checkpoint {ckpt}")
        target = 1.0 - self.ratio  # kept fraction of the dense FLOPs
        steps = math.ceil(min(len(weight_half.train), len(arch_half.train)) / self.batch_size)  # zip: the shorter
        progress = StageProgress(
            "TAS search",
            epochs=self.search_epochs,
            steps_per_epoch=steps,
            quiet=ctx.quiet,
            start_epoch=start,
            say=ctx.say,
        )
        t0 = time.perf_counter()
        with progress:
            for epoch in range(start, self.search_epochs):
                t_epoch = time.perf_counter()
                tau = net.set_tau(self.tau_max, self.tau_min, epoch / max(1, self.search_epochs - 1))
                lr = 0.5 * self.lr * (1 + math.cos(math.pi * epoch / self.search_epochs))
                for group in w_opt.param_groups:
                    group["lr"] = lr
                net.generator = torch.Generator().manual_seed(ctx.seed * 100_003 + epoch)
                gen_w = torch.Generator().manual_seed(ctx.seed * 7919 + 2 * epoch)
                gen_a = torch.Generator().manual_seed(ctx.seed * 7919 + 2 * epoch + 1)
                sums = {"w_loss": 0.0, "w_correct": 0, "a_ce": 0.0, "a_cost": 0.0, "seen": 0, "steps": 0}
                net.train()
                for (xw, yw), (xa, ya) in zip(
                    weight_half.train_batches(self.batch_size, gen_w),
                    arch_half.train_batches(self.batch_size, gen_a),
                    strict=False,
                ):
                    logits = net(xw)  # (N, K)
                    loss = F.cross_entropy(logits, yw)
                    w_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    w_opt.step()
                    logits_a = net(xa)  # (N, K)
                    ce = F.cross_entropy(logits_a, ya)
                    expected = net.expected_flops() / flops_dense
                    with torch.no_grad():
                        current = float(net.expected_flops(*net.one_hot(*net.genotype()))) / flops_dense
                    cost = flop_loss(expected, current, target, self.flop_tolerance)
                    arch_loss = ce if cost is None else ce + self.flop_weight * cost
                    a_opt.zero_grad(set_to_none=True)
                    arch_loss.backward()
                    a_opt.step()
                    sums["w_loss"] += loss.item() * len(yw)
                    sums["w_correct"] += int((logits.argmax(1) == yw).sum())
                    sums["a_ce"] += ce.item() * len(yw)
                    sums["a_cost"] += 0.0 if cost is None else cost.item()
                    sums["seen"] += len(yw)
                    sums["steps"] += 1
                    progress.step()
                with torch.no_grad():
                    current = float(net.expected_flops(*net.one_hot(*net.genotype()))) / flops_dense
                    expected_now = float(net.expected_flops()) / flops_dense
                seen = max(1, sums["seen"])
                row = {
                    "epoch": epoch + 1,
                    "tau": round(tau, 5),
                    "lr": lr,
                    "weight_loss": sums["w_loss"] / seen,
                    "weight_top1": 100.0 * sums["w_correct"] / seen,
                    "arch_ce": sums["a_ce"] / seen,
                    "flop_cost_mean": sums["a_cost"] / max(1, sums["steps"]),
                    "flops_ratio_expected": expected_now,
                    "flops_ratio_argmax": current,
                    "target_flops_ratio": target,
                    "epoch_s": round(time.perf_counter() - t_epoch, 2),
                    **distribution_record(net),
                }
                history.append(row)
                progress.end_epoch(f"loss {row['weight_loss']:.3f} FLOPs kept {current:.3f} (target {target:.3f})")
                if not ctx.quiet:
                    ctx.say(
                        f"TAS search: epoch {epoch + 1}/{self.search_epochs} tau {tau:.3f} "
                        f"loss {row['weight_loss']:.3f} train {row['weight_top1']:.1f}% "
                        f"FLOPs kept: argmax {current:.3f} expected {expected_now:.3f} (target {target:.3f})"
                    )
                if ckpt is not None:
                    save_checkpoint(
                        ckpt,
                        {
                            "supernet": net.state_dict(),
                            "w_opt": w_opt.state_dict(),
                            "a_opt": a_opt.state_dict(),
                            "history": history,
                            "epoch": epoch + 1,
                            "wall_s": wall_before + time.perf_counter() - t0,
                            rng.RNG_KEY: rng.capture(),
                        },
                    )
                    write_json(
                        work / "tas_search.json", {"target_flops_ratio": target, "ratio": self.ratio, "epochs": history}
                    )
        record = distribution_record(net)
        current = float(net.expected_flops(*net.one_hot(*net.genotype()))) / flops_dense
        if work is not None:
            draw_safely(
                plot_distributions,
                record,
                work / "tas_widths.png",
                widths_title(self.search_epochs, self.ratio, current),
                say=ctx.say,
                what="tas_widths.png",
            )
        return {
            "record": record,
            "flops_ratio_argmax": current,
            "wall_s": round(wall_before + time.perf_counter() - t0, 2),
        }
