"""ImageNet MobileNet-V1 (Howard et al. 2017), built from a width spec.

Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam. "MobileNets: Efficient
Convolutional Neural Networks for Mobile Vision Applications", arXiv 1704.04861 (Table 1: the net;
1.0 MobileNet-224: 569M mult-adds, 4.2M parameters). Layer for layer as the net of Pruning from
Scratch (frankwang345/pruning-from-scratch, models/mobilenet.py ``MobileNet``; the last block has
stride 1, as in every implementation: Table 1's "s2" there would leave a 4x4 map, not 7x7):

    stem:   conv3x3/2 (in -> stem) - BN - ReLU
    block:  depthwise conv3x3/s (c -> c, groups c) - bn1 - ReLU - pointwise conv1x1 (c -> out) - bn2 - ReLU
            13 blocks, out = 64, 128, 128, 256, 256, 512 x6, 1024, 1024; stride 2 at blocks 1, 3, 5, 11
    head:   global average pool (the official AvgPool2d(7) on the 7x7 map at 224 px) - Linear

Every conv has no bias. Width ``c`` (``base_width``) scales every layer as the official
``expanded_cfg(c)['mobilenet_v1']`` = [c, 2c, 4c, 4c, 8c, 8c, 16c x6, 32c, 32c] (stem first);
the published net is c = 32. The spec keeps every width explicit:

    {"arch": "mobilenet_v1", "num_classes": 1000, "in_channels": 3, "stem": 32,
     "blocks": [{"out": 64, "stride": 1}, {"out": 128, "stride": 2}, ...]}

Channel groups (where PFS puts its gates, gate.py ``new_convbn_forward`` on the stem
ConvBNReLU and ``new_conv_depthwise_forward`` after bn2): the stem's output and every block's
pointwise output. A group's channels are also the next block's depthwise channels (its conv1
filters and bn1), so they shrink together. Init as the official file: conv
N(0, sqrt(2 / (k*k*out))), BN 1 / 0, Linear N(0, 0.01) with bias 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup

MULTIPLES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32)  # block widths / c (official expanded_cfg)
STRIDE2 = (1, 3, 5, 11)  # blocks with stride 2 (official _make_layers)
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def default_spec(num_classes: int = 1000, in_channels: int = 3, base_width: int = 32) -> dict:
    """``models.mobilenet_v1(num_classes, base_width)``: stem c, blocks 2c ... 32c (c = 32: 1.0)."""
    c = int(base_width)
    if c < 1:
        raise PruneLabError(f"base_width={base_width} must be >= 1")
    return {
        "arch": "mobilenet_v1",
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": c,
        "blocks": [{"out": m * c, "stride": 2 if i in STRIDE2 else 1} for i, m in enumerate(MULTIPLES)],
    }


def expanded_spec(spec: dict, expansion: int) -> dict:
    """The net PFS learns gates on: every width scaled as ``expanded_cfg(e)`` (e = 32: the default)."""
    return default_spec(spec["num_classes"], spec["in_channels"], expansion)


def _check(width: int, where: str) -> int:
    if int(width) < 1:
        raise PruneLabError(f"MobileNet-V1 {where} needs at least 1 channel, got {width}")
    return int(width)


class DepthwiseSeparable(nn.Module):
    """conv1 (depthwise 3x3, stride s) - bn1 - ReLU - conv2 (pointwise 1x1) - bn2 - ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (N, in, H/s, W/s)
        return F.relu(self.bn2(self.conv2(x)))  # (N, out, H/s, W/s); PFS gates multiply bn2's output


class MobileNetV1(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        stem = _check(spec["stem"], "stem")
        self.stem = nn.Sequential(
            nn.Conv2d(spec["in_channels"], stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        blocks, in_ch = [], stem
        for i, block in enumerate(spec["blocks"]):
            out = _check(block["out"], f"block {i}")
            blocks.append(DepthwiseSeparable(in_ch, out, int(block["stride"])))
            in_ch = out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_ch, spec["num_classes"])
        for m in self.modules():  # the official _initialize_weights
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (N, C, H/32, W/32)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return MobileNetV1(spec)


def _consumers(spec: dict, i: int) -> tuple[tuple[str, int], ...]:
    """Who reads the output of block ``i`` (-1: the stem): the next block's depthwise conv and
    bn1 (dim 0) and its pointwise conv (dim 1), or the classifier (dim 1)."""
    if i + 1 < len(spec["blocks"]):
        p = f"blocks.{i + 1}"
        return ((f"{p}.conv1.weight", 0), *((f"{p}.bn1.{t}", 0) for t in BN_KEYS), (f"{p}.conv2.weight", 1))
    return (("fc.weight", 1),)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """The stem's output channels, then every block's pointwise output (official gate order)."""
    groups = [
        ChannelGroup(
            name="stem",
            size=int(spec["stem"]),
            producer="stem.0.weight",
            members=(("stem.0.weight", 0), *((f"stem.1.{t}", 0) for t in BN_KEYS), *_consumers(spec, -1)),
            spec_path=("stem",),
            meta={"block": -1},
            bn_scale="stem.1.weight",
        )
    ]
    for i, block in enumerate(spec["blocks"]):
        p = f"blocks.{i}"
        groups.append(
            ChannelGroup(
                name=f"{p}.pw",
                size=int(block["out"]),
                producer=f"{p}.conv2.weight",
                members=((f"{p}.conv2.weight", 0), *((f"{p}.bn2.{t}", 0) for t in BN_KEYS), *_consumers(spec, i)),
                spec_path=("blocks", i, "out"),
                meta={"block": i},
                bn_scale=f"{p}.bn2.weight",
            )
        )
    return groups


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3 pad 1 at this stride


def macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """``count_macs(build(spec), input_shape)`` in closed form (convs + fc; BN, ReLU, pooling free)."""
    c_in, h, w = (int(v) for v in input_shape)
    h, w = _out(h, 2), _out(w, 2)
    total = h * w * spec["stem"] * c_in * 9
    in_ch = int(spec["stem"])
    for block in spec["blocks"]:
        h, w = _out(h, block["stride"]), _out(w, block["stride"])
        total += h * w * (in_ch * 9 + in_ch * int(block["out"]))  # depthwise + pointwise
        in_ch = int(block["out"])
    return int(total + in_ch * spec["num_classes"])
