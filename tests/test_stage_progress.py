"""Every stage that runs outside run_stage shows progress with an ETA unless quiet (issue 23):
the ETA arithmetic of ``pruning.progress.StageProgress`` (steps at their mean time, evaluations
at their measured time), a quiet display that prints nothing, plain lines in a log, and each
method's own loop (TAS search, PFS gates, SANP, ANP-VS, FLOP, AGP, ThiNet / LASSO, PGD) driving
one display with the run's ``quiet`` and reaching its last step."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

from pruning import progress as progress_module
from pruning.attacks import AttackSpec, robust_evaluate
from pruning.data import ImageData, Split, load_digits_data
from pruning.methods.agp import AGP
from pruning.methods.anp import ANP
from pruning.methods.base import PruneContext
from pruning.methods.channel_pruning import ChannelPruning
from pruning.methods.flop import FLOP
from pruning.methods.pfs import PFS
from pruning.methods.sanp import SANP
from pruning.methods.tas import TAS
from pruning.methods.thinet import ThiNet
from pruning.models import build, default_spec
from pruning.progress import StageProgress
from tests.conftest import lm_ctx, lm_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    return clock


def test_the_eta_is_the_remaining_steps_and_evaluations_at_their_measured_times(clock: Clock) -> None:
    bar = StageProgress("stage", epochs=2, steps_per_epoch=10, quiet=True, eval_steps=5.0, evals_per_epoch=1)
    bar.step()  # the first step paid one-off costs: the clock starts after it
    assert bar.eta() is None
    for _ in range(4):
        clock.now += 1.0
        bar.step()
    # 15 steps left at 1 s, 2 evaluations at their estimate of 5 steps each
    assert bar.eta() == pytest.approx(15.0 + 2 * 5.0)
    for _ in range(5):
        clock.now += 1.0
        bar.step()
    with bar.evaluating():
        clock.now += 3.0  # the first evaluation takes 3 s: the one left is estimated at that
    bar.end_epoch("loss 1.0")
    assert bar.eta() == pytest.approx(10 * 1.0 + 1 * 3.0)  # evaluation time never counts as step time
    assert "epoch 2/2" in bar.status_line() and "loss 1.0" in bar.status_line()


def test_a_resumed_stage_counts_from_its_epoch(clock: Clock) -> None:
    bar = StageProgress("stage", epochs=4, steps_per_epoch=5, quiet=True, start_epoch=2)
    assert (bar.steps, bar.total) == (10, 20)
    bar.step()
    clock.now += 2.0
    bar.step()
    assert bar.eta() == pytest.approx(8 * 2.0)


def _display_output(quiet: bool, monkeypatch) -> str:
    out = io.StringIO()
    real = progress_module.make_progress

    def recording():
        progress = real()
        progress.live.console = Console(file=out, width=120, force_terminal=False)
        return progress

    monkeypatch.setattr(progress_module, "make_progress", recording)
    with StageProgress("PFS gates", epochs=1, steps_per_epoch=3, quiet=quiet) as bar:
        for _ in range(3):
            bar.step()
    return out.getvalue()


def test_a_display_shows_its_name_count_and_eta_and_a_quiet_one_nothing(monkeypatch) -> None:
    shown = _display_output(False, monkeypatch)
    assert "PFS gates" in shown and "3/3" in shown and "ETA" in shown
    assert _display_output(True, monkeypatch) == ""


def test_a_log_gets_a_plain_line_with_the_count_and_eta(clock: Clock) -> None:
    said: list[str] = []
    with StageProgress("SANP", epochs=1, steps_per_epoch=100, quiet=False, say=said.append, log_every_s=30) as bar:
        for _ in range(100):
            clock.now += 1.0
            bar.step()
    assert said and all(line.startswith("SANP: ") and "ETA" in line for line in said)
    assert 2 <= len(said) <= 4  # at most one every 30 s
    quiet: list[str] = []
    with StageProgress("SANP", epochs=1, steps_per_epoch=100, quiet=True, say=quiet.append, log_every_s=30) as bar:
        for _ in range(100):
            clock.now += 1.0
            bar.step()
    assert quiet == []


# ----------------------------------------------------------------------------- each method's own loop
@pytest.fixture
def bars(monkeypatch) -> list[StageProgress]:
    """Every StageProgress the code under test opens (its state is read once the stage is done)."""
    made: list[StageProgress] = []
    real_start = StageProgress.start

    def start(self: StageProgress) -> None:
        made.append(self)
        real_start(self)

    monkeypatch.setattr(StageProgress, "start", start)
    return made


def _images(n_train: int, n_test: int, side: int, channels: int) -> ImageData:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        labels = torch.arange(n) % 10
        images = (torch.rand(n, channels, side, side, generator=g) * 80 + labels.view(-1, 1, 1, 1) * 17).to(torch.uint8)
        return Split(images, labels)

    mean, std = (0.3,) * channels, (0.3,) * channels
    return ImageData("mnist" if channels == 1 else "cifar10", split(n_train), split(n_test), 10, mean, std, False)


def _ctx(tmp_path: Path, data, input_shape: tuple[int, ...], quiet: bool) -> PruneContext:
    work = tmp_path / f"run-{quiet}"
    work.mkdir(parents=True, exist_ok=True)
    return PruneContext(data=data, input_shape=input_shape, work_dir=work, quiet=quiet, say=lambda _message: None)


def _tas(ctx_of):
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8, num_classes=10, in_channels=1))
    TAS(ratio=0.3, search_epochs=1, batch_size=128).prune(model, ctx_of(load_digits_data(), (1, 8, 8)))


def _pfs(ctx_of):
    spec = default_spec("resnet_pfs", depth=8, num_classes=10, in_channels=3)
    PFS(ratio=0.5, gate_epochs=1, batch_size=32).prune(build(spec), ctx_of(_images(64, 20, 16, 3), (3, 16, 16)))


def _sanp(ctx_of):
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8))
    SANP(ratio=0.5, epochs=1, batch_size=16).prune(model, ctx_of(_images(32, 20, 16, 3), (3, 16, 16)))


def _anp(ctx_of):
    torch.manual_seed(0)
    model = build(default_spec("lenet"))
    method = ANP(attack={"eps": 0.3, "step": 0.01, "steps": 1}, data_name="mnist", epochs=1, batch_size=32)
    method.validate("lenet5_caffe", model.spec)
    method.prune(model, ctx_of(_images(64, 20, 28, 1), (1, 28, 28)))


def _thinet(ctx_of):
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8, num_classes=10, in_channels=1))
    ThiNet(ratio=0.5, mode="layerwise", samples=64, images=16).prune(model, ctx_of(load_digits_data(), (1, 8, 8)))


def _lasso(ctx_of):
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8, num_classes=10, in_channels=1))
    ChannelPruning(ratio=0.5, samples=64, images=16).prune(model, ctx_of(load_digits_data(), (1, 8, 8)))


def _pgd(ctx_of):
    torch.manual_seed(0)
    data = load_digits_data()
    model = build(default_spec("resnet_cifar", depth=8, num_classes=10, in_channels=1))
    quiet = ctx_of(data, (1, 8, 8)).quiet
    robust_evaluate(model, data, AttackSpec("pgd", eps=0.1, step=0.05, steps=1), batch_size=128, quiet=quiet)


LM = {"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "lr": 1.0, "warmup_steps": 10}


def _flop(tmp_path: Path, quiet: bool):
    FLOP(sparsity=0.5, **LM).prune(lm_model("sru_lm"), lm_ctx(tmp_path, f"run-{quiet}", quiet=quiet, say=print))


def _agp(tmp_path: Path, quiet: bool):
    method = AGP(sparsity=0.5, mode="unstructured", start_epoch=0, end_epoch=2, **{**LM, "epochs": 3})
    method.prune(lm_model("sru_lm"), lm_ctx(tmp_path, f"run-{quiet}", quiet=quiet, say=print))


IMAGE_STAGES = {
    "TAS search": _tas,
    "PFS gates": _pfs,
    "SANP": _sanp,
    "ANP (anp_vs)": _anp,
    "ThiNet (layerwise)": _thinet,
    "LASSO channel pruning (layerwise)": _lasso,
    "PGD (white-box)": _pgd,
}


@pytest.mark.parametrize("quiet", [False, True], ids=["shown", "quiet"])
@pytest.mark.parametrize("name", list(IMAGE_STAGES))
def test_each_image_stage_drives_one_display_to_its_last_step(tmp_path, bars, name, quiet) -> None:
    IMAGE_STAGES[name](lambda data, shape: _ctx(tmp_path, data, shape, quiet))
    mine = [bar for bar in bars if bar.name == name]
    assert len(mine) == 1, [bar.name for bar in bars]
    bar = mine[0]
    assert bar.quiet is quiet and bar.progress.disable is quiet
    assert bar.steps == bar.total and bar.evals_done == bar.evals_total


@pytest.mark.parametrize("quiet", [False, True], ids=["shown", "quiet"])
@pytest.mark.parametrize("name,run", [("FLOP", _flop), ("AGP", _agp)])
def test_the_language_model_stages_drive_one_display_to_their_last_step(tmp_path, bars, name, run, quiet) -> None:
    run(tmp_path, quiet)
    mine = [bar for bar in bars if bar.name == name]
    assert len(mine) == 1 and mine[0].quiet is quiet and mine[0].progress.disable is quiet
    assert mine[0].steps == mine[0].total and mine[0].evals_done == mine[0].evals_total > 0


def test_an_evaluation_counted_batch_by_batch_gives_the_same_numbers() -> None:
    from pruning.progress import CountedTestBatches, count_test_batches
    from pruning.train import evaluate

    data = load_digits_data()
    torch.manual_seed(0)
    model = build(default_spec("resnet_cifar", depth=8, num_classes=10, in_channels=1))
    bar = StageProgress("evaluation (pruned)", steps_per_epoch=count_test_batches(data, 64), quiet=True)
    with bar:
        counted = evaluate(model, CountedTestBatches(data, bar), 64)
    assert counted == evaluate(model, data, 64)
    assert bar.steps == bar.total == 6  # 360 test images, batches of 64
