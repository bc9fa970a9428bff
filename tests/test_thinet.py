"""ThiNet: per-channel contributions add up to the next layer's output, the greedy step removes
the channels that contribute least, and the method runs through the pipeline."""

from __future__ import annotations

import torch
import torch.nn as nn

from pruning.methods.thinet import contributions, greedy_remove
from tests.test_pipeline import _cfg, _run


def test_contributions_sum_to_the_conv_output() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=False)
    x = torch.randn(4, 5, 6, 6)
    z = contributions(conv, x, 50, torch.Generator().manual_seed(3))  # (50, 5)
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    rows = torch.randint(0, 4, (50,), generator=g)
    locs = torch.randint(0, 36, (50,), generator=g)
    outs = torch.randint(0, 7, (50,), generator=g)
    y = conv(x).flatten(2)[rows, outs, locs]
    torch.testing.assert_close(z.sum(1), y, rtol=1e-5, atol=1e-5)


def test_linear_contributions_sum_to_the_output() -> None:
    torch.manual_seed(0)
    fc = nn.Linear(6, 3, bias=False)
    x = torch.randn(5, 6)
    z = contributions(fc, x, 20, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    rows, outs = torch.randint(0, 5, (20,), generator=g), torch.randint(0, 3, (20,), generator=g)
    torch.testing.assert_close(z.sum(1), fc(x)[rows, outs])


def test_greedy_removes_the_channels_that_matter_least() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 6, generator=g, dtype=torch.float64)
    z[:, 2] *= 1e-3
    z[:, 4] *= 1e-3
    assert sorted(greedy_remove(z, 2)) == [2, 4]


def test_thinet_runs_through_the_pipeline(fake_cifar, tmp_path) -> None:
    m = _run(_cfg(fake_cifar, tmp_path, "method=thinet", "method.ratio=0.5", "method.samples=512", "method.images=64"))
    assert m["status"] == "done" and m["key"]["method"] == "thinet"
    assert 40 < m["flops_reduction"] < 60 and m["extras"]["rescaled"] is True
    assert all(w == 8 for stage in m["spec_pruned"]["stages"][:1] for w in stage["mid"])  # 16 -> 8
