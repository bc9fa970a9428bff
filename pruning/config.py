"""From a composed config (a plain dict, no Hydra objects) to the objects a run needs: the
method, the dense spec, the schedules; the checks made before anything runs (``validate``); and
the run's identity (``run_key``) and directory (``run_subdir``)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from pathlib import Path

import torch

from pruning import PruneLabError
from pruning import data as datasets
from pruning.methods.base import Method
from pruning.models import default_spec
from pruning.train import Schedule
from pruning.validation import as_float, as_int, check_model_fits_data, check_source_checkpoint, check_values

POLICIES = ("finetune", "scratch_e", "scratch_b", "none")  # none: the pruned net is final
METHODS_PACKAGE = "pruning.methods"
LATER_SCHEDULE_DEFAULTS = {"lr_schedule": "step", "warmup_epochs": 0, "optimizer": "sgd"}
# data keys added later: counted only when not at their default (test_subset: a quick look's evaluation)
LATER_DATA_DEFAULTS = {"newlines": "keep", "test_subset": None}
# method keys added later, per method (ThiNet's mode and variant came after the 8-epoch CIFAR runs)
LATER_METHOD_DEFAULTS = {"thinet": {"mode": "oneshot", "variant": None}}
MODEL_KEYS = {"name", "arch", "init_from"}  # init_from: torchvision .pth for the dense net


def make_method(method_cfg: dict) -> Method:
    """Instantiate the class named by ``_target_`` with the other keys as arguments."""
    target = method_cfg.get("_target_")
    if not target:
        raise PruneLabError(f"method config {method_cfg.get('name')!r} has no _target_")
    module_name, _, cls_name = target.rpartition(".")
    from pruning.plugins import METHODS_GROUP, method_targets

    # a config names a method, never arbitrary code: one of pruning.methods, or a class an installed
    # plug-in declares as a prune_lab.methods entry point (pruning.plugins)
    if not module_name.startswith(METHODS_PACKAGE + ".") and target not in method_targets():
        raise PruneLabError(
            f"method _target_ {target!r} is not a prune-lab method (it must be a Method class in {METHODS_PACKAGE}, "
            f"or one an installed plug-in declares in the entry point group {METHODS_GROUP})"
        )
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise PruneLabError(f"method _target_ {target!r} cannot be imported: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PruneLabError(f"method _target_ {target!r} is not a Method class")
    if cls is Method or inspect.isabstract(cls):
        raise PruneLabError(
            f"method _target_ {target!r} is the abstract base of the methods, not a pruning method; "
            "choose one with method=<name> (prune-exp --help lists them)"
        )
    kwargs = {k: v for k, v in method_cfg.items() if k not in ("_target_", "name")}
    return cls(**kwargs)


def model_spec(model_cfg: dict, data_cfg: dict) -> dict:
    kwargs = {k: v for k, v in model_cfg.items() if k not in MODEL_KEYS}
    kwargs.setdefault("num_classes", data_cfg["num_classes"])
    if "in_channels" in data_cfg:  # image data (a language model's input is token ids)
        kwargs.setdefault("in_channels", data_cfg["in_channels"])
    return default_spec(model_cfg["arch"], **kwargs)


def is_text(data_cfg: dict) -> bool:
    from pruning.data import TEXT_KINDS

    return data_cfg.get("kind", data_cfg["name"]) in TEXT_KINDS


def data_input_shape(data_cfg: dict) -> tuple[int, ...]:
    """One input's shape from the data config: (C, H, W) images; (1,) one token of text."""
    if is_text(data_cfg):
        return (1,)
    return (int(data_cfg["in_channels"]), int(data_cfg["image_size"]), int(data_cfg["image_size"]))


def check_task(model_cfg: dict, data_cfg: dict) -> None:
    """A language model needs a text corpus and an image model needs images."""
    from pruning.models import family

    lm = getattr(family(model_cfg["arch"]), "TASK", "classification") == "language_model"
    if lm and not is_text(data_cfg):
        raise PruneLabError(
            f"model={model_cfg['name']} is a character language model; data={data_cfg['name']} is images. "
            "Fix: data=enwik8 or data=text_corpus data.path=FILE"
        )
    if is_text(data_cfg) and not lm:
        raise PruneLabError(
            f"data={data_cfg['name']} is a text corpus; model={model_cfg['name']} is an image model. "
            "Fix: model=sru | sru_small | transformer_xl | transformer_xl_small"
        )


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
        optimizer=str(s.get("optimizer", "sgd")),
        grad_clip=float(s.get("grad_clip", 0.0) or 0.0),
        warmup_steps=int(s.get("warmup_steps", 0) or 0),
        per_step=bool(s.get("per_step", False)),
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
                "warmup_steps": int(policy.get("warmup_steps", 0)),
            }
        )
    if policy["name"] == "scratch_e":
        return base
    if policy["name"] == "none":
        return Schedule(**{**base.__dict__, "epochs": 0})
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
        raise PruneLabError(f"finetune={policy!r} is not a policy; use finetune={'|'.join(POLICIES)}")
    method = make_method(cfg["method"])
    check_values(cfg, needs_pretrain=method.needs_pretrained or not method.prunes)
    adversarial_training(cfg)
    robustness = robustness_settings(cfg)
    check_task(cfg["model"], cfg["data"])
    if robustness and robustness["black_box"] and robustness["source"] != "standard":  # before any training
        check_source_checkpoint(robustness["source"], cfg["data"]["name"], data_input_shape(cfg["data"]))
    recipe = str(cfg["schedule"].get("name", ""))
    if cfg["model"].get("arch") == "transformer_xl" and not recipe.startswith("txl"):
        own = "transformer_xl_small" if "small" in str(cfg["model"]["name"]) else "transformer_xl"
        raise PruneLabError(
            f"model={cfg['model']['name']} trains with the Transformer-XL recipe (Adam, per-step cosine, clip 0.25, "
            f"its tgt_len windows), not schedule {recipe!r}. Fix: add schedule={own}"
        )
    if is_text(cfg["data"]) and not method.language_models:
        raise PruneLabError(
            f"method={cfg['method']['name']} prunes convolutional channels or filters; it has no meaning for the "
            f"language model model={cfg['model']['name']}. Fix: method=magnitude (unstructured), method=none (dense)"
            " or method=flop"
        )
    spec = model_spec(cfg["model"], cfg["data"])
    method.validate(cfg["model"]["name"], spec)
    spec = method.dense_spec(spec)
    data_cfg = cfg["data"]
    input_shape = data_input_shape(data_cfg)
    check_model_fits_data(cfg["model"]["name"], spec, data_cfg["name"], input_shape)
    if not cfg.get("dry_run"):  # a dry run reads no data
        datasets.check_available(data_cfg)
    return method, spec


DEVICES = "auto | cpu | cuda | cuda:N"


def resolve_device(name: str) -> str:
    """``device=`` as a torch device name: auto (CUDA when there is one), cpu, cuda or cuda:N;
    anything else, or CUDA where there is none, is a ``PruneLabError`` with the valid values."""
    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise PruneLabError(f"device={name!r} is not a device prune-exp can use; valid values: {DEVICES}")
    if not torch.cuda.is_available():
        raise PruneLabError(f"device={name} requested but CUDA is not available; use device=cpu or device=auto")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise PruneLabError(
            f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; use one of them or device=cuda"
        )
    return name


# the config values that become folder names under the results root or the cache
PATH_NAME_KEYS = ("data", "model", "method", "finetune", "adv_train")


def check_path_names(cfg: dict, method: Method | None = None) -> None:
    """Every config value that becomes a path component (``<group>.name``, the method's variant
    tag; the dense baseline's cache id is built from model.name and data.name) must be one safe
    folder name: ``data.name=../../x`` would put the run, or the cache entry, outside the root."""
    from pruning.io import check_name

    for group in PATH_NAME_KEYS:
        section = cfg.get(group)
        if isinstance(section, dict) and "name" in section:
            check_name(section["name"], f"{group}.name")
    method = method or make_method(cfg["method"])
    check_name(method.tag(), "method.variant")


def check_init_from(cfg: dict) -> None:
    """``model.init_from`` (a torchvision .pth for the dense net): a file that loads as a state
    dict with ``weights_only=True`` and fits the model (names and shapes, checked on the meta
    device: no memory, no time); else a ``PruneLabError`` naming the file."""
    init = (cfg.get("model") or {}).get("init_from")
    if not init:
        return
    from pruning.models import build
    from pruning.models.torchvision_compat import from_torchvision

    path = Path(str(init))
    fix = "give the path of a torchvision .pth file (e.g. resnet50-0676ba61.pth), or model.init_from=null"
    if not path.is_file():
        raise PruneLabError(f"model.init_from={init} is not a file; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  any failure to read a user's file is a user error naming it
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PruneLabError(
            f"model.init_from={init} cannot be loaded as a checkpoint with weights_only=True "
            f"({type(e).__name__}: {reason}); {fix}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PruneLabError(f"model.init_from={init} holds no state dict (parameter names -> tensors); {fix}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    spec = model_spec(cfg["model"], cfg["data"])
    try:
        mapped = from_torchvision(spec, state)
    except (KeyError, ValueError, IndexError, RuntimeError, TypeError) as e:
        mapped, problem = None, f"{type(e).__name__}: {str(e)[:120]}"
    if mapped is not None:
        with torch.device("meta"):
            own = build(spec).state_dict()
        missing, unexpected = sorted(set(own) - set(mapped)), sorted(set(mapped) - set(own))
        shapes = [k for k in own if k in mapped and tuple(own[k].shape) != tuple(mapped[k].shape)]
        if not (missing or unexpected or shapes):
            return
        problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {shapes[:3]}"
    raise PruneLabError(f"model.init_from={init} does not fit model={cfg['model'].get('name')} ({problem}); {fix}")


def check_run_safety(cfg: dict) -> Path:
    """The checks that keep a run from writing outside its results root, made before Hydra
    creates anything (prune-exp's precheck; a sweep's ValidateSweep, per job): safe folder names,
    a run directory that resolves inside ``paths.results_root`` with no link on its way down or
    leading out of it (nor on the way to ``paths.cache_dir``), a device that exists and an
    ``init_from`` file that loads. Returns the run directory."""
    from pruning.io import check_inside, refuse_symlinks

    check_path_names(cfg)
    resolve_device(str(cfg.get("device", "auto")))
    check_init_from(cfg)
    root = Path(str(cfg["paths"]["results_root"]))
    run_dir = root / "runs" / run_subdir(cfg)
    refuse_symlinks(run_dir, root)  # first: its message names the link
    check_inside(run_dir, root)
    cache = Path(str(cfg["paths"].get("cache_dir") or root / "cache")).absolute()
    if root.absolute() in cache.parents:  # a cache_dir set elsewhere is the user's own choice
        refuse_symlinks(cache, root, contents=False)
    return run_dir


def run_key(cfg: dict, method: Method) -> dict:
    return {
        "data": cfg["data"]["name"],
        "model": cfg["model"]["name"],
        "method": cfg["method"]["name"],
        **method.key(),
        "finetune": cfg["finetune"]["name"] if method.prunes else "none",
        "adv_train": adv_train_name(cfg),
        "seed": int(cfg["seed"]),
    }


def adv_train_name(cfg: dict) -> str:
    return str((cfg.get("adv_train") or {}).get("name", "none"))


def adversarial_training(cfg: dict, stage: str | None = None) -> dict | None:
    """The PGD adversarial-training settings (conf/adv_train), checked; with ``stage``
    ("pretrain" | "second_stage"): None unless that stage trains adversarially."""
    from pruning.attacks import AttackSpec

    adv = cfg.get("adv_train") or {}
    if adv.get("name", "none") == "none":
        return None
    stages = adv.get("stages") or []
    bad = [s for s in stages if s not in ("pretrain", "second_stage")]
    if bad or not isinstance(stages, list):
        raise PruneLabError(f"adv_train.stages={stages!r}: use a list of pretrain and/or second_stage")
    trades = adv.get("loss", "pgd") == "trades"
    if adv.get("loss", "pgd") not in ("pgd", "trades"):
        raise PruneLabError(f"adv_train.loss={adv.get('loss')!r}: use pgd (Madry) or trades")
    spec = AttackSpec.from_config({**adv, "attack": "tpgd" if trades else "pgd"}, what="adv_train")
    clean = as_float(adv.get("clean_weight", 0.0), "adv_train.clean_weight", 0.0)
    extra = {}
    if trades:
        extra = {"loss": "trades", "beta": as_float(adv.get("beta"), "adv_train.beta", 0.0, exclusive=True)}
    if "second_stage" in stages and (cfg.get("finetune") or {}).get("name") == "none" and len(stages) == 1:
        raise PruneLabError(
            f"adv_train={adv['name']} trains the second stage adversarially, but finetune=none has no second "
            "stage; use finetune=finetune|scratch_e|scratch_b, or adv_train=pgd for an adversarial dense net"
        )
    if stage is not None and stage not in stages:
        return None
    return {"name": adv["name"], "attack": spec, "clean_weight": clean, "stages": list(stages), **extra}


def robustness_settings(cfg: dict) -> dict | None:
    """The robustness evaluation asked for (conf/robustness), checked; None when disabled."""
    from pruning.attacks import AttackSpec

    rob = cfg.get("robustness") or {}
    if not rob.get("enabled"):
        return None
    spec = AttackSpec.from_config({**rob, "attack": "pgd"}, what="robustness")
    subset = rob.get("test_subset")
    source = str(rob.get("source", "standard"))
    if source != "standard" and not Path(source).is_file():
        raise PruneLabError(
            f"robustness.source={source!r} is neither 'standard' nor an existing file; give the final.pt of "
            "another run (black-box source) or robustness.source=standard"
        )
    return {
        "pgd": spec,
        "fgsm": AttackSpec("fgsm", eps=spec.eps) if rob.get("fgsm", True) else None,
        "black_box": bool(rob.get("black_box", True)),
        "source": source,
        "source_seed_offset": as_int(rob.get("source_seed_offset", 1000), "robustness.source_seed_offset", 1),
        "test_subset": None if subset is None else as_int(subset, "robustness.test_subset", 1),
        "batch_size": as_int(rob.get("batch_size", 256), "robustness.batch_size", 1),
        "seed": as_int(rob.get("seed", 0), "robustness.seed", 0),
    }


def run_subdir(cfg: dict) -> str:
    """Deterministic run directory (relative to ``<results_root>/runs``): the same command always
    maps to the same directory, which is what makes re-running resume or skip it."""
    method = make_method(cfg["method"])
    key = run_key(cfg, method)
    identity = {k: cfg[k] for k in ("data", "model", "method", "finetune", "schedule", "seed")}
    # the data's attack presets (``adversarial``) change nothing unless adv_train uses them (then
    # counted below, resolved) or a robustness evaluation does (recorded with the evaluation); where
    # the files live (``root``) changes nothing either: the same data from another folder or machine
    # is the same run (metrics.json records the data's fingerprint)
    identity["data"] = {
        k: v
        for k, v in cfg["data"].items()
        if k not in ("adversarial", "root") and not (k in LATER_DATA_DEFAULTS and v == LATER_DATA_DEFAULTS[k])
    }
    later = LATER_METHOD_DEFAULTS.get(str(cfg["method"].get("name")), {})
    identity["method"] = {k: v for k, v in cfg["method"].items() if not (k in later and v == later[k])}
    if key["adv_train"] != "none":  # only then: existing commands keep their directories
        identity["adv_train"] = cfg["adv_train"]
    # schedule keys added to the YAML later count only when not at their default, so existing
    # commands keep mapping to their existing run directories
    identity["schedule"] = {
        k: v
        for k, v in cfg["schedule"].items()
        if not (k in LATER_SCHEDULE_DEFAULTS and v == LATER_SCHEDULE_DEFAULTS[k])
    }
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    stage = key["finetune"] + (f"+{key['adv_train']}" if key["adv_train"] != "none" else "")
    parts = (key["data"], key["model"], f"{key['method']}-{method.tag()}", stage, f"seed{key['seed']}-{digest}")
    from pruning.io import check_name

    for part, what in zip(parts, ("data.name", "model.name", "method.name", "finetune.name", "seed"), strict=True):
        check_name(part, f"{what} (run directory part)")  # one folder each: never '..' or a '/'
    return "/".join(parts)
