"""Pruning from Scratch on ImageNet: the nets the official code gates, their expanded forms and
closed-form MACs (``pruning.methods.pfs`` dispatches here for these archs).

Official code frankwang345/pruning-from-scratch: models/mobilenet.py, models/resnet.py
(``ResNet50``), gate.py, script/learn_gates_imagenet.py, script/prune_model_imagenet.py.

- MobileNet-V1 (``mobilenet_v1``): gates on the stem and on every block's pointwise output
  (all 14 widths of ``expanded_cfg(e)``); e = 32 is the dense net, the official default e = 40.
- MobileNet-V2 (``mobilenet_v2``): gates on the stem, every expanding block's hidden channels
  (after bn1) and the last 1x1 conv (the official ``ConvBNReLU`` modules are the stem AND the
  last conv: both carry gates, and prune_model_imagenet.py moves the last conv's gates to the end
  of the cfg); block outputs stay at ``int(m * out)``. PFS's net has ReLU (not ReLU6) after the
  stem and the last conv and no dropout: ``dense_spec`` sets both.
- ResNet-50 (``resnet_imagenet``, bottleneck): ``gates1`` after bn1 and ``gates2`` after bn2 of
  every Bottleneck (= the family's ``mid0`` / ``mid1`` groups); no stem gate (the official stem
  is not a ``ConvBNReLU``). The official ``ResNet50`` is torchvision's v1.5 net (stride on the
  3x3, projection where stride or width changes, kaiming fan_out init); its trunk stays at the
  dense widths (64 / 256 / 512 / 1024 / 2048, ``-m 1``) and the mids are e / 2e / 4e / 8e
  (dense: e = 64). Basic-block ImageNet ResNets (18/34) are accepted with the CIFAR BasicBlock
  rule (gates after bn1 only): an extension, the official code has no such ImageNet net.

ImageNet gate-learning defaults of learn_gates_imagenet.py: ``-s 0.5``, ``--lambd 0.05``,
Adam 0.01, ``-e 40``, batch 100, ONE pass over the training set evaluated every 500 iterations,
validation on the last 50 training images of every class (datasets.py). The per-arch expansion
and s are in ``PER_ARCH`` (merged into ``pfs.PER_ARCH``); the rest are method settings, passed as

    prune-exp model=mobilenet_v2 data=imagenet method=pfs method.lambd=0.05 method.gate_epochs=1 \
        method.batch_size=100 +method.val_per_class=50

(they are not in conf/method/pfs.yaml's per_arch: every key of that file is part of each PFS run's
directory digest, so editing it would move the existing runs). Departure: the gates are validated
(and the save rule applied) once per epoch, not every 500 iterations; with one pass that is once.
"""

from __future__ import annotations

import copy

import torch

from pruning import PruneLabError
from pruning.models import mobilenet_v1, mobilenet_v2, resnet_imagenet

ARCHS = ("mobilenet_v1", "mobilenet_v2", "resnet_imagenet")
SUPPORTED = (
    "mobilenet_v1 (model=mobilenet_v1: gates on the stem and every pointwise conv)",
    "mobilenet_v2 (model=mobilenet_v2: gates on the stem, every expansion conv and the last conv)",
    "resnet_imagenet (model=resnet50: gates after bn1 and bn2 of every bottleneck)",
)
# e and s: MobileNets the official -e 40 / -s 0.5 (learn_gates_imagenet.py). ResNet-50: the
# official script's -e 40 would make the gated mids NARROWER than the dense net's 64 (the
# README: EXPANSION "is used to enlarge the intermediate channel numbers"); e = 80 (ours: the
# MobileNets' 40 / 32 = 1.25x) -- the paper's ResNet-50 value is not published.
PER_ARCH = {
    "mobilenet_v1": {"expansion": 40, "sparsity_level": 0.5},
    "mobilenet_v2": {"expansion": 40, "sparsity_level": 0.5},
    "resnet_imagenet": {"expansion": 80, "sparsity_level": 0.5},
}
DEFAULT_WIDTH = {"mobilenet_v1": 32, "mobilenet_v2": 32, "resnet_imagenet": 64}  # e of the dense net


def dense_spec(spec: dict) -> dict:
    """The PFS network for a model config's spec (MobileNet-V2: ReLU after the stem and the last
    conv, no dropout, as the official ``MobileNetV2``; the others unchanged)."""
    if spec["arch"] == "mobilenet_v2":
        return {**copy.deepcopy(spec), "outer_act": "relu", "dropout": 0.0}
    return spec


def expanded_spec(spec: dict, expansion: int) -> dict:
    """The gated net: ``models.<arch>(1000, e)`` of the official code, trunk / block outputs kept."""
    e = int(expansion)
    if spec["arch"] == "mobilenet_v1":
        return mobilenet_v1.expanded_spec(spec, e)
    if spec["arch"] == "mobilenet_v2":
        return mobilenet_v2.expanded_spec(spec, e)
    if spec["arch"] == "resnet_imagenet":
        out = copy.deepcopy(spec)
        for s, stage in enumerate(out["stages"]):
            width = max(1, e * resnet_imagenet.BASE_WIDTHS[s] // resnet_imagenet.BASE_WIDTHS[0])  # e, 2e, 4e, 8e
            stage["mid"] = [[width] * len(mid) for mid in stage["mid"]]
        return out
    raise PruneLabError(f"no expanded ImageNet form of arch {spec['arch']!r}")


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # odd kernel, pad k // 2, at this stride


def resnet_imagenet_macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """``count_macs(build(spec), input_shape)`` of a ``resnet_imagenet`` spec in closed form."""
    c_in, h, w = (int(v) for v in input_shape)
    h, w = _out(h, 2), _out(w, 2)
    total = h * w * spec["stem"] * c_in * 49
    h, w = _out(h, 2), _out(w, 2)  # max-pool 3x3/2 pad 1
    in_ch = int(spec["stem"])
    for stage in spec["stages"]:
        out = int(stage["width"])
        for b, mid in enumerate(stage["mid"]):
            stride = stage["stride"] if b == 0 else 1
            h2, w2 = _out(h, stride), _out(w, stride)
            if spec["block"] == "bottleneck":
                m0, m1 = int(mid[0]), int(mid[1])
                total += h * w * in_ch * m0 + h2 * w2 * (m0 * m1 * 9 + m1 * out)
            else:
                total += h2 * w2 * (in_ch * int(mid[0]) * 9 + int(mid[0]) * out * 9)
            if stride != 1 or in_ch != out:
                total += h2 * w2 * in_ch * out
            h, w, in_ch = h2, w2, out
    return int(total + in_ch * spec["num_classes"])


def macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """Forward MACs as ``count_macs`` counts them (convs + fc), without building the net."""
    if spec["arch"] == "mobilenet_v1":
        return mobilenet_v1.macs(spec, input_shape)
    if spec["arch"] == "mobilenet_v2":
        return mobilenet_v2.macs(spec, input_shape)
    if spec["arch"] == "resnet_imagenet":
        return resnet_imagenet_macs(spec, input_shape)
    raise PruneLabError(f"no closed-form MACs for arch {spec['arch']!r}")


def official_avgpool_macs(spec: dict, input_shape: tuple[int, ...]) -> int:
    """What the official flop_counter.py adds for the AvgPool2d(7) module (its input's numel);
    ``count_macs`` counts no pooling."""
    _, h, w = (int(v) for v in input_shape)
    for _ in range(5):  # every family here reduces the input 32x
        h, w = _out(h, 2), _out(w, 2)
    if spec["arch"] == "mobilenet_v1":
        channels = int(spec["blocks"][-1]["out"])
    elif spec["arch"] == "mobilenet_v2":
        channels = int(spec["last"])
    else:
        channels = int(spec["stages"][-1]["width"])
    return channels * h * w


def split_last_per_class(data, per_class: int):
    """(train part, validation part) as the official ImageNet gate learning (datasets.py): the
    last ``per_class`` training images of every class validate, the rest train. The validation
    part is a copy whose *test* split is those images (no augmentation)."""
    labels = data.train.labels.detach().cpu()
    n = int(labels.numel())
    val: list[int] = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) <= per_class:
            raise PruneLabError(
                f"class {c} has {len(idx)} training images: cannot keep the last {per_class} of each for validation"
            )
        val.extend(idx[-per_class:].tolist())
    val_set = set(val)
    train_idx = [i for i in range(n) if i not in val_set]
    val_idx = sorted(val)
    return data._replace(train=data.train.subset(train_idx)), data._replace(test=data.train.subset(val_idx))
