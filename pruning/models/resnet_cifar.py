"""CIFAR ResNet-(6n+2) with option-A shortcuts, built from a width spec.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2: three
stages of n basic blocks (16/32/64 channels), a parameter-free shortcut (option A:
stride-2 average pooling + zero channel padding) where shape changes. This is the network
of Li et al. (2017) and Liu et al. "Rethinking the Value of Network Pruning" (ICLR 2019),
whose L1-norm variants prune only the first conv of each block, so the spec records that
"mid" width per block:

    {"arch": "resnet_cifar", "depth": 56, "num_classes": 10, "in_channels": 3,
     "stem": 16,
     "stages": [{"width": 16, "stride": 1, "mid": [16, ...n]},
                {"width": 32, "stride": 2, "mid": [...]},
                {"width": 64, "stride": 2, "mid": [...]}]}

Depth search (TAS) changes len(mid); trunk widths may change for scratch training.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_he_bn

DEPTHS = (20, 32, 44, 56, 110, 164, 8, 14)


def default_spec(depth: int = 56, num_classes: int = 10, in_channels: int = 3, base_width: int = 16) -> dict:
    if (depth - 2) % 6 != 0 or depth < 8:
        raise PruneLabError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got depth={depth}")
    n = (depth - 2) // 6
    widths = [base_width, base_width * 2, base_width * 4]
    return {
        "arch": "resnet_cifar",
        "depth": depth,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": base_width,
        "stages": [{"width": w, "stride": 1 if i == 0 else 2, "mid": [w] * n} for i, w in enumerate(widths)],
    }


class ShortcutA(nn.Module):
    """Option-A shortcut: average-pool to the new resolution, zero-pad new channels at the end
    (as in the Rethinking code's ``downsample_basic_block``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if out_ch < in_ch:
            raise PruneLabError(f"option-A shortcut cannot narrow the trunk ({in_ch} -> {out_ch})")
        self.pad, self.stride = out_ch - in_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x  # (N, C+pad, H, W)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, mid: int, out_ch: int, stride: int):
        super().__init__()
        if mid < 1:
            raise PruneLabError("a residual block needs at least 1 mid channel")
        self.conv1 = nn.Conv2d(in_ch, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        needs_shortcut = stride != 1 or in_ch != out_ch
        self.shortcut = ShortcutA(in_ch, out_ch, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(spec["in_channels"], spec["stem"], 3, 1, 1, bias=False),
            nn.BatchNorm2d(spec["stem"]),
            nn.ReLU(inplace=True),
        )
        stages, in_ch = [], spec["stem"]
        for stage in spec["stages"]:
            blocks = []
            for b, mid in enumerate(stage["mid"]):
                stride = stage["stride"] if b == 0 else 1
                blocks.append(BasicBlock(in_ch, mid, stage["width"], stride))
                in_ch = stage["width"]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, spec["num_classes"])
        init_he_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, C, H', W')
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return ResNetCifar(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """One group per block: the mid channels (conv1 filters, bn1, conv2 inputs).

    Trunk channels are coupled through every block of a stage *and* the option-A padding
    positions of the next stage, so they are not offered for structured removal here.
    """
    groups = []
    global_block = 0
    for s, stage in enumerate(spec["stages"]):
        for b, mid in enumerate(stage["mid"]):
            p = f"stages.{s}.{b}"
            bn = [(f"{p}.bn1.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
            groups.append(
                ChannelGroup(
                    name=f"{p}.mid",
                    size=mid,
                    producer=f"{p}.conv1.weight",
                    members=((f"{p}.conv1.weight", 0), *bn, (f"{p}.conv2.weight", 1)),
                    spec_path=("stages", s, "mid", b),
                    # conv-layer id as counted by the Rethinking scripts (stem = 1)
                    meta={"stage": s, "block": b, "layer_id": 2 + 2 * global_block},
                    bn_scale=f"{p}.bn1.weight",
                )
            )
            global_block += 1
    return groups
