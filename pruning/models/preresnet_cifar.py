"""CIFAR pre-activation ResNet-(9n+2) with bottleneck blocks and channel selection.

He, Zhang, Ren, Sun. "Identity Mappings in Deep Residual Networks", ECCV 2016 (PreResNet-164:
three stages of n = 18 bottlenecks, planes 16/32/64, expansion 4), in the form Network
Slimming (Liu et al., ICCV 2017) and "Rethinking the Value of Network Pruning" (Liu et al.,
ICLR 2019, cifar/network-slimming/models/preresnet.py) prune:

    block:  bn1 (trunk) -> select -> relu -> conv1 1x1 -> bn2 -> relu -> conv2 3x3 (stride)
            -> bn3 -> relu -> conv3 1x1 (-> 4*planes) ; + x, or + conv1x1(x) on a stage's first block
    net:    conv3x3 (3 -> 16) -> stages -> bn (trunk) -> select -> relu -> avgpool -> fc

The trunk (block outputs) is never pruned; every BN is: bn2/bn3 by removing conv channels,
bn1 and the final bn by channel *selection* (see ``pruning.models.selection``), so the block
outputs stay consistent. Width spec (``select`` entries: None = all trunk channels, or the
kept trunk indices):

    {"arch": "preresnet_cifar", "depth": 164, "num_classes": 10, "in_channels": 3, "stem": 16,
     "stages": [{"width": 64, "stride": 1, "mid": [[16, 16], ...n], "select": [None, ...n]},
                {"width": 128, "stride": 2, "mid": [[32, 32], ...], "select": [...]},
                {"width": 256, "stride": 2, "mid": [[64, 64], ...], "select": [...]}],
     "select": None}

Initialisation as in the Network Slimming code: conv weights N(0, 2 / (k*k*out)), BN gamma
0.5, beta 0.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_slimming
from pruning.models.selection import ChannelSelection, selected

EXPANSION = 4


def default_spec(depth: int = 164, num_classes: int = 10, in_channels: int = 3, base_width: int = 16) -> dict:
    if (depth - 2) % 9 != 0 or depth < 11:
        raise PruneLabError(f"PreResNet (bottleneck) depth must be 9n+2 (11, 20, 56, 110, 164, ...), got depth={depth}")
    n = (depth - 2) // 9
    planes = [base_width, base_width * 2, base_width * 4]
    return {
        "arch": "preresnet_cifar",
        "depth": depth,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": base_width,
        "stages": [
            {
                "width": p * EXPANSION,
                "stride": 1 if i == 0 else 2,
                "mid": [[p, p] for _ in range(n)],
                "select": [None] * n,
            }
            for i, p in enumerate(planes)
        ],
        "select": None,
    }


def _block_inputs(spec: dict):
    """(stage, block, trunk width entering the block) for every block."""
    in_ch = spec["stem"]
    for s, stage in enumerate(spec["stages"]):
        if len(stage["select"]) != len(stage["mid"]):
            raise PruneLabError(f"preresnet spec stage {s}: 'select' and 'mid' must list the same blocks")
        for b in range(len(stage["mid"])):
            yield s, b, in_ch
            in_ch = stage["width"]


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, select: list[int] | None, mid: list[int], out_ch: int, stride: int, where: str):
        super().__init__()
        if len(mid) != 2 or min(mid) < 1:
            raise PruneLabError(f"{where}: 'mid' must be two widths >= 1, got {mid}")
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.select = ChannelSelection(in_ch, select, where)
        self.conv1 = nn.Conv2d(self.select.out_channels, mid[0], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid[0])
        self.conv2 = nn.Conv2d(mid[0], mid[1], 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid[1])
        self.conv3 = nn.Conv2d(mid[1], out_ch, 1, bias=False)
        needs_shortcut = stride != 1 or in_ch != out_ch
        self.downsample = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if needs_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.select(self.bn1(x)))  # (N, k, H, W)
        out = self.conv1(out)  # (N, m0, H, W)
        out = self.conv2(F.relu(self.bn2(out)))  # (N, m1, H', W')
        out = self.conv3(F.relu(self.bn3(out)))  # (N, C_out, H', W')
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class PreResNetCifar(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        self.conv1 = nn.Conv2d(spec["in_channels"], spec["stem"], 3, 1, 1, bias=False)
        blocks_in = {(s, b): c for s, b, c in _block_inputs(spec)}
        stages = []
        for s, stage in enumerate(spec["stages"]):
            blocks = []
            for b, mid in enumerate(stage["mid"]):
                stride = stage["stride"] if b == 0 else 1
                blocks.append(
                    Bottleneck(
                        blocks_in[(s, b)],
                        stage["select"][b],
                        list(mid),
                        stage["width"],
                        stride,
                        f"stages.{s}.{b}.select",
                    )
                )
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        trunk = spec["stages"][-1]["width"]
        self.bn = nn.BatchNorm2d(trunk)
        self.select = ChannelSelection(trunk, spec.get("select"), "select")
        self.fc = nn.Linear(self.select.out_channels, spec["num_classes"])
        init_slimming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.conv1(x))  # (N, C, H', W')
        x = F.relu(self.select(self.bn(x)))  # (N, k, H', W')
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, k)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return PreResNetCifar(spec)


def _bn(prefix: str) -> list[tuple[str, int]]:
    return [(f"{prefix}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """Per block: the selected inputs (``.select``: bn1 stays full-size, the selection and
    conv1's input channels shrink), conv1's outputs (``.mid0``: bn2) and conv2's outputs
    (``.mid1``: bn3); and the final bn's selection (``select``). Selection groups carry
    ``meta["bn_index"]``: the trunk (BN) channel of each of their channels."""
    groups = []
    for s, b, in_ch in _block_inputs(spec):
        p = f"stages.{s}.{b}"
        stage = spec["stages"][s]
        kept = selected(stage["select"][b], in_ch, f"{p}.select")
        meta = {"stage": s, "block": b}
        groups.append(
            ChannelGroup(
                name=f"{p}.select",
                size=len(kept),
                producer=f"{p}.bn1.weight",
                members=((f"{p}.conv1.weight", 1),),
                spec_path=("stages", s, "select", b),
                meta={**meta, "selection": True, "bn_index": kept},
                bn_scale=f"{p}.bn1.weight",
            )
        )
        for k, (conv, bn, nxt) in enumerate((("conv1", "bn2", "conv2"), ("conv2", "bn3", "conv3"))):
            groups.append(
                ChannelGroup(
                    name=f"{p}.mid{k}",
                    size=int(stage["mid"][b][k]),
                    producer=f"{p}.{conv}.weight",
                    members=((f"{p}.{conv}.weight", 0), *_bn(f"{p}.{bn}"), (f"{p}.{nxt}.weight", 1)),
                    spec_path=("stages", s, "mid", b, k),
                    meta={**meta, "k": k},
                    bn_scale=f"{p}.{bn}.weight",
                )
            )
    trunk = spec["stages"][-1]["width"]
    kept = selected(spec.get("select"), trunk, "select")
    groups.append(
        ChannelGroup(
            name="select",
            size=len(kept),
            producer="bn.weight",
            members=(("fc.weight", 1),),
            spec_path=("select",),
            meta={"selection": True, "bn_index": kept},
            bn_scale="bn.weight",
        )
    )
    return groups
