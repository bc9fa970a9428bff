"""LASSO channel pruning (He et al. 2017) and the shared reconstruction helpers: sampled
windows equal the unfolded input, the fast normal equations equal the explicit ones, LASSO finds
the channels the output depends on, the refit reconstructs, and the method runs end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.methods.base import PruneContext
from pruning.methods.channel_pruning import ChannelPruning, lasso_select
from pruning.methods.reconstruction import (
    Sites,
    contribution_gram,
    draw_sites,
    flat_weight,
    prune_by_reconstruction,
    refit_consumer,
    site_contributions,
    windows_at,
)
from pruning.models import build, default_spec
from tests.conftest import pipeline_cfg as _cfg
from tests.conftest import run_pipeline as _run


class _Images:
    """A data object with only what reconstruction pruning uses."""

    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(count, 3, 32, 32, generator=generator)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)])
def test_windows_equal_the_unfolded_input(stride: int, padding: int, dilation: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, bias=False)
    x = torch.randn(3, 4, 9, 9)
    sites = draw_sites(conv, x, 40, torch.Generator().manual_seed(1))
    cols = F.unfold(x, 3, padding=padding, stride=stride, dilation=dilation)  # (N, C*9, L)
    expected = cols[sites.rows, :, sites.locs].view(40, 4, 9)
    torch.testing.assert_close(windows_at(conv, x, sites, 4), expected)
    # and the contributions add up to the conv's output at those sites, for every output
    y = conv(x).flatten(2)[sites.rows, :, sites.locs]  # (S, O)
    z = site_contributions(windows_at(conv, x, sites, 4), flat_weight(conv, 4))  # (S, O, C)
    torch.testing.assert_close(z.sum(2).float(), y, rtol=1e-4, atol=1e-4)


def test_linear_reading_a_feature_map_splits_into_channel_windows() -> None:
    fc = nn.Linear(5 * 4, 3, bias=False)
    x = torch.randn(6, 5 * 4)
    sites = Sites(torch.arange(6), torch.zeros(6, dtype=torch.long))
    z = site_contributions(windows_at(fc, x, sites, 5), flat_weight(fc, 5))  # (6, 3, 5)
    torch.testing.assert_close(z.sum(2).float(), fc(x), rtol=1e-5, atol=1e-5)


def test_fast_normal_equations_equal_the_explicit_ones() -> None:
    g = torch.Generator().manual_seed(0)
    windows = torch.randn(30, 5, 9, generator=g)  # (S, C, K)
    weight = torch.randn(7, 5, 9, generator=g)  # (O, C, K)
    target = torch.randn(30, 7, generator=g)  # (S, O)
    z = site_contributions(windows, weight).reshape(-1, 5)  # (S*O, C)
    gram, corr = contribution_gram(windows, weight, target)
    torch.testing.assert_close(gram, z.T @ z)
    torch.testing.assert_close(corr, z.T @ target.double().reshape(-1))


def test_lasso_keeps_the_channels_the_output_depends_on() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 10, generator=g, dtype=torch.float64)
    y = 2.0 * z[:, 1] - 1.5 * z[:, 6] + 0.8 * z[:, 8] + 0.01 * torch.randn(500, generator=g, dtype=torch.float64)
    kept, beta = lasso_select(z.T @ z, z.T @ y, 3)
    assert kept == [1, 6, 8]
    assert beta[1] > 0 and beta[6] < 0
    kept2, _ = lasso_select(z.T @ z, z.T @ y, 2)  # exactly the target count, strongest first
    assert kept2 == [1, 6]


def test_refit_reconstructs_a_target_that_lies_in_the_kept_channels() -> None:
    g = torch.Generator().manual_seed(0)
    windows = torch.randn(200, 6, 4, generator=g)  # (S, C, K)
    true_w = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)  # uses channels 1 and 4 only
    target = torch.einsum("sck,ock->so", windows[:, [1, 4]].double(), true_w)  # (S, O)
    w = refit_consumer(windows, target, [4, 1])  # order of the kept list
    torch.testing.assert_close(w, true_w[:, [1, 0]], rtol=1e-4, atol=1e-4)


@pytest.mark.integration  # slow (5-14 s on 2 cores): the fast tier stays under 5 min
def test_pruned_vgg_reconstructs_better_than_plain_slicing() -> None:
    torch.manual_seed(0)
    model = build(default_spec("vgg_cifar", depth=11, num_classes=10, in_channels=3)).eval()
    kwargs = {"ratio": 0.5, "mode": "oneshot", "samples": 192, "images": 8}
    result = ChannelPruning(**kwargs).prune(model, PruneContext(data=_Images(), seed=0))
    plain = ChannelPruning(**kwargs, refit=False).prune(model, PruneContext(data=_Images(), seed=0))
    x = torch.randn(4, 3, 32, 32)
    dense = model(x)
    err = (result.model.eval()(x) - dense).norm() / dense.norm()
    err_plain = (plain.model.eval()(x) - dense).norm() / dense.norm()
    assert result.spec["cfg"][0] == 32 and err < 0.5 * err_plain


def test_layerwise_reads_inputs_from_the_pruned_net_and_targets_the_dense_one() -> None:
    torch.manual_seed(0)
    model = build(default_spec("vgg_cifar", depth=11, num_classes=10, in_channels=3)).eval()
    images = torch.randn(4, 3, 32, 32)
    widths = {"features.0": 32, "features.4": 64}  # conv1 and conv2 (VGG-11 CIFAR: 64, 128)
    seen: dict[str, list] = {}

    def keep_first(windows, weight, target, n_keep):
        seen[mode].append((windows.clone(), target.clone()))
        kept = list(range(n_keep))
        return kept, refit_consumer(windows, target, kept)

    for mode in ("oneshot", "layerwise"):
        seen[mode] = []
        prune_by_reconstruction(model, widths, images, 64, torch.Generator().manual_seed(0), keep_first, mode)
    (w1_one, t1_one), (w2_one, t2_one) = seen["oneshot"]
    (w1_lay, t1_lay), (w2_lay, t2_lay) = seen["layerwise"]
    torch.testing.assert_close(w1_lay, w1_one)  # the first group sees the dense net either way
    torch.testing.assert_close(t2_lay, t2_one)  # the target stays the dense output
    assert not torch.allclose(w2_lay, w2_one)  # ... but the inputs come from the pruned net


def test_bad_settings_name_the_value() -> None:
    with pytest.raises(PruneLabError, match="mode"):
        ChannelPruning(mode="greedy")
    with pytest.raises(PruneLabError, match="vgg16_5x"):
        ChannelPruning(variant="vgg16_3x")
    with pytest.raises(PruneLabError, match="resnet_imagenet"):
        ChannelPruning(variant="resnet50_2x").validate("resnet20", default_spec("resnet_cifar", depth=20))


def test_channel_pruning_runs_through_the_pipeline(fake_cifar, tmp_path) -> None:
    m = _run(
        _cfg(
            fake_cifar, tmp_path, "method=channel_pruning", "method.ratio=0.5", "method.samples=128", "method.images=16"
        )
    )
    assert m["status"] == "done" and m["key"]["method"] == "channel_pruning"
    assert 40 < m["flops_reduction"] < 60 and m["extras"]["mode"] == "layerwise"
    assert all(w == 8 for w in m["spec_pruned"]["stages"][0]["mid"])  # 16 -> 8


def test_dry_run_reports_the_fixed_architecture(tmp_path) -> None:
    """Widths fixed by the ratio: a dry run (no data) reports the pruned FLOPs."""
    from tests.conftest import plain_cfg

    cfg = plain_cfg(
        ["data=cifar10", "model=resnet20", "method=channel_pruning", "method.ratio=0.5", "dry_run=true"], tmp_path
    )
    m = _run(cfg)
    assert m["status"] == "dry_run" and 40 < m["flops_reduction"] < 60
    assert m["spec_pruned"]["stages"][2]["mid"] == [32, 32, 32]
