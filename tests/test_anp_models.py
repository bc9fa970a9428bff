"""ANP-VS models (issue 12 item 4): LeNet-5-Caffe and the ANP VGG-16, against the official layout."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from pruning.measure import count_params
from pruning.models import build, channel_groups, default_spec
from pruning.surgery import shrink, zero_channels

VGG16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def _vgg_anp_params(num_classes: int) -> int:
    """By hand: conv 3x3 + bias + BN (gamma, beta) per block, dense14 + BN14, dense15."""
    chans = [3, *VGG16]
    convs = sum(chans[i] * chans[i + 1] * 9 + chans[i + 1] + 2 * chans[i + 1] for i in range(13))
    return convs + (512 * 512 + 512) + 2 * 512 + (512 * num_classes + num_classes)


def test_lenet_dense_params_and_shape() -> None:
    spec = default_spec("lenet")
    model = build(spec).eval()
    by_hand = (20 * 1 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert by_hand == 431_080
    assert count_params(model) == by_hand
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert build(default_spec("lenet", in_channels=3)).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert [g.size for g in channel_groups(spec)] == [20, 50, 500]
    assert model.fc1.weight.shape == (500, 50, 16)  # conv2 channel c owns flattened features [16c, 16c+16)


def test_lenet_flatten_order_is_nchw() -> None:
    """fc1 sees conv2's pooled map flattened as (C, H, W), as tf.layers.flatten on NCHW does."""
    torch.manual_seed(0)
    model = build(default_spec("lenet")).eval()
    x = torch.rand(2, 1, 28, 28)
    # the official second pool is 2x2 / stride 2; our adaptive pool is the same on 28x28 inputs
    feats = torch.nn.functional.max_pool2d(model.relu(model.conv2(model.pool(model.relu(model.conv1(x))))), 2, 2)
    assert feats.shape == (2, 50, 4, 4)
    h = torch.relu(feats.reshape(2, 800) @ model.fc1.weight.reshape(500, 800).T + model.fc1.bias)
    torch.testing.assert_close(model.fc2(h), model(x))


def test_lenet_init_is_glorot_uniform_with_glorot_biases() -> None:
    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    assert model.conv2.weight.abs().max() <= (6 / (20 * 25 + 50 * 25)) ** 0.5
    assert model.fc1.weight.abs().max() <= (6 / (800 + 500)) ** 0.5
    assert model.fc1.bias.abs().max() <= (3 / 500) ** 0.5
    assert model.fc1.bias.abs().max() > 0.5 * (3 / 500) ** 0.5  # not zero-initialised


@pytest.mark.parametrize("num_classes", [10, 100])
def test_vgg_anp_dense_params_and_shape(num_classes: int) -> None:
    spec = default_spec("vgg_anp", num_classes=num_classes)
    model = build(spec).eval()
    assert count_params(model) == _vgg_anp_params(num_classes)
    assert _vgg_anp_params(10) == 14_991_946
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, num_classes)
    assert [g.size for g in channel_groups(spec)] == [*VGG16, 512]


def test_vgg_anp_dropout_pattern_and_bn() -> None:
    model = build(default_spec("vgg_anp"))
    seq = [type(m).__name__ for m in model.features]
    after = []  # what follows each conv block's ReLU
    for i, name in enumerate(seq):
        if name == "ReLU":
            nxt = model.features[i + 1]
            after.append(nxt.p if isinstance(nxt, torch.nn.Dropout) else "M")
    assert after == [0.3, "M", 0.4, "M", 0.4, 0.4, "M", 0.4, 0.4, "M", 0.4, 0.4, "M"]
    head = [type(m).__name__ for m in model.classifier]
    assert head == ["Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert model.classifier[0].p == model.classifier[4].p == 0.5
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            assert m.eps == 1e-3 and m.momentum == pytest.approx(0.01)
        if isinstance(m, torch.nn.Conv2d):
            assert m.bias is not None and m.padding == (1, 1)


def test_mask_sites_match_official_placement() -> None:
    from pruning.models import lenet, vgg_anp

    assert [u for _, _, u in lenet.mask_sites(default_spec("lenet"))] == [20, 50, 800, 500]
    sites = vgg_anp.mask_sites(default_spec("vgg_anp"))
    assert [u for _, _, u in sites] == [*VGG16, 512, 512]
    model = build(default_spec("vgg_anp"))
    mods = dict(model.named_modules())
    assert all(isinstance(mods[n], torch.nn.Conv2d) for n, _, _ in sites[:13])  # mask before BN
    assert all(isinstance(mods[n], torch.nn.Linear) for n, _, _ in sites[13:])


def _randomise_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize(
    "spec_fn, shape",
    [
        (lambda: default_spec("lenet"), (4, 1, 28, 28)),
        (lambda: default_spec("vgg_anp"), (4, 3, 32, 32)),
        (lambda: default_spec("vgg_anp", num_classes=100), (4, 3, 32, 32)),
    ],
)
def test_shrunk_model_equals_dense_model_with_channels_zeroed(spec_fn, shape) -> None:
    torch.manual_seed(0)
    spec = spec_fn()
    model = build(spec).eval()
    _randomise_bn(model)
    rnd = random.Random(0)
    keep = {g.name: sorted(rnd.sample(range(g.size), max(1, g.size // 3))) for g in channel_groups(spec)}
    small = shrink(model, keep).eval()
    reference = zero_channels(model, keep).eval()
    x = torch.rand(*shape)
    assert count_params(small) < count_params(model)
    torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)
    for g in channel_groups(small.spec):
        assert g.size == len(keep[g.name])


def test_model_configs_compose() -> None:
    from omegaconf import OmegaConf

    from pruning.config import model_spec

    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    cfg = OmegaConf.to_container(OmegaConf.load(conf / "lenet5_caffe.yaml"))
    spec = model_spec(cfg, {"num_classes": 10, "in_channels": 1})
    assert spec == default_spec("lenet") and count_params(build(spec)) == 431_080
    cfg = OmegaConf.to_container(OmegaConf.load(conf / "vgg16_anp.yaml"))
    assert model_spec(cfg, {"num_classes": 10, "in_channels": 3}) == default_spec("vgg_anp")
