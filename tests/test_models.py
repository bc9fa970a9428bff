"""Models built from width specs, the generic surgery, and the published FLOPs counts."""

from __future__ import annotations

import random

import pytest
import torch

from pruning.measure import count_macs, count_params, reduction
from pruning.methods.base import PruneContext
from pruning.methods.l1_norm import L1Norm
from pruning.models import build, channel_groups, default_spec
from pruning.surgery import shrink, zero_channels

SPECS = {
    "resnet20": lambda: default_spec("resnet_cifar", depth=20),
    "resnet56": lambda: default_spec("resnet_cifar", depth=56),
    "vgg16": lambda: default_spec("vgg_cifar", depth=16),
    "vgg19_c100": lambda: default_spec("vgg_cifar", depth=19, num_classes=100),
    "vgg_small_1ch": lambda: default_spec("vgg_cifar", depth=5, cfg=[8, "M", 16, 16], hidden=12, in_channels=1),
}


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics so the equivalence test exercises running_mean/var slicing."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shrunk_model_equals_dense_model_with_channels_zeroed(name: str) -> None:
    torch.manual_seed(0)
    spec = SPECS[name]()
    model = build(spec).eval()
    _randomise_bn(model)
    rnd = random.Random(0)
    keep = {g.name: sorted(rnd.sample(range(g.size), max(1, g.size // 3))) for g in channel_groups(spec)}
    small = shrink(model, keep).eval()
    reference = zero_channels(model, keep).eval()
    side = 8 if spec["in_channels"] == 1 else 32
    x = torch.randn(4, spec["in_channels"], side, side)
    assert count_params(small) < count_params(model)
    torch.testing.assert_close(small(x), reference(x), rtol=1e-4, atol=1e-5)
    # and the kept widths are what the spec says
    for g in channel_groups(small.spec):
        assert g.size == len(keep[g.name])


def test_surgery_rejects_empty_group() -> None:
    from pruning import PruneLabError

    model = build(SPECS["resnet20"]())
    name = channel_groups(model.spec)[0].name
    with pytest.raises(PruneLabError, match="zero channels"):
        shrink(model, {name: []})


def test_dense_counts_match_published() -> None:
    # Li et al. 2017 / Rethinking: ResNet-56 125.49M MACs, 0.85M params; ResNet-110 252.89M
    assert count_macs(build(default_spec("resnet_cifar", depth=56)), (3, 32, 32)) == 125_485_696
    assert count_params(build(default_spec("resnet_cifar", depth=56))) == 853_018
    assert count_macs(build(default_spec("resnet_cifar", depth=110)), (3, 32, 32)) == 252_887_680
    # VGG-16 (CIFAR): 313.20M conv MACs + 0.27M for Linear(512,512)+Linear(512,10)
    assert count_macs(build(default_spec("vgg_cifar", depth=16)), (3, 32, 32)) == 313_196_544 + 512 * 512 + 512 * 10


@pytest.mark.parametrize(
    "arch,depth,variant,macs_m,flops_red,params_red",
    [
        ("resnet_cifar", 56, "A", 112.44, 10.4, 9.3),
        ("resnet_cifar", 56, "B", 90.91, 27.6, 13.8),  # paper params↓ 13.7%: 13.75 truncated
        ("resnet_cifar", 110, "A", 212.78, 15.9, 2.3),
        ("resnet_cifar", 110, "B", 155.12, 38.7, 32.4),  # Li et al. print 38.6%: 38.66 truncated
        ("vgg_cifar", 16, "A", 206.28, 34.2, 64.0),
    ],
)
def test_l1_paper_variants_reproduce_published_reductions(arch, depth, variant, macs_m, flops_red, params_red) -> None:
    dense = build(default_spec(arch, depth=depth))
    pruned = L1Norm(variant=variant).prune(dense, PruneContext()).model
    f0, f1 = count_macs(dense, (3, 32, 32)), count_macs(pruned, (3, 32, 32))
    assert round(f1 / 1e6, 2) == macs_m
    assert round(reduction(f0, f1), 1) == flops_red
    assert round(reduction(count_params(dense), count_params(pruned)), 1) == params_red


def test_l1_keeps_the_largest_norm_filters() -> None:
    torch.manual_seed(0)
    dense = build(default_spec("resnet_cifar", depth=20))
    group = channel_groups(dense.spec)[0]
    w = dict(dense.named_parameters())[group.producer]
    with torch.no_grad():
        w[3].mul_(100)  # filter 3 has by far the largest L1 norm
        w[5].mul_(0)  # filter 5 the smallest
    result = L1Norm(ratio=0.5).prune(dense, PruneContext())
    assert 3 in result.keep[group.name] and 5 not in result.keep[group.name]
    assert len(result.keep[group.name]) == 8


def test_uniform_ratio_never_empties_a_layer() -> None:
    dense = build(default_spec("vgg_cifar", depth=5, cfg=[2, "M", 3], hidden=0))
    result = L1Norm(ratio=0.99).prune(dense, PruneContext())
    assert all(len(k) >= 1 for k in result.keep.values())


def test_bad_depth_is_a_clear_error() -> None:
    from pruning import PruneLabError

    with pytest.raises(PruneLabError, match="6n\\+2"):
        default_spec("resnet_cifar", depth=57)
