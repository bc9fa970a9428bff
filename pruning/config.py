"""From a composed config (a plain dict, no Hydra objects) to the objects a run needs: the
method, the dense spec, the schedules; the checks made before anything runs (``validate``); and
the run's identity (``run_key``) and directory (``run_subdir``)."""

from __future__ import annotations

import hashlib
import importlib
import json

import torch

from pruning import PruneLabError
from pruning import data as datasets
from pruning.methods.base import Method
from pruning.models import default_spec
from pruning.train import Schedule
from pruning.validation import check_model_fits_data, check_values

POLICIES = ("finetune", "scratch_e", "scratch_b")
METHODS_PACKAGE = "pruning.methods"
LATER_SCHEDULE_DEFAULTS = {"lr_schedule": "step", "warmup_epochs": 0}
MODEL_KEYS = {"name", "arch", "init_from"}  # init_from: torchvision .pth for the dense net


def make_method(method_cfg: dict) -> Method:
    """Instantiate the class named by ``_target_`` with the other keys as arguments."""
    target = method_cfg.get("_target_")
    if not target:
        raise PruneLabError(f"method config {method_cfg.get('name')!r} has no _target_")
    module_name, _, cls_name = target.rpartition(".")
    if not module_name.startswith(METHODS_PACKAGE + "."):  # a config names a method, never arbitrary code
        raise PruneLabError(
            f"method _target_ {target!r} is not a prune-lab method (it must be a Method class in {METHODS_PACKAGE})"
        )
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
    return Schedule(
        epochs=int(s["epochs"]),
        lr=float(s["lr"]),
        batch_size=int(s["batch_size"]),
        momentum=float(s["momentum"]),
        weight_decay=float(s["weight_decay"]),
        milestones=list(s["milestones"]),
        gamma=float(s["gamma"]),
        nesterov=bool(s.get("nesterov", False)),
        test_batch_size=int(s["test_batch_size"]),
        lr_schedule=str(s.get("lr_schedule", "step")),
        warmup_epochs=int(s.get("warmup_epochs", 0)),
    )


def policy_schedule(cfg: dict, flops_dense: int, flops_pruned: int) -> Schedule:
    """The schedule of the second stage, from the finetune policy and the FLOPs ratio."""
    policy = cfg["finetune"]
    base = pretrain_schedule(cfg)
    if policy["name"] == "finetune":
        return Schedule(
            **{
                **base.__dict__,
                "epochs": int(policy["epochs"]),
                "lr": float(policy["lr"]),
                "milestones": list(policy.get("milestones") or []),
                "lr_schedule": str(policy.get("lr_schedule", "step")),
                "warmup_epochs": int(policy.get("warmup_epochs", 0)),
            }
        )
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
    return {
        "data": cfg["data"]["name"],
        "model": cfg["model"]["name"],
        "method": cfg["method"]["name"],
        **method.key(),
        "finetune": cfg["finetune"]["name"] if method.prunes else "none",
        "seed": int(cfg["seed"]),
    }


def run_subdir(cfg: dict) -> str:
    """Deterministic run directory (relative to ``<results_root>/runs``): the same command always
    maps to the same directory, which is what makes re-running resume or skip it."""
    method = make_method(cfg["method"])
    key = run_key(cfg, method)
    identity = {k: cfg[k] for k in ("data", "model", "method", "finetune", "schedule", "seed")}
    # schedule keys added to the YAML later count only when not at their default, so existing
    # commands keep mapping to their existing run directories
    identity["schedule"] = {
        k: v
        for k, v in cfg["schedule"].items()
        if not (k in LATER_SCHEDULE_DEFAULTS and v == LATER_SCHEDULE_DEFAULTS[k])
    }
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{key['data']}/{key['model']}/{key['method']}-{method.tag()}/{key['finetune']}/seed{key['seed']}-{digest}"
