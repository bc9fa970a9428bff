"""ImageNet MobileNet-V2 (Sandler et al. 2018), built from a width spec.

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018 (Table 2: the net; Table 4: 300M multiply-adds, 3.4M parameters at 224x224;
torchvision counts 3,504,872).
Layer for layer as torchvision.models.mobilenet_v2 (same parameters, same outputs from its
state dict: ``from_torchvision``) and as the net of Pruning from Scratch
(frankwang345/pruning-from-scratch, models/mobilenet.py ``MobileNetV2``, ``InvertedResidual``,
``InvertedBlock``):

    stem:   conv3x3/2 (in -> stem) - BN - act
    block:  [conv1 1x1 (in -> hidden) - bn1 - ReLU6]  (absent in block 0: hidden = its input)
            conv2 depthwise 3x3/s (hidden) - bn2 - ReLU6 - conv3 1x1 (hidden -> out) - bn3
            (+ x when stride 1 and in = out); 17 blocks, out = 16, 24 x2, 32 x3, 64 x4, 96 x3,
            160 x3, 320; stride 2 at blocks 1, 3, 6, 13; hidden = 6 x in (blocks 1-16)
    last:   conv1x1 (320 -> last) - BN - act
    head:   global average pool - Dropout(dropout) - Linear

``outer_act`` is the stem's and last conv's activation: ``relu6`` in torchvision and the paper,
``relu`` in the PFS code (its ``ConvBNReLU``); the blocks use ReLU6 in both. ``dropout``: 0.2 in
torchvision, none in the PFS code (PFS's dense spec sets both: ``pruning.methods.pfs``).

Widths: ``base_width`` c scales the stem, every hidden width and the last conv as the official
``expanded_cfg(c)['mobilenet_v2']`` ([32, 96, 144, 144, 192 x3, 384 x4, 576 x3, 960 x3, 1280] times
c / 32, truncated); ``width_mult`` m scales the block outputs (official ``int(m * out)``; torchvision
rounds to multiples of 8, the same at m = 1). The spec keeps every width explicit:

    {"arch": "mobilenet_v2", "num_classes": 1000, "in_channels": 3, "stem": 32, "last": 1280,
     "outer_act": "relu6", "dropout": 0.2, "width_mult": 1.0,
     "blocks": [{"hidden": null, "out": 16, "stride": 1}, {"hidden": 96, "out": 24, "stride": 2}, ...]}

Channel groups (where PFS puts its gates: gate.py ``new_convbn_forward`` on the stem and last
ConvBNReLU, ``new_inverted_block_forward`` after bn1): the stem (also block 0's depthwise
channels), every expanding block's hidden channels, the last conv; in that order, the order of
the official cfg (prune_model_imagenet.py moves the last conv's gates to the end). Block
outputs are coupled through the residual sums and stay whole.

Departure: the official ``InvertedResidual`` drops the expansion conv of ANY block whose hidden
width equals its input width (``if hid == inp``), so a pruned block that keeps exactly ``in``
hidden channels silently loses a conv; here only a block whose spec says ``hidden: null``
(block 0) has none. Init as both references: conv N(0, sqrt(2 / (k*k*out))), BN 1 / 0, Linear
N(0, 0.01) with bias 0.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup

HIDDEN = (96, 144, 144, 192, 192, 192, 384, 384, 384, 384, 576, 576, 576, 960, 960, 960)  # blocks 1-16, c = 32
OUTS = (16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320)
STRIDE2 = (1, 3, 6, 13)
STEM, LAST = 32, 1280
ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6}
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _scaled(v: int, c: int) -> int:
    return v if c == 32 else int(v * c / 32)  # official expanded_cfg


def default_spec(
    num_classes: int = 1000,
    in_channels: int = 3,
    base_width: int = 32,
    width_mult: float = 1.0,
    outer_act: str = "relu6",
    dropout: float = 0.2,
) -> dict:
    """The dense MobileNet-V2 (c = 32, m = 1: torchvision's ``mobilenet_v2()``)."""
    c = int(base_width)
    if c < 1 or float(width_mult) <= 0:
        raise PruneLabError(f"base_width={base_width} must be >= 1 and width_mult={width_mult} > 0")
    if outer_act not in ACTS:
        raise PruneLabError(f"outer_act={outer_act!r}: use one of {sorted(ACTS)}")
    if not 0.0 <= float(dropout) < 1.0:
        raise PruneLabError(f"dropout={dropout} must be in [0, 1)")
    blocks = []
    for j, out in enumerate(OUTS):
        hidden = None if j == 0 else _scaled(HIDDEN[j - 1], c)
        blocks.append({"hidden": hidden, "out": int(float(width_mult) * out), "stride": 2 if j in STRIDE2 else 1})
    return {
        "arch": "mobilenet_v2",
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": _scaled(STEM, c),
        "last": _scaled(LAST, c),
        "outer_act": outer_act,
        "dropout": float(dropout),
        "width_mult": float(width_mult),
        "blocks": blocks,
    }


def expanded_spec(spec: dict, expansion: int) -> dict:
    """The net PFS learns gates on (official ``mobilenet_v2(1000, e, m)``): stem, hidden widths and
    last conv from ``expanded_cfg(e)``; block outputs, strides, activation and head as ``spec``."""
    wide = default_spec(spec["num_classes"], spec["in_channels"], expansion, spec.get("width_mult", 1.0))
    out = copy.deepcopy(spec)
    out["stem"], out["last"] = wide["stem"], wide["last"]
    for block, w in zip(out["blocks"], wide["blocks"], strict=True):
        if block["hidden"] is not None:
            block["hidden"] = w["hidden"]
    return out


def _check(width: int, where: str) -> int:
    if int(width) < 1:
        raise PruneLabError(f"MobileNet-V2 {where} needs at least 1 channel, got {width}")
    return int(width)


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, hidden: int | None, out_ch: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise PruneLabError(f"MobileNet-V2 stride must be 1 or 2, got {stride}")
        self.expand = hidden is not None
        if self.expand:
            self.conv1 = nn.Conv2d(in_ch, hidden, 1, 1, 0, bias=False)
            self.bn1 = nn.BatchNorm2d(hidden)
        else:
            hidden = in_ch
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn1(self.conv1(x))) if self.expand else x  # (N, hidden, H, W); PFS gates bn1's output
        out = F.relu6(self.bn2(self.conv2(out)))  # (N, hidden, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N, out, H/s, W/s), linear bottleneck
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        act = ACTS[spec.get("outer_act", "relu6")]
        stem, last = _check(spec["stem"], "stem"), _check(spec["last"], "last conv")
        self.stem = nn.Sequential(
            nn.Conv2d(spec["in_channels"], stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), act(inplace=True)
        )
        blocks, in_ch = [], stem
        for j, block in enumerate(spec["blocks"]):
            hidden = None if block["hidden"] is None else _check(block["hidden"], f"block {j} hidden")
            out = _check(block["out"], f"block {j} output")
            blocks.append(InvertedResidual(in_ch, hidden, out, int(block["stride"])))
            in_ch = out
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(nn.Conv2d(in_ch, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last), act(inplace=True))
        self.dropout = nn.Dropout(float(spec.get("dropout", 0.0)))
        self.fc = nn.Linear(last, spec["num_classes"])
        for m in self.modules():  # official _initialize_weights (= torchvision's init)
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
        x = self.last(self.blocks(self.stem(x)))  # (N, last, H/32, W/32)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, last)
        return self.fc(self.dropout(x))


def build(spec: dict) -> nn.Module:
    return MobileNetV2(spec)


def _bn(prefix: str) -> tuple[tuple[str, int], ...]:
    return tuple((f"{prefix}.{t}", 0) for t in BN_KEYS)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """stem, ``blocks.{j}.hidden`` for every expanding block, ``last`` (official cfg order)."""
    stem_members = [("stem.0.weight", 0), *_bn("stem.1")]
    if spec["blocks"][0]["hidden"] is None:  # block 0 works on the stem's channels
        stem_members += [("blocks.0.conv2.weight", 0), *_bn("blocks.0.bn2"), ("blocks.0.conv3.weight", 1)]
    else:
        stem_members += [("blocks.0.conv1.weight", 1)]
    groups = [
        ChannelGroup(
            name="stem",
            size=int(spec["stem"]),
            producer="stem.0.weight",
            members=tuple(stem_members),
            spec_path=("stem",),
            meta={"block": -1},
            bn_scale="stem.1.weight",
        )
    ]
    for j, block in enumerate(spec["blocks"]):
        if block["hidden"] is None:
            continue
        p = f"blocks.{j}"
        groups.append(
            ChannelGroup(
                name=f"{p}.hidden",
                size=int(block["hidden"]),
                producer=f"{p}.conv1.weight",
                members=(
                    (f"{p}.conv1.weight", 0),
                    *_bn(f"{p}.bn1"),
                    (f"{p}.conv2.weight", 0),
                    *_bn(f"{p}.bn2"),
                    (f"{p}.conv3.weight", 1),
                ),
                spec_path=("blocks", j, "hidden"),
                meta={"block": j},
                bn_scale=f"{p}.bn1.weight",
            )
        )
    groups.append(
        ChannelGroup(
            name="last",
            size=int(spec["last"]),
            producer="last.0.weight",
            members=(("last.0.weight", 0), *_bn("last.1"), ("fc.weight", 1)),
            spec_path=("last",),
            meta={"block": len(spec["blocks"])},
            bn_scale="last.1.weight",
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
        hidden = in_ch if block["hidden"] is None else int(block["hidden"])
        if block["hidden"] is not None:
            total += h * w * in_ch * hidden  # expansion, at the input resolution
        h, w = _out(h, block["stride"]), _out(w, block["stride"])
        total += h * w * (hidden * 9 + hidden * int(block["out"]))  # depthwise + projection
        in_ch = int(block["out"])
    total += h * w * in_ch * spec["last"]
    return int(total + spec["last"] * spec["num_classes"])


def from_torchvision(state_dict: dict[str, torch.Tensor], spec: dict) -> dict[str, torch.Tensor]:
    """Map a torchvision ``mobilenet_v2`` state dict onto this family's keys: features.0 -> stem,
    features.{j+1}.conv.* -> blocks.{j}.conv1/bn1 (expansion), conv2/bn2 (depthwise), conv3/bn3,
    features.18 -> last, classifier.1 -> fc."""
    n = len(spec["blocks"])
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            new = "fc." + ".".join(parts[2:])
        elif parts[0] == "features" and parts[1] == "0":
            new = "stem." + ".".join(parts[2:])
        elif parts[0] == "features" and int(parts[1]) == n + 1:
            new = "last." + ".".join(parts[2:])
        elif parts[0] == "features":
            j = int(parts[1]) - 1
            rest = parts[3:]  # after "conv"
            if spec["blocks"][j]["hidden"] is None:  # conv.0.{0,1} dw, conv.1 project, conv.2 its BN
                names = {("0", "0"): "conv2", ("0", "1"): "bn2", ("1",): "conv3", ("2",): "bn3"}
            else:  # conv.0.{0,1} expand, conv.1.{0,1} dw, conv.2 project, conv.3 its BN
                names = {("0", "0"): "conv1", ("0", "1"): "bn1", ("1", "0"): "conv2", ("1", "1"): "bn2"}
                names |= {("2",): "conv3", ("3",): "bn3"}
            head = tuple(rest[:2]) if tuple(rest[:2]) in names else (rest[0],)
            new = f"blocks.{j}.{names[head]}." + ".".join(rest[len(head) :])
        else:
            new = key
        out[new] = value
    return out
