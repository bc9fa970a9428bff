"""logger=: experiment trackers (pruning/trackers.py) stream each stage's epochs and the final
metrics; metrics.json stays the record. TensorBoard is checked by reading its event files back;
wandb and MLflow (optional packages) offline, when installed."""

from __future__ import annotations

import io
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pruning import PruneLabError
from pruning.pipeline import run, run_subdir
from tests.conftest import QUICK_DIGITS, compose, plain_cfg

FAST = [*QUICK_DIGITS, "data.train_subset=256", "latency.cpu_batch_sizes=[1]", "latency.repeats=2"]
TRACKER_FILES = ("tb", "wandb", "mlruns", ".tracker.json")


def _run(cfg: dict) -> tuple[dict, str]:
    """The pipeline in the run's own directory; (metrics, what it printed)."""
    out = io.StringIO()
    metrics = run(cfg, _run_dir(cfg), console=Console(file=out, width=200))
    return metrics, out.getvalue()


def _run_dir(cfg: dict) -> Path:
    return Path(cfg["paths"]["results_root"]) / "runs" / run_subdir(cfg)


def _killed_in_second_epoch_of_finetune(cfg: dict, monkeypatch) -> None:
    """Run until the fine-tuning's first epoch is checkpointed, then Ctrl-C (as a user would)."""
    import pruning.train as train

    real_evaluate, checkpoint = train.evaluate, _run_dir(cfg) / "ckpt_finetune.pt"

    def evaluate(*args, **kwargs):
        if checkpoint.exists():
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg)
    monkeypatch.setattr(train, "evaluate", real_evaluate)


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _curve(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(row["epoch"], pytest.approx(row[key], rel=1e-6)) for row in rows]


# ----------------------------------------------------------------------------- tensorboard
def _prune_exp(args: list[str], results: Path, monkeypatch) -> int:
    """``prune-exp ARGS`` in this process (its console-script entry, ``pruning.cli.exp:main``):
    the exit status; the signal handler and the logging handlers Hydra installs are put back."""
    import logging

    import pruning.cli.exp as exp

    root = logging.getLogger()
    handlers, level, sigterm = root.handlers[:], root.level, signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(results))
    monkeypatch.setattr(sys, "argv", ["prune-exp", *args])
    try:
        exp.main()
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def test_tensorboard_run_by_prune_exp_logs_each_epoch_and_the_final_metrics(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("tensorboard")
    assert _prune_exp([*FAST, "logger=tensorboard"], tmp_path, monkeypatch) == 0
    assert "+finetune" in capsys.readouterr().out  # the summary table
    cfg = plain_cfg([*FAST, "logger=tensorboard"], tmp_path)
    run_dir = _run_dir(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "done"
    scalars = _scalars(run_dir / "tb")
    baseline = tmp_path / "cache" / "baselines" / metrics["stages"]["pretrain"]["baseline_id"]
    for stage, rows in (
        ("pretrain", _history(baseline / "history.jsonl")),
        ("finetune", _history(run_dir / "history.jsonl")),
    ):
        assert [row["epoch"] for row in rows] == ([1, 2] if stage == "pretrain" else [1])
        for key in ("top1", "top5", "train_loss", "test_loss", "lr", "epoch_s"):
            assert scalars[f"{stage}/{key}"] == _curve(rows, key), f"{stage}/{key}"
    for key in ("top1", "top1_best", "top5"):
        assert scalars[f"final/{key}"] == [(0, pytest.approx(metrics["final"][key], rel=1e-6))]
    assert scalars["flops_reduction"] == [(0, pytest.approx(metrics["flops_reduction"], rel=1e-6))]
    assert scalars["stages/prune/top1"] == [(0, pytest.approx(metrics["stages"]["prune"]["top1"], rel=1e-6))]
    assert not [tag for tag in scalars if tag.endswith(("/cached", "/baseline_id"))]  # numbers only

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert "config/text_summary" in events.Tags()["tensors"]  # the resolved config, as text
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # and as hparams

    # the same command again: skipped as finished, and it logs nothing
    before = {p.name: p.stat().st_size for p in (run_dir / "tb").iterdir()}
    again, printed = _run(cfg)
    assert "already finished" in printed and again["status"] == "done"
    assert {p.name: p.stat().st_size for p in (run_dir / "tb").iterdir()} == before


def test_the_default_logger_writes_nothing(tmp_path) -> None:
    cfg = plain_cfg(FAST, tmp_path)
    assert cfg["logger"] == {"name": "none"}
    metrics, _ = _run(cfg)
    assert metrics["status"] == "done"
    assert not [p for p in tmp_path.rglob("*") if p.name in TRACKER_FILES or p.name.startswith("events.out")]


def test_a_resumed_run_continues_its_curves_and_logs_each_epoch_once(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    cfg = plain_cfg([*FAST, "schedule.finetune_epochs=3", "logger=tensorboard"], tmp_path)
    _killed_in_second_epoch_of_finetune(cfg, monkeypatch)
    run_dir = _run_dir(cfg)
    assert [step for step, _ in _scalars(run_dir / "tb")["finetune/top1"]] == [1]
    metrics, _ = _run(cfg)  # resumed: the baseline is now cached, fine-tuning continues at epoch 2
    assert metrics["status"] == "done" and metrics["stages"]["pretrain"]["cached"] is True
    scalars = _scalars(run_dir / "tb")
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 2  # one file per launch
    assert scalars["finetune/top1"] == _curve(_history(run_dir / "history.jsonl"), "top1")  # epochs 1, 2, 3
    assert [step for step, _ in scalars["pretrain/top1"]] == [1, 2]  # not replayed from the cache a second time
    assert [step for step, _ in scalars["final/top1"]] == [0]

    # another run on the same cached baseline shows the baseline's curves too (replayed from the cache)
    other = plain_cfg([*FAST, "method.ratio=0.3", "logger=tensorboard"], tmp_path)
    other_metrics, _ = _run(other)
    assert other_metrics["stages"]["pretrain"]["cached"] is True
    assert _scalars(_run_dir(other) / "tb")["pretrain/top1"] == scalars["pretrain/top1"]

    # rerun=true starts the curves over
    _run({**cfg, "rerun": True})
    assert [step for step, _ in _scalars(run_dir / "tb")["finetune/top1"]] == [1, 2, 3]
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1


def test_a_failing_tracker_warns_once_and_the_run_completes(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    from pruning.trackers import TensorBoardTracker

    calls = []

    def broken(self, stage, epoch, metrics):
        calls.append((stage, epoch))
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(TensorBoardTracker, "log_epoch", broken)
    metrics, printed = _run(plain_cfg([*FAST, "logger=tensorboard"], tmp_path))
    assert metrics["status"] == "done" and metrics["stages"]["finetune"]["epochs"] == 1
    assert calls == [("pretrain", 1)]  # switched off after its first failure
    assert printed.count("logger=tensorboard failed in log_epoch (OSError: disk quota exceeded)") == 1

    def broken_start(self, config, run_dir, run_name):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(TensorBoardTracker, "start", broken_start)
    metrics, printed = _run(plain_cfg([*FAST, "logger=tensorboard", "method.ratio=0.3"], tmp_path))
    assert metrics["status"] == "done" and "failed in start (ConnectionError" in printed


# ----------------------------------------------------------------------------- configuration
def test_the_logger_does_not_change_the_run_directory(tmp_path) -> None:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from tests.conftest import CONF_DIR

    def run_dirs(*overrides: str) -> tuple[str, str]:
        """(Hydra's run directory, the pipeline's run_subdir) of a composed config."""
        import pruning.cli.exp  # noqa: F401  (registers the run-directory resolver)

        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(
                config_name="config", overrides=[f"paths.results_root={tmp_path}", *overrides], return_hydra_config=True
            )
            plain = {k: cfg[k] for k in cfg if k != "hydra"}
            plain = {
                k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in plain.items()
            }
            return str(cfg.hydra.run.dir), run_subdir(plain)

    default = run_dirs()
    assert run_dirs("logger=tensorboard") == default
    assert run_dirs("logger=mlflow", "logger.tracking_uri=file:/elsewhere") == default
    assert run_dirs("logger=wandb", "logger.mode=online", "logger.project=x") == default
    assert compose(["logger=tensorboard"]).logger.dir is None  # the event files go to <run_dir>/tb


def test_a_missing_tracker_package_is_a_clear_error_before_anything_runs(tmp_path, monkeypatch, capsys) -> None:
    from pruning.cli.precheck import precheck

    from pruning.pipeline import validate

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    message = precheck(["logger=wandb"])
    assert message == "logger=wandb needs the wandb package, which is not installed. Fix: pip install wandb"
    assert "pip install mlflow-skinny" in precheck(["logger=mlflow"])
    with pytest.raises(
        PruneLabError, match=re.escape("logger.name='sacred' is not a tracker; use logger=none|tensorb")
    ):
        validate(plain_cfg(["logger.name=sacred"], tmp_path))
    with pytest.raises(PruneLabError, match="logger.mode='live'"):
        validate(plain_cfg(["logger=tensorboard", "+logger.mode=live", "logger.name=wandb"], tmp_path))
    assert "not an option of the 'logger' group; valid options: mlflow, none, tensorboard, wandb" in precheck(
        ["logger=sacred"]
    )

    # the CLI: exit 2, the fix, no traceback, nothing written
    assert _prune_exp(["logger=wandb"], tmp_path / "results", monkeypatch) == 2
    err = capsys.readouterr().err
    assert "pip install wandb" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_only_rank_0_tracks_and_only_numbers_are_logged(tmp_path) -> None:
    from pruning.trackers import Guarded, NullTracker, final_metrics, make_tracker

    cfg = plain_cfg(["logger=tensorboard"], tmp_path)
    assert isinstance(make_tracker(cfg, main=True), Guarded)
    assert type(make_tracker(cfg, main=False)) is NullTracker  # DDP ranks > 0
    assert type(make_tracker(plain_cfg([], tmp_path))) is NullTracker

    metrics = {  # a language model's metrics.json, abridged
        "status": "done",
        "final": {"top1": 61.2, "top1_best": 61.5, "top5": 84.0, "bpc": 1.42, "bpc_valid": 1.45},
        "flops_reduction": 50.0,
        "params_pruned": 1200,
        "flops_speedup": None,
        "stages": {"pretrain": {"top1": 60.0, "cached": True, "baseline_id": "sru-x"}},
        "evaluations": {"pgd40": {"top1": 40.1, "settings": {"eps": 0.03, "box": "white"}}},
        "sparsity": {"target": 0.5, "achieved": 0.49, "of": "prunable params"},
        "extras": {"search_s": 12.5, "note": "text", "nan": float("nan")},
    }
    assert final_metrics(metrics) == {
        "final/top1": 61.2,
        "final/top1_best": 61.5,
        "final/top5": 84.0,
        "final/bpc": 1.42,
        "final/bpc_valid": 1.45,
        "params_pruned": 1200,
        "flops_reduction": 50.0,
        "stages/pretrain/top1": 60.0,
        "robustness/pgd40/top1": 40.1,
        "sparsity/target": 0.5,
        "sparsity/achieved": 0.49,
        "extras/search_s": 12.5,
    }


# ----------------------------------------------------------------------------- optional packages
def _offline(monkeypatch, tmp_path: Path) -> None:
    """No telemetry, no error reports, nothing written outside tmp_path."""
    for name in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))


def test_mlflow_logs_to_a_local_file_store_and_a_resumed_run_continues_it(tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    _offline(monkeypatch, tmp_path)
    from mlflow.tracking import MlflowClient

    cfg = plain_cfg([*FAST, "schedule.finetune_epochs=3", "logger=mlflow"], tmp_path)
    _killed_in_second_epoch_of_finetune(cfg, monkeypatch)
    metrics, printed = _run(cfg)
    assert metrics["status"] == "done" and "warning" not in printed
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (run_,) = client.search_runs([client.get_experiment_by_name("prune-lab").experiment_id])
    assert run_.info.status == "FINISHED" and run_.info.run_name == run_subdir(cfg)
    run_id, history = run_.info.run_id, _history(_run_dir(cfg) / "history.jsonl")
    curve = [(m.step, m.value) for m in client.get_metric_history(run_id, "finetune/top1")]
    assert sorted(curve) == _curve(history, "top1")  # epoch 1 before the kill, 2 and 3 after: once each
    assert [m.step for m in client.get_metric_history(run_id, "pretrain/train_loss")] == [1, 2]
    assert run_.data.metrics["final/top1"] == pytest.approx(metrics["final"]["top1"])
    assert run_.data.params["data.name"] == "digits" and run_.data.params["schedule.finetune_epochs"] == "3"
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]


def test_wandb_logs_offline_under_the_run_directory(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    _offline(monkeypatch, tmp_path)
    cfg = plain_cfg([*FAST, "schedule.finetune_epochs=2", "logger=wandb"], tmp_path)
    _killed_in_second_epoch_of_finetune(cfg, monkeypatch)
    metrics, printed = _run(cfg)
    assert metrics["status"] == "done" and "warning" not in printed
    run_dir = _run_dir(cfg)
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    run_id = json.loads((run_dir / ".tracker.json").read_text())["wandb"]["run_id"]
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)  # resumed: the same wandb run
    first, second = ((r / f"run-{run_id}.wandb").read_bytes() for r in runs)
    # the transaction logs: epochs before the kill in the first, the rest and the final metrics in the second
    assert b"pretrain/train_loss" in first and b"finetune/train_loss" in first and b"final/top1" not in first
    assert b"pretrain/train_loss" not in second and b"finetune/train_loss" in second and b"final/top1" in second
