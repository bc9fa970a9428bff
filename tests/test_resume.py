"""Exact resume (issue 22): a run killed after epoch k and re-launched ends bit-identical to one
that was never killed: the stage runner and every method's own epoch loop (TAS search, PFS gates,
ANP-VS, SANP, FLOP / AGP through lm_prune) checkpoint the torch CPU (and CUDA), numpy and Python
random states (``pruning.rng``). The tests draw random numbers from all three global generators
in training (dropout, plus a data pipeline that adds noise from torch, numpy and ``random``, as a
user's augmentation might), kill the run at the start of an epoch, scramble every generator (a
new process starts elsewhere), resume, and compare weights and history with a straight run."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import TINY_SRU_PIPELINE, lm_model, text_corpus_cfg, tiny_corpus

from pruning import rng
from pruning.data import ImageData, Split
from pruning.io import load_checkpoint, save_checkpoint
from pruning.methods.base import PruneContext
from pruning.models import build, default_spec
from pruning.text_data import TextData
from pruning.train import Schedule, run_stage


class Killed(Exception):
    """Stands for SIGKILL: raised at the start of an epoch, after the previous epoch's checkpoint."""


KILL = {"at": None, "calls": 0}  # raise Killed on the at-th call of train_batches


@pytest.fixture(autouse=True)
def _one_thread_and_no_kill():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    KILL.update(at=None, calls=0)
    yield
    torch.set_num_threads(before)
    KILL.update(at=None, calls=0)


def _count_call() -> None:
    KILL["calls"] += 1
    if KILL["at"] is not None and KILL["calls"] == KILL["at"]:
        raise Killed


@dataclasses.dataclass
class NoisyImages(ImageData):
    """Training batches with noise from the torch, numpy and Python global generators."""

    def train_batches(self, batch_size, generator, rank=0, world_size=1) -> Iterator:
        _count_call()
        batches = super().train_batches(batch_size, generator, rank, world_size)
        return (
            (x + 0.1 * torch.randn_like(x) * (1.0 + float(np.random.rand())) + random.random(), y) for x, y in batches
        )


@dataclasses.dataclass
class NoisyText(TextData):
    """Training windows with one token per window replaced at a position numpy and Python choose."""

    def train_batches(self, batch_size, generator, rank=0, world_size=1) -> Iterator:
        _count_call()
        for x, y in super().train_batches(batch_size, generator, rank, world_size):
            x = x.clone()
            x[int(np.random.randint(x.shape[0])), random.randrange(x.shape[1])] = int(torch.randint(0, 12, ()))
            yield x, y


def noisy(data):
    cls = NoisyText if isinstance(data, TextData) else NoisyImages
    return cls(**{f.name: getattr(data, f.name) for f in dataclasses.fields(data)})


def images(n_train: int = 48, n_test: int = 16, side: int = 8, channels: int = 3, classes: int = 4) -> NoisyImages:
    g = torch.Generator().manual_seed(3)

    def split(n: int) -> Split:
        labels = torch.arange(n) % classes
        pixels = torch.rand(n, channels, side, side, generator=g) * 120 + labels.view(-1, 1, 1, 1) * 30
        return Split(pixels.to(torch.uint8), labels)

    mean, std = (0.4,) * channels, (0.25,) * channels
    return NoisyImages("cifar10", split(n_train), split(n_test), 10, mean, std, augment=True)


def scramble() -> None:
    """What a re-launched process finds: generators in some other state."""
    torch.manual_seed(987_654)
    np.random.seed(4321)
    random.seed(1234)


def same_start() -> None:
    """The state both the interrupted and the straight run start from."""
    rng.seed_all(11)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def timeless(rows: list[dict]) -> list[dict]:
    """History rows without their timings."""
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]


def killed_then_resumed(run, kill_at: int):
    """run() killed at the kill_at-th train_batches call, then, from scrambled generators, run() again."""
    same_start()
    KILL.update(at=kill_at, calls=0)
    with pytest.raises(Killed):
        run()
    KILL.update(at=None)
    scramble()
    return run()


# ----------------------------------------------------------------------------- pruning.rng
def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    np.random.randn()  # numpy holds a cached Gaussian: part of its state
    save_checkpoint(tmp_path / "c.pt", {rng.RNG_KEY: rng.capture()})
    expected = (torch.rand(4), np.random.randn(3), random.random(), random.gauss(0, 1))
    scramble()
    assert rng.restore(load_checkpoint(tmp_path / "c.pt"), say=pytest.fail) is True
    again = (torch.rand(4), np.random.randn(3), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_an_old_checkpoint_without_rng_states_still_loads_with_a_warning() -> None:
    said: list[str] = []
    assert rng.restore({"model": {}}, say=said.append, what="search checkpoint") is False
    assert "search checkpoint" in said[0] and "not bit-identical" in said[0]
    torch.manual_seed(0)
    legacy = {"rng": torch.get_rng_state()}  # ANP / SANP / FLOP checkpoints saved the torch state only
    expected = torch.rand(3)
    assert rng.restore(legacy, say=said.append) is False
    assert torch.equal(torch.rand(3), expected) and "numpy's and Python's" in said[1]


def test_cuda_states_are_saved_and_each_rank_gets_the_state_of_the_device_rank_0_trained_on(monkeypatch) -> None:
    """No GPU here: torch.cuda is faked. Rank 0 (device 0) saves; rank 1 (device 1) restores."""
    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    saved = rng.capture()
    assert saved["cuda_device"] == 0 and [s.tolist() for s in saved["cuda"]] == [[1, 2], [3, 4]]
    calls: list[tuple[list[int], int]] = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state.tolist(), device)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # rank 1 trains on device 1
    assert rng.restore({rng.RNG_KEY: saved}, say=pytest.fail) is True
    assert calls[-1] == ([1, 2], 1)  # device 1 continues rank 0's stream


def test_state_sha256_names_exact_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    digest = rng.state_sha256(net.state_dict())
    assert len(digest) == 64 and digest == rng.state_sha256({k: v.clone() for k, v in net.state_dict().items()})
    with torch.no_grad():
        net[0].weight[0, 0] = torch.nextafter(net[0].weight[0, 0], torch.tensor(1.0))  # one ulp
    assert rng.state_sha256(net.state_dict()) != digest
    net[1].num_batches_tracked += 1  # buffers count too
    assert len({digest, rng.state_sha256(net.state_dict())}) == 2


# ----------------------------------------------------------------------------- the stage runner
class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(6 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _stage(folder: Path, data: ImageData, epochs: int = 3) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = DropoutNet()
    out = run_stage(
        "pretrain", model, data, Schedule(epochs=epochs, lr=0.05, batch_size=16), folder / "ckpt.pt",
        folder / "history.jsonl", seed=3, quiet=True,
    )  # fmt: skip
    return model, out


def test_run_stage_resumes_bit_identically_with_dropout(tmp_path: Path) -> None:
    data = images()
    same_start()
    straight, straight_out = _stage(tmp_path / "straight", data)
    resumed, resumed_out = killed_then_resumed(lambda: _stage(tmp_path / "killed", data), kill_at=3)
    assert KILL["calls"] == 3 + 1  # epochs 1-2, the kill at the start of epoch 3, then epoch 3 resumed
    assert_same_weights(resumed.state_dict(), straight.state_dict())
    straight_rows, rows = (
        (tmp_path / run / "history.jsonl").read_text().splitlines() for run in ("straight", "killed")
    )
    assert timeless([json.loads(r) for r in rows]) == timeless([json.loads(r) for r in straight_rows])
    assert resumed_out["top1"] == straight_out["top1"]


def test_run_stage_resumes_an_old_checkpoint_and_says_it_is_not_exact(tmp_path: Path, capsys) -> None:
    data = images()
    KILL.update(at=2)
    with pytest.raises(Killed):
        _stage(tmp_path, data)
    KILL.update(at=None)
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert rng.RNG_KEY in state
    del state[rng.RNG_KEY]  # a checkpoint written before the RNG states were saved
    save_checkpoint(tmp_path / "ckpt.pt", state)
    capsys.readouterr()
    _, out = _stage(tmp_path, data)
    assert out["epochs"] == 3 and "not bit-identical" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a method's own loop
def _tas(tmp_path: Path):
    from pruning.methods.tas import TAS

    data = images(n_train=64, channels=1)

    def run(folder: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        torch.manual_seed(0)
        model = build(default_spec("resnet_cifar", depth=8, num_classes=10, in_channels=1))
        ctx = PruneContext(data=data, device="cpu", input_shape=(1, 8, 8), seed=1, work_dir=tmp_path / folder)
        result = TAS(ratio=0.3, search_epochs=2, batch_size=32).prune(model, ctx)
        return result.model.state_dict(), timeless(_read_json(tmp_path / folder / "tas_search.json")["epochs"])

    return run, 3  # two halves per epoch: the 3rd call starts epoch 2


def _pfs(tmp_path: Path):
    from pruning.methods.pfs import PFS, expanded_spec

    data = images(n_train=60, side=32)
    wide = expanded_spec(default_spec("resnet_pfs", depth=8, num_classes=10, in_channels=3), 8)

    def run(folder: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        method = PFS(ratio=0.5, expansion=8, sparsity_level=1.0, gate_epochs=2, batch_size=20, lr=0.05)
        learnt = method.learn_gates(wide, PruneContext(data=data, input_shape=(3, 32, 32), seed=0), tmp_path / folder)
        return {str(i): torch.tensor(g) for i, g in enumerate(learnt["gates"])}, timeless(learnt["history"])

    return run, 2


def _anp(tmp_path: Path):
    from pruning.methods.anp import ANP

    data = images(n_train=32, n_test=8, side=28, channels=1)

    def run(folder: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        torch.manual_seed(0)
        model = build(default_spec("lenet"))
        method = ANP(attack={"eps": 0.3, "step": 0.01, "steps": 2}, data_name="mnist", epochs=2, batch_size=16)
        method.validate("lenet5_caffe", model.spec)
        ctx = PruneContext(data=data, input_shape=(1, 28, 28), work_dir=tmp_path / folder)
        result = method.prune(model, ctx)
        return result.model.state_dict(), timeless(_read_json(tmp_path / folder / "anp_masks.json")["history"])

    return run, 2


def _sanp(tmp_path: Path):
    from pruning.methods.sanp import SANP

    data = images(n_train=32, side=16)

    def run(folder: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        torch.manual_seed(0)
        dense = build(default_spec("vgg_cifar", cfg=[8, 8, "M", 16, "M", 16, 16], hidden=8))
        method = SANP(ratio=0.4, epochs=2, batch_size=16, lr=0.01)
        result = method.prune(dense, PruneContext(data=data, input_shape=(3, 16, 16), work_dir=tmp_path / folder))
        return result.model.state_dict(), result.extras["keep_rates"]

    return run, 2


def _lm(tmp_path: Path, which: str):
    from pruning.methods.agp import AGP
    from pruning.methods.flop import FLOP

    data = noisy(tiny_corpus(6000))

    def run(folder: str):
        (tmp_path / folder).mkdir(exist_ok=True)
        dense = lm_model("sru_lm", dropout=0.3)
        if which == "flop":
            method = FLOP(
                sparsity=0.3, epochs=2, batch_size=8, eval_batch_size=8, lr=1.0, warmup_steps=10, prune_warmup=20
            )
        else:
            schedule = dict(epochs=3, start_epoch=0, end_epoch=2, batch_size=8, eval_batch_size=8)
            method = AGP(sparsity=0.5, mode="unstructured", lr=1.0, warmup_steps=20, **schedule)
        result = method.prune(dense, PruneContext(data=data, input_shape=(1,), work_dir=tmp_path / folder))
        return result.model.state_dict(), timeless(result.extras["history"])

    return run, 2


def _read_json(path: Path):
    return json.loads(path.read_text())


LOOPS = {
    "pfs": _pfs,
    "anp": _anp,
    "sanp": _sanp,
    "flop": lambda tmp_path: _lm(tmp_path, "flop"),
    "agp": lambda tmp_path: _lm(tmp_path, "agp"),
    "tas": _tas,
}


@pytest.mark.parametrize("name", list(LOOPS))
def test_a_method_loop_resumes_bit_identically(tmp_path: Path, name: str, monkeypatch) -> None:
    import importlib

    for module in ("tas", "pfs", "anp", "sanp"):  # no pictures: they take most of a tiny run's time
        monkeypatch.setattr(importlib.import_module(f"pruning.methods.{module}"), "draw_safely", lambda *a, **k: None)
    run, kill_at = LOOPS[name](tmp_path)
    same_start()
    straight_weights, straight_history = run("straight")
    weights, history = killed_then_resumed(lambda: run("killed"), kill_at)
    assert_same_weights(weights, straight_weights)
    assert history == straight_history


# ----------------------------------------------------------------------------- the pipeline, a language model
def _lm_pipeline_cfg(root: Path, *extra: str) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return text_corpus_cfg(root, *TINY_SRU_PIPELINE, "model.dropout=0.3", *extra)


def _final_state(metrics: dict, cfg: dict) -> dict:
    from pruning.pipeline import run_subdir

    return load_checkpoint(Path(cfg["paths"]["results_root"]) / "runs" / run_subdir(cfg) / "final.pt")["model"]


@pytest.mark.integration  # whole pipeline runs: 2-6 s on 2 shared cores
def test_language_model_killed_in_pretraining_resumes_bit_identically(tmp_path: Path, monkeypatch) -> None:
    """The issue's case: an SRU with dropout killed during its dense pretraining."""
    from conftest import run_pipeline

    import pruning.train as train

    extra = ("method=none", "schedule.epochs=3")
    straight_cfg, killed_cfg = _lm_pipeline_cfg(tmp_path / "a", *extra), _lm_pipeline_cfg(tmp_path / "b", *extra)
    same_start()
    straight = run_pipeline(straight_cfg)
    real_evaluate, calls = train.evaluate, {"n": 0}

    def dies_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the end of epoch 2, before its checkpoint: epoch 1 is the last one saved
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    same_start()
    monkeypatch.setattr(train, "evaluate", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(killed_cfg)
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    scramble()
    resumed = run_pipeline(killed_cfg)
    assert resumed["status"] == "done"
    assert resumed["final"] == straight["final"]  # bpc, top-1 ... to the last bit
    assert_same_weights(_final_state(resumed, killed_cfg), _final_state(straight, straight_cfg))


@pytest.mark.integration  # whole pipeline runs: 2-6 s on 2 shared cores
def test_a_second_stage_draws_the_same_random_numbers_after_a_cached_or_a_fresh_baseline(tmp_path: Path) -> None:
    """A stage's random stream starts from its seed, not from what earlier stages of the process
    drew: fine-tuning (dropout on) after a baseline trained in this process equals fine-tuning
    after the same baseline loaded from the cache by a re-launched run."""
    from conftest import run_pipeline

    extra = ("method=magnitude", "method.ratio=0.5", "finetune=finetune")
    fresh_cfg = _lm_pipeline_cfg(tmp_path / "a", *extra)
    same_start()
    fresh = run_pipeline(fresh_cfg)  # trains the baseline, then fine-tunes
    same_start()
    run_pipeline(_lm_pipeline_cfg(tmp_path / "b", "method=none"))  # caches the same baseline
    scramble()
    cached_cfg = _lm_pipeline_cfg(tmp_path / "b", *extra)
    cached = run_pipeline(cached_cfg)
    assert fresh["stages"]["pretrain"]["cached"] is False and cached["stages"]["pretrain"]["cached"] is True
    assert cached["baseline_sha256"] == fresh["baseline_sha256"]
    assert cached["final"] == fresh["final"]
    assert_same_weights(_final_state(cached, cached_cfg), _final_state(fresh, fresh_cfg))
