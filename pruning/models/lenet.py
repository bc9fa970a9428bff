"""LeNet-5-Caffe for 28x28 MNIST / Fashion-MNIST, as in the ANP-VS official code.

Madaan, Shin & Hwang, "Adversarial Neural Pruning with Vulnerability Suppression", ICML 2020;
layout checked against github:divyam3897/ANP_VS (HEAD 32c5e86) src/model/lenet.py ``LeNetConv``
and src/model/layers.py (TF1, NCHW):

    conv 5x5 1->20 (VALID, bias) -> ReLU -> maxpool 2  (28 -> 24 -> 12)
    conv 5x5 20->50 (VALID, bias) -> ReLU -> maxpool 2 (12 -> 8 -> 4)
    flatten NCHW (C, H, W order, 50*4*4 = 800) -> fc 800->500 -> ReLU -> fc 500->10 (logits)

No BN, no dropout. The second pool is ``AdaptiveMaxPool2d(4)``: on the official 28x28 input (an
8x8 map) that is exactly the 2x2 / stride-2 max-pool, and it lets the net also run on other sizes
(e.g. 32x32, which config validation pairs every model with), as vgg_cifar pools globally.
Dense parameters: 520 + 25,050 + 400,500 + 5,010 = 431,080.

Init: the official variables use ``tf.get_variable``'s default Glorot-uniform for every weight
*and* bias; a 1-D bias of n entries then has fan_in = fan_out = n, i.e. U(-sqrt(3/n), sqrt(3/n)).
We reproduce that (torch's xavier_uniform_ computes the same fans for conv/linear weights).

ANP's beta-Bernoulli masks sit (``mask_sites``) on the outputs of conv1 and conv2 (before ReLU),
on the 800 flattened inputs of fc1, and on the 500 inputs of fc2 (after ReLU). The 800-feature
mask prunes individual flattened features; our channel groups prune whole conv2 channels (16
features each) instead, so a physically removed network stays a LeNet of this family.

    {"arch": "lenet", "num_classes": 10, "in_channels": 1, "conv": [20, 50], "fc": [500]}
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.models import ChannelGroup
from pruning.models.vgg_imagenet import ChannelLinear

KERNEL = 5
SIDE = 4  # conv2's pooled map: 28 -> 24 -> 12 -> 8 -> 4


def default_spec(
    num_classes: int = 10,
    in_channels: int = 1,
    conv: list | None = None,
    fc: list | None = None,
) -> dict:
    conv = [20, 50] if conv is None else [int(v) for v in conv]
    fc = [500] if fc is None else [int(v) for v in fc]
    if len(conv) != 2 or len(fc) != 1:
        raise PruneLabError("LeNet-5-Caffe has exactly 2 conv widths and 1 hidden fc width")
    return {
        "arch": "lenet",
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "conv": conv,
        "fc": fc,
    }


def _glorot_bias_(b: torch.Tensor) -> None:
    """TF's glorot_uniform on a 1-D variable of n entries: U(-sqrt(3/n), sqrt(3/n))."""
    bound = math.sqrt(3.0 / b.numel())
    nn.init.uniform_(b, -bound, bound)


class LeNet5Caffe(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        c1, c2 = spec["conv"]
        (h,) = spec["fc"]
        if min(c1, c2, h) < 1:
            raise PruneLabError("a LeNet layer needs at least 1 unit")
        side = SIDE
        self.conv1 = nn.Conv2d(spec["in_channels"], c1, KERNEL)  # padding 0 = TF 'VALID'
        self.conv2 = nn.Conv2d(c1, c2, KERNEL)
        self.pool = nn.MaxPool2d(2, 2)
        self.pool2 = nn.AdaptiveMaxPool2d(SIDE)  # = MaxPool2d(2, 2) on 28x28 inputs
        self.relu = nn.ReLU()
        self.fc1 = ChannelLinear(c2, side * side, h)  # weight (h, c2, side*side): channel slices
        self.fc2 = nn.Linear(h, spec["num_classes"])
        for m in (self.conv1, self.conv2, self.fc1, self.fc2):
            if m is self.fc1:  # Glorot fans of the flattened (h, c2*side*side) matrix
                bound = math.sqrt(6.0 / (c2 * side * side + h))
                nn.init.uniform_(m.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(m.weight)
            _glorot_bias_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))  # (N, 20, 12, 12)
        x = self.pool2(self.relu(self.conv2(x)))  # (N, 50, 4, 4)
        x = self.relu(self.fc1(x))  # flattens in NCHW order, as the official tf.layers.flatten on NCHW
        return self.fc2(x)

    def vulnerability_sites(self) -> list[str]:
        """ANP-VS's latent features (official ``temp_x``): relu(conv1), relu(conv2), relu(fc1),
        the three calls of the shared ReLU."""
        return ["relu"]


def build(spec: dict) -> nn.Module:
    return LeNet5Caffe(spec)


def mask_sites(spec: dict) -> list[tuple[str, str, int]]:
    """Where ANP's beta-Bernoulli masks multiply activations: (module, "output" | "input", units)."""
    side = SIDE
    c1, c2 = spec["conv"]
    return [
        ("conv1", "output", c1),
        ("conv2", "output", c2),
        ("fc1", "input", c2 * side * side),
        ("fc2", "input", spec["fc"][0]),
    ]


def channel_groups(spec: dict) -> list[ChannelGroup]:
    """conv1 and conv2 filters and fc1 units; conv2's consumer is fc1's (h, C, S) weight on dim 1."""

    def bias_group(name, size, consumer, spec_path, layer_id):
        return ChannelGroup(
            name=name,
            size=int(size),
            producer=f"{name}.weight",
            members=((f"{name}.weight", 0), (f"{name}.bias", 0), (f"{consumer}.weight", 1)),
            spec_path=spec_path,
            meta={"layer_id": layer_id},
        )

    c1, c2 = spec["conv"]
    return [
        bias_group("conv1", c1, "conv2", ("conv", 0), 1),
        bias_group("conv2", c2, "fc1", ("conv", 1), 2),
        bias_group("fc1", spec["fc"][0], "fc2", ("fc", 0), 3),
    ]
