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
            assert abs(float(m.weight.detach().std()) / std - 1) < 0.05 and m.bias is None
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 0.5) and torch.all(m.bias == 0)
        elif isinstance(m, nn.BatchNorm1d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        elif isinstance(m, nn.Linear):
            assert abs(float(m.weight.detach().std()) - 0.01) < 0.001 and torch.all(m.bias == 0)


def test_vgg_global_pool_equals_the_official_avgpool2_on_cifar():
    torch.manual_seed(0)
    model = build(config_spec("vgg19")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)  # (2, 512, 2, 2)
        official = model.classifier(F.avg_pool2d(features, 2).flatten(1))
        torch.testing.assert_close(model(x), official)
    assert features.shape[-2:] == (2, 2)


def _macs_by_module(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs of every conv / linear, by module name (shapes only: runs on the meta device)."""
    out: dict[str, int] = {}

    def hook(name):
        def record(m, _inp, y):
            if isinstance(m, nn.Conv2d):
                out[name] = y[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            else:
                out[name] = m.in_features * m.out_features

        return record

    handles = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape, device="meta"))
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("variant, paper, main_path, ours", [("A", 15.5, 15.47, 15.38), ("B", 24.2, 24.19, 24.06)])
def test_resnet34_l1_flops_reduction_in_li_et_al_convention(variant, paper, main_path, ours):
    """Li et al.'s 15.5% / 24.2% (ResNet-34-A/B) count the main path only (no projection-shortcut
    convs); counting every conv + fc (count_macs, our table column) gives ~0.1 point less. The
    numbers are quoted in conf/report/rethinking_l1_imagenet.yaml."""
    import copy

    from pruning.methods.l1_norm import L1Norm
    from pruning.models import channel_groups

    dense_spec = default_spec("resnet_imagenet", depth=34)
    widths = L1Norm(variant=variant).target_widths(dense_spec)
    pruned_spec = copy.deepcopy(dense_spec)
    for g in channel_groups(dense_spec):
        if g.name in widths:
            node = pruned_spec
            for key in g.spec_path[:-1]:
                node = node[key]
            node[g.spec_path[-1]] = widths[g.name]
    with torch.device("meta"):
        dense, pruned = (
            _macs_by_module(build(dense_spec), (3, 224, 224)),
            _macs_by_module(build(pruned_spec), (3, 224, 224)),
        )
        assert sum(dense.values()) == count_macs(build(dense_spec), (3, 224, 224))

    def cut(macs: dict[str, int], keep) -> int:
        return sum(v for k, v in macs.items() if keep(k))

    def main(k: str) -> bool:
        return "shortcut" not in k and k != "fc"

    assert round(100 * (1 - cut(pruned, main) / cut(dense, main)), 2) == main_path
    assert round(100 * (1 - cut(pruned, main) / cut(dense, main)), 1) == paper
    assert round(100 * (1 - sum(pruned.values()) / sum(dense.values())), 2) == ours


def test_vgg11_imagenet_is_network_slimmings_slimmingvgg():
    """rethinking imagenet/network-slimming/vgg.py: torchvision's VGG-11 conv stack, classifier
    Linear-BN1d-ReLU-Linear-BN1d-ReLU-Linear without dropout, every BN scale 0.5; the BN1d units
    are slimmed with the conv channels (prune.py ranks BatchNorm2d and BatchNorm1d)."""
    spec = config_spec("vgg11_bn_imagenet", num_classes=1000)
    with torch.device("meta"):
        params = count_params(build(spec))
    assert params == 132_868_840 + 2 * (4096 + 4096)  # torchvision vgg11_bn + two BN1d(4096)
    small = dict(spec, fc=[64, 32], num_classes=7)
    model = build(small)
    kinds = [type(m).__name__ for m in model.classifier]
    assert kinds == ["ChannelLinear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(torch.all(m.weight == 0.5) for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
    from pruning.models import channel_groups

    fc_groups = [g for g in channel_groups(small) if "fc_index" in g.meta]
    assert [g.bn_scale for g in fc_groups] == ["classifier.1.weight", "classifier.4.weight"]


def test_slimming_penalises_every_bn2d_and_the_ranked_bn1d_only():
    from pruning.methods.network_slimming import NetworkSlimming

    hook = NetworkSlimming(sparsity=0.1).pretrain_grad_hook()
    for spec, ranked in [
        (dict(default_spec("vgg_imagenet", depth=11, batch_norm=True, num_classes=7, fc=[8, 8], head="fc_bn")), True),
        (default_spec("vgg_cifar", depth=5, cfg=[8, "M", 16], hidden=12), False),  # hidden BN1d not ranked
    ]:
        model = build(spec)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        hook(model)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.weight.grad != 0)
            elif isinstance(m, nn.BatchNorm1d):
                assert bool(torch.all(m.weight.grad != 0)) == ranked
