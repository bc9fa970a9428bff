"""Training and evaluation loops, written to be read in one sitting (torchvision-references
style), plus the resumable, checkpoint-every-epoch stage runner the pipeline uses.

Two paths:
* the engine (``train_one_epoch``): the uint8 dataset lives on the training device, pad-crop +
  flip run there as batched tensor ops, metrics accumulate on the device (no per-step host
  sync), optional channels_last, bf16 autocast and ``torch.compile`` (``Engine``);
* the plain path (``plain_train_one_epoch``): a DataLoader with per-image transforms and a
  ``loss.item()`` per step, as in torchvision's references. It is the benchmark's baseline and
  the reference the engine is tested against.

Recipe knobs come from a ``Schedule``: SGD with momentum, step decay by ``gamma`` at the given
fractions of the epochs (Rethinking: x0.1 at 50% and 75%) or cosine annealing to 0, optional
linear warm-up epochs (TAS: 5), weight decay, batch size.

Knowledge distillation (Hinton et al. 2015; TAS's transfer step): with a frozen ``teacher`` and
``kd = {"alpha": a, "temperature": T}`` the loss is
(1 - a) * CE(student, y) + a * T^2 * KL(softmax(teacher/T) || softmax(student/T)).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pruning import CorruptFileError, PruneLabError, rng
from pruning.data import ImageData
from pruning.distributed import SINGLE, DistInfo, all_reduce_sum, wrap
from pruning.io import load_checkpoint, quarantine, save_checkpoint, write_jsonl
from pruning.measure import topk_correct


@dataclass
class Schedule:
    epochs: int
    lr: float
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    gamma: float = 0.1
    nesterov: bool = False
    test_batch_size: int = 256
    lr_schedule: str = "step"  # step | cosine
    warmup_epochs: int = 0  # linear warm-up epochs (part of ``epochs``)
    optimizer: str = "sgd"  # sgd (momentum, nesterov) | adam (L2 weight decay in the gradient, as TF's l2 loss)
    grad_clip: float = 0.0  # > 0: clip the gradient's global L2 norm (the language-model recipes)
    warmup_steps: int = 0  # lr_schedule noam: the warm-up in optimiser steps
    per_step: bool = False  # set the lr every optimiser step (noam always; cosine over all steps)

    def lr_at(self, epoch: int) -> float:
        """Warm-up: lr * (epoch + 1) / (warmup + 1) for the first ``warmup_epochs`` epochs.
        Step schedule: decay at int(f * epochs) for every milestone fraction f (main_B.py);
        never before the first epoch (matters only for the few-epoch budgets of quick runs).
        Cosine: lr/2 * (1 + cos(pi * t)), t the fraction of post-warm-up epochs done."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.lr_schedule == "cosine":
            span = max(1, self.epochs - self.warmup_epochs)
            return 0.5 * self.lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / span))
        if self.lr_schedule != "step":
            raise PruneLabError(f"schedule.lr_schedule={self.lr_schedule!r}: use step or cosine")
        steps = sum(epoch >= max(1, int(f * self.epochs)) for f in self.milestones)
        return self.lr * self.gamma**steps

    def lr_at_step(self, step: int, total_steps: int) -> float:
        """The lr of optimiser step ``step`` (1-based) of ``total_steps``, for per-step schedules.
        noam (FLOP's train_enwik8.py): lr * min(sqrt(w / step), step / w), w = warmup_steps, i.e.
        the official ``args.lr * min(1/sqrt(it), it/w^1.5) / sqrt(n_d)`` with ``lr`` its peak
        (SRU enwik8: 2 / sqrt(16000 * 3056) = 2.86e-4 at step 16,000). cosine (Transformer-XL's
        CosineAnnealingLR over max_step, after an optional linear warm-up of warmup_steps):
        lr/2 * (1 + cos(pi * t)); step: constant lr."""
        w = self.warmup_steps
        if self.lr_schedule == "noam":
            if w <= 0:
                raise PruneLabError("schedule.lr_schedule=noam needs schedule.warmup_steps > 0")
            return self.lr * min(math.sqrt(w / step), step / w)
        if w > 0 and step <= w:
            return self.lr * step / w
        if self.lr_schedule == "cosine":
            t = (step - w) / max(1, total_steps - w)
            return 0.5 * self.lr * (1 + math.cos(math.pi * min(1.0, t)))
        return self.lr

    @property
    def stepwise(self) -> bool:
        return self.per_step or self.lr_schedule == "noam"

    def identity(self) -> dict:
        """The fields that determine training, for cache keys: the fields added after the
        cache existed (lr_schedule, warmup_epochs) only when they differ from their defaults,
        so every existing config keeps its baseline key."""
        out = dict(self.__dict__)
        defaults = (("lr_schedule", "step"), ("warmup_epochs", 0), ("optimizer", "sgd"))
        defaults += (("grad_clip", 0.0), ("warmup_steps", 0), ("per_step", False))
        for name, default in defaults:
            if out[name] == default:
                del out[name]
        return out


@dataclass(frozen=True)
class Engine:
    """Speed options of the training loop (``engine`` config group). None of them changes what is
    computed beyond float rounding except ``amp_bf16`` (bf16 autocast: 8-bit mantissa)."""

    channels_last: bool = False
    amp_bf16: bool = False  # bf16 autocast for forward + loss
    compile: bool = False
    compile_mode: str | None = None  # e.g. "reduce-overhead" (CUDA graphs), "max-autotune"

    @staticmethod
    def from_config(cfg: dict | None, device: str) -> Engine:
        """``auto``, per option, as measured (``make bench``, results/benchmarks/): channels_last on
        every device (a CPU's oneDNN convolutions ran 1.3-1.8x faster in it, never slower, for every
        CIFAR family); bf16 autocast on CUDA only (on a CPU it is faster where the chip has bf16
        instructions, but it changes the numerics, so it stays an explicit choice there); compile
        never (engine=fast turns it on: on a 2-core CPU it cost 12-35 s and gained nothing)."""
        cfg = cfg or {}
        on_gpu = device.startswith("cuda")
        auto = {"channels_last": True, "amp_bf16": on_gpu, "compile": False}

        def pick(key: str) -> bool:
            value = cfg.get(key, False)
            return auto[key] if value == "auto" else bool(value)

        return Engine(pick("channels_last"), pick("amp_bf16"), pick("compile"), cfg.get("compile_mode"))

    def prepare(self, model: nn.Module) -> nn.Module:
        """Model for the forward pass (the original keeps its state_dict keys). channels_last
        converts the 4-d weights in place: every convolution then runs in NHWC whatever its
        input's layout (also in a method's own loop that calls the model directly)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return torch.compile(model, mode=self.compile_mode) if self.compile else model

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.amp_bf16 else nullcontext()

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:  # images; a language model's (B, T) ids stay as they are
            return images.contiguous(memory_format=torch.channels_last)
        return images


PLAIN = Engine()


def make_optimizer(model: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    if schedule.optimizer == "adam":  # weight_decay adds wd * w to the gradient: TF's wd * l2_loss(w) = wd * sum(w^2)/2
        return torch.optim.Adam(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    if schedule.optimizer != "sgd":
        raise PruneLabError(f"schedule.optimizer={schedule.optimizer!r}: use sgd or adam")
    return torch.optim.SGD(
        model.parameters(),
        lr=schedule.lr,
        momentum=schedule.momentum,
        weight_decay=schedule.weight_decay,
        nesterov=schedule.nesterov,
    )


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
    """Keep unstructured-pruned weights at zero (masks fixed through training)."""
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T); no gradient to the teacher."""
    t = float(temperature)
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),  # (N, K)
        F.softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
    )
    return (1.0 - alpha) * hard + alpha * t * t * soft


def train_one_epoch(
    model: nn.Module,
    data: ImageData,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    grad_hook: Callable[[nn.Module], None] | None = None,
    engine: Engine = PLAIN,
    dist: DistInfo = SINGLE,
    forward: nn.Module | None = None,
    teacher: nn.Module | None = None,
    kd: dict | None = None,
    device: torch.device | str | None = None,
    adversary: dict | None = None,
    step_lr: Callable[[int], float] | None = None,
    grad_clip: float = 0.0,
) -> dict:
    """One epoch of the engine path. ``forward`` is the (compiled / DDP-wrapped) module to call;
    ``model`` the plain module whose parameters are masked and hooked. With ``teacher`` and
    ``kd`` ({"alpha", "temperature"}) the loss is the distillation loss (teacher in eval mode,
    no gradient). ``device``: where the batches and metrics live (None: ``data.device``).
    ``adversary`` ({"attack": pruning.attacks.AttackSpec, "clean_weight": w}): PGD adversarial
    training; each batch is attacked on ``model`` (eval mode while attacking) and the loss is
    (w * CE(x) + CE(x_adv)) / (w + 1); the train accuracy is then the adversarial one.
    ``step_lr(step)``: the lr of this epoch's step ``step`` (1-based), set before it (per-step
    schedules); ``grad_clip`` > 0: clip the gradient norm. A stateful model (a language model that
    carries its hidden state / memory from batch to batch: ``reset_state``) starts the epoch empty."""
    forward = forward or model
    model.train()
    reset_state(model)
    device = torch.device(device) if device is not None else data.device
    loss_sum = torch.zeros((), device=device)  # accumulate on device: no per-step host sync
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = torch.zeros((), device=device, dtype=torch.long)
    total_steps = num_train_batches(data, batch_size, dist.world_size)
    for step, (images, labels) in enumerate(data.train_batches(batch_size, generator, dist.rank, dist.world_size)):
        if step_lr is not None:
            lr = step_lr(step + 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
        clean_weight = 1.0
        if adversary is not None:
            from pruning.attacks import perturb

            clean_weight = float(adversary["clean_weight"])
            adv_images = perturb(model, images, labels, adversary["attack"], data.mean, data.std)
            model.train()
        with engine.autocast(device):
            logits = forward(engine.inputs(adv_images if adversary is not None else images))
            if adversary is not None and adversary.get("loss") == "trades":  # CE(x) + beta KL(f(x) || f(x_adv))
                clean_logits = forward(engine.inputs(images))
                log_adv, clean_probs = F.log_softmax(logits.float(), 1), F.softmax(clean_logits.float(), 1)
                kl = F.kl_div(log_adv, clean_probs, reduction="batchmean")
                loss = F.cross_entropy(clean_logits, labels) + float(adversary["beta"]) * kl
            elif adversary is not None:
                loss = F.cross_entropy(logits, labels)
                if clean_weight > 0:
                    clean = F.cross_entropy(forward(engine.inputs(images)), labels)
                    loss = (clean_weight * clean + loss) / (clean_weight + 1.0)
            elif teacher is not None and kd:
                with torch.no_grad():
                    teacher_logits = teacher(engine.inputs(images))  # (N, K)
                loss = distillation_loss(
                    logits.float(), teacher_logits.float(), labels, float(kd["alpha"]), float(kd["temperature"])
                )
            else:
                loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_hook is not None:
            grad_hook(model)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        apply_masks(model, masks)
        loss_sum += loss.detach().float() * labels.shape[0]
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.shape[0]
        if on_step is not None:
            on_step(step + 1, total_steps)
    totals = all_reduce_sum(torch.stack([loss_sum, correct.float(), seen.float()]), dist)
    return {"train_loss": float(totals[0] / totals[2]), "train_top1": 100.0 * float(totals[1] / totals[2])}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageData,
    batch_size: int = 256,
    engine: Engine = PLAIN,
    dist: DistInfo = SINGLE,
    device: torch.device | str | None = None,
) -> dict:
    """Test loss, top-1, top-5 (%) over ``data.test_batches``; ``device`` as in train_one_epoch.
    A language model (``data.task``): the loss is nats per character, ``bpc`` bits per character,
    top-1 the next-character accuracy; its state starts empty."""
    if getattr(data, "task", "") == "language_model" and hasattr(data, "eval_split"):
        from pruning.text_data import evaluate_streams  # evaluate_walk's numbers, batched (its docstring)

        split = data.valid if data.eval_split == "valid" else data.test
        out = evaluate_streams(model, {"split": split}, batch_size, data.eval_bptt, dist=dist, engine=engine)["split"]
        return {k: out[k] for k in ("top1", "top5", "test_loss", "bpc")}
    return evaluate_walk(model, data, batch_size, engine, dist, device)


@torch.no_grad()
def evaluate_walk(
    model: nn.Module,
    data: ImageData,
    batch_size: int = 256,
    engine: Engine = PLAIN,
    dist: DistInfo = SINGLE,
    device: torch.device | str | None = None,
) -> dict:
    """``evaluate`` batch by batch over ``data.test_batches``: what it computes for images, and
    the reference a language model's batched evaluation (``text_data.evaluate_streams``) is
    tested against (each split in ``batch_size`` lanes, ``eval_bptt`` windows, in order)."""
    model.eval()
    reset_state(model)
    device = torch.device(device) if device is not None else data.device
    totals = torch.zeros(4, device=device)  # loss, top-1, top-5, count
    for images, labels in data.test_batches(batch_size, dist.rank, dist.world_size):
        with engine.autocast(device):
            logits = model(engine.inputs(images)).float()
        totals[0] += F.cross_entropy(logits, labels, reduction="sum")
        c1, c5 = topk_correct(logits, labels, (1, 5))
        totals[1] += c1
        totals[2] += c5
        totals[3] += labels.shape[0]
    totals = all_reduce_sum(totals, dist).tolist()
    n = totals[3]
    out = {"top1": 100.0 * totals[1] / n, "top5": 100.0 * totals[2] / n, "test_loss": totals[0] / n}
    if getattr(data, "task", "") == "language_model":
        out["bpc"] = totals[0] / n / math.log(2.0)
    return out


def reset_state(model: nn.Module) -> None:
    """Empty the carried state of a stateful model (a language model's hidden state / memory)."""
    for m in model.modules():
        if hasattr(m, "reset_state") and callable(m.reset_state):
            m.reset_state()
            return


def num_train_batches(data, batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps in one epoch (``data.num_train_batches`` where the data defines it)."""
    if hasattr(data, "num_train_batches"):
        return int(data.num_train_batches(batch_size, world_size))
    return math.ceil(len(data.train) // world_size / batch_size)


def plain_train_one_epoch(
    model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device | str
) -> dict:
    """The torchvision-references loop: batches from a DataLoader, host metrics every step."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * labels.shape[0]  # per-step host sync, as in the references
        correct += (logits.argmax(1) == labels).sum().item()
        seen += labels.shape[0]
    return {"train_loss": loss_sum / seen, "train_top1": 100.0 * correct / seen}


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )


def peak_memory_mb(device: torch.device) -> dict:
    """Peak memory so far: the CUDA allocator's peak on GPU; the process's peak RSS otherwise."""
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _resume_state(ckpt_path: Path, device: torch.device, dist: DistInfo) -> dict | None:
    """The stage checkpoint to resume from; None when there is none, or when it is corrupt or
    truncated (rank 0 moves it aside with a warning, and the stage starts over)."""
    if not ckpt_path.exists():
        return None
    try:
        state = load_checkpoint(ckpt_path, map_location=device)
        if not {"model", "optimizer", "history", "epoch", "wall_s"} <= state.keys():
            raise CorruptFileError(ckpt_path, f"{ckpt_path} is not a stage checkpoint (keys missing)")
        return state
    except CorruptFileError as e:
        if dist.is_main and ckpt_path.exists():
            moved = quarantine(ckpt_path)
            print(f"warning: {e}. Moved it to {moved.name}; this stage starts over.", file=sys.stderr, flush=True)
        return None


def _warn_on_main(dist: DistInfo) -> Callable[[str], None]:
    def warn(message: str) -> None:
        if dist.is_main:
            print(message, file=sys.stderr, flush=True)

    return warn


def run_stage(
    name: str,
    model: nn.Module,
    data: ImageData,
    schedule: Schedule,
    ckpt_path: Path,
    history_path: Path,
    seed: int,
    masks: dict[str, torch.Tensor] | None = None,
    grad_hook: Callable[[nn.Module], None] | None = None,
    quiet: bool = False,
    engine: Engine = PLAIN,
    dist: DistInfo = SINGLE,
    on_epoch: Callable[[int, float], None] | None = None,
    teacher: nn.Module | None = None,
    kd: dict | None = None,
    device: torch.device | str | None = None,
    adversary: dict | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model`` for ``schedule.epochs`` epochs, checkpointing after every epoch.

    Resumes from ``ckpt_path`` if present (the model, optimiser, history and best accuracy, and
    the random-number states, ``pruning.rng``), so a killed run re-launched with the same command
    continues from its last finished epoch bit for bit: data order depends only on (seed, epoch),
    and dropout (any global random draw) continues on the stream it would have.
    Under DDP every rank trains; rank 0 alone writes. ``on_epoch(epoch, seconds)`` is called
    after each epoch (the pipeline's ETA); ``on_row(row)`` with each epoch's history row once it is
    checkpointed, and first with the rows a resumed stage restored (the pipeline's experiment
    tracker, ``pruning.trackers``, which logs each epoch once). ``teacher`` + ``kd``: knowledge
    distillation from a frozen teacher (kept in eval mode, never checkpointed). ``device``: the training device (None:
    ``data.device``, where ``data.to(device)`` put the data). ``adversary``: PGD adversarial
    training (``train_one_epoch``). Returns the stage metrics: final and
    best test top-1, top-5, epochs, wall time, peak memory.
    """
    device = torch.device(device) if device is not None else data.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = make_optimizer(model, schedule)
    history: list[dict] = []
    start_epoch, wall_before = 0, 0.0
    state = _resume_state(ckpt_path, device, dist)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, wall_before = state["history"], state["epoch"], state["wall_s"]
    if on_row is not None:
        for row in history:  # restored from the checkpoint: a tracker logs the rows it lacks
            on_row(row)
    apply_masks(model, masks)
    forward = engine.prepare(wrap(model, dist))
    eval_model = model if dist.enabled else forward  # DDP's forward syncs buffers: keep eval local
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if state is not None:  # last: nothing between here and the first epoch draws a random number
        rng.restore(state, _warn_on_main(dist), what=f"{name} checkpoint {ckpt_path}")
    t0 = time.perf_counter()
    from pruning.progress import StageProgress, eval_steps  # its display is make_progress's, below

    steps_per_epoch = num_train_batches(data, schedule.batch_size, dist.world_size)
    test = getattr(data, "test", None)
    with StageProgress(
        name,
        epochs=max(schedule.epochs, 1),
        steps_per_epoch=steps_per_epoch,
        quiet=quiet or not dist.is_main or schedule.epochs <= start_epoch,
        start_epoch=start_epoch,
        evals_per_epoch=1,
        eval_steps=eval_steps(len(test) if test is not None else 0, schedule.batch_size),
        say=lambda line: print(line, flush=True),
    ) as progress:
        last_info = ""
        for epoch in range(start_epoch, schedule.epochs):
            t_epoch = time.perf_counter()
            total_steps = steps_per_epoch
            step_lr = None
            if schedule.stepwise:  # noam / per-step cosine: global step = epoch * steps + step

                def step_lr(step: int, epoch: int = epoch, total_steps: int = total_steps) -> float:
                    return schedule.lr_at_step(epoch * total_steps + step, schedule.epochs * total_steps)

                lr = step_lr(1)
            else:
                lr = schedule.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            progress.info = " · ".join(part for part in (f"lr {lr:.4g}", last_info) if part)
            first_step_done: list[float] = []

            def on_step(step: int, total: int, first_step_done: list[float] = first_step_done) -> None:
                if step == 1:
                    first_step_done.append(time.perf_counter())
                progress.step()  # a counter; the display is touched about once a second

            train_metrics = train_one_epoch(
                model,
                data,
                optimizer,
                schedule.batch_size,
                generator,
                masks,
                on_step=on_step,
                grad_hook=grad_hook,
                engine=engine,
                dist=dist,
                forward=forward,
                teacher=teacher,
                kd=kd,
                device=device,
                adversary=adversary,
                step_lr=step_lr,
                grad_clip=schedule.grad_clip,
            )
            t_train_end = time.perf_counter()
            with progress.evaluating():
                test_metrics = evaluate(eval_model, data, schedule.test_batch_size, engine, dist, device=device)
            t_end = time.perf_counter()
            row = {
                "stage": name,
                "epoch": epoch + 1,
                "lr": lr,
                **train_metrics,
                **test_metrics,
                "epoch_s": round(t_end - t_epoch, 3),
                "train_s": round(t_train_end - t_epoch, 3),
                "eval_s": round(t_end - t_train_end, 3),
            }
            # the first step of a process pays one-off costs (allocator, kernel choice, compile):
            # the ETA extrapolates from the steps after it
            steady_s = row["epoch_s"]
            if first_step_done and total_steps > 1:
                steady_s = (t_train_end - first_step_done[0]) * total_steps / (total_steps - 1) + (t_end - t_train_end)
            history.append(row)
            wall = wall_before + time.perf_counter() - t0
            if dist.is_main:
                save_checkpoint(
                    ckpt_path,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": history,
                        "epoch": epoch + 1,
                        "wall_s": wall,
                        "spec": getattr(model, "spec", None),
                        "schedule": asdict(schedule),
                        rng.RNG_KEY: rng.capture(),
                    },
                )
                write_jsonl(history_path, history)
            if on_row is not None:
                on_row(row)
            last_info = (
                f"loss {row['train_loss']:.3f} valid {row['bpc']:.3f} bpc"
                if "bpc" in row
                else f"loss {row['train_loss']:.3f} train {row['train_top1']:.2f}% test {row['top1']:.2f}%"
            )
            progress.end_epoch(last_info)
            if on_epoch is not None:
                on_epoch(epoch + 1, steady_s)
    if schedule.epochs == 0 or not history:
        final = evaluate(eval_model, data, schedule.test_batch_size, engine, dist, device=device)
        return {**final, "top1_best": final["top1"], "epochs": 0, "wall_s": 0.0, **peak_memory_mb(device)}
    last = history[-1]
    # a language model's per-epoch evaluation reads the validation split (the test bpc is measured once, at the end)
    lm = {"bpc_valid": last["bpc"], "bpc_valid_best": min(h["bpc"] for h in history)} if "bpc" in last else {}
    return {
        **lm,
        "top1": last["top1"],
        "top1_best": max(h["top1"] for h in history),
        "top5": last["top5"],
        "epochs": schedule.epochs,
        "wall_s": round(wall_before + time.perf_counter() - t0, 2),
        "epoch_s_median": sorted(h["epoch_s"] for h in history)[len(history) // 2],
        **peak_memory_mb(device),
    }
