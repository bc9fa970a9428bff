"""CIFAR ResNet-(6n+2) of "Pruning from Scratch", with projection shortcuts, from a width spec.

Wang, Zhang, Xie, Zhou, Su, Zhang, Hu. "Pruning from Scratch", AAAI 2020 (arXiv 1909.12579);
official code frankwang345/pruning-from-scratch, models/resnet.py (``CifarResNet``,
``BasicBlock``). It differs from the option-A ResNet of Li et al. / Rethinking
(``resnet_cifar``) in one place: where the stride or the width changes, the shortcut is a
1x1 conv (stride s, no bias) + BN ("option B"), not avg-pool + zero padding.

    stem:   conv3x3 (in -> stem) - BN - ReLU
    block:  conv3x3 (stride s) - bn1 - ReLU - conv3x3 - bn2 ; + x or + BN(conv1x1/s(x)) ; ReLU
    head:   global average pool (the official AvgPool2d(8) on the 8x8 map) - Linear

The official net takes one number ``expanded_inchannel`` = e for the trunk: the stem and the
three stages are e / 2e / 4e wide, in the gated net it learns gates on AND in the pruned net it
trains (``models.resnet56(10, e, pruned_cfg)``); only the block mid widths come from the gates.
The dense (reference) net is e = 16. The spec keeps those widths explicit:

    {"arch": "resnet_pfs", "depth": 56, "num_classes": 10, "in_channels": 3, "stem": 16,
     "stages": [{"width": 16, "stride": 1, "mid": [16, ...n]},
                {"width": 32, "stride": 2, "mid": [...]},
                {"width": 64, "stride": 2, "mid": [...]}]}

Init as the official file: conv N(0, sqrt(2 / (k*k*out))) (= He fan_out), BN 1 / 0, Linear
PyTorch's default. Dense CIFAR-10 sizes (``count_params`` / ``count_macs``): ResNet-20
272,474 / 40,813,184; ResNet-56 855,770 / 125,747,840; ResNet-110 1,730,714 / 253,149,824. The
official counter (flop_counter.py) also counts the AvgPool2d module (its input, 4e*8*8 = 4,096):
40,817,280 / 125,751,936 / 253,153,920 (run on the official models).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_he_bn


def default_spec(depth: int = 56, num_classes: int = 10, in_channels: int = 3, base_width: int = 16) -> dict:
    """The net of ``models.resnet<depth>(num_classes, base_width)``: trunk e / 2e / 4e and every
    block's mid width equal to its stage width (``expanded_cfg(e)``)."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise PruneLabError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got depth={depth}")
    if int(base_width) < 1:
        raise PruneLabError(f"base_width={base_width} must be >= 1")
    n = (depth - 2) // 6
    widths = [int(base_width), 2 * int(base_width), 4 * int(base_width)]
    return {
        "arch": "resnet_pfs",
        "depth": depth,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": widths[0],
        "stages": [{"width": w, "stride": 1 if i == 0 else 2, "mid": [w] * n} for i, w in enumerate(widths)],
    }


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, mid: int, out_ch: int, stride: int):
        super().__init__()
        if mid < 1:
            raise PruneLabError("a residual block needs at least 1 mid channel")
        self.conv1 = nn.Conv2d(in_ch, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:  # option B: 1x1 conv + BN
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (N, mid, H/s, W/s); PFS gates multiply bn1's output
        out = self.bn2(self.conv2(out))  # (N, out, H/s, W/s)
        return F.relu(out + self.shortcut(x))


class ResNetPFS(nn.Module):
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
                blocks.append(BasicBlock(in_ch, int(mid), stage["width"], stage["stride"] if b == 0 else 1))
                in_ch = stage["width"]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, spec["num_classes"])
        init_he_bn(self)  # N(0, sqrt(2 / (k*k*out))) convs, BN 1 / 0: the official loop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, C, H', W')
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return ResNetPFS(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """One group per block: its mid channels (conv1 filters, bn1, conv2 inputs) -- where the
    official code puts its gates. The trunk is coupled through every block and projection of a
    stage and stays whole (in the pruned net it is e / 2e / 4e wide)."""
    groups = []
    for s, stage in enumerate(spec["stages"]):
        for b, mid in enumerate(stage["mid"]):
            p = f"stages.{s}.{b}"
            bn = [(f"{p}.bn1.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
            groups.append(
                ChannelGroup(
                    name=f"{p}.mid",
                    size=int(mid),
                    producer=f"{p}.conv1.weight",
                    members=((f"{p}.conv1.weight", 0), *bn, (f"{p}.conv2.weight", 1)),
                    spec_path=("stages", s, "mid", b),
                    meta={"stage": s, "block": b},
                    bn_scale=f"{p}.bn1.weight",
                )
            )
    return groups


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3 pad 1 or 1x1 pad 0 at this stride


def macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """``count_macs(build(spec), input_shape)`` in closed form (convs + fc; BN, ReLU, pooling
    free): PFS's budget search evaluates many specs."""
    c_in, h, w = (int(v) for v in input_shape)
    total = h * w * spec["stem"] * c_in * 9
    in_ch = spec["stem"]
    for stage in spec["stages"]:
        for b, mid in enumerate(stage["mid"]):
            stride = stage["stride"] if b == 0 else 1
            h, w = _out(h, stride), _out(w, stride)
            out = stage["width"]
            total += h * w * (int(mid) * in_ch * 9 + out * int(mid) * 9)
            if stride != 1 or in_ch != out:
                total += h * w * out * in_ch
            in_ch = out
    return int(total + in_ch * spec["num_classes"])
