"""ImageNet ResNet/VGG families: torchvision equivalence, published counts, surgery equivalence."""

from __future__ import annotations

import random

import pytest
import torch
import torchvision

from pruning import PruneLabError
from pruning.measure import count_macs, count_params
from pruning.models import build, channel_groups, default_spec
from pruning.models.torchvision_compat import (
    from_torchvision,
    load_torchvision_file,
    torchvision_spec,
)
from pruning.surgery import shrink, zero_channels

# (MACs at 224x224 measured by count_macs, params); public: ResNet-50 4.09-4.11 GMACs / 25.56M,
# ResNet-34 3.6-3.67G / 21.80M, ResNet-18 1.8-1.82G / 11.69M, VGG-16 15.47-15.5G / 138.36M.
COUNTS = {
    "resnet18": (1_814_073_344, 11_689_512),
    "resnet34": (3_663_761_408, 21_797_672),
    "resnet50": (4_089_184_256, 25_557_032),
    "vgg16": (15_470_264_320, 138_357_544),
    "vgg16_bn": (15_470_264_320, 138_365_992),
    "vgg11_bn": (7_609_090_048, 132_868_840),
}
PUBLISHED = {  # (GMACs range, at 2 decimals; params in M at 2 decimals)
    "resnet18": ((1.80, 1.82), 11.69),
    "resnet34": ((3.60, 3.67), 21.80),
    "resnet50": ((4.09, 4.11), 25.56),
    "vgg16": ((15.47, 15.50), 138.36),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_published_macs_and_params_at_224(name: str) -> None:
    with torch.device("meta"):  # shapes only: no init cost, same hooks as on a real model
        model, reference = build(torchvision_spec(name)), getattr(torchvision.models, name)(weights=None)
    macs, params = count_macs(model, (3, 224, 224)), count_params(model)
    assert (macs, params) == COUNTS[name]
    assert params == count_params(reference)
    if name in PUBLISHED:
        (lo, hi), params_m = PUBLISHED[name]
        assert lo <= round(macs / 1e9, 2) <= hi
        assert round(params / 1e6, 2) == params_m


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "resnet34",
        "resnet50",
        pytest.param("vgg16", marks=pytest.mark.integration),  # 4 s: the fast tier stays under 5 min
        pytest.param("vgg16_bn", marks=pytest.mark.slow),
        pytest.param("vgg11_bn", marks=pytest.mark.slow),
    ],
)
def test_dense_model_gives_torchvision_outputs_from_its_state_dict(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = build(torchvision_spec(name)).eval()
    model.load_state_dict(from_torchvision(name, reference.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_init_from_file_loads_torchvision_weights(tmp_path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build(default_spec("resnet_imagenet", depth=18, num_classes=5)).eval()
    load_torchvision_file(model, path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    wrong = build(default_spec("resnet_imagenet", depth=34, num_classes=5))
    with pytest.raises(PruneLabError, match="does not fit"):
        load_torchvision_file(wrong, path)
    with pytest.raises(PruneLabError, match="does not exist"):
        load_torchvision_file(model, tmp_path / "nope.pth")


def _randomise_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


SURGERY_SPECS = {
    "resnet18": lambda: default_spec("resnet_imagenet", depth=18, num_classes=7),
    "resnet50": lambda: default_spec("resnet_imagenet", depth=50, num_classes=7),
    "vgg11_bn_fc": lambda: default_spec("vgg_imagenet", depth=11, batch_norm=True, num_classes=7, fc=[64, 32]),
    "vgg11_gap": lambda: default_spec("vgg_imagenet", depth=11, num_classes=7, head="gap"),
    "vgg11_fc_bn": lambda: default_spec(
        "vgg_imagenet", depth=11, batch_norm=True, num_classes=7, fc=[64, 32], head="fc_bn", bn_init=0.5
    ),
}


@pytest.mark.parametrize("name", sorted(SURGERY_SPECS))
def test_shrunk_imagenet_model_equals_dense_model_with_channels_zeroed(name: str) -> None:
    torch.manual_seed(0)
    spec = SURGERY_SPECS[name]()
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
    for g in channel_groups(small.spec):
        assert g.size == len(keep[g.name])


def test_group_names_and_layer_ids_follow_the_agreed_spec() -> None:
    r34 = channel_groups(default_spec("resnet_imagenet", depth=34))
    assert [g.meta["layer_id"] for g in r34] == list(range(2, 34, 2))  # Rethinking prune.py ids
    assert r34[0].name == "stages.0.0.mid0" and r34[0].spec_path == ("stages", 0, "mid", 0, 0)
    r50 = channel_groups(default_spec("resnet_imagenet", depth=50))
    assert len(r50) == 32 and r50[1].name == "stages.0.0.mid1" and r50[1].producer == "stages.0.0.conv2.weight"
    vgg = channel_groups(default_spec("vgg_imagenet", depth=16))
    assert [g.name for g in vgg][-3:] == ["features.12", "classifier.fc0", "classifier.fc1"]
    assert vgg[12].members[-1] == ("classifier.0.weight", 1) and vgg[13].spec_path == ("fc", 0)


def test_bad_imagenet_specs_are_clear_errors() -> None:
    with pytest.raises(PruneLabError, match="depth"):
        default_spec("resnet_imagenet", depth=20)
    with pytest.raises(PruneLabError, match="head"):
        default_spec("vgg_imagenet", depth=16, head="mlp")
