"""ImageNet VGG-11/13/16/19 (torchvision's definition, BN optional), built from a ``cfg`` list.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, as torchvision.models.vgg defines it: 3x3 conv (with bias) [+ BN] + ReLU per cfg
entry, "M" = 2x2 max-pool. Two heads:

- ``head: fc`` (torchvision): AdaptiveAvgPool(7) -> Linear(C*49, fc0) ReLU Dropout ->
  Linear(fc0, fc1) ReLU Dropout -> Linear(fc1, classes);
- ``head: gap``: global average pool -> Linear(C_last, classes) (ThiNet-GAP / ThiNet-Tiny);
- ``head: fc_bn`` (Network Slimming's ImageNet VGG-11, rethinking imagenet/network-slimming/
  vgg.py ``slimmingvgg``): Linear(C*49, fc0) BN1d ReLU -> Linear(fc0, fc1) BN1d ReLU ->
  Linear(fc1, classes), no dropout; the FC units are channel groups with BN scales, so Network
  Slimming's one global threshold ranks them with the conv channels, as the official prune.py.

``bn_init`` is every BN's initial scale: 1 (torchvision) or 0.5 (``slimmingvgg``, BN2d and BN1d).
The official slimmingvgg has no average pool: its 7x7 map at 224 px equals AdaptiveAvgPool(7).

    {"arch": "vgg_imagenet", "depth": 16, "batch_norm": false, "num_classes": 1000,
     "in_channels": 3, "cfg": [64, 64, "M", 128, ..., "M"], "head": "fc", "fc": [4096, 4096]}

Module names equal torchvision's (``features.{i}``, ``classifier.{0,3,6}``), except that the
first FC weight is stored as (fc0, C, 49) rather than (fc0, C*49) so that removing a channel of
the last conv is a slice along dim 1 like every other consumer (same numbers, same MACs).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup

CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
HEADS = ("fc", "gap", "fc_bn")
POOL = 7  # torchvision's AdaptiveAvgPool2d((7, 7)) before the FC head


def default_spec(
    depth: int = 16,
    batch_norm: bool = False,
    num_classes: int = 1000,
    in_channels: int = 3,
    head: str = "fc",
    fc: list[int] | None = None,
    cfg: list | None = None,
    bn_init: float = 1.0,
) -> dict:
    if cfg is None:
        if depth not in CFGS:
            raise PruneLabError(f"ImageNet VGG depth must be one of {sorted(CFGS)}, got depth={depth}")
        cfg = CFGS[depth]
    if head not in HEADS:
        raise PruneLabError(
            f"VGG head {head!r} unknown; use head=fc (torchvision), head=fc_bn "
            "(Network Slimming's FC + BN1d) or head=gap (global pool)"
        )
    fc = [4096, 4096] if fc is None else [int(v) for v in fc]
    spec = {
        "arch": "vgg_imagenet",
        "depth": depth,
        "batch_norm": bool(batch_norm),
        "num_classes": num_classes,
        "in_channels": in_channels,
        "cfg": [v if v == "M" else int(v) for v in cfg],
        "head": head,
        "fc": fc if head in ("fc", "fc_bn") else [],
    }
    if float(bn_init) != 1.0:  # the key only where it differs from torchvision (older specs lack it)
        spec["bn_init"] = float(bn_init)
    return spec


class ChannelLinear(nn.Linear):
    """Linear(C*S, out) whose weight is kept as (out, C, S): input channel c owns the S columns
    [c*S, (c+1)*S) of torchvision's flattened weight, so a channel slice is a dim-1 slice."""

    def __init__(self, channels: int, spatial: int, out_features: int):
        super().__init__(channels * spatial, out_features)
        self.weight = nn.Parameter(self.weight.detach().reshape(out_features, channels, spatial))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.flatten(x, 1), self.weight.flatten(1), self.bias)  # (N, out)


def _feature_indices(spec: dict) -> list[tuple[int, int]]:
    """(cfg position, features index) of every conv, in torchvision's Sequential layout."""
    out, idx = [], 0
    per_conv = 3 if spec["batch_norm"] else 2
    for pos, v in enumerate(spec["cfg"]):
        if v == "M":
            idx += 1
        else:
            out.append((pos, idx))
            idx += per_conv
    return out


class VGGImageNet(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = spec["in_channels"]
        for v in spec["cfg"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            if v < 1:
                raise PruneLabError("a VGG conv layer needs at least 1 channel")
            layers.append(nn.Conv2d(in_ch, v, 3, padding=1))
            if spec["batch_norm"]:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_ch = v
        self.features = nn.Sequential(*layers)
        if spec["head"] in ("fc", "fc_bn"):
            fc0, fc1 = spec["fc"]
            if min(fc0, fc1) < 1:
                raise PruneLabError("a VGG FC layer needs at least 1 unit")
            self.avgpool = nn.AdaptiveAvgPool2d(POOL)
            if spec["head"] == "fc":  # torchvision; Linear layers at 0, 3, 6
                self.classifier = nn.Sequential(
                    ChannelLinear(in_ch, POOL * POOL, fc0),
                    nn.ReLU(True),
                    nn.Dropout(0.5),
                    nn.Linear(fc0, fc1),
                    nn.ReLU(True),
                    nn.Dropout(0.5),
                    nn.Linear(fc1, spec["num_classes"]),
                )
            else:  # slimmingvgg: BN1d after each hidden Linear (at 1, 4), no dropout
                self.classifier = nn.Sequential(
                    ChannelLinear(in_ch, POOL * POOL, fc0),
                    nn.BatchNorm1d(fc0),
                    nn.ReLU(True),
                    nn.Linear(fc0, fc1),
                    nn.BatchNorm1d(fc1),
                    nn.ReLU(True),
                    nn.Linear(fc1, spec["num_classes"]),
                )
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(in_ch, spec["num_classes"]))
        bn_init = float(spec.get("bn_init", 1.0))
        for m in self.modules():  # torchvision's init (slimmingvgg: the same with BN scale 0.5)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.constant_(m.weight, bn_init)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (N, C, 7, 7) or (N, C, 1, 1)
        if not isinstance(self.classifier[0], ChannelLinear):
            x = torch.flatten(x, 1)  # (N, C)
        return self.classifier(x)


def build(spec: dict) -> nn.Module:
    return VGGImageNet(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """Every conv's filters (``features.{k}``, k = conv number) and, for head fc, the two hidden
    FC layers' units (``classifier.fc{j}``)."""
    convs = _feature_indices(spec)
    bn_offset = 1 if spec["batch_norm"] else None
    groups = []
    for k, (pos, f) in enumerate(convs):
        members: list[tuple[str, int]] = [(f"features.{f}.weight", 0), (f"features.{f}.bias", 0)]
        bn_scale = None
        if bn_offset:
            b = f + bn_offset
            members += [(f"features.{b}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
            bn_scale = f"features.{b}.weight"
        members.append((f"features.{convs[k + 1][1]}.weight" if k + 1 < len(convs) else "classifier.0.weight", 1))
        groups.append(
            ChannelGroup(
                name=f"features.{k}",
                size=int(spec["cfg"][pos]),
                producer=f"features.{f}.weight",
                members=tuple(members),
                spec_path=("cfg", pos),
                meta={"conv_index": k, "layer_id": k + 1, "features_index": f},
                bn_scale=bn_scale,
            )
        )
    if spec["head"] in ("fc", "fc_bn"):
        for j, width in enumerate(spec["fc"]):
            layer, nxt = 3 * j, 3 * (j + 1)
            members = [(f"classifier.{layer}.weight", 0), (f"classifier.{layer}.bias", 0)]
            bn_scale = None
            if spec["head"] == "fc_bn":  # the BN1d after the Linear
                members += [
                    (f"classifier.{layer + 1}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")
                ]
                bn_scale = f"classifier.{layer + 1}.weight"
            groups.append(
                ChannelGroup(
                    name=f"classifier.fc{j}",
                    size=int(width),
                    producer=f"classifier.{layer}.weight",
                    members=(*members, (f"classifier.{nxt}.weight", 1)),
                    spec_path=("fc", j),
                    meta={"fc_index": j, "layer_id": len(convs) + j + 1},
                    bn_scale=bn_scale,
                )
            )
    return groups


def from_torchvision(state_dict: dict[str, torch.Tensor], spec: dict) -> dict[str, torch.Tensor]:
    """Map a torchvision ``vgg*`` / ``vgg*_bn`` state dict onto this family (same keys; the first
    FC weight is reshaped to (fc0, C, 49))."""
    out = dict(state_dict)
    if spec["head"] in ("fc", "fc_bn") and "classifier.0.weight" in out:
        w = out["classifier.0.weight"]  # (fc0, C*49)
        out["classifier.0.weight"] = w.reshape(w.shape[0], -1, POOL * POOL)  # (fc0, C, 49)
    return out
