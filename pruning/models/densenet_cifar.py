"""CIFAR DenseNet-(3n+4) with basic layers and channel selection on every BN.

Huang, Liu, van der Maaten, Weinberger. "Densely Connected Convolutional Networks", CVPR 2017
(DenseNet-40: growth k = 12, three dense blocks of 12 layers, 2k stem channels, no
compression), in the form Network Slimming (Liu et al., ICCV 2017) and "Rethinking the Value
of Network Pruning" (cifar/network-slimming/models/densenet.py) prune:

    layer:       bn (C) -> select -> relu -> conv3x3 (-> k) ; output cat(x, new)  (C + k)
    transition:  bn (C) -> select -> relu -> conv1x1 (-> floor(C / compression)) -> avgpool 2
    net:         conv3x3 (3 -> 2k) -> block, transition, block, transition, block
                 -> bn -> select -> relu -> avgpool -> fc

Every BN normalises concatenated features that later layers also read, so BN channels are
removed by *selection* only (``pruning.models.selection``); the concatenated widths, the
growth convs' outputs and the transitions' outputs are unchanged. Width spec (``select``
entries: None = all channels, or the kept channel indices):

    {"arch": "densenet_cifar", "depth": 40, "growth": 12, "compression": 1,
     "num_classes": 10, "in_channels": 3, "stem": 24,
     "blocks": [{"select": [None, ...n]}, ...3], "transitions": [{"width": 168, "select": None},
     {"width": 312, "select": None}], "select": None}

Initialisation as in the Network Slimming code: conv weights N(0, 2 / (k*k*out)), BN gamma
0.5, beta 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_slimming
from pruning.models.selection import ChannelSelection, selected


def default_spec(
    depth: int = 40,
    num_classes: int = 10,
    in_channels: int = 3,
    growth: int = 12,
    compression: float = 1,
    stem: int | None = None,
) -> dict:
    """``stem`` defaults to 2 * growth (the Rethinking / Network Slimming PyTorch code: DenseNet-40
    has 1.06M parameters); ``stem=16`` is Huang et al.'s non-BC DenseNet (1.02M, the count in
    Network Slimming's Table 1)."""
    if (depth - 4) % 3 != 0 or depth < 7:
        raise PruneLabError(f"DenseNet (basic layers) depth must be 3n+4 (40, 100, ...), got depth={depth}")
    if growth < 1 or not compression >= 1:
        raise PruneLabError(f"DenseNet needs growth >= 1 and compression >= 1, got {growth}, {compression}")
    stem = 2 * growth if stem is None else int(stem)
    if stem < 1:
        raise PruneLabError(f"DenseNet stem={stem} must be >= 1 channel")
    n = (depth - 4) // 3
    width = stem
    transitions = []
    for _ in range(2):
        width += n * growth
        width = int(math.floor(width // compression))
        transitions.append({"width": width, "select": None})
    return {
        "arch": "densenet_cifar",
        "depth": depth,
        "growth": growth,
        "compression": compression,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": stem,
        "blocks": [{"select": [None] * n} for _ in range(3)],
        "transitions": transitions,
        "select": None,
    }


def _layout(spec: dict):
    """Yield (module prefix, input width, spec path of its selection) for every BN + selection,
    in forward order."""
    if len(spec["blocks"]) != len(spec["transitions"]) + 1:
        raise PruneLabError("densenet spec: needs one transition between consecutive dense blocks")
    width, growth = spec["stem"], spec["growth"]
    for i, block in enumerate(spec["blocks"]):
        for j in range(len(block["select"])):
            yield f"blocks.{i}.{j}", width, ("blocks", i, "select", j)
            width += growth
        if i < len(spec["transitions"]):
            yield f"transitions.{i}", width, ("transitions", i, "select")
            width = spec["transitions"][i]["width"]
    yield "", width, ("select",)


def _entry(spec: dict, path: tuple):
    node = spec
    for p in path:
        node = node[p]
    return node


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, select: list[int] | None, growth: int, where: str):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.select = ChannelSelection(in_ch, select, where)
        self.conv = nn.Conv2d(self.select.out_channels, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv(F.relu(self.select(self.bn(x))))  # (N, k, H, W)
        return torch.cat((x, new), 1)  # (N, C + k, H, W)


class Transition(nn.Module):
    def __init__(self, in_ch: int, select: list[int] | None, out_ch: int, where: str):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.select = ChannelSelection(in_ch, select, where)
        self.conv = nn.Conv2d(self.select.out_channels, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.relu(self.select(self.bn(x))))  # (N, C_out, H, W)
        return F.avg_pool2d(x, 2)  # (N, C_out, H/2, W/2)


class DenseNetCifar(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        self.conv1 = nn.Conv2d(spec["in_channels"], spec["stem"], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = [nn.Sequential() for _ in spec["blocks"]]
        transitions: list[nn.Module] = []
        for prefix, in_ch, path in _layout(spec):
            entry = _entry(spec, path)
            where = f"{prefix}.select" if prefix else "select"
            if prefix.startswith("blocks."):
                blocks[path[1]].append(DenseLayer(in_ch, entry, spec["growth"], where))
            elif prefix.startswith("transitions."):
                out_ch = spec["transitions"][path[1]]["width"]
                transitions.append(Transition(in_ch, entry, out_ch, where))
            else:
                self.bn = nn.BatchNorm2d(in_ch)
                self.select = ChannelSelection(in_ch, entry, where)
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.fc = nn.Linear(self.select.out_channels, spec["num_classes"])
        init_slimming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (N, 2k, H, W)
        for i, block in enumerate(self.blocks):
            x = block(x)  # (N, C + n*k, H, W)
            if i < len(self.transitions):
                x = self.transitions[i](x)  # (N, C', H/2, W/2)
        x = F.relu(self.select(self.bn(x)))  # (N, k_sel, H', W')
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, k_sel)
        return self.fc(x)


def build(spec: dict) -> nn.Module:
    return DenseNetCifar(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """One selection group per BN (dense layers, transitions, the final bn): bn_scale = that
    BN's weight, the selection and the consumer's input channels shrink; ``meta["bn_index"]``
    maps the group's channels to BN channels."""
    groups = []
    for index, (prefix, in_ch, path) in enumerate(_layout(spec)):
        dot = f"{prefix}." if prefix else ""
        kept = selected(_entry(spec, path), in_ch, f"{dot}select")
        consumer = f"{dot}conv.weight" if prefix else "fc.weight"
        groups.append(
            ChannelGroup(
                name=f"{dot}select",
                size=len(kept),
                producer=f"{dot}bn.weight",
                members=((consumer, 1),),
                spec_path=path,
                meta={"selection": True, "bn_index": kept, "layer_id": index},
                bn_scale=f"{dot}bn.weight",
            )
        )
    return groups
