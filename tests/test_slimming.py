"""Network Slimming: the BN-scale L1 subgradient during pretraining (a baseline-cache key),
one global |gamma| threshold, and never a layer with zero channels."""

from __future__ import annotations

import pytest
import torch

from pruning.methods.base import PruneContext
from pruning.methods.network_slimming import NetworkSlimming
from pruning.models import build, channel_groups, default_spec
from tests.conftest import pipeline_cfg as _cfg
from tests.conftest import run_pipeline as _run


def _vgg():
    torch.manual_seed(0)
    return build(default_spec("vgg_cifar", depth=5, cfg=[8, "M", 16, 16], hidden=12, in_channels=1))


def test_sparsity_hook_adds_s_times_sign_of_gamma() -> None:
    model = _vgg()
    bn = model.features[1]
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-1, 1, 8))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    NetworkSlimming(ratio=0.5, sparsity=1e-4).pretrain_grad_hook()(model)
    assert torch.allclose(bn.weight.grad, 1e-4 * torch.sign(bn.weight.detach()))
    assert NetworkSlimming(ratio=0.5, sparsity=0).pretrain_grad_hook() is None


def test_global_threshold_and_no_empty_layer() -> None:
    model = _vgg()
    groups = channel_groups(model.spec)
    params = dict(model.named_parameters())
    with torch.no_grad():
        params[groups[0].bn_scale].fill_(1e-6)  # the whole first layer looks unimportant
        params[groups[1].bn_scale].copy_(torch.linspace(0.1, 1.6, 16))
        params[groups[2].bn_scale].copy_(torch.linspace(0.05, 0.8, 16))
    result = NetworkSlimming(ratio=0.5).prune(model, PruneContext(input_shape=(1, 8, 8)))
    assert len(result.keep[groups[0].name]) == 1  # guarded, not emptied
    assert result.extras["layers_kept_one_channel"] == [groups[0].name]
    kept = torch.cat([params[g.bn_scale][result.keep[g.name]] for g in groups[1:]])
    dropped = torch.cat(
        [params[g.bn_scale][[i for i in range(g.size) if i not in result.keep[g.name]]] for g in groups[1:]]
    )
    assert kept.abs().min() > dropped.abs().max()  # one threshold across layers
    assert result.model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.integration  # slow (5-14 s on 2 cores): the fast tier stays under 5 min
def test_sparsity_training_is_its_own_cached_baseline(fake_cifar, tmp_path) -> None:
    a = _run(_cfg(fake_cifar, tmp_path, "method=network_slimming", "method.ratio=0.4", "method.sparsity=1e-4"))
    b = _run(_cfg(fake_cifar, tmp_path, "method=network_slimming", "method.ratio=0.6", "method.sparsity=1e-4"))
    c = _run(_cfg(fake_cifar, tmp_path, "method=network_slimming", "method.ratio=0.4", "method.sparsity=1e-5"))
    plain = _run(_cfg(fake_cifar, tmp_path, "method=l1_norm", "method.ratio=0.4"))
    ids = [m["stages"]["pretrain"]["baseline_id"] for m in (a, b, c, plain)]
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    assert b["stages"]["pretrain"]["cached"] and not c["stages"]["pretrain"]["cached"]
    assert 0 < a["extras"]["channels_removed"] < b["extras"]["channels_removed"]
    assert a["status"] == "done" and a["flops_pruned"] < a["flops_dense"]
    # the sparsity is recorded, so prune-report keeps the s = 1e-4 and 1e-5 runs apart
    assert (a["method_settings"], c["method_settings"], plain["method_settings"]) == (
        {"sparsity": 1e-4},
        {"sparsity": 1e-5},
        {},
    )
