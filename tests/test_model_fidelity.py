"""The networks are the papers' official ones: classifier, init, shortcut, parameter and MAC
counts checked against numbers derived independently of our model code (arithmetic from the
layer list, or the official counters; see results/model_fidelity.md for the line-by-line notes)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from pruning.measure import count_macs, count_params
from pruning.models import build, default_spec

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
MODEL_KEYS = ("name", "init_from")


def config_spec(name: str, num_classes: int = 10) -> dict:
    """The spec a model config builds (as pipeline.model_spec does, without Hydra)."""
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    kwargs = {k: v for k, v in cfg.items() if k not in (*MODEL_KEYS, "arch")}
    return default_spec(cfg["arch"], num_classes=num_classes, in_channels=3, **kwargs)


def vgg_param_count(cfg: list, classes: int, hidden: int) -> int:
    """Parameters of a CIFAR VGG from its layer list: 3x3 convs without bias, BN (2 per channel),
    then the classifier -- counted by hand, not from our modules."""
    total, in_ch = 0, 3
    for v in cfg:
        if v == "M":
            continue
        total += 9 * in_ch * v + 2 * v
        in_ch = v
    if hidden:
        return total + (in_ch * hidden + hidden) + 2 * hidden + (hidden * classes + classes)
    return total + in_ch * classes + classes


VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def test_vgg19_is_network_slimmings_vgg_with_one_linear_classifier():
    spec = config_spec("vgg19")
    model = build(spec)
    assert spec["hidden"] == 0 and spec["cfg"] == VGG19
    assert vgg_param_count(VGG19, 10, 0) == 20_035_018
    assert count_params(model) == 20_035_018
    assert count_params(build(config_spec("vgg19", num_classes=100))) == vgg_param_count(VGG19, 100, 0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 10)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def test_vgg16_is_li_et_al_vgg_with_linear_bn_relu_linear_classifier():
    spec = config_spec("vgg16")
    model = build(spec)
    assert spec["hidden"] == 512 and default_spec("vgg_cifar", depth=16)["hidden"] == 512
    assert vgg_param_count(VGG16, 10, 512) == 14_987_722
    assert count_params(model) == 14_987_722
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]


@pytest.mark.parametrize("name", ["vgg19", "vgg16"])
def test_vgg_init_is_the_official_one(name: str):
    """conv N(0, sqrt(2/(k*k*out))), BN2d 0.5 / 0, BN1d 1 / 0 (not touched by the official
    loop), Linear N(0, 0.01) / 0."""
    torch.manual_seed(0)
    model = build(config_spec(name))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
            assert abs(float(m.weight.std()) / std - 1) < 0.05 and m.bias is None
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 0.5) and torch.all(m.bias == 0)
        elif isinstance(m, nn.BatchNorm1d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        elif isinstance(m, nn.Linear):
            assert abs(float(m.weight.std()) - 0.01) < 0.001 and torch.all(m.bias == 0)


def test_vgg_global_pool_equals_the_official_avgpool2_on_cifar():
    torch.manual_seed(0)
    model = build(config_spec("vgg19")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)  # (2, 512, 2, 2)
        official = model.classifier(F.avg_pool2d(features, 2).flatten(1))
        torch.testing.assert_close(model(x), official)
    assert features.shape[-2:] == (2, 2)
