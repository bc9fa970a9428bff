"""CIFAR VGG with batch norm, built from a per-layer ``cfg`` list.

Simonyan & Zisserman, ICLR 2015, adapted to 32x32 inputs as in the official code of Network
Slimming (Liu et al., ICCV 2017) and "Rethinking the Value of Network Pruning" (Liu et al., ICLR
2019): 3x3 conv (no bias) + BN + ReLU per cfg entry, "M" a 2x2 max-pool, then average pooling and
the classifier. Two classifiers exist in that code, selected by ``hidden``:

* ``hidden: 0``: one Linear(cfg[-1], classes) -- Network Slimming's VGG
  (network-slimming/models/vgg.py = rethinking cifar/network-slimming/models/vgg.py); the
  default for every depth but 16. Dense CIFAR-10 VGG-19: 20,035,018 parameters.
* ``hidden: 512``: Linear(cfg[-1], 512) + BN1d + ReLU + Linear(512, classes) -- Li et al.'s
  VGG-16 in rethinking cifar/l1-norm-pruning/models/vgg.py; the default for depth 16. Dense
  CIFAR-10 VGG-16: 14,987,722 parameters.

Initialisation as both official files: conv N(0, sqrt(2 / (k*k*out))), BN2d scale 0.5 and shift
0, Linear N(0, 0.01) and bias 0 (BN1d keeps PyTorch's default 1 / 0: the official loop only
touches BatchNorm2d). The official forward pools with AvgPool2d(2) on the 2x2 map a 32x32 input
leaves; we pool globally, which is the same there and also runs on other input sizes.

    {"arch": "vgg_cifar", "depth": 16, "num_classes": 10, "in_channels": 3, "hidden": 512,
     "cfg": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]}
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.models import ChannelGroup, init_slimming

CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


def default_spec(
    depth: int = 16,
    num_classes: int = 10,
    in_channels: int = 3,
    hidden: int | None = None,
    cfg: list | None = None,
) -> dict:
    """``hidden=None``: the official classifier of that depth (512 for VGG-16, Li et al.'s
    L1-norm code; 0, one Linear, otherwise: Network Slimming's VGG)."""
    if hidden is None:
        hidden = 512 if depth == 16 else 0
    if cfg is None:
        if depth not in CFGS:
            raise PruneLabError(f"VGG depth must be one of {sorted(CFGS)}, got {depth}")
        cfg = CFGS[depth]
    cfg = [v if v == "M" else int(v) for v in cfg]
    return {
        "arch": "vgg_cifar",
        "depth": depth,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "hidden": int(hidden),
        "cfg": cfg,
    }


class VGGCifar(nn.Module):
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
            layers += [nn.Conv2d(in_ch, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_ch = v
        self.features = nn.Sequential(*layers)
        hidden = spec.get("hidden") or 0
        if hidden:
            self.classifier = nn.Sequential(
                nn.Linear(in_ch, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, spec["num_classes"]),
            )
        else:
            self.classifier = nn.Sequential(nn.Linear(in_ch, spec["num_classes"]))
        init_slimming(self)  # conv N(0, sqrt(2 / (k*k*out))), BN2d 0.5 / 0
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, C, h, w)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C); = AvgPool2d(2) on CIFAR's 2x2
        return self.classifier(x)


def build(spec: dict) -> nn.Module:
    return VGGCifar(spec)


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """One group per conv: its filters, its BN, and the next conv's (or the classifier's) inputs."""
    convs = []  # (cfg index, features index of the conv)
    idx = 0
    for i, v in enumerate(spec["cfg"]):
        if v == "M":
            idx += 1
        else:
            convs.append((i, idx))
            idx += 3
    groups = []
    for k, (cfg_i, f) in enumerate(convs):
        bn = [(f"features.{f + 1}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
        consumer = f"features.{convs[k + 1][1]}.weight" if k + 1 < len(convs) else "classifier.0.weight"
        groups.append(
            ChannelGroup(
                name=f"features.{f}",
                size=spec["cfg"][cfg_i],
                producer=f"features.{f}.weight",
                members=((f"features.{f}.weight", 0), *bn, (consumer, 1)),
                spec_path=("cfg", cfg_i),
                meta={"conv_index": k, "layer_id": k + 1},
                bn_scale=f"features.{f + 1}.weight",
            )
        )
    return groups
