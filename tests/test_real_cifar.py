"""Slow: the L1-norm flow on the real CIFAR-10 (JPEG copy in ../shared/data), short budget.
Skips cleanly when the shared data is absent. Run with ``make test-slow``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_CIFAR, plain_cfg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_cifar(tmp_path_factory) -> Path:
    if not (SHARED_CIFAR / "prepare.py").exists():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR}")
    out = tmp_path_factory.mktemp("cifar10-jpeg")
    subprocess.run([sys.executable, str(SHARED_CIFAR / "prepare.py"), str(out)], check=True, timeout=600)
    return out


def test_l1_flow_learns_real_cifar10(real_cifar, tmp_path) -> None:
    from rich.console import Console

    from pruning.pipeline import run, run_subdir

    cfg = plain_cfg(
        [
            "data=cifar10",
            f"data.root={real_cifar}",
            "data.label='CIFAR-10 (JPEG q75 copy)'",
            "data.train_subset=5000",
            "model=resnet20",
            "method.ratio=0.5",
            "schedule.epochs=3",
            "schedule.finetune_epochs=1",
        ],
        tmp_path,
    )
    m = run(cfg, tmp_path / "runs" / run_subdir(cfg), console=Console(file=open("/dev/null", "w")))  # noqa: SIM115
    assert m["status"] == "done"
    assert m["data"]["train_size"] == 5000 and m["data"]["test_size"] == 10000
    assert m["data"]["official_md5"] is False and m["data"]["label"] == "CIFAR-10 (JPEG q75 copy)"
    assert m["stages"]["pretrain"]["top1"] > 25.0  # chance is 10%
    assert m["final"]["top1"] > 20.0
