"""Pruning from Scratch on ImageNet (pruning/methods/pfs_imagenet.py, pruning/models/mobilenet_v1.py,
mobilenet_v2.py, and the resnet_imagenet ResNet-50): dense nets against published counts and
torchvision, gated nets against numbers measured on the official code, gate placement, surgery,
closed-form MACs, the budget search, the per-class validation split and a dry run."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from pruning import PruneLabError
from pruning.measure import count_macs, count_params
from pruning.methods import pfs_imagenet
from pruning.methods.base import PruneContext
from pruning.methods.pfs import PFS, Gates, budget_search, expanded_spec, pfs_dense_spec, spec_macs, spec_with_widths
from pruning.models import build, channel_groups, default_spec
from pruning.models.mobilenet_v2 import from_torchvision
from pruning.surgery import shrink, zero_channels
from tests.conftest import plain_cfg, run_pipeline, write_image_folder

SIZE = (3, 224, 224)
# Measured by running the official models (models.mobilenet_v1 / mobilenet_v2 / resnet50(1000, e) of
# frankwang345/pruning-from-scratch at HEAD 3102332) through its flop_counter.py at 1x3x224x224
# (calculate_flops in script/prune_model_imagenet.py); the counter also counts the AvgPool2d(7)
# module (its input's numel), which count_macs does not. The same script checked that those models
# give our outputs from their state dicts, with and without gates, and that nets built from random
# pruned cfgs have our parameters and MACs.
OFFICIAL = {  # (arch, e): (official MACs, parameters)
    ("mobilenet_v1", 32): (568_790_528, 4_231_976),
    ("mobilenet_v1", 40): (879_579_520, 6_270_840),
    ("mobilenet_v2", 32): (300_836_992, 3_504_872),
    ("mobilenet_v2", 40): (376_046_240, 4_380_088),
    ("resnet_imagenet", 64): (4_089_284_608, 25_557_032),
    ("resnet_imagenet", 80): (5_569_677_312, 34_266_600),
}


def _dense(arch: str, **kw) -> dict:
    if arch == "resnet_imagenet":
        return default_spec(arch, depth=50, **kw)
    return default_spec(arch, **kw)


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


# ----------------------------------------------------------------------------- dense nets


def test_mobilenet_v1_has_the_published_size_and_cost() -> None:
    spec = _dense("mobilenet_v1")
    model = build(spec)
    macs, params = count_macs(model, SIZE), count_params(model)
    assert (macs, params) == (568_740_352, 4_231_976)
    assert round(macs / 1e6) == 569 and round(params / 1e6, 1) == 4.2  # Howard et al.: 1.0 MobileNet-224
    assert spec_macs(spec, SIZE) == macs


def test_mobilenet_v2_has_torchvisions_size_and_cost() -> None:
    spec = _dense("mobilenet_v2")
    with torch.device("meta"):
        model, reference = build(spec), torchvision.models.mobilenet_v2(weights=None)
    macs, params = count_macs(model, SIZE), count_params(model)
    assert (macs, params) == (300_774_272, 3_504_872)
    assert (macs, params) == (count_macs(reference, SIZE), count_params(reference))
    assert round(macs / 1e6, -1) == 300  # Sandler et al., Table 4: 300M multiply-adds
    assert spec_macs(spec, SIZE) == macs


def test_mobilenet_v2_gives_torchvision_outputs_from_its_state_dict() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    _randomise_bn(reference)
    spec = _dense("mobilenet_v2", num_classes=10)
    model = build(spec).eval()
    model.load_state_dict(from_torchvision(reference.state_dict(), spec))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_resnet50_family_is_unchanged_and_is_the_official_resnet50() -> None:
    spec = _dense("resnet_imagenet")
    with torch.device("meta"):
        model = build(spec)
    assert (count_macs(model, SIZE), count_params(model)) == (4_089_184_256, 25_557_032)
    assert pfs_dense_spec(spec) == spec  # PFS gates the family as it is
    assert expanded_spec(spec, 64) == spec  # e = 64: the dense mids 64 / 128 / 256 / 512
    assert spec_macs(spec, SIZE) == 4_089_184_256


# ----------------------------------------------------------------------------- gated (expanded) nets


@pytest.mark.parametrize("arch,e", sorted(OFFICIAL))
def test_gated_nets_match_the_official_models(arch: str, e: int) -> None:
    wide = expanded_spec(pfs_dense_spec(_dense(arch)), e)
    with torch.device("meta"):
        model = build(wide)
    macs, params = OFFICIAL[(arch, e)]
    assert count_params(model) == params
    assert count_macs(model, SIZE) == macs - pfs_imagenet.official_avgpool_macs(wide, SIZE)
    assert spec_macs(wide, SIZE) == macs - pfs_imagenet.official_avgpool_macs(wide, SIZE)


def test_expanded_widths_follow_the_official_expanded_cfg() -> None:
    v1 = expanded_spec(_dense("mobilenet_v1"), 40)
    assert [v1["stem"]] + [b["out"] for b in v1["blocks"]] == [40, 80, 160, 160, 320, 320] + [640] * 6 + [1280] * 2
    assert [b["stride"] for b in v1["blocks"]] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    v2 = expanded_spec(pfs_dense_spec(_dense("mobilenet_v2")), 40)
    hidden = [b["hidden"] for b in v2["blocks"]]
    official = [40, 120, 180, 180, 240, 240, 240, 480, 480, 480, 480, 720, 720, 720, 1200, 1200, 1200, 1600]
    assert [v2["stem"], *hidden[1:], v2["last"]] == official  # expanded_cfg(40)['mobilenet_v2']
    outs = [b["out"] for b in _dense("mobilenet_v2")["blocks"]]
    assert hidden[0] is None and [b["out"] for b in v2["blocks"]] == outs  # block outputs stay (-m 1)
    assert (v2["outer_act"], v2["dropout"]) == ("relu", 0.0)  # the PFS code's ConvBNReLU, no dropout
    r50 = expanded_spec(_dense("resnet_imagenet"), 40)
    assert [s["mid"][0] for s in r50["stages"]] == [[40, 40], [80, 80], [160, 160], [320, 320]]
    assert [s["width"] for s in r50["stages"]] == [256, 512, 1024, 2048]  # trunk at the dense widths (-m 1)


@pytest.mark.parametrize("arch", ["mobilenet_v1", "mobilenet_v2", "resnet_imagenet"])
def test_gates_sit_where_the_official_code_puts_them(arch: str) -> None:
    torch.manual_seed(0)
    spec = pfs_dense_spec(_dense(arch, num_classes=10))
    model = build(spec).eval()
    gates = Gates(model, "cpu")
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    bn_names = [names[id(bn)] for bn in gates.bns]
    if arch == "mobilenet_v1":  # stem ConvBNReLU + every ConvDepthWise after bn2
        assert bn_names == ["stem.1"] + [f"blocks.{i}.bn2" for i in range(13)]
        assert [p.numel() for p in gates.params] == [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024] * 2
    elif arch == "mobilenet_v2":  # stem, every InvertedBlock after bn1, last ConvBNReLU (moved to the end)
        assert bn_names == ["stem.1"] + [f"blocks.{j}.bn1" for j in range(1, 17)] + ["last.1"]
        assert len(gates.params) == 18 and gates.params[-1].numel() == 1280
    else:  # gates1 after bn1 and gates2 after bn2 of every Bottleneck, no stem gate
        blocks = [(s, b) for s, n in enumerate((3, 4, 6, 3)) for b in range(n)]
        assert bn_names == [f"stages.{s}.{b}.bn{k}" for s, b in blocks for k in (1, 2)]
    # g * BN(x) == BN with scale g*gamma and shift g*beta: each gate multiplies its BN's output, before the ReLU
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in gates.params:
            p.copy_(torch.rand(p.shape, generator=g) * (torch.rand(p.shape, generator=g) > 0.3))
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        gated = model(x)
    gates.remove()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in zip(bn_names, gates.params, strict=True):
            reference.get_submodule(name).weight.mul_(p)
            reference.get_submodule(name).bias.mul_(p)
        torch.testing.assert_close(gated, reference(x), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- pruned nets


@pytest.mark.parametrize("arch", ["mobilenet_v1", "mobilenet_v2"])
def test_shrunk_mobilenet_equals_dense_model_with_channels_zeroed(arch: str) -> None:
    torch.manual_seed(0)
    spec = pfs_dense_spec(_dense(arch, num_classes=7)) if arch == "mobilenet_v2" else _dense(arch, num_classes=7)
    model = build(spec).eval()
    _randomise_bn(model)
    rnd = random.Random(0)
    keep = {g.name: sorted(rnd.sample(range(g.size), max(1, g.size // 3))) for g in channel_groups(spec)}
    small = shrink(model, keep).eval()
    reference = zero_channels(model, keep).eval()
    x = torch.randn(2, 3, 64, 64)
    assert count_params(small) < count_params(model)
    with torch.no_grad():
        torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-4)
    assert [g.size for g in channel_groups(small.spec)] == [len(keep[g.name]) for g in channel_groups(spec)]


@pytest.mark.parametrize("arch,e", [("mobilenet_v1", 40), ("mobilenet_v2", 40), ("resnet_imagenet", 80)])
def test_closed_form_macs_equal_count_macs_on_pruned_specs(arch: str, e: int) -> None:
    wide = expanded_spec(pfs_dense_spec(_dense(arch)), e)
    groups = channel_groups(wide)
    paths = [g.spec_path for g in groups]
    rnd = random.Random(1)
    for shape in (SIZE, (3, 97, 97)):
        spec = spec_with_widths(wide, paths, [rnd.randint(1, g.size) for g in groups])
        with torch.device("meta"):
            model = build(spec)
        assert spec_macs(spec, shape) == count_macs(model, shape)


@pytest.mark.parametrize("arch,e", [("mobilenet_v1", 40), ("mobilenet_v2", 40), ("resnet_imagenet", 80)])
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_budget_search_hits_the_target_on_the_imagenet_nets(arch: str, e: int, ratio: float) -> None:
    dense = pfs_dense_spec(_dense(arch))
    wide = expanded_spec(dense, e)
    groups = channel_groups(wide)
    paths = [g.spec_path for g in groups]
    g = torch.Generator().manual_seed(0)
    gates = [torch.rand(grp.size, generator=g) for grp in groups]
    result = budget_search(
        gates, lambda w: spec_macs(spec_with_widths(wide, paths, w), SIZE), spec_macs(dense, SIZE), ratio
    )
    assert result["within_tolerance"] and min(result["widths"]) >= 1


# ----------------------------------------------------------------------------- method, data, config


def test_pfs_accepts_the_imagenet_nets_with_their_defaults() -> None:
    for arch, (e, s) in {"mobilenet_v1": (40, 0.5), "mobilenet_v2": (40, 0.5), "resnet_imagenet": (80, 0.5)}.items():
        method = PFS(ratio=0.5)
        method.validate(arch, _dense(arch))
        assert (method.expansion, method.sparsity_level) == (e, s)
    with pytest.raises(PruneLabError, match="does not support"):
        PFS(ratio=0.5).validate("densenet40", default_spec("densenet_cifar", depth=40))


def test_the_last_images_of_every_class_validate(tmp_path: Path) -> None:
    from pruning import data as datasets

    root = write_image_folder(tmp_path / "imagenet")  # 3 classes x 6 training images
    data = datasets.load(
        {
            "name": "imagenet",
            "kind": "imagenet",
            "root": str(root),
            "num_classes": 3,
            "in_channels": 3,
            "image_size": 32,
            "resize_size": 36,
            "workers": 0,
            "augment": True,
            "train_subset": None,
        }
    ).to("cpu")
    train, val = pfs_imagenet.split_last_per_class(data, 2)
    assert len(train.train) == 12 and len(val.test) == 6
    labels = data.train.labels.tolist()
    last = [i for c in range(3) for i in [j for j, v in enumerate(labels) if v == c][-2:]]
    assert val.test.samples == [data.train.samples[i] for i in sorted(last)]
    assert not set(map(tuple, val.test.samples)) & set(map(tuple, train.train.samples))
    with pytest.raises(PruneLabError, match="cannot keep the last 6"):
        pfs_imagenet.split_last_per_class(data, 6)
    # PFS learns its gates on that split when method.val_per_class is set
    method = PFS(ratio=0.5, expansion=8, sparsity_level=0.5, gate_epochs=1, batch_size=6, val_per_class=2)
    wide = expanded_spec(_dense("mobilenet_v1", num_classes=3), 8)
    learnt = method.learn_gates(wide, PruneContext(data=data, input_shape=(3, 32, 32), seed=0), None)
    assert learnt["samples"] == 12 and len(learnt["gates"]) == 14


@pytest.mark.parametrize("model", ["mobilenet_v1", "mobilenet_v2", "resnet50"])
def test_dry_run_composes_and_counts_the_dense_net(model: str, tmp_path: Path) -> None:
    cfg = plain_cfg([f"model={model}", "data=imagenet", "method=pfs", "dry_run=true"], tmp_path)
    metrics = run_pipeline(cfg)
    dense = {"mobilenet_v1": (4_231_976, 568_740_352), "mobilenet_v2": (3_504_872, 300_774_272)}
    dense["resnet50"] = (25_557_032, 4_089_184_256)
    assert metrics["status"] == "dry_run"
    assert (metrics["params_dense"], metrics["flops_dense"]) == dense[model]
    if model == "mobilenet_v2":
        assert metrics["spec_dense"]["outer_act"] == "relu"  # PFS's variant of the net
