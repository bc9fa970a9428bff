"""ThiNet: channel selection by next-layer reconstruction.

Luo, Wu, Lin. "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression",
ICCV 2017 (a pruned-model source in "Rethinking the Value of Network Pruning").

1. Run the dense network on sampled training images and record, for every channel group,
   the input of the layer that consumes those channels (the next conv, or the classifier).
2. At sampled output positions, split each consumer output into per-input-channel
   contributions z_c (the conv's sum over the kernel window of channel c alone).
3. Greedily pick the channels to remove: each step adds the channel whose removal keeps
   ||sum of the removed contributions||^2 smallest, until the group's quota is removed.
4. Least squares: rescale the kept channels' consumer weights by w = argmin ||y - Z_keep w||^2.
5. One shot over all groups from the dense activations (the paper prunes layer by layer
   with fine-tuning in between); the pipeline then fine-tunes or retrains from scratch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.methods.base import Method, PruneContext, PruneResult, check_ratio
from pruning.models import ChannelGroup, channel_groups
from pruning.surgery import shrink


def _consumer(group: ChannelGroup) -> str:
    """The module whose input channels are this group's channels (member with dim 1)."""
    (name,) = [t for t, dim in group.members if dim == 1]
    return name.rsplit(".", 1)[0]


def contributions(module: nn.Module, inputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Per-input-channel contributions to ``samples`` random outputs: (samples, C_in)."""
    if isinstance(module, nn.Linear):  # inputs (N, C)
        n, c = inputs.shape
        rows = torch.randint(0, n, (samples,), generator=generator)
        outs = torch.randint(0, module.out_features, (samples,), generator=generator)
        return inputs[rows] * module.weight[outs]  # (S, C)
    # conv: unfold the input into kernel windows, (N, C*kh*kw, L)
    kh, kw = module.kernel_size
    cols = F.unfold(inputs, (kh, kw), padding=module.padding, stride=module.stride, dilation=module.dilation)
    n, _, positions = cols.shape
    c = inputs.shape[1]
    rows = torch.randint(0, n, (samples,), generator=generator)
    locs = torch.randint(0, positions, (samples,), generator=generator)
    outs = torch.randint(0, module.out_channels, (samples,), generator=generator)
    windows = cols[rows, :, locs].view(samples, c, kh * kw)  # (S, C, kh*kw)
    weights = module.weight[outs].view(samples, c, kh * kw)  # (S, C, kh*kw)
    return (windows * weights).sum(-1)  # (S, C)


def greedy_remove(z: torch.Tensor, n_remove: int) -> list[int]:
    """Channels whose summed contribution stays smallest (ThiNet's greedy step)."""
    removed: list[int] = []
    acc = torch.zeros(z.shape[0], dtype=z.dtype)
    available = torch.ones(z.shape[1], dtype=torch.bool)
    for _ in range(n_remove):
        cost = ((acc[:, None] + z) ** 2).sum(0)  # (C,)
        cost[~available] = float("inf")
        best = int(cost.argmin())
        removed.append(best)
        available[best] = False
        acc += z[:, best]
    return removed


class ThiNet(Method):
    name = "thinet"

    def __init__(self, ratio: float = 0.5, samples: int = 4096, images: int = 256, rescale: bool = True, **_: Any):
        self.ratio = check_ratio(ratio)
        self.samples, self.images, self.rescale = int(samples), int(images), bool(rescale)

    def key(self) -> dict[str, Any]:
        return {"variant": None, "ratio": self.ratio}

    def validate(self, model_name: str, spec: dict) -> None:
        if not channel_groups(spec):
            raise PruneLabError(f"thinet: {model_name} has no prunable channel groups")

    @torch.no_grad()
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        if ctx.data is None:
            raise PruneLabError("thinet needs training data to sample activations (not available in a dry run)")
        groups = channel_groups(model.spec)
        modules = dict(model.named_modules())
        recorded: dict[str, torch.Tensor] = {}
        hooks = []
        for g in groups:
            name = _consumer(g)

            def hook(_m, inp, _out, name=name):
                recorded[name] = inp[0]  # (N, C, H, W) for a conv, (N, C) for the classifier

            hooks.append(modules[name].register_forward_hook(hook))
        generator = torch.Generator().manual_seed(ctx.seed)
        inputs = ctx.data.sample_inputs(self.images, generator)
        was_training = model.training
        model.eval()
        try:
            model(inputs)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)

        keep, scales = {}, {}
        for g in groups:
            name = _consumer(g)
            z = contributions(modules[name], recorded[name].float(), self.samples, generator).cpu().double()
            n_keep = max(1, int(g.size * (1 - self.ratio)))
            removed = set(greedy_remove(z, g.size - n_keep))
            kept = [c for c in range(g.size) if c not in removed]
            keep[g.name] = kept
            if self.rescale:
                target = z.sum(1, keepdim=True)  # (S, 1)
                w = torch.linalg.lstsq(z[:, kept], target).solution.flatten()
                scales[g.name] = w.float()
        small = shrink(model, keep)
        if self.rescale:
            small_params = dict(small.named_parameters())
            for g in groups:
                (weight_name,) = [t for t, dim in g.members if dim == 1]
                w = small_params[weight_name]
                shape = [1, -1] + [1] * (w.dim() - 2)
                w.mul_(scales[g.name].to(w.device).view(shape))
        return PruneResult(model=small, spec=small.spec, keep=keep,
                           extras={"samples": self.samples, "images": self.images, "rescaled": self.rescale})
