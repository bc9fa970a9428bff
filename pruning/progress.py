"""Progress with an ETA for the stages that run outside ``pruning.train.run_stage``: a method's
own training (TAS's search, PFS's gates, SANP, ANP-VS, FLOP, AGP), data-driven pruning
(ThiNet, LASSO), PGD robustness evaluation.

    with StageProgress("TAS search", epochs=E, steps_per_epoch=S, quiet=ctx.quiet,
                       eval_steps=0.0, say=ctx.say) as progress:
        for epoch in ...:
            for batch in ...:
                ...
                progress.step()                    # a counter; the display is touched about once a second
            with progress.evaluating():            # a per-epoch evaluation, timed
                ...
            progress.end_epoch("loss 1.23")        # the epoch's numbers beside the bar

The display is ``pruning.train.make_progress``'s (bar, count, elapsed, ETA), one bar over the
stage's training steps. The ETA is this module's own estimate, not rich's recent-speed one:
remaining steps x the mean time per step since the first step (which pays one-off costs), plus
the remaining evaluations x their measured mean time (before the first one: ``eval_steps``,
the caller's estimate of one evaluation in training steps). A per-epoch evaluation of the whole
test set can cost more than the epoch's training; rich's estimate ignores it until it has
happened, and forgets everything older than 30 s.

``quiet`` (``quiet=true``; a DDP rank other than 0 never runs these stages) shows nothing. On a
console that is not a terminal (a log file, SLURM) rich draws only the final bar, so a plain
line with the count and ETA is written through ``say`` at most every ``log_every_s`` seconds.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.progress import Progress, ProgressColumn, Task, TimeRemainingColumn
from rich.text import Text

from pruning.train import make_progress

LOG_EVERY_S = 30.0


def format_seconds(seconds: float | None) -> str:
    """``h:mm:ss`` as rich's time columns write it; ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class EtaColumn(ProgressColumn):
    """The remaining time ``StageProgress`` estimated (``task.fields["eta"]``)."""

    def render(self, task: Task) -> Text:
        eta = 0.0 if task.finished else task.fields.get("eta")
        return Text(format_seconds(eta), style="progress.remaining")


def stage_progress_display(quiet: bool) -> Progress:
    """``make_progress()`` with the ETA column replaced by ``EtaColumn``; disabled when quiet
    (set before it starts: a started display would still print its final state)."""
    progress = make_progress()
    progress.columns = tuple(EtaColumn() if isinstance(c, TimeRemainingColumn) else c for c in progress.columns)
    progress.disable = quiet
    return progress


class StageProgress:
    """One bar over a stage's training steps with count, elapsed time and ETA (module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        epochs: int = 1,
        steps_per_epoch: int,
        quiet: bool,
        start_epoch: int = 0,
        eval_steps: float = 0.0,
        evals_per_epoch: int = 0,
        every: int = 50,
        say: Callable[[str], None] | None = None,
        unit: str = "steps",
        log_every_s: float = LOG_EVERY_S,
    ):
        self.name, self.epochs, self.steps_per_epoch = name, max(1, int(epochs)), max(1, int(steps_per_epoch))
        self.quiet, self.every, self.say, self.unit = bool(quiet), max(1, int(every)), say, unit
        self.stride, self.next_refresh = 1, 0  # steps between display updates (adapted: ~1 s)
        self.total = self.epochs * self.steps_per_epoch
        self.epoch = min(int(start_epoch), self.epochs)
        self.steps = self.epoch * self.steps_per_epoch
        self.evals_total = self.epochs * int(evals_per_epoch)
        self.evals_done = self.epoch * int(evals_per_epoch)
        self.eval_steps = float(eval_steps)  # one evaluation's cost in training steps, until one is timed
        self.eval_s = 0.0  # time spent in evaluations since the reference point
        self.eval_s_total, self.evals_timed = 0.0, 0
        self.t_ref: float | None = None  # after the first step of this process: one-off costs excluded
        self.steps_ref = self.steps
        self.log_every_s, self.t_logged = float(log_every_s), time.perf_counter()
        self.info = ""
        self.progress = stage_progress_display(self.quiet)
        self.task = self.progress.add_task(
            name, total=self.total, completed=self.steps, info=self._epoch_text(), eta=None
        )

    # ------------------------------------------------------------------ context
    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def __enter__(self) -> StageProgress:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ the loop's calls
    def step(self, count: int = 1) -> None:
        """``count`` training steps done: a counter; the display is updated about once a second
        (every step while the steps are slow, at most every ``every`` steps when they are fast)."""
        self.steps += count
        if self.steps >= self.next_refresh or self.steps >= self.total:
            self.refresh()

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time an evaluation (its cost enters the ETA of the evaluations still to come)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            self.eval_s += seconds
            self.eval_s_total += seconds
            self.evals_timed += 1
            self.evals_done += 1
            self.refresh()

    def end_epoch(self, info: str = "") -> None:
        """The epoch is done: its numbers (``info``) are shown beside the bar."""
        self.epoch += 1
        self.steps = max(self.steps, self.epoch * self.steps_per_epoch)
        self.info = info
        self.refresh()

    # ------------------------------------------------------------------ the estimate
    def eta(self) -> float | None:
        """Seconds left: remaining steps at the mean step time, plus remaining evaluations at
        their measured mean time (before the first: ``eval_steps`` steps each). None before a
        step has been timed."""
        if self.t_ref is None or self.steps <= self.steps_ref:
            return None
        train_s = max(0.0, time.perf_counter() - self.t_ref - self.eval_s)
        step_s = train_s / (self.steps - self.steps_ref)
        eval_s = self.eval_s_total / self.evals_timed if self.evals_timed else self.eval_steps * step_s
        return max(0, self.total - self.steps) * step_s + max(0, self.evals_total - self.evals_done) * eval_s

    def refresh(self) -> None:
        now = time.perf_counter()
        if self.t_ref is None:  # the first step paid one-off costs (allocation, kernel choice): excluded
            self.t_ref, self.steps_ref, self.eval_s = now, self.steps, 0.0
        elif self.steps > self.steps_ref:  # about one refresh a second from here on
            step_s = max(1e-9, (now - self.t_ref - self.eval_s) / (self.steps - self.steps_ref))
            self.stride = max(1, min(self.every, int(1.0 / step_s)))
        self.next_refresh = self.steps + self.stride
        eta = self.eta()
        self.progress.update(self.task, completed=min(self.steps, self.total), info=self._epoch_text(), eta=eta)
        if not self.quiet and self.say is not None and now - self.t_logged >= self.log_every_s:
            if not self.progress.console.is_terminal:  # a log: rich draws only the final bar there
                self.t_logged = now
                self.say(self.status_line(eta))

    def status_line(self, eta: float | None = None) -> str:
        percent = 100.0 * min(self.steps, self.total) / self.total
        return (
            f"{self.name}: {min(self.steps, self.total)}/{self.total} {self.unit} ({percent:.0f}%)"
            f"{', ' + self._epoch_text() if self.epochs > 1 else ''}, ETA {format_seconds(eta)}"
        )

    def _epoch_text(self) -> str:
        epoch = f"epoch {min(self.epoch + 1, self.epochs)}/{self.epochs}" if self.epochs > 1 else ""
        return " · ".join(part for part in (epoch, self.info) if part)


def eval_steps(eval_items: int, batch_size: int, passes_per_step: float = 1.0) -> float:
    """An evaluation of ``eval_items`` inputs in training steps of ``batch_size`` inputs, before
    it is timed: a forward pass costs about a third of a training step's forward + backward
    (``passes_per_step``: the forward + backward passes of one step, e.g. 1 + PGD steps)."""
    return float(eval_items) / (3.0 * max(1, batch_size) * max(1.0, passes_per_step))


class CountedTestBatches:
    """``data`` whose ``test_batches`` advance ``progress`` by one step per batch: the display of
    an evaluation by ``pruning.train.evaluate``, which has no step hook. Everything else is
    ``data``'s."""

    def __init__(self, data: Any, progress: StageProgress):
        self._data, self._progress = data, progress

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)

    def test_batches(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in self._data.test_batches(*args, **kwargs):
            yield batch
            self._progress.step()


def count_test_batches(data: Any, batch_size: int, world_size: int = 1) -> int:
    """Batches ``data.test_batches(batch_size)`` yields on rank 0 (labelled images: one per
    ``batch_size`` images of the rank's contiguous shard)."""
    return max(1, math.ceil(len(data.test) // max(1, world_size) / max(1, batch_size)))


@contextlib.contextmanager
def counted_evaluation(
    name: str, data: Any, batch_size: int, *, quiet: bool, say: Callable[[str], None] | None = None, world_size: int = 1
) -> Iterator[CountedTestBatches]:
    """``data`` for one evaluation over its test batches, shown as a bar named ``name``."""
    steps = count_test_batches(data, batch_size, world_size)
    with StageProgress(name, steps_per_epoch=steps, quiet=quiet, say=say, unit="batches") as progress:
        yield CountedTestBatches(data, progress)
