"""Up-front checks of a composed config: every value a run depends on is checked before any data
is read or any epoch trained, and a bad one is a ``PruneLabError`` naming the key, the value
and the valid range (the CLI prints it and exits 2).

    check_values(cfg)                        # types and ranges of seed / schedule / finetune / data
    check_model_fits_data(spec, input_shape) # e.g. VGG-16's four 2x2 pools on 8x8 digits
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from pruning import PruneLabError

LR_SCHEDULES = ("step", "cosine", "noam")
# sane maxima: a value beyond these is a typo (schedule.epochs=1e23), never a plan
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_SUBSET = 10**10  # images, or bytes of a text corpus (enwik8: 10**8)
MAX_STEPS = 10**9  # warm-up steps
MAX_BPTT = 1_000_000
MAX_SEED = 2**31 - 1  # numpy seeds take 32 bits; seed + offsets must stay within them
MAX_REPEATS = 10_000  # latency repeats / warm-up
MAX_COUNT = 10**12  # any other integer setting
MAX_LR = 100.0


def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def as_int(value: Any, key: str, minimum: int | None = None, hint: str = "", maximum: int | None = MAX_COUNT) -> int:
    """``value`` as an int (bools and non-integral floats refused), at least ``minimum`` and at
    most ``maximum`` (by default ``MAX_COUNT``: no count prune-lab uses is larger)."""
    given = value
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if isinstance(value, str):
        try:
            value, ok = int(value.strip()), True
        except ValueError:
            ok = False
    if not ok:
        raise PruneLabError(f"{key}={value!r} is not an integer{hint and '; ' + hint}")
    if minimum is not None and value < minimum:
        raise PruneLabError(f"{key}={value} must be >= {minimum}{hint and '; ' + hint}")
    if maximum is not None and value > maximum:
        shown = f"{given:g}" if isinstance(given, float) else str(given)
        raise PruneLabError(f"{key}={shown} is beyond any sane value: it must be <= {maximum:,}{hint and '; ' + hint}")
    return int(value)


def as_float(
    value: Any,
    key: str,
    minimum: float | None = None,
    exclusive: bool = False,
    maximum: float | None = None,
    hint: str = "",
) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise PruneLabError(f"{key}={value!r} is not a number{hint and '; ' + hint}") from None
    if not math.isfinite(number):
        raise PruneLabError(f"{key}={value!r} must be a finite number")
    if minimum is not None and (number <= minimum if exclusive else number < minimum):
        raise PruneLabError(f"{key}={value!r} must be {'>' if exclusive else '>='} {minimum:g}{hint and '; ' + hint}")
    if maximum is not None and number > maximum:
        raise PruneLabError(f"{key}={value!r} must be <= {maximum:g}{hint and '; ' + hint}")
    return number


def check_values(cfg: dict, needs_pretrain: bool) -> None:
    """Types and ranges of the keys every run uses. ``needs_pretrain``: the method prunes a
    trained dense model (or it is the dense baseline itself), so 0 pretraining epochs cannot
    work unless the dense weights come from ``model.init_from``."""
    as_int(cfg.get("seed"), "seed", 0, "use a non-negative integer, e.g. seed=0", maximum=MAX_SEED)
    s = "schedule"
    epochs = as_int(_get(cfg, "schedule.epochs"), f"{s}.epochs", 0, maximum=MAX_EPOCHS)
    if epochs == 0 and needs_pretrain and not _get(cfg, "model.init_from"):
        raise PruneLabError(
            f"{s}.epochs=0, but method={_get(cfg, 'method.name')} needs a trained dense model; "
            f"set {s}.epochs>=1 (or model.init_from=PATH for pretrained weights)"
        )
    as_int(_get(cfg, "schedule.batch_size"), f"{s}.batch_size", 1, maximum=MAX_BATCH_SIZE)
    as_int(_get(cfg, "schedule.test_batch_size"), f"{s}.test_batch_size", 1, maximum=MAX_BATCH_SIZE)
    as_float(_get(cfg, "schedule.lr"), f"{s}.lr", 0.0, exclusive=True, maximum=MAX_LR, hint="e.g. schedule.lr=0.1")
    as_float(_get(cfg, "schedule.momentum"), f"{s}.momentum", 0.0, maximum=1.0)
    as_float(_get(cfg, "schedule.weight_decay"), f"{s}.weight_decay", 0.0)
    as_float(_get(cfg, "schedule.gamma"), f"{s}.gamma", 0.0, exclusive=True)
    milestones = _get(cfg, "schedule.milestones")
    if not isinstance(milestones, list):
        raise PruneLabError(f"{s}.milestones={milestones!r} must be a list, e.g. [0.5,0.75] (fractions of the epochs)")
    for m in milestones:
        as_float(m, f"{s}.milestones", 0.0)
    for key in (f"{s}.lr_schedule", "finetune.lr_schedule"):
        value = _get(cfg, key)
        if value is not None and value not in LR_SCHEDULES:
            raise PruneLabError(f"{key}={value!r} is not a schedule; use one of {', '.join(LR_SCHEDULES)}")
    optimizer = _get(cfg, "schedule.optimizer")
    if optimizer is not None and optimizer not in ("sgd", "adam"):
        raise PruneLabError(f"{s}.optimizer={optimizer!r} is not an optimizer; use sgd or adam")
    for key in (f"{s}.warmup_steps", "finetune.warmup_steps"):
        if _get(cfg, key) is not None:
            as_int(_get(cfg, key), key, 0, maximum=MAX_STEPS)
    if _get(cfg, f"{s}.lr_schedule") == "noam" and not _get(cfg, f"{s}.warmup_steps"):
        raise PruneLabError(f"{s}.lr_schedule=noam needs {s}.warmup_steps > 0 (FLOP's SRU recipe: 16000)")
    if _get(cfg, f"{s}.grad_clip") is not None:
        as_float(_get(cfg, f"{s}.grad_clip"), f"{s}.grad_clip", 0.0, hint="0 turns clipping off")
    for key in (f"{s}.bptt", f"{s}.eval_bptt", "data.bptt", "data.eval_bptt", "data.final_eval_batch_size"):
        if _get(cfg, key) is not None:
            as_int(_get(cfg, key), key, 1, maximum=MAX_BATCH_SIZE if key.endswith("batch_size") else MAX_BPTT)
    for key in (f"{s}.warmup_epochs", "finetune.warmup_epochs"):
        if _get(cfg, key) is not None:
            as_int(_get(cfg, key), key, 0, maximum=MAX_EPOCHS)
    for key in (f"{s}.finetune_epochs", "finetune.epochs"):  # the key users set first (finetune's follows it)
        if _get(cfg, key) is not None:
            as_int(_get(cfg, key), key, 0, maximum=MAX_EPOCHS)
    for key in (f"{s}.finetune_lr", "finetune.lr"):
        if _get(cfg, key) is not None:
            as_float(_get(cfg, key), key, 0.0, exclusive=True, maximum=MAX_LR)
    if _get(cfg, "finetune.max_epochs") is not None:
        as_int(_get(cfg, "finetune.max_epochs"), "finetune.max_epochs", 1, maximum=MAX_EPOCHS)
    subset = _get(cfg, "data.train_subset")
    if subset is not None:
        as_int(
            subset,
            "data.train_subset",
            1,
            "it is the number of training images (bytes of a text corpus) used; data.train_subset=null uses them all",
            maximum=MAX_SUBSET,
        )
    for key in ("data.test_bytes", "data.valid_bytes"):
        if _get(cfg, key) is not None:
            as_int(_get(cfg, key), key, 0, maximum=MAX_SUBSET)
    check_test_subset(cfg)
    lat = cfg.get("latency") or {}
    for b in lat.get("cpu_batch_sizes") or []:
        as_int(b, "latency.cpu_batch_sizes", 1, maximum=MAX_BATCH_SIZE)
    for key in ("gpu_batch_size", "repeats"):
        if key in lat:
            as_int(lat[key], f"latency.{key}", 1, maximum=MAX_BATCH_SIZE if key == "gpu_batch_size" else MAX_REPEATS)
    if "warmup" in lat:
        as_int(lat["warmup"], "latency.warmup", 0, maximum=MAX_REPEATS)


# test images of the datasets whose files fix the count (with strict_sizes: the official sets);
# other copies and ImageNet folders are checked against the images read, when the data loads
FIXED_TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "mnist": 10_000, "fashion_mnist": 10_000, "digits": 360}
TEXT_SPLIT_KEYS = "data.test_bytes / data.valid_bytes (or data.test_fraction / data.valid_fraction)"


def check_test_subset(cfg: dict) -> None:
    """``data.test_subset`` (evaluate on N test images: a quick look): a positive integer, not
    above the test set's size where the config fixes it; a text corpus sizes its splits with
    the byte keys instead."""
    subset = _get(cfg, "data.test_subset")
    if subset is None:
        return
    kind = _get(cfg, "data.kind") or _get(cfg, "data.name")
    if kind in ("enwik8", "text_corpus"):
        raise PruneLabError(
            f"data.test_subset={subset!r} is for image datasets; a text corpus sets its evaluation splits' sizes "
            f"with {TEXT_SPLIT_KEYS}"
        )
    hint = "it is the number of test images evaluated; data.test_subset=null evaluates on all of them"
    count = as_int(subset, "data.test_subset", 1, hint, maximum=MAX_SUBSET)
    fixed = FIXED_TEST_SIZES.get(str(kind))
    if fixed is not None and (kind == "digits" or _get(cfg, "data.strict_sizes") is not False) and count > fixed:
        raise PruneLabError(
            f"data.test_subset={count} must be in [1, {fixed:,}]: data={kind} has {fixed:,} test images; "
            "data.test_subset=null evaluates on all of them"
        )


@contextlib.contextmanager
def _skip_weight_init():
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    originals = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in originals.items():
            setattr(torch.nn.init, n, fn)


def check_model_fits_data(model_name: str, spec: dict, data_name: str, input_shape: tuple[int, ...]) -> None:
    """Build the model without initialising its weights and push one zero input of the data's
    shape through it, so that a net too deep for the images (VGG-16's four 2x2 pools on 8x8
    digits) is refused before anything runs, with the reason. (Init is skipped because only
    shapes matter; the meta device would be free too, but its first use imports torch._dynamo,
    about 3 s on every command.) Costs 0.1-0.4 s on CPU for the largest ImageNet models."""
    from pruning.models import build

    try:
        with _skip_weight_init(), torch.no_grad():
            model = build(spec).eval()
            model(torch.zeros(1, *input_shape, dtype=getattr(model, "input_dtype", torch.float32)))
    except PruneLabError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise PruneLabError(
            f"model={model_name} cannot run on data={data_name} (input {'x'.join(map(str, input_shape))}): "
            f"{reason}; pick a model made for this input size (e.g. model=vgg_small for 8x8 digits)"
        ) from None


def check_source_checkpoint(source: str, data_name: str, input_shape: tuple[int, ...]) -> None:
    """``robustness.source`` (the black-box attacks' source network) given as a file: a prune-lab
    checkpoint (``final.pt`` of another run) that loads with ``weights_only=True``, holds a model
    state dict and its spec, builds, takes its weights and runs on this data's input size. Checked
    before training, as the attack needs it only at the end of the run."""
    from pruning.io import load_checkpoint
    from pruning.models import build

    fix = "give the final.pt of another prune-lab run (black-box source), or robustness.source=standard"
    try:
        state = load_checkpoint(source)
    except PruneLabError as e:  # CorruptFileError: truncated, foreign, not a dict
        raise PruneLabError(f"robustness.source={source}: {e}; {fix}") from None
    spec, weights = state.get("spec"), state.get("model")
    if not isinstance(spec, dict) or not spec.get("arch") or not isinstance(weights, dict):
        raise PruneLabError(
            f"robustness.source={source} is not a prune-lab final.pt: it has no "
            f"{'spec (the architecture)' if not isinstance(spec, dict) or not spec.get('arch') else 'model state dict'}"
            f"; {fix}"
        )
    try:
        with _skip_weight_init():
            model = build(spec)
        model.load_state_dict(weights)
    except PruneLabError as e:
        raise PruneLabError(f"robustness.source={source}: {e}; {fix}") from None
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise PruneLabError(f"robustness.source={source}: its weights do not fit its spec ({reason}); {fix}") from None
    check_model_fits_data(f"{spec['arch']} (robustness.source)", spec, data_name, input_shape)
