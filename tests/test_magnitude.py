"""Unstructured magnitude pruning: a global threshold over conv weights, masks that stay
fixed through fine-tuning and scratch training, sizes counted as non-zeros."""

from __future__ import annotations

import pytest
import torch

from pruning.io import load_checkpoint
from pruning.measure import count_macs, count_params
from pruning.methods.base import PruneContext
from pruning.methods.magnitude import Magnitude, conv_weights
from pruning.models import build, default_spec
from tests.conftest import pipeline_cfg as _cfg
from tests.conftest import run_path
from tests.conftest import run_pipeline as _run


def test_global_threshold_removes_the_smallest_conv_weights() -> None:
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=20))
    result = Magnitude(ratio=0.6).prune(model, PruneContext())
    dense = conv_weights(model)
    kept = torch.cat([dense[n][m.bool()].abs() for n, m in result.masks.items()])
    removed = torch.cat([dense[n][~m.bool()].abs() for n, m in result.masks.items()])
    total = sum(w.numel() for w in dense.values())
    assert removed.numel() == int(total * 0.6)
    assert kept.min() > removed.max()  # one global threshold, not per layer
    # the pruned copy has exactly those zeros; the dense model is untouched
    pruned_w = conv_weights(result.model)
    assert all(torch.equal(pruned_w[n] == 0, m == 0) for n, m in result.masks.items())
    assert int(sum((w == 0).sum() for w in dense.values())) == 0
    # sizes count non-zeros: params and MACs both shrink, the architecture does not
    assert count_params(result.model, result.masks) == count_params(model) - removed.numel()
    assert count_macs(result.model, (3, 32, 32), nonzero=True) < count_macs(model, (3, 32, 32))
    assert result.model.spec == model.spec


@pytest.mark.parametrize("policy", ["finetune", pytest.param("scratch_b", marks=pytest.mark.integration)])
def test_pruned_weights_stay_zero_through_training(fake_cifar, tmp_path, policy) -> None:
    m = _run(_cfg(fake_cifar, tmp_path, "method=magnitude", "method.ratio=0.7", f"finetune={policy}"))
    assert m["status"] == "done" and m["key"]["method"] == "magnitude" and m["key"]["ratio"] == 0.7
    assert m["params_pruned"] < 0.5 * m["params_dense"]
    masks = load_checkpoint(run_path(m, tmp_path) / "pruned.pt")["masks"]
    trained = load_checkpoint(run_path(m, tmp_path) / f"ckpt_{policy}.pt")["model"]
    for name, mask in masks.items():
        assert torch.all(trained[name][mask == 0] == 0), name  # still exactly zero
        assert torch.any(trained[name][mask == 1] != 0), name  # the rest trained
    if policy == "scratch_b":  # budget from the sparse MACs, as Rethinking's cifar_B.py
        assert m["stages"]["scratch_b"]["epochs"] == int(2 * m["flops_dense"] / m["flops_pruned"]) > 2
