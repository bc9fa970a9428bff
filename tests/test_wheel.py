"""The package works when built as a wheel and installed into another environment, run from
another directory: conf/ ships inside the wheel (as pruning.conf) and the console scripts
find it; nothing resolves to the source checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.integration  # make test-integration (subprocesses, sweeps, torchrun, wheel build)
def test_wheel_installs_and_runs_from_elsewhere(tmp_path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("prune_lab-*.whl")

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    env_py = env_dir / "bin" / "python"
    subprocess.run(
        [str(env_py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # heavy dependencies (torch, hydra, ...) come from this environment's site-packages, added as
    # a plain path: its .pth files (the editable install of the checkout) are NOT processed
    site = subprocess.run(
        [str(env_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(PRUNE_LAB_RESULTS=str(elsewhere / "results"), COLUMNS="160")
    where = subprocess.run(
        [str(env_py), "-c", "import pruning, pruning.cli.exp, pruning.conf; print(pruning.__file__)"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(env_dir) in where and str(REPO) not in where

    out = subprocess.run(
        [str(env_dir / "bin" / "prune-exp"), "schedule.epochs=1", "schedule.finetune_epochs=1", "quiet=true"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (metrics,) = (elsewhere / "results" / "runs").rglob("metrics.json")
    assert json.loads(metrics.read_text())["status"] == "done"
    report = subprocess.run(
        [
            str(env_dir / "bin" / "prune-report"),
            "--results-root",
            str(elsewhere / "results"),
            "--out",
            str(elsewhere / "tables"),
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert (elsewhere / "tables").is_dir()
