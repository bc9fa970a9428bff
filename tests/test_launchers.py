"""Launcher presets: SLURM (submitit, one GPU per job) composes; local parallel sweeps through
joblib run, and concurrent jobs share one dense baseline."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CONF_DIR, QUICK_DIGITS, prune_exp


def _hydra_launcher(overrides: list[str]):
    import pruning.cli.exp  # noqa: F401
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.launcher


def test_slurm_preset_asks_one_gpu_per_job() -> None:
    launcher = _hydra_launcher(["hydra/launcher=slurm_1gpu", "hydra.launcher.partition=gpu"])
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes, launcher.partition) == (1, 1, 1, "gpu")


@pytest.mark.integration  # make test-integration (subprocesses, sweeps, torchrun, wheel build)
def test_joblib_sweep_runs_jobs_in_parallel_and_shares_the_baseline(tmp_path) -> None:
    out = prune_exp(["-m", "hydra/launcher=local_cpu", "method.ratio=0.3,0.6", *QUICK_DIGITS], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("metrics.json")]
    assert sorted(m["key"]["ratio"] for m in runs) == [0.3, 0.6] and all(m["status"] == "done" for m in runs)
    assert sorted(m["stages"]["pretrain"]["cached"] for m in runs) == [False, True]
    (baseline,) = (tmp_path / "cache" / "baselines").iterdir()
    assert len((baseline / "history.jsonl").read_text().splitlines()) == 2
