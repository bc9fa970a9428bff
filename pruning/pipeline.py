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
from pruning import PruneLabError, distributed
from pruning import data as datasets
from pruning.distributed import DistInfo
from pruning.io import load_checkpoint, read_json, save_checkpoint, write_json
from pruning.measure import count_macs, count_params, measure_latency_pair, reduction
from pruning.methods.base import Method, PruneContext
from pruning.models import build, default_spec
from pruning.train import Engine, Schedule, evaluate, run_stage

SCHEMA_VERSION = 1
POLICIES = ("finetune", "scratch_e", "scratch_b")
MODEL_KEYS = {"name", "arch", "init_from"}  # init_from: torchvision .pth for the dense net


# ----------------------------------------------------------------------------- config helpers
def make_method(method_cfg: dict) -> Method:
    """Instantiate the class named by ``_target_`` with the other keys as arguments."""
    target = method_cfg.get("_target_")
    if not target:
        raise PruneLabError(f"method config {method_cfg.get('name')!r} has no _target_")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise PruneLabError(f"method _target_ {target!r} cannot be imported: {e}") from None
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
    """Everything that can be checked before any data is read or any epoch trained."""
    policy = cfg["finetune"]["name"]
    if policy not in POLICIES:
        raise PruneLabError(f"finetune={policy!r} is not a policy; use finetune=finetune|scratch_e|scratch_b")
    method = make_method(cfg["method"])
    spec = model_spec(cfg["model"], cfg["data"])
    method.validate(cfg["model"]["name"], spec)
    if not cfg.get("dry_run"):  # a dry run reads no data
        datasets.check_available(cfg["data"])
    for stage, value in (("schedule.epochs", cfg["schedule"]["epochs"]), ("finetune.epochs", cfg["finetune"].get("epochs", 0))):
        if int(value) < 0:
            raise PruneLabError(f"{stage}={value} must be >= 0")
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
    digest = hashlib.sha1(json.dumps(
        {k: cfg[k] for k in ("data", "model", "method", "finetune", "schedule", "seed")}, sort_keys=True, default=str
    ).encode()).hexdigest()[:8]
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
                total = (remaining_after(epoch) + self.later) * seconds
                self.rt.say(f"[dim]ETA for the whole run: ~{_fmt_seconds(total)} "
                            f"(first epoch {seconds:.1f} s; later stages scaled by their FLOPs)[/]")
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
        cache.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        cached = distributed.broadcast(final_path.exists() and info_path.exists(), rt.dist)
        if cached:
            state = load_checkpoint(final_path, map_location=rt.device)
            model = build(state["spec"]).to(rt.device)
            model.load_state_dict(state["model"])
            info = read_json(info_path)
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
        previous = read_json(metrics_path)
        if previous.get("status") == "done":
            rt.say(f"[yellow]already finished, skipped:[/] {run_dir} (rerun=true forces it)")
            return previous
    lock = FileLock(str(run_dir / ".lock"))
    if rt.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise PruneLabError(f"another process is running {run_dir}; wait for it or kill it") from None
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
        metrics["status"] = "failed" if not isinstance(e, KeyboardInterrupt) else "interrupted"
        metrics["error"] = f"{type(e).__name__}: {e}"
        save()
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
