"""Training and evaluation loops, written to be read in one sitting (torchvision-references
style), plus the resumable, checkpoint-every-epoch stage runner the pipeline uses.

Recipe knobs come from a ``Schedule``: SGD with momentum, step decay by ``gamma`` at the given
fractions of the epochs (Rethinking: x0.1 at 50% and 75%), weight decay, batch size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pruning.data import ImageData
from pruning.io import load_checkpoint, save_checkpoint, write_jsonl
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

    def lr_at(self, epoch: int) -> float:
        """Step schedule: decay at int(f * epochs) for every milestone fraction f (main_B.py);
        never before the first epoch (matters only for the few-epoch budgets of quick runs)."""
        steps = sum(epoch >= max(1, int(f * self.epochs)) for f in self.milestones)
        return self.lr * self.gamma**steps


def make_optimizer(model: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                           weight_decay=schedule.weight_decay, nesterov=schedule.nesterov)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
    """Keep unstructured-pruned weights at zero (masks fixed through training)."""
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def train_one_epoch(model: nn.Module, data: ImageData, optimizer: torch.optim.Optimizer,
                    batch_size: int, generator: torch.Generator,
                    masks: dict[str, torch.Tensor] | None = None,
                    on_step: Callable[[int, int], None] | None = None,
                    grad_hook: Callable[[nn.Module], None] | None = None) -> dict:
    model.train()
    device = data.train.labels.device
    loss_sum = torch.zeros((), device=device)  # accumulate on device: no per-step host sync
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    total_steps = math.ceil(len(data.train) / batch_size)
    for step, (images, labels) in enumerate(data.train_batches(batch_size, generator)):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_hook is not None:
            grad_hook(model)
        optimizer.step()
        apply_masks(model, masks)
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.shape[0]
        if on_step is not None:
            on_step(step + 1, total_steps)
    return {"train_loss": float(loss_sum / seen), "train_top1": 100.0 * float(correct) / seen}


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, batch_size: int = 256) -> dict:
    model.eval()
    device = data.test.labels.device
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device)
    for images, labels in data.test_batches(batch_size):
        logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        c1, c5 = topk_correct(logits, labels, (1, 5))
        correct1 += c1
        correct5 += c5
    n = len(data.test)
    return {"top1": 100.0 * float(correct1) / n, "top5": 100.0 * float(correct5) / n, "test_loss": float(loss_sum) / n}


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


def run_stage(name: str, model: nn.Module, data: ImageData, schedule: Schedule, ckpt_path: Path,
              history_path: Path, seed: int, masks: dict[str, torch.Tensor] | None = None,
              grad_hook: Callable[[nn.Module], None] | None = None, quiet: bool = False) -> dict:
    """Train ``model`` for ``schedule.epochs`` epochs, checkpointing after every epoch.

    Resumes from ``ckpt_path`` if present (the model, optimiser, history and best accuracy),
    so a killed run re-launched with the same command continues from its last finished epoch.
    Data order depends only on (seed, epoch), so a resumed run sees the batches it would have.
    Returns the stage metrics: final and best test top-1, top-5, epochs, wall time.
    """
    optimizer = make_optimizer(model, schedule)
    history: list[dict] = []
    start_epoch, wall_before = 0, 0.0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=data.train.labels.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, wall_before = state["history"], state["epoch"], state["wall_s"]
    apply_masks(model, masks)
    t0 = time.perf_counter()
    with make_progress() as progress:
        progress.disable = quiet
        epochs_task = progress.add_task(f"{name} epochs", total=max(schedule.epochs, 1), completed=start_epoch, info="")
        steps_task = progress.add_task("  steps", total=1, info="")
        for epoch in range(start_epoch, schedule.epochs):
            t_epoch = time.perf_counter()
            lr = schedule.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            progress.reset(steps_task, total=math.ceil(len(data.train) / schedule.batch_size), info=f"lr {lr:.4g}")
            train_metrics = train_one_epoch(
                model, data, optimizer, schedule.batch_size, generator, masks,
                on_step=lambda s, _t: progress.update(steps_task, completed=s), grad_hook=grad_hook,
            )
            test_metrics = evaluate(model, data, schedule.test_batch_size)
            row = {"stage": name, "epoch": epoch + 1, "lr": lr, **train_metrics, **test_metrics,
                   "epoch_s": round(time.perf_counter() - t_epoch, 3)}
            history.append(row)
            wall = wall_before + time.perf_counter() - t0
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "history": history, "epoch": epoch + 1, "wall_s": wall,
                                        "spec": getattr(model, "spec", None), "schedule": asdict(schedule)})
            write_jsonl(history_path, history)
            progress.update(epochs_task, completed=epoch + 1,
                            info=f"loss {row['train_loss']:.3f} train {row['train_top1']:.2f}% test {row['top1']:.2f}%")
    if schedule.epochs == 0 or not history:
        final = evaluate(model, data, schedule.test_batch_size)
        return {**final, "top1_best": final["top1"], "epochs": 0, "wall_s": 0.0}
    last = history[-1]
    return {
        "top1": last["top1"],
        "top1_best": max(h["top1"] for h in history),
        "top5": last["top5"],
        "epochs": schedule.epochs,
        "wall_s": round(wall_before + time.perf_counter() - t0, 2),
    }
