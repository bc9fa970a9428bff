"""The TAS search space: a ResNet supernet with a learnable distribution over the width of every
conv and over the depth of every stage.

Dong & Yang, "Network Pruning via Transformable Architecture Search", NeurIPS 2019, section 3.

* Width: each conv keeps the dense weight; candidate widths are ``int(C * r)`` for r in
  0.3..1.0 (deduplicated). A candidate of width c uses the first c filters (prefix sharing) and
  its own BN. Per forward, Gumbel-softmax with temperature tau samples two candidates; their
  outputs are aligned to the larger width by channel-wise interpolation (``cwi``) and summed
  with the two renormalised sampled probabilities.
* Depth: per stage, candidate block counts (``depth_choices``); every block runs and the stage
  output mixes the feature maps after *all* candidate depths, aligned by CWI to the widest and
  weighted by their Gumbel-softmax probabilities at temperature tau (the official
  ``select2withP(depth_attentions, tau, just_prob=True)`` in SearchCifarResNet.search_forward).
* Shortcuts as the official SearchCifarResNet (``shortcut: tas``): at stride 2 a 2x2 average
  pool then a 1x1 conv; at a stride-1 width change a 1x1 conv. Both carry per-candidate BNs in
  the search (the official ``search_forward`` applies them whatever ``has_bn`` says), while the
  inference net's stride-2 shortcut has no BN (``resnet_tas``). ``shortcut: projection``
  (ImageNet): a strided 1x1 conv + BN, as torchvision.
* Cost: ``expected_flops()`` is differentiable in the architecture logits: every width is a
  distribution over integers, a conv costs k*k*H*W*E[in]*E[out], a block counts with the
  probability that the sampled depth reaches it, and a stride-1 projection shortcut counts with
  the probability that its input and output widths differ (the inference net has a projection
  exactly there). For a one-hot distribution it equals ``count_macs`` of the built net. Two
  details differ from the official ``search_forward`` cost, which (a) leaves that stride-1
  projection out (only its genotype count ``get_flop`` has it) and (b) takes a stage's output
  width as its *last* block's, not the depth mixture's; the reach probability (softmax, no
  Gumbel noise, P(depth >= block)) is the official one.
* ``genotype()``: the most probable width/depth, as a ``resnet_tas`` spec (``to_spec``).

Weights of the supernet are the method's business (pruning/methods/tas.py trains them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models.resnet_tas import init_tas, shortcut_style

WIDTH_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def width_choices(channels: int) -> tuple[int, ...]:
    """Candidate widths of a conv with ``channels`` filters: sorted distinct int(C*r) >= 1."""
    return tuple(sorted({max(1, int(channels * r)) for r in WIDTH_RATIOS}))


def depth_choices(blocks: int, mode: str = "odd") -> tuple[int, ...]:
    """Candidate block counts of a stage of ``blocks`` blocks.

    ``odd``: 1..n for n <= 3, else 1, 3, 5, ... and n (the CIFAR shape-search model of the
    official code; its released ResNet-56 shape has 5 blocks per stage); ``thirds``: n//3, 2n//3, n (deduplicated).
    """
    if blocks < 1:
        raise PruneLabError(f"a stage needs at least one block, got {blocks}")
    if mode == "odd":
        if blocks <= 3:
            return tuple(range(1, blocks + 1))
        choices = list(range(1, blocks + 1, 2))
        if choices[-1] != blocks:
            choices.append(blocks)
        return tuple(choices)
    if mode == "thirds":
        return tuple(sorted({max(1, blocks // 3), max(1, 2 * blocks // 3), blocks}))
    raise PruneLabError(f"method.depth_choices={mode!r}: use odd or thirds")


def cwi(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Channel-wise interpolation: resize the channel axis of (N, C, H, W) to ``channels`` by
    adaptive average pooling over channels (TAS's CWI); identity when C == channels."""
    if x.shape[1] == channels:
        return x
    n, _, h, w = x.shape
    return F.adaptive_avg_pool3d(x.unsqueeze(1), (channels, h, w)).squeeze(1)  # (N, channels, H, W)


def gumbel_select(
    logits: torch.Tensor, tau: float, count: int = 2, generator: torch.Generator | None = None
) -> tuple[list[int], torch.Tensor]:
    """Sample ``count`` distinct candidates from Gumbel-perturbed logits at temperature ``tau``;
    return their indices and their probabilities renormalised among themselves (differentiable
    in ``logits``)."""
    count = min(count, logits.numel())
    uniform = torch.rand(logits.shape, generator=generator).to(logits.device).clamp_(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(uniform))  # (K,)
    perturbed = (F.log_softmax(logits, dim=0) + gumbel) / tau  # (K,)
    probs = F.softmax(perturbed, dim=0).detach()
    index = torch.multinomial(probs.cpu() + 1e-7, count, replacement=False, generator=generator)
    weights = F.softmax(perturbed[index.to(logits.device)], dim=0)  # (count,)
    return index.tolist(), weights


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel-softmax probabilities over *all* candidates: softmax((log_softmax(logits) + g) / tau),
    differentiable in ``logits`` (the official ``select2withP(..., just_prob=True)``)."""
    uniform = torch.rand(logits.shape, generator=generator).to(logits.device).clamp_(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(uniform))  # (K,)
    return F.softmax((F.log_softmax(logits, dim=0) + gumbel) / tau, dim=0)  # (K,)


@dataclass
class WidthDist:
    """A distribution over integer widths (values and probabilities, tensors)."""

    values: torch.Tensor
    probs: torch.Tensor

    def mean(self) -> torch.Tensor:
        return (self.values * self.probs).sum()

    @staticmethod
    def fixed(width: int, like: torch.Tensor) -> WidthDist:
        return WidthDist(torch.tensor([float(width)], device=like.device), torch.ones(1, device=like.device))

    @staticmethod
    def mixture(parts: list[tuple[torch.Tensor, WidthDist]]) -> WidthDist:
        return WidthDist(torch.cat([d.values for _, d in parts]), torch.cat([w * d.probs for w, d in parts]))


def expected_product_if_equal(a: WidthDist, b: WidthDist) -> torch.Tensor:
    """E[a * b * 1{a == b}] for independent a, b."""
    same = (a.values[:, None] == b.values[None, :]).float()  # (Ka, Kb)
    return (a.probs[:, None] * b.probs[None, :] * same * a.values[:, None] * b.values[None, :]).sum()


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class SearchConv(nn.Module):
    """A conv whose output width is one of ``choices``: shared prefix filters, one BN per
    candidate, two sampled candidates mixed by CWI."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, relu: bool, avg: bool = False):
        super().__init__()
        self.avg = bool(avg)  # 2x2 average pool before the conv (TAS's down-sampling shortcut)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False)
        self.choices = width_choices(out_ch)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in self.choices)
        self.relu = relu

    def forward(self, x: torch.Tensor, index: list[int], probs: torch.Tensor) -> torch.Tensor:
        if self.avg:
            x = F.avg_pool2d(x, 2)  # (N, C, H/2, W/2)
        widths = [self.choices[i] for i in index]
        top = max(widths)
        weight = self.conv.weight[:top, : x.shape[1]]  # prefix filters, the inputs present
        full = F.conv2d(x, weight, None, self.conv.stride, self.conv.padding)  # (N, top, H', W')
        out = 0
        for i, width, p in zip(index, widths, probs, strict=True):
            y = self.bns[i](full[:, :width])  # (N, width, H', W')
            out = out + p * cwi(y, top)
        return F.relu(out) if self.relu else out


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b over the common channel prefix; the wider tensor's extra channels pass through."""
    if a.shape[1] < b.shape[1]:
        a, b = b, a
    if a.shape[1] == b.shape[1]:
        return a + b
    return torch.cat([a[:, : b.shape[1]] + b, a[:, b.shape[1] :]], dim=1)  # (N, Ca, H, W)


class SearchBlock(nn.Module):
    def __init__(self, kind: str, in_ch: int, widths: list[int], stride: int, shortcut: str = "projection"):
        super().__init__()
        self.kind, self.stride = kind, stride
        if kind == "basic":
            layout = [(in_ch, widths[0], 3, stride), (widths[0], widths[1], 3, 1)]
        else:
            layout = [(in_ch, widths[0], 1, 1), (widths[0], widths[1], 3, stride), (widths[1], widths[2], 1, 1)]
        self.layout = layout
        last = len(layout) - 1
        self.convs = nn.ModuleList(SearchConv(i, o, k, s, relu=j < last) for j, (i, o, k, s) in enumerate(layout))
        # a projection in the supernet where the dense net has one; elsewhere the residual is
        # added over the common channels (the inference net then gets a fresh projection)
        self.shortcut = None
        if stride != 1 or in_ch != widths[-1]:
            avg = shortcut == "tas" and stride != 1  # TAS CIFAR: avg-pool 2x2, then a 1x1 conv
            self.shortcut = SearchConv(in_ch, widths[-1], 1, 1 if avg else stride, relu=False, avg=avg)

    def forward(self, x: torch.Tensor, picks: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor:
        out = x
        for conv, (index, probs) in zip(self.convs, picks, strict=True):
            out = conv(out, index, probs)
        residual = x if self.shortcut is None else self.shortcut(x, *picks[-1])
        return F.relu(add_padded(out, residual))


class TASSupernet(nn.Module):
    """Supernet over a ``resnet_tas`` dense spec (``resnet_tas.default_spec`` layout)."""

    def __init__(self, dense_spec: dict, depth_mode: str = "odd", image_size: int = 32):
        super().__init__()
        self.dense_spec, self.image_size = dense_spec, image_size
        self.kind, self.stem_type = dense_spec["block"], dense_spec["stem_type"]
        in_ch = dense_spec["in_channels"]
        stem_kernel, stem_stride = (3, 1) if self.stem_type == "cifar" else (7, 2)
        self.stem = SearchConv(in_ch, dense_spec["stem"], stem_kernel, stem_stride, relu=True)
        self.stages = nn.ModuleList()
        self.depths: list[tuple[int, ...]] = []
        in_ch = dense_spec["stem"]
        for stage in dense_spec["stages"]:
            blocks = nn.ModuleList()
            for b, widths in enumerate(stage["blocks"]):
                blocks.append(
                    SearchBlock(
                        self.kind, in_ch, list(widths), stage["stride"] if b == 0 else 1, shortcut_style(dense_spec)
                    )
                )
                in_ch = widths[-1]
            self.stages.append(blocks)
            self.depths.append(depth_choices(len(stage["blocks"]), depth_mode))
        self.fc = nn.Linear(in_ch, dense_spec["num_classes"])
        self.searched = [self.stem] + [c for stage in self.stages for blk in stage for c in blk.convs]
        self.width_logits = nn.ParameterList(nn.Parameter(1e-2 * torch.randn(len(c.choices))) for c in self.searched)
        self.depth_logits = nn.ParameterList(nn.Parameter(1e-2 * torch.randn(len(d))) for d in self.depths)
        self.tau = 1.0
        self.generator: torch.Generator | None = None  # Gumbel noise source (seeded per epoch)
        init_tas(self)  # the official initialize_resnet (arch logits keep N(0, 0.01))

    # ----------------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.width_logits, *self.depth_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def layer_names(self) -> list[str]:
        names = ["stem"]
        for s, stage in enumerate(self.stages):
            for b, blk in enumerate(stage):
                names += [f"stages.{s}.{b}.conv{k}" for k in range(len(blk.convs))]
        return names

    # ----------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        picks = [gumbel_select(logits, self.tau, generator=self.generator) for logits in self.width_logits]
        x = self.stem(x, *picks[0])  # (N, C0, H, W)
        if self.stem_type == "imagenet":
            x = F.max_pool2d(x, 3, 2, 1)
        at = 1
        for stage, choices, logits in zip(self.stages, self.depths, self.depth_logits, strict=True):
            probs = gumbel_softmax(logits, self.tau, generator=self.generator)  # (D,) over all depths
            ends = []
            for b, blk in enumerate(stage):  # every block runs; each candidate depth is a prefix
                x = blk(x, picks[at : at + len(blk.convs)])
                if b + 1 in choices:
                    ends.append((probs[choices.index(b + 1)], x))
                at += len(blk.convs)
            top = max(e.shape[1] for _, e in ends)
            x = sum(p * cwi(e, top) for p, e in ends)  # (N, top, H', W'): all depths, weighted
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return F.linear(x, self.fc.weight[:, : x.shape[1]], self.fc.bias)

    # ----------------------------------------------------------------------- cost
    def width_probs(self) -> list[torch.Tensor]:
        return [F.softmax(p, dim=0) for p in self.width_logits]

    def depth_probs(self) -> list[torch.Tensor]:
        return [F.softmax(p, dim=0) for p in self.depth_logits]

    def expected_flops(
        self, width_probs: list[torch.Tensor] | None = None, depth_probs: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Expected MACs of the sampled net (conv + linear), differentiable in the logits.
        Pass one-hot ``width_probs``/``depth_probs`` to cost a discrete architecture."""
        width_probs = self.width_probs() if width_probs is None else width_probs
        depth_probs = self.depth_probs() if depth_probs is None else depth_probs
        ref = self.width_logits[0]
        dists = [
            WidthDist(torch.tensor(c.choices, dtype=torch.float32, device=ref.device), p)
            for c, p in zip(self.searched, width_probs, strict=True)
        ]
        size = self.image_size
        k, s = (3, 1) if self.stem_type == "cifar" else (7, 2)
        size = conv_out(size, k, s, k // 2)
        flops = size * size * k * k * self.dense_spec["in_channels"] * dists[0].mean()
        if self.stem_type == "imagenet":
            size = conv_out(size, 3, 2, 1)
        x, at = dists[0], 1
        for stage, choices, q in zip(self.stages, self.depths, depth_probs, strict=True):
            ends = []
            for b, blk in enumerate(stage):
                reach = sum(q[i] for i, d in enumerate(choices) if d > b)  # P(depth > b)
                cost, prev = 0, x
                for conv, (_, _, kern, stride) in zip(dists[at : at + len(blk.convs)], blk.layout, strict=True):
                    size = conv_out(size, kern, stride, kern // 2)
                    cost = cost + size * size * kern * kern * prev.mean() * conv.mean()
                    prev = conv
                out = prev
                if blk.stride != 1:
                    cost = cost + size * size * x.mean() * out.mean()
                else:  # projection exactly where the input and output widths differ
                    cost = cost + size * size * (x.mean() * out.mean() - expected_product_if_equal(x, out))
                flops = flops + reach * cost
                if b + 1 in choices:
                    ends.append((q[choices.index(b + 1)], out))
                x = out
                at += len(blk.convs)
            x = WidthDist.mixture(ends)
        return flops + x.mean() * self.dense_spec["num_classes"]

    # ----------------------------------------------------------------------- result
    def genotype(self) -> tuple[list[int], list[int]]:
        """The most probable candidate index per searched conv and per stage depth."""
        widths = [int(p.argmax()) for p in self.width_logits]
        depths = [int(p.argmax()) for p in self.depth_logits]
        return widths, depths

    def one_hot(self, widths: list[int], depths: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        def hot(n: int, i: int) -> torch.Tensor:
            return F.one_hot(torch.tensor(i), n).float().to(self.width_logits[0].device)

        return (
            [hot(len(c.choices), i) for c, i in zip(self.searched, widths, strict=True)],
            [hot(len(d), i) for d, i in zip(self.depths, depths, strict=True)],
        )

    def to_spec(self, widths: list[int], depths: list[int]) -> dict:
        """The ``resnet_tas`` spec of a discrete choice (candidate indices)."""
        spec = {k: v for k, v in self.dense_spec.items() if k != "stages"}
        spec["stem"] = self.stem.choices[widths[0]]
        spec["stages"], at = [], 1
        for stage, dense_stage, choices, d in zip(
            self.stages, self.dense_spec["stages"], self.depths, depths, strict=True
        ):
            blocks = []
            for b, blk in enumerate(stage):
                if b < choices[d]:
                    blocks.append([c.choices[widths[at + j]] for j, c in enumerate(blk.convs)])
                at += len(blk.convs)
            spec["stages"].append({"stride": dense_stage["stride"], "blocks": blocks})
        return spec

    def set_tau(self, tau_max: float, tau_min: float, progress: float) -> float:
        """Cosine-anneal the Gumbel temperature from tau_max (progress 0) to tau_min (1)."""
        self.tau = tau_min + (tau_max - tau_min) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2
        return self.tau
