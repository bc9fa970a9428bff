"""Shared machinery of the reconstruction-based channel pruners (ThiNet, LASSO channel pruning).

Both methods look at the layer that *consumes* a channel group (the next conv, or a linear
layer) and ask how well its output is reconstructed from a subset of its input channels, on
activations sampled from training images. This module holds what they share:

* ``consumer_name`` / ``consumer_groups``: which module reads a group's channels;
* ``record_inputs``: one forward pass with hooks, keeping each consumer's input;
* ``draw_sites`` / ``windows_at``: sampled output positions and the input windows (the unfolded
  kernel patches) that produce them, so the same sites can be read from two networks
  (the dense one for the target, the one pruned so far for the inputs: layer-wise mode);
* ``site_contributions``: per-input-channel contributions z_c of every output at those sites
  (``sum_c z_c`` is the consumer's output without bias);
* ``refit_consumer``: least-squares refit of the consumer's weights on the kept channels
  (W' = argmin ||Y - X_keep W'||^2 over the unfolded windows);
* ``prune_by_reconstruction``: the one-shot / layer-wise driver; a method only supplies the
  channel selection rule and the weight update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.methods.base import Method, check_ratio
from pruning.models import ChannelGroup, channel_groups
from pruning.paper import method_variants
from pruning.progress import StageProgress
from pruning.surgery import shrink, spec_with_widths

MODES = ("oneshot", "layerwise")


def check_mode(mode: str, method: str) -> str:
    if mode not in MODES:
        raise PruneLabError(f"{method}: method.mode={mode!r} is not a mode; use method.mode=oneshot|layerwise")
    return mode


def consumer_weight(group: ChannelGroup) -> str:
    """The weight whose input dim (1) holds this group's channels."""
    names = [t for t, dim in group.members if dim == 1]
    if len(names) != 1:
        raise PruneLabError(f"group {group.name}: expected one consumer weight, found {names}")
    return names[0]


def consumer_name(group: ChannelGroup) -> str:
    """The module whose input channels are this group's channels (member with dim 1)."""
    return consumer_weight(group).rsplit(".", 1)[0]


def window_size(module: nn.Module, channels: int) -> int:
    """Inputs per channel in one output's receptive field: kh*kw for a conv; for a linear layer
    that reads a flattened (C, H, W) map (VGG's first FC) H*W, else 1."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise PruneLabError(f"reconstruction pruning supports ungrouped convs only (groups={module.groups})")
        return module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.Linear):
        if module.in_features % channels:
            raise PruneLabError(
                f"linear consumer with {module.in_features} inputs does not split into {channels} channels"
            )
        return module.in_features // channels
    raise PruneLabError(f"reconstruction pruning: unsupported consumer layer {type(module).__name__}")


@torch.no_grad()
def record_inputs(model: nn.Module, names: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model`` (in eval mode) once on ``images`` and keep the input of each named module."""
    modules = dict(model.named_modules())
    recorded: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:

        def hook(_m, inp, _out, name=name):
            recorded[name] = inp[0].detach()  # (N, C, H, W) for a conv, (N, F) for a linear layer

        hooks.append(modules[name].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return recorded


@dataclass
class Sites:
    """Sampled output positions of one consumer: image index and output location per sample."""

    rows: torch.Tensor  # (S,) image index
    locs: torch.Tensor  # (S,) flattened output location (0 for a linear layer)


def _out_hw(module: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def draw_sites(module: nn.Module, inputs: torch.Tensor, samples: int, generator: torch.Generator) -> Sites:
    """``samples`` random (image, output location) pairs for ``module`` applied to ``inputs``."""
    n = inputs.shape[0]
    rows = torch.randint(0, n, (samples,), generator=generator)
    if isinstance(module, nn.Conv2d):
        oh, ow = _out_hw(module, inputs.shape[2], inputs.shape[3])
        locs = torch.randint(0, oh * ow, (samples,), generator=generator)
    else:
        locs = torch.zeros(samples, dtype=torch.long)
    return Sites(rows, locs)


def windows_at(module: nn.Module, inputs: torch.Tensor, sites: Sites, channels: int) -> torch.Tensor:
    """The input windows producing the sampled outputs: (S, C, K), K = kh*kw (conv) or the
    per-channel input count of a linear layer. Ordered as F.unfold / the weight's flattening."""
    rows = sites.rows.to(inputs.device)
    if isinstance(module, nn.Linear):
        k = window_size(module, channels)
        return inputs[rows].reshape(len(rows), channels, k)  # (S, C, K)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    _, ow = _out_hw(module, inputs.shape[2], inputs.shape[3])
    padded = nn.functional.pad(inputs, (pw, pw, ph, ph))  # (N, C, H+2p, W+2p)
    locs = sites.locs.to(inputs.device)
    oy, ox = locs // ow, locs % ow  # (S,), (S,)
    ys = (oy * sh)[:, None] + torch.arange(kh, device=inputs.device) * dh  # (S, kh)
    xs = (ox * sw)[:, None] + torch.arange(kw, device=inputs.device) * dw  # (S, kw)
    patches = padded[rows[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # (S, kh, kw, C)
    return patches.permute(0, 3, 1, 2).reshape(len(rows), channels, kh * kw)  # (S, C, K)


def flat_weight(module: nn.Module, channels: int) -> torch.Tensor:
    """The consumer's weight as (O, C, K)."""
    return module.weight.detach().reshape(module.weight.shape[0], channels, -1)  # (O, C, K)


def site_contributions(windows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """z[s, o, c] = sum_k windows[s, c, k] * weight[o, c, k]: (S, O, C). Summed over c it is
    the consumer's output (without bias) at the sampled sites, for every output channel."""
    return torch.einsum("sck,ock->soc", windows.double(), weight.double())  # (S, O, C)


GRAM_LIMIT = 6144  # largest C*K for which the (C*K)^2 window Gram is formed (~300 MB in float64)


def window_gram(windows: torch.Tensor) -> torch.Tensor:
    """X'X of the flattened windows: (C*K, C*K), X = windows as (S, C*K)."""
    x = windows.double().flatten(1)  # (S, C*K)
    return x.T @ x


def contribution_gram(
    windows: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    xtx: torch.Tensor | None = None,
    max_outputs: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal equations of  min_beta ||Y - sum_c beta_c z_c||^2  over all sampled sites and all
    output channels: gram[c, d] = sum_{s,o} z[s,o,c] z[s,o,d]  (C, C) and
    corr[c] = sum_{s,o} z[s,o,c] Y[s,o]  (C,), with z[s,o,c] = sum_k x[s,c,k] w[o,c,k].

    Exact and cheap through  gram[c,d] = sum_{k,l} (X'X)[ck,dl] (W'W)[ck,dl]  while C*K is at most
    GRAM_LIMIT; beyond that (a linear layer reading a whole feature map) z is formed for a random
    subset of ``max_outputs`` output channels."""
    s, c, k = windows.shape
    w = weight.double()  # (O, C, K)
    y = target.double()  # (S, O)
    if c * k > GRAM_LIMIT:
        picked = torch.randperm(w.shape[0], generator=generator)[:max_outputs]
        w, y = w[picked], y[:, picked]
        gram = torch.zeros(c, c, dtype=torch.float64)
        corr = torch.zeros(c, dtype=torch.float64)
        for start in range(0, s, 16):
            z = site_contributions(windows[start : start + 16], w)  # (s', O', C)
            gram += torch.einsum("soc,sod->cd", z, z)
            corr += torch.einsum("soc,so->c", z, y[start : start + 16])
        return gram, corr
    xtx = window_gram(windows) if xtx is None else xtx  # (C*K, C*K)
    wtw = w.flatten(1).T @ w.flatten(1)  # (C*K, C*K)
    gram = (xtx * wtw).view(c, k, c, k).sum(dim=(1, 3))  # (C, C)
    yw = torch.einsum("so,ock->sck", y, w)  # (S, C, K)
    corr = (windows.double() * yw).sum(dim=(0, 2))  # (C,)
    return gram, corr


def refit_consumer(
    windows: torch.Tensor, target: torch.Tensor, kept: list[int], ridge: float = 1e-6, xtx: torch.Tensor | None = None
) -> torch.Tensor:
    """Least-squares weights of the consumer on the kept channels: argmin ||Y - X_keep W'||^2.

    windows: (S, C, K) inputs at the sampled sites; target: (S, O) the outputs to reproduce;
    xtx: the full window Gram if already computed. Returns W' shaped (O, C_keep, K), channels in
    the order of ``kept``. A tiny ridge (relative to the mean diagonal of X'X) keeps the normal
    equations solvable when S < C_keep*K or channels are collinear."""
    s, c, k = windows.shape
    cols = (torch.as_tensor(kept)[:, None] * k + torch.arange(k)[None, :]).flatten()  # (C_keep*K,)
    x = windows[:, kept, :].double().flatten(1)  # (S, C_keep*K)
    gram = x.T @ x if xtx is None else xtx[cols][:, cols]  # (C_keep*K, C_keep*K)
    gram = gram + torch.eye(gram.shape[0], dtype=gram.dtype) * (ridge * gram.diagonal().mean() + 1e-12)
    solution = torch.linalg.solve(gram, x.T @ target.double())  # (C_keep*K, O)
    return solution.T.reshape(target.shape[1], len(kept), k)  # (O, C_keep, K)


# Selection rule: (windows (S, C, K) inputs at the sampled sites in the current network, consumer
# weight (O, C, K), target (S, O) outputs to reconstruct, number of channels to keep) ->
# (kept channel indices, new consumer weight (O, C_keep, K) in the order of the kept list, or
# None to keep the sliced weights).
Selector = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[list[int], torch.Tensor | None]]


def group_order(model: nn.Module, groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """Groups sorted by the position of their consumer in the module tree (forward order for
    the zoo's sequential nets)."""
    position = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(groups, key=lambda g: position[consumer_name(g)])


def _write_consumer(model: nn.Module, group: ChannelGroup, weight: torch.Tensor) -> None:
    param = dict(model.named_parameters())[consumer_weight(group)]
    param.copy_(weight.to(param.dtype).reshape(param.shape))


@torch.no_grad()
def prune_by_reconstruction(
    model: nn.Module,
    widths: dict[str, int],
    images: torch.Tensor,
    samples: int,
    generator: torch.Generator,
    select: Selector,
    mode: str = "oneshot",
    quiet: bool = True,
    say: Callable[[str], None] | None = None,
    name: str = "reconstruction",
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Prune every group named in ``widths`` to that many channels.

    oneshot:   all groups from the dense network's activations; target = the dense output.
    layerwise: groups in forward order; each group's inputs come from the network pruned so far
               while the target stays the dense network's output, so the refit of each layer
               also absorbs the error accumulated by the layers pruned before it.
    Returns the pruned network and the kept indices (in the dense numbering) per group. Unless
    ``quiet``, a progress bar over the groups (``name``; ``say``: its lines in a log)."""
    check_mode(mode, "reconstruction")
    by_name = {g.name: g for g in channel_groups(model.spec)}
    groups = group_order(model, [by_name[n] for n in widths if widths[n] < by_name[n].size])
    dense_modules = dict(model.named_modules())
    dense_inputs = record_inputs(model, [consumer_name(g) for g in groups], images)
    keep: dict[str, list[int]] = {}
    new_weights: dict[str, torch.Tensor] = {}
    current = model
    progress = StageProgress(f"{name} ({mode})", steps_per_epoch=len(groups), quiet=quiet, say=say, unit="layers")
    with progress:
        for g in groups:
            consumer = consumer_name(g)
            dense_module = dense_modules[consumer]
            sites = draw_sites(dense_module, dense_inputs[consumer], samples, generator)
            dense_windows = windows_at(dense_module, dense_inputs[consumer], sites, g.size)  # (S, C, K)
            weight = flat_weight(dense_module, g.size)  # (O, C, K)
            target = torch.einsum("sck,ock->so", dense_windows.double(), weight.double())  # (S, O)
            if mode == "layerwise" and current is not model:
                cur_inputs = record_inputs(current, [consumer], images)[consumer]
                windows = windows_at(dict(current.named_modules())[consumer], cur_inputs, sites, g.size)  # (S, C, K)
            else:
                windows = dense_windows
            kept, new_weight = select(windows, weight, target, widths[g.name])
            keep[g.name] = sorted(kept)
            if new_weight is not None:
                order = torch.as_tensor(kept).argsort()
                new_weights[g.name] = new_weight[:, order]  # columns in sorted-kept order
            if mode == "layerwise":
                current = shrink(current, {g.name: keep[g.name]})
                if g.name in new_weights:
                    _write_consumer(current, _group_in(current, g.name), new_weights[g.name])
            progress.step()
    if mode == "oneshot":
        current = shrink(model, keep)
        small_groups = {g.name: g for g in channel_groups(current.spec)}
        produced_by = {g.producer: g.name for g in small_groups.values()}
        for name, weight in new_weights.items():
            out_group = produced_by.get(consumer_weight(small_groups[name]))
            if out_group in keep:  # the consumer's own filters were pruned too (a VGG chain)
                weight = weight[torch.as_tensor(keep[out_group])]  # (O_keep, C_keep, K)
            _write_consumer(current, small_groups[name], weight)
    return current, keep


def _group_in(model: nn.Module, name: str) -> ChannelGroup:
    return {g.name: g for g in channel_groups(model.spec)}[name]


class ReconstructionMethod(Method):
    """What ThiNet and LASSO channel pruning share: a uniform ``ratio`` or a named ``variant``
    (``variants``: name -> definition with its ``arch`` and ``depth``; default: the method's
    conf/paper/<name>.yaml), the mode, the sampling sizes, and the pruned spec known before data
    is seen (``target(spec) -> (widths, pruned spec)``)."""

    display_name = "reconstruction"  # how its progress bar names it

    def __init__(
        self,
        ratio: float | None,
        variant: str | None,
        mode: str,
        samples: int,
        images: int,
        variants: Mapping[str, Any] | None = None,
    ):
        self.variants = method_variants(self.name) if variants is None else variants
        self.variant = None if variant in (None, "", "null") else str(variant)
        if self.variant is not None and self.variant not in self.variants:
            raise PruneLabError(
                f"{self.name}: method.variant={self.variant!r} is unknown; use one of "
                f"{', '.join(self.variants)} or method.variant=null with method.ratio"
            )
        self.ratio = None if self.variant is not None else check_ratio(ratio)
        self.mode = check_mode(str(mode), self.name)
        self.samples, self.images = int(samples), int(images)
        if self.samples < 1 or self.images < 1:
            raise PruneLabError(f"{self.name}: method.samples={samples} and method.images={images} must be >= 1")
        self._generator: torch.Generator | None = None

    def key(self) -> dict[str, Any]:
        return {"variant": self.variant, "ratio": self.ratio}

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def validate(self, model_name: str, spec: dict) -> None:
        if not channel_groups(spec):
            raise PruneLabError(f"{self.name}: {model_name} has no prunable channel groups")
        if self.variant is not None:
            self.target(spec)

    def target(self, spec: dict) -> tuple[dict[str, int], dict]:
        """(kept channels per group, pruned spec); the uniform-ratio case here."""
        widths = {g.name: max(1, int(g.size * (1 - self.ratio))) for g in channel_groups(spec)}
        return widths, spec_with_widths(spec, widths)

    def architecture(self, spec: dict) -> dict | None:
        """The pruned spec (fixed by the ratio / variant; which channels survive needs data)."""
        return self.target(spec)[1]

    def progress_args(self, ctx: Any) -> dict[str, Any]:
        """``prune_by_reconstruction``'s display: the run's quiet and console."""
        return {"quiet": ctx.quiet, "say": ctx.say, "name": self.display_name}

    def sample(self, ctx: Any) -> torch.Tensor:
        """The training images activations are sampled on; seeds the method's generator."""
        if ctx.data is None:
            raise PruneLabError(f"{self.name} needs training data to sample activations (not available in a dry run)")
        self._generator = torch.Generator().manual_seed(ctx.seed)
        return ctx.data.sample_inputs(self.images, self._generator)  # (N, C, H, W)
