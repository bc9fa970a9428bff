"""The one pipeline every method runs through:

    pretrain (dense baseline, cached) -> prune -> finetune | scratch_e | scratch_b -> evaluate

``run(cfg, run_dir)`` takes the composed config as a plain dict (no Hydra objects) and writes
``run_dir/metrics.json`` (schema in README.md), ``history.jsonl`` and per-stage checkpoints.

* The dense baseline is cached under ``paths.cache_dir/baselines/`` by a content hash of what
  determines it (data fingerprint and subset, model spec, pretrain schedule, seed, and the
  method's pretraining extras). A file lock makes concurrent sweep jobs wait for one trainer.
* Every stage checkpoints each epoch; re-running a killed command resumes; a finished run is
  skipped (``rerun=true`` forces it).
* Every run measures dense vs pruned inference latency, prints its plan (epochs per stage)
  before training and an ETA once the first epoch is timed, and records peak memory per stage.
* Under torchrun (DDP) every rank runs this same code; rank 0 alone writes and takes locks.
* The stage policy is the pipeline's, not the method's: finetune keeps the pruned weights
  (40 epochs at lr 1e-3 in the CIFAR recipe), scratch_e re-initialises the pruned spec and
  trains the baseline's epochs, scratch_b trains epochs x FLOPs(dense)/FLOPs(pruned).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from rich.console import Console

import pruning
from pruning import CorruptFileError, PruneLabError, Terminated, distributed
from pruning import data as datasets
from pruning.distributed import DistInfo
from pruning.io import (
    clean_stray_temp_files,
    ensure_dir,
    load_checkpoint,
    load_or_quarantine,
    os_error_message,
    quarantine,
    read_json,
    save_checkpoint,
    write_json,
)
from pruning.measure import count_macs, count_params, measure_latency_pair, reduction
from pruning.methods.base import Method, PruneContext
from pruning.models import build, default_spec
from pruning.train import Engine, Schedule, evaluate, run_stage
from pruning.validation import check_model_fits_data, check_values

SCHEMA_VERSION = 1
POLICIES = ("finetune", "scratch_e", "scratch_b")
METHODS_PACKAGE = "pruning.methods"
LATER_SCHEDULE_DEFAULTS = {"lr_schedule": "step", "warmup_epochs": 0}
MODEL_KEYS = {"name", "arch", "init_from"}  # init_from: torchvision .pth for the dense net


# ----------------------------------------------------------------------------- config helpers
def make_method(method_cfg: dict) -> Method:
    """Instantiate the class named by ``_target_`` with the other keys as arguments."""
    target = method_cfg.get("_target_")
    if not target:
        raise PruneLabError(f"method config {method_cfg.get('name')!r} has no _target_")
    module_name, _, cls_name = target.rpartition(".")
    if not module_name.startswith(METHODS_PACKAGE + "."):  # a config names a method, never arbitrary code
        raise PruneLabError(f"method _target_ {target!r} is not a prune-lab method "
                            f"(it must be a Method class in {METHODS_PACKAGE})")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise PruneLabError(f"method _target_ {target!r} cannot be imported: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PruneLabError(f"method _target_ {target!r} is not a Method class")
    kwargs = {k: v for k, v in method_cfg.items() if k not in ("_target_", "name")}
    return cls(**kwargs)


def model_spec(model_cfg: dict, data_cfg: dict) -> dict:
    kwargs = {k: v for k, v in model_cfg.items() if k not in MODEL_KEYS}
    kwargs.setdefault("num_classes", data_cfg["num_classes"])
    kwargs.setdefault("in_channels", data_cfg["in_channels"])
    return default_spec(model_cfg["arch"], **kwargs)


def pretrain_schedule(cfg: dict) -> Schedule:
    s = cfg["schedule"]
    return Schedule(epochs=int(s["epochs"]), lr=float(s["lr"]), batch_size=int(s["batch_size"]),
                    momentum=float(s["momentum"]), weight_decay=float(s["weight_decay"]),
                    milestones=list(s["milestones"]), gamma=float(s["gamma"]),
                    nesterov=bool(s.get("nesterov", False)), test_batch_size=int(s["test_batch_size"]),
                    lr_schedule=str(s.get("lr_schedule", "step")), warmup_epochs=int(s.get("warmup_epochs", 0)))


def policy_schedule(cfg: dict, flops_dense: int, flops_pruned: int) -> Schedule:
    """The schedule of the second stage, from the finetune policy and the FLOPs ratio."""
    policy = cfg["finetune"]
    base = pretrain_schedule(cfg)
    if policy["name"] == "finetune":
        return Schedule(**{**base.__dict__, "epochs": int(policy["epochs"]), "lr": float(policy["lr"]),
                           "milestones": list(policy.get("milestones") or []),
                           "lr_schedule": str(policy.get("lr_schedule", "step")),
                           "warmup_epochs": int(policy.get("warmup_epochs", 0))})
    if policy["name"] == "scratch_e":
        return base
    if policy["name"] == "scratch_b":
        epochs = int(base.epochs * flops_dense / flops_pruned)
        cap = policy.get("max_epochs")
        if cap:
            epochs = min(epochs, int(cap))
        return Schedule(**{**base.__dict__, "epochs": epochs})
    raise PruneLabError(f"unknown finetune policy {policy['name']!r}; use one of {', '.join(POLICIES)}")


def validate(cfg: dict) -> tuple[Method, dict]:
    """Everything that can be checked before any data is read or any epoch trained: the policy,
    the method and its settings, every schedule / data value's type and range, that the model
    can run on the data's input size, and that the data is there."""
    policy = cfg["finetune"]["name"]
    if policy not in POLICIES:
        raise PruneLabError(f"finetune={policy!r} is not a policy; use finetune=finetune|scratch_e|scratch_b")
    method = make_method(cfg["method"])
    check_values(cfg, needs_pretrain=method.needs_pretrained or not method.prunes)
    spec = model_spec(cfg["model"], cfg["data"])
    method.validate(cfg["model"]["name"], spec)
    spec = method.dense_spec(spec)
    data_cfg = cfg["data"]
    input_shape = (int(data_cfg["in_channels"]), int(data_cfg["image_size"]), int(data_cfg["image_size"]))
    check_model_fits_data(cfg["model"]["name"], spec, data_cfg["name"], input_shape)
    if not cfg.get("dry_run"):  # a dry run reads no data
        datasets.check_available(data_cfg)
    return method, spec


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PruneLabError(f"device={name} requested but CUDA is not available; use device=cpu or device=auto")
    return name


def run_key(cfg: dict, method: Method) -> dict:
    return {"data": cfg["data"]["name"], "model": cfg["model"]["name"], "method": cfg["method"]["name"],
            **method.key(), "finetune": cfg["finetune"]["name"] if method.prunes else "none",
            "seed": int(cfg["seed"])}


def run_subdir(cfg: dict) -> str:
    """Deterministic run directory (relative to ``<results_root>/runs``): the same command always
    maps to the same directory, which is what makes re-running resume or skip it."""
    method = make_method(cfg["method"])
    key = run_key(cfg, method)
    identity = {k: cfg[k] for k in ("data", "model", "method", "finetune", "schedule", "seed")}
    # schedule keys added to the YAML later count only when not at their default, so existing
    # commands keep mapping to their existing run directories
    identity["schedule"] = {k: v for k, v in cfg["schedule"].items()
                            if not (k in LATER_SCHEDULE_DEFAULTS and v == LATER_SCHEDULE_DEFAULTS[k])}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{key['data']}/{key['model']}/{key['method']}-{method.tag()}/{key['finetune']}/seed{key['seed']}-{digest}"


# ----------------------------------------------------------------------------- provenance
def git_commit() -> str | None:
    here = Path(pruning.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else None
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def versions() -> dict:
    import hydra
    import omegaconf

    return {"prune_lab": pruning.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "hydra": hydra.__version__, "omegaconf": omegaconf.__version__, "platform": platform.platform()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- baseline cache
def baseline_id(cfg: dict, data: datasets.ImageData, spec: dict, method: Method) -> str:
    identity = {
        "data": {"kind": cfg["data"].get("kind", cfg["data"]["name"]), "fingerprint": data.info["fingerprint"],
                 "train_subset": data.info.get("train_subset"), "augment": data.augment},
        "spec": spec,
        "schedule": pretrain_schedule(cfg).identity(),  # new fields only when not default
        "seed": int(cfg["seed"]),
        "method_pretrain": method.pretrain_extras(),
    }
    if cfg["model"].get("init_from"):  # only when set: existing cache ids stay valid
        from pruning.models.torchvision_compat import file_digest

        identity["init_from"] = file_digest(cfg["model"]["init_from"])
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{cfg['model']['name']}-{cfg['data']['name']}-{digest}"


@dataclass
class Runtime:
    """Where and how this process trains: device, DDP rank info, engine options, console."""

    device: str
    dist: DistInfo
    engine: Engine
    console: Console
    quiet: bool = False

    def say(self, message: str) -> None:
        if self.dist.is_main:
            self.console.print(message)


def make_runtime(cfg: dict, console: Console) -> Runtime:
    device = resolve_device(cfg.get("device", "auto"))
    info = distributed.init_from_env(device)
    device = distributed.device_for(device, info)
    return Runtime(device, info, Engine.from_config(cfg.get("engine"), device), console, bool(cfg.get("quiet")))


class Eta:
    """Once the first epoch is timed, print an estimate for the whole run: remaining epochs of
    this stage at the measured speed, plus the second stage's epochs scaled by its FLOPs."""

    def __init__(self, rt: Runtime, later_epochs_equiv: float):
        self.rt, self.later, self.done = rt, later_epochs_equiv, False

    def hook(self, remaining_after: Callable[[int], int]) -> Callable[[int, float], None]:
        def on_epoch(epoch: int, seconds: float) -> None:
            if not self.done:
                self.done = True
                remaining = remaining_after(epoch) + self.later
                if remaining <= 0:
                    return  # nothing left to estimate
                self.rt.say(f"[dim]ETA for the rest of the run: ~{_fmt_seconds(remaining * seconds)} "
                            f"({remaining:.0f} epoch-equivalents at {seconds:.2f} s; later stages scaled by their FLOPs)[/]")
        return on_epoch


def _fmt_seconds(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h} h {rem // 60} min" if h else f"{rem // 60} min {rem % 60} s"


def pretrain(cfg: dict, data: datasets.ImageData, spec: dict, method: Method, rt: Runtime,
             eta: Eta) -> tuple[torch.nn.Module, dict]:
    """Train (or load) the cached dense baseline. Concurrent jobs wait on a file lock (taken by
    rank 0 only under DDP; the other ranks follow rank 0's decision)."""
    cache = Path(cfg["paths"]["cache_dir"]) / "baselines" / baseline_id(cfg, data, spec, method)
    final_path, info_path = cache / "baseline.pt", cache / "info.json"
    lock = FileLock(str(cache / ".lock"))
    if rt.dist.is_main:
        ensure_dir(cache)
        lock.acquire()
        clean_stray_temp_files(cache)
    try:
        loaded = _load_cached_baseline(final_path, info_path, rt) if rt.dist.is_main else None
        cached = distributed.broadcast(loaded is not None, rt.dist)  # rank 0's finding
        if cached:
            if loaded is None:  # DDP: rank 0 checked it; the other ranks read it too
                loaded = (load_checkpoint(final_path, map_location="cpu"), read_json(info_path))
            state, info = loaded
            model = build(state["spec"]).to(rt.device)
            model.load_state_dict(state["model"])
            rt.say(f"[green]dense baseline: cached[/] ({cache.name}, top-1 {info['top1']:.2f}%)")
            return model, {**info, "cached": True}
        rt.say(f"[cyan]dense baseline: training[/] ({cache.name})")
        torch.manual_seed(int(cfg["seed"]))
        model = build(spec).to(rt.device)
        if cfg["model"].get("init_from"):
            from pruning.models.torchvision_compat import load_torchvision_file

            load_torchvision_file(model, cfg["model"]["init_from"])
        schedule = pretrain_schedule(cfg)
        stage = run_stage("pretrain", model, data, schedule, cache / "ckpt.pt", cache / "history.jsonl",
                          int(cfg["seed"]), grad_hook=method.pretrain_grad_hook(), quiet=rt.quiet,
                          engine=rt.engine, dist=rt.dist,
                          on_epoch=eta.hook(lambda e: schedule.epochs - e))
        info = {**stage, "baseline_id": cache.name}
        if rt.dist.is_main:
            save_checkpoint(final_path, {"model": model.state_dict(), "spec": spec})
            write_json(info_path, info)
            (cache / "ckpt.pt").unlink(missing_ok=True)
        return model, {**info, "cached": False}
    finally:
        distributed.barrier(rt.dist)
        if rt.dist.is_main:
            lock.release()


def _load_cached_baseline(final_path: Path, info_path: Path, rt: Runtime) -> tuple[dict, dict] | None:
    """The cached baseline's state and info, or None when there is none. A corrupt or truncated
    entry (a killed write on a full disk, a bad copy) is moved aside and retrained, instead of
    failing every run that shares it until someone deletes it by hand."""
    if not (final_path.exists() and info_path.exists()):
        return None
    try:
        state = load_checkpoint(final_path, map_location="cpu")
        info = read_json(info_path)
        build(state["spec"]).load_state_dict(state["model"])
        if not isinstance(info.get("top1"), (int, float)):
            raise CorruptFileError(info_path, f"{info_path} has no top-1 accuracy")
        return state, info
    except (CorruptFileError, KeyError, TypeError, RuntimeError) as e:
        bad = getattr(e, "path", final_path)
        for path in (final_path, info_path):
            if path.exists():
                quarantine(path)
        rt.say(f"[yellow]warning:[/] the cached dense baseline in {final_path.parent} is unreadable "
               f"({bad.name}: {str(e).splitlines()[0][:160]}); moved aside (*.corrupt-*), training it again")
        return None


def plan(cfg: dict, method: Method, spec: dict, input_shape: tuple[int, ...]) -> dict:
    """Planned epochs per stage, known before training for methods whose architecture does not
    depend on the trained weights (L1-norm's widths); None where pruning decides it."""
    pre = pretrain_schedule(cfg)
    out = {"pretrain": pre.epochs, "stage": None, "flops_ratio": None}
    if not method.prunes:
        return out
    if method.data_free_architecture:
        dense = build(spec)
        pruned = method.prune(dense, PruneContext(device="cpu", input_shape=input_shape, seed=int(cfg["seed"]))).model
        f_dense, f_pruned = count_macs(dense, input_shape), count_macs(pruned, input_shape)
        out["stage"] = policy_schedule(cfg, f_dense, f_pruned).epochs
        out["flops_ratio"] = f_pruned / f_dense
    elif method.architecture(spec) is not None:  # widths known, channels chosen from data
        f_dense, f_pruned = count_macs(build(spec), input_shape), count_macs(build(method.architecture(spec)), input_shape)
        out["stage"] = policy_schedule(cfg, f_dense, f_pruned).epochs
        out["flops_ratio"] = f_pruned / f_dense
    elif cfg["finetune"]["name"] != "scratch_b":
        out["stage"] = policy_schedule(cfg, 1, 1).epochs
    return out


def measure_latencies(dense: torch.nn.Module, pruned: torch.nn.Module, input_shape: tuple[int, ...],
                      cfg: dict, rt: Runtime) -> dict:
    """Median latency of dense vs pruned, per setting: CPU at each batch size, CUDA at one."""
    lat_cfg = cfg.get("latency") or {}
    if not lat_cfg.get("enabled", True) or not rt.dist.is_main:
        return {}
    out = {}
    settings = [("cpu", int(b)) for b in lat_cfg.get("cpu_batch_sizes", [1, 64])]
    if rt.device.startswith("cuda"):
        settings.append((rt.device, int(lat_cfg.get("gpu_batch_size", 256))))
    for device, batch in settings:
        kw = {"warmup": int(lat_cfg.get("warmup", 3)), "repeats": int(lat_cfg.get("repeats", 10))}
        name = f"{'cpu' if device == 'cpu' else 'cuda'}_b{batch}"
        out[name] = measure_latency_pair(dense, pruned, input_shape, device, batch, **kw)
    return out


# ----------------------------------------------------------------------------- the run
def run(cfg: dict, run_dir: str | Path, console: Console | None = None) -> dict:
    """Run (or resume, or skip) one experiment; returns the metrics dict written to metrics.json."""
    console = console or Console(stderr=True)
    cfg = copy.deepcopy(cfg)
    run_dir = Path(run_dir)
    method, spec = validate(cfg)
    rt = make_runtime(cfg, console)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and not cfg.get("rerun"):
        try:
            previous = read_json(metrics_path)
        except CorruptFileError as e:  # the run's checkpoints decide what is redone
            previous = {}
            if rt.dist.is_main:
                rt.say(f"[yellow]warning:[/] {e}. Moved it to {quarantine(metrics_path).name}; the run resumes from its checkpoints.")
        if previous.get("status") == "done":
            rt.say(f"[yellow]already finished, skipped:[/] {run_dir} (rerun=true forces it)")
            return previous
    lock = FileLock(str(run_dir / ".lock"))
    if rt.dist.is_main:
        ensure_dir(run_dir)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise PruneLabError(f"another process is running {run_dir}; wait for it or kill it") from None
        except OSError as e:
            raise PruneLabError(os_error_message(e, run_dir / ".lock")) from None
        clean_stray_temp_files(run_dir)  # left by a killed write; we hold the run's lock
    try:
        return _run_locked(cfg, run_dir, method, spec, rt)
    finally:
        if rt.dist.is_main:
            lock.release()


def _run_locked(cfg: dict, run_dir: Path, method: Method, spec: dict, rt: Runtime) -> dict:
    main = rt.dist.is_main
    if cfg.get("rerun") and main:
        for stale in [run_dir / "metrics.json", run_dir / "pruned.pt", *run_dir.glob("ckpt_*.pt")]:
            stale.unlink(missing_ok=True)
    distributed.barrier(rt.dist)
    seed = int(cfg["seed"])
    metrics: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "key": run_key(cfg, method),
        "method_settings": method.settings(),
        "run_dir": str(run_dir),
        "started": now(),
        "dry_run": bool(cfg.get("dry_run")),
        "versions": versions(),
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": rt.device if rt.device == "cpu" else torch.cuda.get_device_name(rt.device),
        "world_size": rt.dist.world_size,
        "engine": asdict(rt.engine),
        "stages": {},
    }
    metrics_path = run_dir / "metrics.json"

    def save() -> None:
        if main:
            metrics["updated"] = now()
            write_json(metrics_path, metrics)

    try:
        if cfg.get("dry_run"):
            return _dry_run(cfg, run_dir, method, spec, metrics, save)
        data = datasets.load(cfg["data"]).to(rt.device)
        metrics["data"] = {"name": data.name, **data.info}
        input_shape = data.input_shape
        pre = pretrain_schedule(cfg)
        planned = plan(cfg, method, spec, input_shape)
        metrics["budget"] = {"pretrain_epochs": pre.epochs, "batch_size": pre.batch_size,
                             "train_subset": data.info.get("train_subset"), "planned_stage_epochs": planned["stage"]}
        rt.say(f"[bold]plan:[/] pretrain {pre.epochs} epochs (cached if already trained) -> "
               f"{cfg['finetune']['name'] if method.prunes else 'no second stage'} "
               f"{'' if not method.prunes else (str(planned['stage']) + ' epochs' if planned['stage'] is not None else '(epochs set by the pruned FLOPs)')}")
        save()
        later = (planned["stage"] or 0) * (planned["flops_ratio"] or 1.0)
        eta = Eta(rt, later)

        t0 = time.perf_counter()
        dense, base_info = pretrain(cfg, data, spec, method, rt, eta)
        metrics["stages"]["pretrain"] = {k: base_info.get(k) for k in
                                         ("top1", "top1_best", "top5", "epochs", "wall_s", "cached", "baseline_id",
                                          "epoch_s_median", "peak_gpu_mem_mb", "peak_rss_mb") if k in base_info}
        metrics["stages"]["pretrain"]["load_s"] = round(time.perf_counter() - t0, 2) if base_info["cached"] else 0.0
        metrics["params_dense"] = count_params(dense)
        metrics["flops_dense"] = count_macs(dense, input_shape)
        metrics["spec_dense"] = spec
        save()

        if not method.prunes:
            metrics.update(params_pruned=metrics["params_dense"], flops_pruned=metrics["flops_dense"],
                           params_reduction=0.0, flops_reduction=0.0, flops_speedup=1.0)
            metrics["final"] = {k: metrics["stages"]["pretrain"][k] for k in ("top1", "top1_best", "top5")}
            metrics["status"] = "done"
            save()
            return metrics

        # ---- prune (rank 0 prunes and saves; other ranks load its result)
        pruned_path = run_dir / "pruned.pt"
        t0 = time.perf_counter()
        if main and pruned_path.exists():
            load_or_quarantine(pruned_path, rt.say, what="pruned network")  # corrupt: moved aside, pruned again
        if main and not pruned_path.exists():
            ctx = PruneContext(data=data, device=rt.device, input_shape=input_shape, seed=seed,
                               work_dir=run_dir, quiet=rt.quiet, cache_dir=Path(cfg["paths"]["cache_dir"]),
                               source_id=base_info.get("baseline_id"))
            result = method.prune(dense, ctx)
            save_checkpoint(pruned_path, {"model": result.model.state_dict(), "spec": result.spec,
                                          "masks": result.masks, "keep": result.keep, "extras": result.extras})
        distributed.barrier(rt.dist)
        state = load_checkpoint(pruned_path, map_location=rt.device)
        pruned = build(state["spec"]).to(rt.device)
        pruned.load_state_dict(state["model"])
        masks, extras = state.get("masks"), state.get("extras", {})
        prune_eval = evaluate(pruned, data, pre.test_batch_size, dist=rt.dist)
        metrics["stages"]["prune"] = {"top1": prune_eval["top1"], "top5": prune_eval["top5"],
                                      "wall_s": round(time.perf_counter() - t0, 2)}
        _record_sizes(metrics, pruned, masks, input_shape)
        metrics["latency"] = measure_latencies(dense, pruned, input_shape, cfg, rt)
        metrics["extras"] = extras
        save()

        # ---- finetune | scratch_e | scratch_b
        policy = cfg["finetune"]["name"]
        stage_schedule = policy_schedule(cfg, metrics["flops_dense"], metrics["flops_pruned"])
        metrics["budget"]["stage_epochs"] = stage_schedule.epochs
        metrics["budget"]["stage_lr"] = stage_schedule.lr
        if planned["stage"] is None:
            rt.say(f"[bold]plan:[/] {policy} {stage_schedule.epochs} epochs")
        if policy == "finetune":
            model = pruned
        else:
            torch.manual_seed(seed + 1)
            model = build(metrics["spec_pruned"]).to(rt.device)
            method.scratch_init(model, masks)
        kd = method.distillation()  # TAS: train against the frozen dense net (not checkpointed)
        teacher = copy.deepcopy(dense).eval() if kd else None
        metrics["budget"]["distillation"] = kd
        stage = run_stage(policy, model, data, stage_schedule, run_dir / f"ckpt_{policy}.pt",
                          run_dir / "history.jsonl", seed + 7, masks=masks, quiet=rt.quiet,
                          engine=rt.engine, dist=rt.dist,
                          on_epoch=Eta(rt, 0.0).hook(lambda e: stage_schedule.epochs - e) if base_info["cached"] else None,
                          teacher=teacher, kd=kd)
        metrics["stages"][policy] = stage
        metrics["final"] = {k: stage[k] for k in ("top1", "top1_best", "top5")}
        metrics["status"] = "done"
        metrics["finished"] = now()
        save()
        return metrics
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        metrics["status"] = "interrupted" if interrupted else "failed"
        metrics["error"] = ("SIGTERM" if isinstance(e, Terminated) else "Ctrl-C (SIGINT)") if interrupted \
            else f"{type(e).__name__}: {e}"
        try:
            save()
        except PruneLabError:  # e.g. the disk is full: the original error is the one to report
            pass
        raise


def _record_sizes(metrics: dict, pruned: torch.nn.Module, masks: dict | None, input_shape) -> None:
    metrics["spec_pruned"] = pruned.spec
    metrics["params_pruned"] = count_params(pruned, masks)
    metrics["flops_pruned"] = count_macs(pruned, input_shape, nonzero=bool(masks))
    metrics["params_reduction"] = reduction(metrics["params_dense"], metrics["params_pruned"])
    metrics["flops_reduction"] = reduction(metrics["flops_dense"], metrics["flops_pruned"])
    metrics["flops_speedup"] = metrics["flops_dense"] / metrics["flops_pruned"]


def _dry_run(cfg: dict, run_dir: Path, method: Method, spec: dict, metrics: dict, save) -> dict:
    """Architectures and counts only: dense and pruned specs, params, FLOPs; no data, no training.
    Data-free methods give the exact pruned architecture (L1-norm's widths do not depend on the
    weights); weights here are random, so no accuracy is recorded."""
    input_shape = (int(cfg["data"]["in_channels"]), int(cfg["data"]["image_size"]), int(cfg["data"]["image_size"]))
    torch.manual_seed(int(cfg["seed"]))
    dense = build(spec)
    metrics["params_dense"] = count_params(dense)
    metrics["flops_dense"] = count_macs(dense, input_shape)
    metrics["spec_dense"] = spec
    fixed_spec = method.architecture(spec) if method.prunes and not method.data_free_architecture else None
    if method.prunes and not method.data_free_architecture and fixed_spec is None:
        metrics["note"] = f"{method.name}'s pruned architecture depends on the trained weights: only dense counts"
    elif method.prunes:
        if fixed_spec is not None:  # widths fixed by the config; the channels kept need data
            pruned_model, masks = build(fixed_spec), None
        else:
            result = method.prune(dense, PruneContext(device="cpu", input_shape=input_shape, seed=int(cfg["seed"])))
            pruned_model, masks = result.model, result.masks
        _record_sizes(metrics, pruned_model, masks, input_shape)
        metrics["budget"] = {"pretrain_epochs": int(cfg["schedule"]["epochs"]),
                             "stage_epochs": policy_schedule(cfg, metrics["flops_dense"], metrics["flops_pruned"]).epochs}
    metrics["status"] = "dry_run"
    save()
    return metrics
