"""prune-exp by subprocess: the embedded default, sweeps, and clear errors on bad input."""

from __future__ import annotations

import pytest

from tests.conftest import QUICK_DIGITS, TINY_CIFAR, metrics_files, prune_exp


def test_default_runs_offline_and_prints_a_comparison_table(tmp_path) -> None:
    out = prune_exp(QUICK_DIGITS, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dense" in out.stdout and "+finetune" in out.stdout and "MACs" in out.stdout
    (m,) = metrics_files(tmp_path)
    assert m["status"] == "done" and m["key"]["data"] == "digits"
    # budget visibility: the plan before training, an ETA once the first epoch is timed
    assert "plan: pretrain 2 epochs" in out.stderr and "finetune 1 epochs" in out.stderr
    assert "ETA for the rest of the run" in out.stderr
    # same command again: skipped, not retrained
    again = prune_exp(QUICK_DIGITS, tmp_path)
    assert again.returncode == 0 and "already finished" in again.stderr


@pytest.mark.integration  # make test-integration (subprocesses, sweeps, torchrun, wheel build)
def test_multirun_sweep_over_ratios_and_seeds(tmp_path) -> None:
    out = prune_exp(["-m", "method=l1_norm", "method.ratio=0.2,0.6", "seed=0,1", *QUICK_DIGITS], tmp_path)
    assert out.returncode == 0, out.stderr
    runs = metrics_files(tmp_path)
    assert sorted((m["key"]["ratio"], m["key"]["seed"]) for m in runs) == [(0.2, 0), (0.2, 1), (0.6, 0), (0.6, 1)]
    assert len(list((tmp_path / "cache" / "baselines").iterdir())) == 2  # one baseline per seed


def test_dry_run_writes_counts_without_training(tmp_path) -> None:
    out = prune_exp(["data=cifar10", "model=resnet110", "method.variant=B", "dry_run=true"], tmp_path)
    assert out.returncode == 0, out.stderr
    (m,) = metrics_files(tmp_path)
    assert m["status"] == "dry_run" and m["flops_pruned"] == 155_124_352 and "stages" in m and not m["stages"]
    # on screen too: the pruned row with its sizes and reductions, not only the dense row (issue 22)
    assert "pruned" in out.stdout and "155.12M" in out.stdout and "38.7%" in out.stdout, out.stdout
    assert "dry run" in out.stdout and "+finetune" not in out.stdout


def test_dry_run_summary_shows_the_pruned_sizes() -> None:
    """In-process: the summary of a dry run's metrics (image and language-model tables)."""
    from rich.console import Console

    from pruning.summary import summary_table

    key = {"method": "l1_norm", "model": "resnet110", "data": "cifar10", "variant": "B", "finetune": "finetune"}
    metrics = {
        "key": {**key, "seed": 0},
        "status": "dry_run",
        "stages": {},
        "params_dense": 1_730_000,
        "flops_dense": 252_890_000,
        "params_pruned": 1_170_000,
        "flops_pruned": 155_120_000,
        "params_reduction": 32.4,
        "flops_reduction": 38.7,
        "budget": {"pretrain_epochs": 160, "stage_epochs": 40},
    }
    console = Console(width=160, record=True)
    console.print(summary_table(metrics))
    text = console.export_text()
    assert "1.17M" in text and "155.12M" in text and "32.4%" in text and "38.7%" in text, text
    assert "planned: pretrain 160 epochs, finetune 40 epochs" in " ".join(text.split()) and "+finetune" not in text
    lm = {**metrics, "final": {"bpc": None}, "key": {**metrics["key"], "model": "sru_small", "variant": None}}
    console.print(summary_table(lm))
    assert console.export_text().count("155.12M") == 1  # the export above cleared the record


@pytest.mark.parametrize(
    "args,expected",
    [
        (["method=no_such_method"], "method='no_such_method' is not an option of the 'method' group; valid options: "),
        (["model=resnet57"], "model='resnet57' is not an option"),
        (["method.ratio=1.5"], "method.ratio=1.5 is outside [0, 1)"),
        (["method.ratio=-0.1"], "outside [0, 1)"),
        (
            ["data=cifar10", "model=resnet20", "method.variant=A"],
            "method.variant='A' does not exist for model 'resnet20'",
        ),
        (["data=cifar10", "model=resnet56", "method.variant=C"], "paper variants for it: A, B"),
        (
            ["finetune=scratch_z"],
            "finetune='scratch_z' is not an option of the 'finetune' group; "
            "valid options: finetune, none, scratch_b, scratch_e",
        ),
    ],
)
def test_bad_input_fails_fast_with_a_clear_message(tmp_path, monkeypatch, args, expected) -> None:
    """In-process through prune-exp's precheck (what runs before Hydra creates anything); the
    exit status 2 and the absence of tracebacks are checked by subprocess in test_faults.py."""
    from pruning.cli.precheck import precheck

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message = precheck(args)
    assert message is not None and expected in message, message
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["-m", "method.ratio=0.2,1.5", *QUICK_DIGITS], "method.ratio=1.5 is outside [0, 1)"),
        (
            ["-m", "experiment=rethinking_l1_cifar10", "seed=0", "data.root=/no/such/dir"],
            "/no/such/dir/cifar-10-batches-py",
        ),
    ],
)
def test_a_bad_sweep_value_fails_before_any_job_trains(tmp_path, args, expected) -> None:
    out = prune_exp(args, tmp_path)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "cache").exists() and not list(tmp_path.rglob("metrics.json"))


def test_missing_cifar_names_the_path_and_the_fix(tmp_path) -> None:
    out = prune_exp(["data=cifar10", "model=resnet20", f"data.root={tmp_path / 'absent'}"], tmp_path)
    assert out.returncode == 2
    assert str(tmp_path / "absent" / "cifar-10-batches-py") in out.stderr and "data.download=true" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.integration  # make test-integration (subprocesses, sweeps, torchrun, wheel build)
def test_cifar_run_by_subprocess(fake_cifar, tmp_path) -> None:
    out = prune_exp(
        [*TINY_CIFAR, f"data.root={fake_cifar}", "method.ratio=0.4", "finetune=scratch_b", "quiet=true"], tmp_path
    )
    assert out.returncode == 0, out.stderr
    (m,) = metrics_files(tmp_path)
    assert m["key"]["finetune"] == "scratch_b" and (tmp_path / m["run_dir"] / ".hydra" / "config.yaml").exists()


def test_help_describes_the_projects_groups_and_lists_every_option(tmp_path) -> None:
    """prune-exp --help is the project's text (issue 16): every option of every user-facing group is
    listed, and the report / paper spec folders are not offered as groups."""
    from conftest import CONF_DIR, prune_exp

    out = prune_exp(["--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "is powered by Hydra" not in text and "== Groups (group=option) ==" in text
    groups = ("data", "model", "method", "finetune", "schedule", "adv_train", "robustness", "engine", "logger")
    for group in (*groups, "experiment"):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            assert option in text, f"prune-exp --help does not list {group}={option} (conf/config.yaml hydra.help)"
    assert "report:" not in text and "paper:" not in text
