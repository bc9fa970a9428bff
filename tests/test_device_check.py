"""scripts/device_check.sh as far as a CPU can run it (``--device cpu --quick``): every stage runs
and is recorded, the benchmark's sections land in the one JSON, a method's real run is summarised,
and bad arguments stop it with exit 2 and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"


def _run(*args: str, tmp_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu"], "--device tpu: use cuda or cpu"),
        (["--wheels", "/nonexistent"], "--wheels /nonexistent is not a folder"),
        (["--cifar-jpeg", "/nonexistent"], "has no prepare.py"),
        (["--frobnicate"], "unknown argument '--frobnicate'"),
    ],
)
def test_device_check_refuses_bad_arguments(args, message, tmp_path) -> None:
    out = _run(*args, tmp_path=tmp_path, timeout=60)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration  # make test-integration: installs (editable, no deps), benchmarks, trains
def test_device_check_runs_on_a_cpu(tmp_path) -> None:
    out_json = tmp_path / "check.json"
    out = _run(
        "--device",
        "cpu",
        "--quick",
        "--data-root",
        str(tmp_path / "no-cifar"),
        "--out",
        str(out_json),
        tmp_path=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["ok"] and report["device"] == "cpu" and report["quick"]
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["install"]["rc"] == 0 and stages["cuda_tests"]["rc"] == 0 and stages["benchmark"]["rc"] == 0
    assert "no CIFAR-10" in stages["run_tas"]["skipped"]
    assert report["cuda_tests"]["skipped"] == report["cuda_tests"]["tests"] > 0  # no GPU here: all skip
    bench = report["benchmark"]
    assert bench["peak"]["fp32 GFLOP/s"] > 0 and {r["variant"] for r in bench["train_step"]} >= {"channels_last"}
    (run,) = report["runs"]
    assert run["status"] == "done" and run["data"] == "digits" and run["top1"] is not None
    assert out_json.with_suffix(".md").read_text().startswith("# Training speed")
