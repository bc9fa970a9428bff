"""Every experiment preset (conf/experiment/*.yaml) composes into jobs that run: each job of its
sweep composes and maps to a run directory, and its jobs dry-run (architectures, counts, no
data and no training) through the pipeline. The fast tier dry-runs the first job of each preset;
the integration tier every distinct job (seeds aside)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf
from pruning.cli.validate_sweep import sweep_jobs

from pruning.config import run_subdir
from tests.conftest import CONF_DIR, compose, run_pipeline

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def preset_jobs(name: str) -> list[list[str]]:
    """The preset's jobs as ``prune-exp -m experiment=NAME`` expands them; one per seed-less key."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = hydra_compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    jobs, seen, distinct = sweep_jobs(full), set(), []
    for job in jobs:
        key = tuple(sorted(o for o in job if not o.startswith("seed=")))
        if key not in seen:
            seen.add(key)
            distinct.append(job)
    return distinct


def job_cfg(name: str, job: list[str], results: Path) -> dict:
    cfg = compose([f"paths.results_root={results}", "quiet=true", f"experiment={name}", *job, "dry_run=true"])
    return OmegaConf.to_container(cfg, resolve=True)


def dry_run(name: str, job: list[str], results: Path) -> dict:
    cfg = job_cfg(name, job, results)
    run_pipeline(cfg)
    (path,) = (results / "runs" / run_subdir(cfg)).glob("metrics.json")
    m = json.loads(path.read_text())
    assert m["status"] == "dry_run" and m["params_dense"] > 0 and m["flops_dense"] > 0, (name, job)
    return m


def test_every_preset_is_listed() -> None:
    assert len(PRESETS) >= 21 and "rethinking_l1_cifar10" in PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_jobs_compose_and_the_first_dry_runs(name, tmp_path) -> None:
    jobs = preset_jobs(name)
    assert jobs, f"experiment={name} expands to no job"
    dirs = {run_subdir(job_cfg(name, job, tmp_path)) for job in jobs}
    assert len(dirs) == len(jobs), f"experiment={name}: two jobs share a run directory"
    dry_run(name, jobs[0], tmp_path)


@pytest.mark.integration  # make test-integration: every distinct job of every preset (~200)
@pytest.mark.parametrize("name", PRESETS)
def test_every_job_of_the_preset_dry_runs(name, tmp_path) -> None:
    for job in preset_jobs(name)[1:]:
        dry_run(name, job, tmp_path)
