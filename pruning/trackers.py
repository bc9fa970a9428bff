"""Experiment trackers (the ``logger=`` config group): stream a run to TensorBoard, Weights & Biases
or MLflow while it trains: each training stage's per-epoch metrics, the final metrics, and the
run's resolved config. ``<run_dir>/metrics.json`` and ``history.jsonl`` stay the record (the report
reads only them); a tracker is a view of the same numbers.

    tracker = make_tracker(cfg, main=rank == 0, warn=print)   # NullTracker for logger=none / rank > 0
    tracker.start(cfg, run_dir, run_name)
    tracker.log_epoch("finetune", 3, {"top1": 91.2, "train_loss": 0.31, ...})  # -> finetune/top1 at step 3
    tracker.log_final(final_metrics(metrics.to_dict()))                         # -> final/top1, flops_reduction
    tracker.close("done")

* Metric names: ``<stage>/<history.jsonl column>`` per epoch, the step is the stage's epoch
  (``pretrain/top1``, ``finetune/train_loss``, ``scratch_b/lr``; a language model's ``<stage>/bpc``);
  at the end ``final/<key>`` (``final/top1_best``, ``final/bpc``), the sizes (``flops_reduction``,
  ``params_pruned``...), ``stages/<stage>/<key>``, ``latency/<setting>/<key>``,
  ``robustness/<evaluation>/<key>``, ``sparsity/<key>``, ``cost_per_sample/<key>``,
  ``extras/<key>``. Only numbers are logged.
* Offline by default: TensorBoard event files in ``<run_dir>/tb``; wandb ``mode: offline`` under
  the run directory (``wandb sync`` uploads later); MLflow a local file store
  ``file:<results_root>/mlruns``.
* Each epoch is logged once per tracker run, at the stage's epoch as the step: ``<run_dir>/.tracker.json``
  records, per logger, the last epoch logged of each stage (and the wandb / MLflow run id). A
  resumed run continues the same tracker run and its curves; the rows restored from a checkpoint,
  and a cached dense baseline's history, are offered again and only the ones the tracker lacks are
  logged (so a run that reuses a cached baseline still shows its pretraining curves). A finished
  run that is skipped logs nothing (it was logged when it ran); ``rerun=true`` starts a new tracker
  run (TensorBoard: the run's old event files go).
* A tracker never breaks a run: its first exception is reported once as a warning and the tracker
  is switched off for the rest of the run. Only a misconfiguration (an unknown logger, its package
  not installed) stops a run before it starts (``check``: prune-exp exits 2).
* Under DDP only rank 0 logs (the others get a ``NullTracker``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pruning import CorruptFileError, PruneLabError
from pruning.io import read_json, write_json

STATE_FILE = ".tracker.json"  # per logger: the epochs logged per stage, the wandb / MLflow run id
EPOCH_COLUMNS = ("stage", "epoch")  # history.jsonl columns that name the row (not metrics)
# logger name -> (the module it imports, the fix when it is missing)
PACKAGES = {
    "none": (None, ""),
    "tensorboard": ("tensorboard", "pip install tensorboard (or pip install 'prune-lab[trackers]')"),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow-skinny (or mlflow)"),
}
WANDB_MODES = ("offline", "online", "disabled")


# ----------------------------------------------------------------------------- the interface
class Tracker:
    """What the pipeline calls; every method is a no-op here (``logger=none``). A backend that has
    runs of its own continues ``resume_id`` when it is set and sets ``run_id`` in ``start``; every
    backend sets ``fresh`` there: whether it started an empty tracker run (nothing logged yet)."""

    name = "none"
    run_id: str | None = None
    resume_id: str | None = None
    fresh: bool = True

    def start(self, config: dict, run_dir: Path, run_name: str) -> None:
        """Open (or, resuming, reopen) the tracker's run and record the resolved ``config``."""

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        """One finished epoch of a training stage: ``<stage>/<key>`` at step ``epoch``."""

    def log_final(self, metrics: dict[str, float]) -> None:
        """The run's final numbers (``final_metrics``), once, when the run is done."""

    def close(self, status: str = "done") -> None:
        """Flush and close; ``status``: done | failed | interrupted."""

    def log_row(self, row: dict) -> None:
        """A ``history.jsonl`` row (``pruning.train.run_stage``'s ``on_row``)."""
        self.log_epoch(str(row["stage"]), int(row["epoch"]), row)

    def replay(self, rows: list[dict]) -> None:
        """History rows trained elsewhere or earlier (a cached baseline's ``history.jsonl``)."""
        for row in rows:
            self.log_row(row)


NullTracker = Tracker


class Guarded(Tracker):
    """The pipeline's view of a backend. It never lets the tracker break the run: only numbers
    reach it, and its first exception (in any call) is reported through ``warn`` once; the tracker
    is then closed and ignored for the rest of the run (metrics.json and history.jsonl are complete
    regardless). And it logs each epoch once per tracker run: ``<run_dir>/.tracker.json`` keeps the
    last epoch logged per stage, so rows offered again (resumed, replayed) are skipped."""

    def __init__(self, inner: Tracker, warn: Callable[[str], None]):
        self.inner, self.warn, self.failed = inner, warn, False
        self.name = inner.name
        self.run_dir: Path | None = None
        self.logged: dict[str, int] = {}  # stage -> last epoch logged

    def _call(self, what: str, method: Callable, *args) -> None:
        if self.failed:
            return
        try:
            method(*args)
        except Exception as e:  # noqa: BLE001  any tracker error: warn, stop tracking, keep training
            self.failed = True
            self.warn(
                f"logger={self.name} failed in {what} ({type(e).__name__}: {e}); tracking stops for this run, "
                "metrics.json and history.jsonl are complete"
            )
            try:
                self.inner.close("failed")
            except Exception:  # noqa: BLE001,S110  already reported
                pass

    def start(self, config: dict, run_dir: Path, run_name: str) -> None:
        self.run_dir = Path(run_dir)
        previous = {} if config.get("rerun") else read_state(self.run_dir).get(self.name) or {}
        self.logged = {str(k): int(v) for k, v in (previous.get("epochs") or {}).items()}
        self.inner.resume_id = previous.get("run_id")
        self._call("start", self.inner.start, config, self.run_dir, run_name)
        if not self.failed:
            if self.inner.fresh:  # a new tracker run (or its files are gone): log everything offered
                self.logged = {}
            self._save()

    def log_epoch(self, stage: str, epoch: int, metrics: dict) -> None:
        if self.failed or int(epoch) <= self.logged.get(stage, 0):
            return  # logged before (a resumed stage's restored rows, a replayed baseline)
        values = numbers({k: v for k, v in metrics.items() if k not in EPOCH_COLUMNS})
        self._call("log_epoch", self.inner.log_epoch, stage, int(epoch), values)
        if not self.failed:
            self.logged[stage] = int(epoch)
            self._save()

    def _save(self) -> None:
        try:
            state = read_state(self.run_dir)
            state[self.name] = {"run_id": self.inner.run_id, "epochs": self.logged}
            write_json(self.run_dir / STATE_FILE, state)
        except PruneLabError as e:  # cannot write the run directory: the run itself will say so
            self.warn(f"cannot record what logger={self.name} logged ({e})")

    def log_final(self, metrics: dict) -> None:
        values = numbers(metrics)
        if values:
            self._call("log_final", self.inner.log_final, values)

    def close(self, status: str = "done") -> None:
        self._call("close", self.inner.close, status)


# ----------------------------------------------------------------------------- config
def logger_settings(cfg: dict) -> dict:
    """The ``logger`` section of a run's config (``{"name": "none"}`` when absent)."""
    return dict(cfg.get("logger") or {"name": "none"})


def check(cfg: dict) -> str:
    """The logger's name, after checking what can be wrong before a run starts: an unknown
    logger, its package not installed, a bad wandb mode. ``PruneLabError`` names the fix."""
    settings = logger_settings(cfg)
    name = str(settings.get("name", "none"))
    if name not in PACKAGES:
        raise PruneLabError(f"logger.name={name!r} is not a tracker; use logger={'|'.join(PACKAGES)}")
    if name == "wandb" and str(settings.get("mode", "offline")) not in WANDB_MODES:
        raise PruneLabError(f"logger.mode={settings.get('mode')!r}: use one of {', '.join(WANDB_MODES)}")
    module, fix = PACKAGES[name]
    if module is not None and not _installed(module):
        raise PruneLabError(f"logger={name} needs the {module} package, which is not installed. Fix: {fix}")
    return name


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def make_tracker(cfg: dict, main: bool = True, warn: Callable[[str], None] = print) -> Tracker:
    """The tracker the config's ``logger`` asks for (checked: ``check``), guarded (``Guarded``);
    a ``NullTracker`` for ``logger=none`` and on every DDP rank but rank 0 (``main``)."""
    name = check(cfg)
    if name == "none" or not main:
        return NullTracker()
    settings = logger_settings(cfg)
    backend = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}[name]
    return Guarded(backend(settings), warn)


# ----------------------------------------------------------------------------- what is logged
def numbers(values: dict) -> dict[str, float]:
    """The entries that are numbers (bools and None are not)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _flatten(values: dict, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name, sep))
        else:
            out[name] = value
    return out


TOP_LEVEL = (
    "params_dense",
    "params_pruned",
    "params_reduction",
    "flops_dense",
    "flops_pruned",
    "flops_reduction",
    "flops_speedup",
)


def final_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of a metrics.json (``RunMetrics.to_dict()``) as tracker metric names:
    ``final/<key>``, the sizes (``flops_reduction``...), ``stages/<stage>/<key>``,
    ``latency/<setting>/<key>``, ``robustness/<evaluation>/<key>`` (not its settings),
    ``sparsity/<key>``, ``cost_per_sample/<key>``, ``extras/<key>``."""
    out = {f"final/{k}": v for k, v in (metrics.get("final") or {}).items()}
    out.update({k: metrics.get(k) for k in TOP_LEVEL})
    evaluations = {
        name: {k: v for k, v in result.items() if k != "settings"}
        for name, result in (metrics.get("evaluations") or {}).items()
        if isinstance(result, dict)
    }
    groups = {
        "stages": metrics.get("stages"),
        "latency": metrics.get("latency"),
        "robustness": evaluations,
        "sparsity": metrics.get("sparsity"),
        "cost_per_sample": metrics.get("cost_per_sample"),
        "extras": metrics.get("extras"),
    }
    for group, values in groups.items():
        if isinstance(values, dict):
            out.update(_flatten(values, group))
    return {k: v for k, v in numbers(out).items() if math.isfinite(v)}


def robustness_metrics(metrics: dict) -> dict[str, float]:
    """Only the robustness evaluations (what a finished run adds when it is evaluated again)."""
    return {k: v for k, v in final_metrics(metrics).items() if k.startswith("robustness/")}


def flat_config(config: dict, max_chars: int = 500) -> dict[str, str | int | float | bool]:
    """``data.name: digits``-style scalars (lists as JSON text, long values cut): what
    TensorBoard's hparams and MLflow's params take."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in _flatten(config, sep=".").items():
        if value is None or isinstance(value, (list, tuple)):
            value = json.dumps(value, default=str)
        elif not isinstance(value, (str, int, float, bool)):
            value = str(value)
        out[key] = value[:max_chars] if isinstance(value, str) else value
    return out


def config_yaml(config: dict) -> str:
    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)


def read_state(run_dir: Path) -> dict:
    """``<run_dir>/.tracker.json`` (``{}`` when absent or unreadable: everything is logged again)."""
    path = Path(run_dir) / STATE_FILE
    try:
        state = read_json(path) if path.exists() else {}
    except CorruptFileError:
        return {}
    return state if isinstance(state, dict) else {}


def history_rows(path: Path) -> list[dict]:
    """The rows of a ``history.jsonl`` (none when it is missing; unreadable lines are skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "stage" in row and "epoch" in row:
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- backends
class TensorBoardTracker(Tracker):
    """``torch.utils.tensorboard`` event files in ``<run_dir>/tb`` (``logger.dir=D``: ``D/<run name>``,
    so ``tensorboard --logdir D`` shows every run). Per-epoch scalars, the config as text (once per
    run) and as hparams with the final metrics."""

    name = "tensorboard"

    def __init__(self, settings: dict):
        self.dir = settings.get("dir")
        self.flush_secs = int(settings.get("flush_secs", 30))

    def start(self, config: dict, run_dir: Path, run_name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config = config
        self.log_dir = Path(self.dir) / run_name if self.dir else Path(run_dir) / "tb"
        previous = list(self.log_dir.glob("events.out.tfevents.*"))
        if config.get("rerun"):  # a new run from scratch: its old curves go
            for path in previous:
                path.unlink()
            previous = []
        self.fresh = not previous
        self.writer = SummaryWriter(str(self.log_dir), flush_secs=self.flush_secs)
        if self.fresh:  # resuming: the config is already there
            self.writer.add_text("config", "    " + config_yaml(config).replace("\n", "\n    "), 0)
            self.writer.flush()

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"{stage}/{key}", value, epoch)
        self.writer.flush()  # a killed run keeps every epoch it checkpointed

    def log_final(self, metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        experiment, start, end = hparams(flat_config(self.config), metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, 0)
        self.writer.flush()

    def close(self, status: str = "done") -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """Weights & Biases: ``mode: offline`` by default (files under ``<dir or run_dir>/wandb``;
    ``wandb sync`` uploads them). Each stage gets its own x axis (``<stage>/epoch``), so stages and
    resumed stages never fight over wandb's single increasing step; the final metrics go to the
    run's summary; the config to ``config``."""

    name = "wandb"

    def __init__(self, settings: dict):
        self.settings = settings

    def start(self, config: dict, run_dir: Path, run_name: str) -> None:
        import wandb

        s = self.settings
        self.fresh = self.resume_id is None
        self.run_id = self.resume_id or uuid.uuid4().hex[:12]
        directory = Path(s.get("dir") or run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=s.get("project") or "prune-lab",
            entity=s.get("entity"),
            group=s.get("group"),
            tags=list(s.get("tags") or []),
            name=run_name,
            id=self.run_id,
            resume="allow",
            dir=str(directory),
            mode=str(s.get("mode", "offline")),
            config=config,
            settings=wandb.Settings(console="off", quiet=True, silent=bool(config.get("quiet"))),
        )
        self.stages: set[str] = set()

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if stage not in self.stages:
            self.run.define_metric(f"{stage}/epoch")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/epoch")
            self.stages.add(stage)
        self.run.log({f"{stage}/epoch": epoch, **{f"{stage}/{k}": v for k, v in metrics.items()}})

    def log_final(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def close(self, status: str = "done") -> None:
        self.run.finish(exit_code=0 if status == "done" else 1)


class MlflowTracker(Tracker):
    """MLflow through its client API (no global active run): ``tracking_uri`` (default
    ``$MLFLOW_TRACKING_URI``, else the local file store ``file:<results_root>/mlruns``: it needs no
    database package, so mlflow-skinny is enough; MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true``
    for it, set here unless already set), the experiment ``experiment``; the config flattened as
    params and whole as the artifact ``config.yaml``."""

    name = "mlflow"
    STATUS = {"done": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, settings: dict):
        self.settings = settings

    def tracking_uri(self, config: dict) -> str:
        uri = self.settings.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return str(uri)
        results_root = Path((config.get("paths") or {}).get("results_root") or "results")
        return (results_root / "mlruns").resolve().as_uri()

    def start(self, config: dict, run_dir: Path, run_name: str) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri(config)
        if uri.startswith("file:") or "://" not in uri:  # MLflow 3 keeps the file store behind this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = str(self.settings.get("experiment") or "prune-lab")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = None
        if self.resume_id:
            try:
                run = self.client.get_run(self.resume_id)
                if run.info.experiment_id == experiment_id:
                    self.run_id = self.resume_id
                    self.client.update_run(self.run_id, status="RUNNING")
            except Exception:  # noqa: BLE001  gone (another store, deleted): a new run
                self.run_id = None
        self.fresh = self.run_id is None
        if self.run_id is None:
            run = self.client.create_run(experiment_id, run_name=run_name, tags={"prune_lab.run_dir": str(run_dir)})
            self.run_id = run.info.run_id
            params = [Param(k, str(v)) for k, v in flat_config(config).items()]
            for i in range(0, len(params), 100):  # the REST API's limit per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_text(self.run_id, config_yaml(config), "config.yaml")

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        rows = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for i in range(0, len(rows), 1000):
            self.client.log_batch(self.run_id, metrics=rows[i : i + 1000])

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        self._log({f"{stage}/{k}": v for k, v in metrics.items()}, epoch)

    def log_final(self, metrics: dict[str, float]) -> None:
        self._log(metrics, 0)

    def close(self, status: str = "done") -> None:
        self.client.set_terminated(self.run_id, status=self.STATUS.get(status, "FAILED"))
