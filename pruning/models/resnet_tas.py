"""Inference ResNets with a free width per conv and a free depth per stage (TAS's searched nets).

Dong & Yang, "Network Pruning via Transformable Architecture Search", NeurIPS 2019: the search
picks the output width of *every* conv (stem, inner and block-output convs) and the number of
blocks per stage; the result is trained as a plain network. As in TAS's inference ResNets, a
block gets a projection shortcut (1x1 conv with the block's stride + BN) wherever its stride is
not 1 or its input and output widths differ; otherwise the shortcut is the identity.

    {"arch": "resnet_tas", "block": "basic" | "bottleneck", "stem_type": "cifar" | "imagenet",
     "depth": 56,                       # the dense net it was searched from (informational)
     "num_classes": 10, "in_channels": 3, "stem": 16,
     "stages": [{"stride": 1, "blocks": [[c1, c2], ...]},   # basic: [conv1, conv2] widths
                {"stride": 2, "blocks": [[c1, c2, c3], ...]}, ...]}   # bottleneck: 3 widths

The last width of a block is its output (the trunk at that point). ``stem_type`` "cifar" is a
3x3/1 conv; "imagenet" is torchvision's 7x7/2 conv + 3x3/2 max-pool.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_he_bn

BLOCK_CONVS = {"basic": 2, "bottleneck": 3}


def default_spec(depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 block: str = "basic", stem_type: str = "cifar") -> dict:
    """The full-width net of a CIFAR ResNet-(6n+2) (basic) or a torchvision ResNet-18/34/50."""
    if stem_type == "cifar":
        if (depth - 2) % 6 != 0 or depth < 8:
            raise PruneLabError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110), got {depth}")
        n = (depth - 2) // 6
        stages = [{"stride": 1 if i == 0 else 2, "blocks": [[w, w] for _ in range(n)]}
                  for i, w in enumerate((16, 32, 64))]
        return {"arch": "resnet_tas", "block": "basic", "stem_type": "cifar", "depth": depth,
                "num_classes": num_classes, "in_channels": in_channels, "stem": 16, "stages": stages}
    layouts = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
    if depth not in layouts:
        raise PruneLabError(f"ImageNet ResNet depth must be one of {sorted(layouts)}, got {depth}")
    block, counts = layouts[depth]
    stages = []
    for i, (count, w) in enumerate(zip(counts, (64, 128, 256, 512), strict=True)):
        widths = [w, w] if block == "basic" else [w, w, 4 * w]
        stages.append({"stride": 1 if i == 0 else 2, "blocks": [list(widths) for _ in range(count)]})
    return {"arch": "resnet_tas", "block": block, "stem_type": "imagenet", "depth": depth,
            "num_classes": num_classes, "in_channels": in_channels, "stem": 64, "stages": stages}


def check_spec(spec: dict) -> None:
    convs = BLOCK_CONVS.get(spec.get("block"))
    if convs is None:
        raise PruneLabError(f"resnet_tas block {spec.get('block')!r} must be basic or bottleneck")
    if spec.get("stem_type") not in ("cifar", "imagenet"):
        raise PruneLabError(f"resnet_tas stem_type {spec.get('stem_type')!r} must be cifar or imagenet")
    for s, stage in enumerate(spec["stages"]):
        if not stage["blocks"]:
            raise PruneLabError(f"resnet_tas stage {s} has no block (depth must be >= 1)")
        for b, widths in enumerate(stage["blocks"]):
            if len(widths) != convs or min(widths) < 1:
                raise PruneLabError(f"resnet_tas stages.{s}.{b}: need {convs} widths >= 1, got {widths}")


class Projection(nn.Module):
    """1x1 conv (with the block's stride) + BN: the shortcut where stride or width changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))  # (N, out, H/s, W/s)


class Block(nn.Module):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1) residual block."""

    def __init__(self, kind: str, in_ch: int, widths: list[int], stride: int):
        super().__init__()
        if kind == "basic":
            layout = [(in_ch, widths[0], 3, stride), (widths[0], widths[1], 3, 1)]
        else:
            layout = [(in_ch, widths[0], 1, 1), (widths[0], widths[1], 3, stride), (widths[1], widths[2], 1, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2, bias=False) for i, o, k, s in layout)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _, _ in layout)
        needs_projection = stride != 1 or in_ch != widths[-1]
        self.shortcut = Projection(in_ch, widths[-1], stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            out = bn(conv(out))  # (N, w_i, H', W')
            if i < last:
                out = F.relu(out)
        return F.relu(out + self.shortcut(x))


class ResNetTAS(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        check_spec(spec)
        if spec["stem_type"] == "cifar":
            stem = [nn.Conv2d(spec["in_channels"], spec["stem"], 3, 1, 1, bias=False)]
        else:
            stem = [nn.Conv2d(spec["in_channels"], spec["stem"], 7, 2, 3, bias=False)]
        stem += [nn.BatchNorm2d(spec["stem"]), nn.ReLU(inplace=True)]
        if spec["stem_type"] == "imagenet":
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        stages, in_ch = [], spec["stem"]
        for stage in spec["stages"]:
            blocks = []
            for b, widths in enumerate(stage["blocks"]):
                blocks.append(Block(spec["block"], in_ch, list(widths), stage["stride"] if b == 0 else 1))
                in_ch = widths[-1]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, spec["num_classes"])
        init_he_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, C, H', W')
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return ResNetTAS(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """The inner convs' outputs of every block (``stages.{s}.{b}.mid{k}``); block outputs are
    tied to the trunk by identity shortcuts and are not offered."""
    groups = []
    for s, stage in enumerate(spec["stages"]):
        for b, widths in enumerate(stage["blocks"]):
            p = f"stages.{s}.{b}"
            for k in range(len(widths) - 1):
                bn = [(f"{p}.bns.{k}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
                groups.append(ChannelGroup(
                    name=f"{p}.mid{k}", size=widths[k], producer=f"{p}.convs.{k}.weight",
                    members=((f"{p}.convs.{k}.weight", 0), *bn, (f"{p}.convs.{k + 1}.weight", 1)),
                    spec_path=("stages", s, "blocks", b, k), meta={"stage": s, "block": b, "k": k},
                    bn_scale=f"{p}.bns.{k}.weight"))
    return groups
