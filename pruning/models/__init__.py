"""Model zoo: every network is built from an explicit, JSON-able width *spec*.

    spec = default_spec("resnet_cifar", depth=56, num_classes=10)
    model = build(spec)                 # nn.Module with .spec attached
    groups = channel_groups(spec)       # prunable, coupled channel groups

A channel group lists every (tensor, dim) that must shrink together when channels of the
group are removed, and where its width lives in the spec; ``pruning.surgery.shrink`` uses
that to copy kept weights into a smaller network of the same family.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from pruning import PruneLabError


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled channels: shrinking the group shrinks every member tensor along its dim.

    name:      stable human-readable id, e.g. ``stages.1.3.mid`` or ``features.7``
    size:      current number of channels
    producer:  the conv/linear weight whose output filters *are* these channels (dim 0);
               filter-scoring methods (L1-norm, ...) rank channels by this tensor
    members:   (state_dict key, dim) pairs sliced by the kept indices
    spec_path: path into the spec where the group's width is stored
    bn_scale:  the BN scaling factors of the channels (Network Slimming ranks by them)
    """

    name: str
    size: int
    producer: str
    members: tuple[tuple[str, int], ...]
    spec_path: tuple[Any, ...]
    meta: dict = field(default_factory=dict, compare=False)
    bn_scale: str | None = None  # the BN weight (gamma) of these channels, if any


def init_he_bn(model: nn.Module) -> None:
    """He-normal (fan_out) convs, BN scale 1 / shift 0: the ResNet init of torchvision and of the
    Rethinking / TAS code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_slimming(model: nn.Module) -> None:
    """The Network Slimming code's init (PreResNet / DenseNet): N(0, sqrt(2 / fan_out)) convs,
    BN scale 0.5 (the sparsity penalty's starting point) and shift 0."""
    import math

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.5)
            nn.init.zeros_(m.bias)


def _families() -> dict[str, Any]:
    from pruning.models import resnet_cifar, vgg_cifar

    fams = {"resnet_cifar": resnet_cifar, "vgg_cifar": vgg_cifar}
    fams["resnet_imagenet"] = importlib.import_module("pruning.models.resnet_imagenet")
    fams["vgg_imagenet"] = importlib.import_module("pruning.models.vgg_imagenet")
    fams["resnet_tas"] = importlib.import_module("pruning.models.resnet_tas")  # TAS searched nets
    fams["preresnet_cifar"] = importlib.import_module("pruning.models.preresnet_cifar")
    fams["densenet_cifar"] = importlib.import_module("pruning.models.densenet_cifar")
    fams["resnet_pfs"] = importlib.import_module("pruning.models.resnet_pfs")  # Pruning from Scratch
    fams["mobilenet_v1"] = importlib.import_module("pruning.models.mobilenet_v1")  # ImageNet MobileNets
    fams["mobilenet_v2"] = importlib.import_module("pruning.models.mobilenet_v2")
    fams["lenet"] = importlib.import_module("pruning.models.lenet")  # ANP-VS LeNet-5-Caffe (MNIST)
    fams["vgg_anp"] = importlib.import_module("pruning.models.vgg_anp")  # ANP-VS VGG-16 (CIFAR)
    fams["sanp"] = importlib.import_module("pruning.models.sanp")  # SANP: per-sample gated nets
    fams["sru_lm"] = importlib.import_module("pruning.models.sru_lm")  # character LMs (FLOP): SRU
    fams["transformer_xl"] = importlib.import_module("pruning.models.transformer_xl")  # and Transformer-XL
    return fams


def family(spec_or_arch: dict | str):
    arch = spec_or_arch if isinstance(spec_or_arch, str) else spec_or_arch.get("arch")
    fams = _families()
    if arch not in fams:
        raise PruneLabError(f"unknown architecture family {arch!r}; known: {', '.join(sorted(fams))}")
    return fams[arch]


def default_spec(arch: str, **kwargs: Any) -> dict:
    """The dense (unpruned) spec of a family, e.g. ``default_spec('vgg_cifar', depth=16)``."""
    return family(arch).default_spec(**kwargs)


def build(spec: dict) -> nn.Module:
    model = family(spec).build(spec)
    model.spec = spec  # type: ignore[attr-defined]
    return model


def channel_groups(spec: dict) -> list[ChannelGroup]:
    return family(spec).channel_groups(spec)
