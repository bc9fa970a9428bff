"""VGG-16 of the ANP-VS official code, for 32x32 CIFAR-10/100.

Madaan, Shin & Hwang, "Adversarial Neural Pruning with Vulnerability Suppression", ICML 2020;
layout checked against github:divyam3897/ANP_VS (HEAD 32c5e86) src/model/vgg.py ``VGG`` and
src/model/layers.py (TF1, NCHW). Each of the 13 blocks is

    conv 3x3 SAME (with bias) -> BN -> ReLU -> (2x2 max-pool | dropout p)

with ``p_list = [0.3, -, 0.4, -, 0.4, 0.4, -, 0.4, 0.4, -, 0.4, 0.4, -]`` ("-" = max-pool), so
the five pools leave 1x1x512 on a 32x32 input. The head is

    flatten (512) -> dropout 0.5 -> dense 512->512 -> BN1d -> ReLU -> dropout 0.5 -> dense 512->classes

(the two head dropouts are applied in the official 'base' mode only, i.e. not while ANP trains
its masks; the conv-block dropouts are applied in both). BN: TF momentum 0.99 (PyTorch 0.01),
eps 1e-3 (``fused_batch_norm``'s default and the explicit 1e-3 of the dense BN), gamma 1, beta 0.
Init: ``tf.get_variable``'s default Glorot-uniform for every weight and bias (a 1-D bias of n
entries: U(-sqrt(3/n), sqrt(3/n))). Dense CIFAR-10 parameters: 14,991,946 (CIFAR-100: 15,038,116) (BN running
statistics are buffers, not counted).

ANP's beta-Bernoulli masks (``mask_sites``): on each conv's output *before* BN (13 masks, a_uc
init 2.0), on the 512 inputs of dense14 and on the 512 inputs of dense15 (after ReLU / dropout).

    {"arch": "vgg_anp", "num_classes": 10, "in_channels": 3,
     "cfg": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
     "dropout": [0.3, 0.0, 0.4, 0.0, 0.4, 0.4, 0.0, 0.4, 0.4, 0.0, 0.4, 0.4, 0.0],
     "hidden": 512, "head_dropout": 0.5}

``dropout[k]`` is the rate after conv k (0 where that conv is followed by a pool instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.models import ChannelGroup

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
DROPOUT = [0.3, 0.0, 0.4, 0.0, 0.4, 0.4, 0.0, 0.4, 0.4, 0.0, 0.4, 0.4, 0.0]
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99


def default_spec(
    num_classes: int = 10,
    in_channels: int = 3,
    cfg: list | None = None,
    dropout: list | None = None,
    hidden: int = 512,
    head_dropout: float = 0.5,
) -> dict:
    cfg = [v if v == "M" else int(v) for v in (CFG if cfg is None else cfg)]
    dropout = [float(p) for p in (DROPOUT if dropout is None else dropout)]
    n_convs = sum(v != "M" for v in cfg)
    if len(dropout) != n_convs:
        raise PruneLabError(f"vgg_anp: dropout needs one rate per conv ({n_convs}), got {len(dropout)}")
    return {
        "arch": "vgg_anp",
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "cfg": cfg,
        "dropout": dropout,
        "hidden": int(hidden),
        "head_dropout": float(head_dropout),
    }


def _feature_indices(spec: dict) -> list[tuple[int, int]]:
    """(cfg position, features index) of every conv: conv, BN, ReLU, [Dropout], then any pool."""
    out, idx, k = [], 0, 0
    for pos, v in enumerate(spec["cfg"]):
        if v == "M":
            idx += 1
            continue
        out.append((pos, idx))
        idx += 3 + (1 if spec["dropout"][k] > 0 else 0)
        k += 1
    return out


def _glorot_bias_(b: torch.Tensor) -> None:
    bound = math.sqrt(3.0 / b.numel())
    nn.init.uniform_(b, -bound, bound)


class VGGANP(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, k = spec["in_channels"], 0
        for v in spec["cfg"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            if v < 1:
                raise PruneLabError("a VGG conv layer needs at least 1 channel")
            layers += [
                nn.Conv2d(in_ch, v, 3, padding=1),
                nn.BatchNorm2d(v, eps=BN_EPS, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            if spec["dropout"][k] > 0:
                layers.append(nn.Dropout(spec["dropout"][k]))
            in_ch, k = v, k + 1
        self.features = nn.Sequential(*layers)
        hidden = spec["hidden"]
        if hidden < 1:
            raise PruneLabError("the vgg_anp dense head needs at least 1 hidden unit")
        p = spec["head_dropout"]
        self.classifier = nn.Sequential(
            nn.Dropout(p),  # 0
            nn.Linear(in_ch, hidden),  # 1  dense14
            nn.BatchNorm1d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM),  # 2  bn14
            nn.ReLU(inplace=True),  # 3
            nn.Dropout(p),  # 4
            nn.Linear(hidden, spec["num_classes"]),  # 5  dense15
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                _glorot_bias_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)  # (N, 512) on 32x32 inputs, as the official flatten
        return self.classifier(x)

    def vulnerability_sites(self) -> list[str]:
        """ANP-VS's latent features (official ``temp_x``, 15 tensors): every conv block's ReLU
        output, dense14's pre-BN output and the ReLU after BN14."""
        relus = [n for n, m in self.features.named_children() if isinstance(m, nn.ReLU)]
        return [*(f"features.{n}" for n in relus), "classifier.1", "classifier.3"]


def build(spec: dict) -> nn.Module:
    return VGGANP(spec)


def mask_sites(spec: dict) -> list[tuple[str, str, int]]:
    """Where ANP's beta-Bernoulli masks multiply activations: (module, "output" | "input", units)."""
    sites = [(f"features.{f}", "output", int(spec["cfg"][pos])) for pos, f in _feature_indices(spec)]
    last = [v for v in spec["cfg"] if v != "M"][-1]
    return [*sites, ("classifier.1", "input", int(last)), ("classifier.5", "input", int(spec["hidden"]))]


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """Every conv's filters (bias, BN, next conv's / dense14's inputs) and dense14's units."""
    convs = _feature_indices(spec)
    groups = []
    for k, (pos, f) in enumerate(convs):
        bn = [(f"features.{f + 1}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
        consumer = f"features.{convs[k + 1][1]}.weight" if k + 1 < len(convs) else "classifier.1.weight"
        groups.append(
            ChannelGroup(
                name=f"features.{f}",
                size=int(spec["cfg"][pos]),
                producer=f"features.{f}.weight",
                members=((f"features.{f}.weight", 0), (f"features.{f}.bias", 0), *bn, (consumer, 1)),
                spec_path=("cfg", pos),
                meta={"conv_index": k, "layer_id": k + 1},
                bn_scale=f"features.{f + 1}.weight",
            )
        )
    bn = [(f"classifier.2.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
    groups.append(
        ChannelGroup(
            name="classifier.fc0",
            size=int(spec["hidden"]),
            producer="classifier.1.weight",
            members=(("classifier.1.weight", 0), ("classifier.1.bias", 0), *bn, ("classifier.5.weight", 1)),
            spec_path=("hidden",),
            meta={"fc_index": 0, "layer_id": len(convs) + 1},
            bn_scale="classifier.2.weight",
        )
    )
    return groups
