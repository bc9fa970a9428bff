"""Inference ResNets with a free width per conv and a free depth per stage (TAS's searched nets).

Dong & Yang, "Network Pruning via Transformable Architecture Search", NeurIPS 2019: the search
picks the output width of *every* conv (stem, inner and block-output convs) and the number of
blocks per stage; the result is trained as a plain network. Shortcuts (``shortcut`` in the spec):

* ``"tas"`` (CIFAR, the official code: xautodl/models/CifarResNet.py ``Downsample`` and
  shape_infers/InferCifarResNet.py ``ResNetBasicblock``): where the stride is 2, a 2x2 average
  pool then a 1x1 conv with *no* BN; where only the width differs (stride 1), a 1x1 conv + BN;
  otherwise the identity. At full width this is the official CifarResNet (ResNet-56:
  855,578 parameters, 125,747,840 MACs by ``count_macs``).
* ``"projection"`` (ImageNet; also how specs saved without the key are read): a 1x1 conv with
  the block's stride + BN wherever the stride or the width changes, as torchvision's ResNet, so a
  torchvision checkpoint maps onto the full-width net exactly.

Init as the official ``initialize_resnet``: He-normal (fan_out) convs, BN 1 / 0, Linear N(0, 0.01)
and bias 0.

    {"arch": "resnet_tas", "block": "basic" | "bottleneck", "stem_type": "cifar" | "imagenet",
     "shortcut": "tas" | "projection",
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
SHORTCUTS = ("tas", "projection")


def shortcut_style(spec: dict) -> str:
    """The spec's shortcut style; specs written before the key existed used projections."""
    return spec.get("shortcut", "projection")


def default_spec(
    depth: int = 20, num_classes: int = 10, in_channels: int = 3, block: str = "basic", stem_type: str = "cifar"
) -> dict:
    """The full-width net of a CIFAR ResNet-(6n+2) (basic) or a torchvision ResNet-18/34/50."""
    if stem_type == "cifar":
        if (depth - 2) % 6 != 0 or depth < 8:
            raise PruneLabError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110), got {depth}")
        n = (depth - 2) // 6
        stages = [
            {"stride": 1 if i == 0 else 2, "blocks": [[w, w] for _ in range(n)]} for i, w in enumerate((16, 32, 64))
        ]
        return {
            "arch": "resnet_tas",
            "block": "basic",
            "stem_type": "cifar",
            "shortcut": "tas",
            "depth": depth,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "stem": 16,
            "stages": stages,
        }
    layouts = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
    if depth not in layouts:
        raise PruneLabError(f"ImageNet ResNet depth must be one of {sorted(layouts)}, got {depth}")
    block, counts = layouts[depth]
    stages = []
    for i, (count, w) in enumerate(zip(counts, (64, 128, 256, 512), strict=True)):
        widths = [w, w] if block == "basic" else [w, w, 4 * w]
        stages.append({"stride": 1 if i == 0 else 2, "blocks": [list(widths) for _ in range(count)]})
    return {
        "arch": "resnet_tas",
        "block": block,
        "stem_type": "imagenet",
        "shortcut": "projection",
        "depth": depth,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": 64,
        "stages": stages,
    }


def init_tas(model: nn.Module) -> None:
    """The official TAS ``initialize_resnet``: He-normal (fan_out) convs, BN 1 / 0, and
    Linear N(0, 0.01) with bias 0."""
    init_he_bn(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def check_spec(spec: dict) -> None:
    convs = BLOCK_CONVS.get(spec.get("block"))
    if convs is None:
        raise PruneLabError(f"resnet_tas block {spec.get('block')!r} must be basic or bottleneck")
    if spec.get("stem_type") not in ("cifar", "imagenet"):
        raise PruneLabError(f"resnet_tas stem_type {spec.get('stem_type')!r} must be cifar or imagenet")
    if shortcut_style(spec) not in SHORTCUTS:
        raise PruneLabError(f"resnet_tas shortcut {spec.get('shortcut')!r} must be one of {', '.join(SHORTCUTS)}")
    for s, stage in enumerate(spec["stages"]):
        if not stage["blocks"]:
            raise PruneLabError(f"resnet_tas stage {s} has no block (depth must be >= 1)")
        for b, widths in enumerate(stage["blocks"]):
            if len(widths) != convs or min(widths) < 1:
                raise PruneLabError(f"resnet_tas stages.{s}.{b}: need {convs} widths >= 1, got {widths}")


class Projection(nn.Module):
    """The shortcut where stride or width changes: 1x1 conv (+ BN), after a 2x2 average pool
    when ``avg`` (the official TAS CIFAR down-sampling shortcut: avg-pool, conv, no BN)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, avg: bool = False, bn: bool = True):
        super().__init__()
        self.avg = bool(avg)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, 1 if avg else stride, bias=False)
        self.bn = nn.BatchNorm2d(out_ch) if bn else None

    def extra_repr(self) -> str:
        return "avg_pool2d(2) first" if self.avg else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.avg:
            x = F.avg_pool2d(x, 2)  # (N, in, H/2, W/2)
        x = self.conv(x)  # (N, out, H/s, W/s)
        return x if self.bn is None else self.bn(x)


def make_shortcut(style: str, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity, or the projection the style puts where the stride or the width changes."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if style == "tas" and stride != 1:
        if stride != 2:
            raise PruneLabError(f"the TAS down-sampling shortcut pools 2x2: stride must be 2, got {stride}")
        return Projection(in_ch, out_ch, stride, avg=True, bn=False)
    return Projection(in_ch, out_ch, stride)


class Block(nn.Module):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1) residual block."""

    def __init__(self, kind: str, in_ch: int, widths: list[int], stride: int, shortcut: str = "projection"):
        super().__init__()
        if kind == "basic":
            layout = [(in_ch, widths[0], 3, stride), (widths[0], widths[1], 3, 1)]
        else:
            layout = [(in_ch, widths[0], 1, 1), (widths[0], widths[1], 3, stride), (widths[1], widths[2], 1, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2, bias=False) for i, o, k, s in layout)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _, _ in layout)
        self.shortcut = make_shortcut(shortcut, in_ch, widths[-1], stride)

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
                blocks.append(
                    Block(spec["block"], in_ch, list(widths), stage["stride"] if b == 0 else 1, shortcut_style(spec))
                )
                in_ch = widths[-1]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, spec["num_classes"])
        init_tas(self)

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
                groups.append(
                    ChannelGroup(
                        name=f"{p}.mid{k}",
                        size=widths[k],
                        producer=f"{p}.convs.{k}.weight",
                        members=((f"{p}.convs.{k}.weight", 0), *bn, (f"{p}.convs.{k + 1}.weight", 1)),
                        spec_path=("stages", s, "blocks", b, k),
                        meta={"stage": s, "block": b, "k": k},
                        bn_scale=f"{p}.bns.{k}.weight",
                    )
                )
    return groups
