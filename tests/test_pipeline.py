"""The pipeline end to end on CIFAR-format files the tests generate: baseline caching,
per-epoch checkpoints and resume, skipping finished runs, concurrent jobs, data errors."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest
from rich.console import Console

from pruning import PruneLabError
from pruning.pipeline import run_subdir
from tests.conftest import TINY_CIFAR, plain_cfg, run_path
from tests.conftest import pipeline_cfg as _cfg
from tests.conftest import run_pipeline as _run

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


def test_l1_pipeline_writes_complete_metrics(fake_cifar, tmp_path) -> None:
    m = _run(_cfg(fake_cifar, tmp_path, "method.ratio=0.5", "finetune=finetune"))
    assert m["status"] == "done"
    assert m["key"] == {
        "data": "cifar10",
        "model": "resnet20",
        "method": "l1_norm",
        "variant": None,
        "ratio": 0.5,
        "finetune": "finetune",
        "adv_train": "none",
        "seed": 0,
    }
    assert set(m["stages"]) == {"pretrain", "prune", "finetune"}
    assert m["flops_pruned"] < m["flops_dense"] and 40 < m["flops_reduction"] < 60
    assert m["data"]["official_md5"] is False and m["data"]["train_size"] == 200
    assert m["budget"] == {
        "pretrain_epochs": 2,
        "batch_size": 50,
        "train_subset": None,
        "planned_stage_epochs": 1,
        "stage_epochs": 1,
        "stage_lr": 0.001,
        "distillation": None,
    }
    lat = m["latency"]["cpu_b1"]
    assert lat["dense_ms"] > 0 and lat["pruned_ms"] > 0 and lat["speedup"] == lat["dense_ms"] / lat["pruned_ms"]
    assert lat["dense_min_ms"] <= lat["dense_ms"] and lat["pruned_min_ms"] <= lat["pruned_ms"]  # interleaved pair
    assert m["stages"]["pretrain"]["peak_rss_mb"] > 0 and m["engine"]["channels_last"] is True
    on_disk = json.loads((run_path(m, tmp_path) / "metrics.json").read_text())
    assert on_disk["final"] == m["final"] and 0 <= m["final"]["top1"] <= 100
    history = [json.loads(line) for line in (run_path(m, tmp_path) / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]


def test_baseline_is_trained_once_and_shared(fake_cifar, tmp_path) -> None:
    first = _run(_cfg(fake_cifar, tmp_path, "method.ratio=0.5", "finetune=scratch_e"))
    second = _run(_cfg(fake_cifar, tmp_path, "method.ratio=0.3", "finetune=scratch_b"))
    assert first["stages"]["pretrain"]["cached"] is False
    assert second["stages"]["pretrain"]["cached"] is True
    assert second["stages"]["pretrain"]["top1"] == first["stages"]["pretrain"]["top1"]
    assert second["stages"]["scratch_b"]["epochs"] == int(2 * second["flops_dense"] / second["flops_pruned"])
    # another seed is another baseline
    third = _run(_cfg(fake_cifar, tmp_path, "method.ratio=0.3", "seed=1"))
    assert third["stages"]["pretrain"]["cached"] is False


def test_finished_run_is_skipped(fake_cifar, tmp_path) -> None:
    cfg = _cfg(fake_cifar, tmp_path, "method.variant=A", "model=resnet56", "schedule.epochs=1")
    done = _run(cfg)
    mtime = (run_path(done, tmp_path) / "metrics.json").stat().st_mtime_ns
    again = _run(cfg)
    assert again == done
    assert (run_path(done, tmp_path) / "metrics.json").stat().st_mtime_ns == mtime


def test_killed_run_resumes_from_last_finished_epoch(fake_cifar, tmp_path, monkeypatch) -> None:
    import pruning.train as train

    cfg = _cfg(fake_cifar, tmp_path, "method.ratio=0.5", "finetune=scratch_e", "schedule.epochs=3")
    real_evaluate, calls = train.evaluate, {"n": 0}

    def dying_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # 3 pretrain epochs, the prune eval, 1 scratch epoch, then "killed"
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg)
    run_dir = tmp_path / "runs" / run_subdir(cfg)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert (run_dir / "ckpt_scratch_e.pt").exists()
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    resumed = _run(cfg)
    assert resumed["status"] == "done" and resumed["stages"]["pretrain"]["cached"] is True
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # epoch 1 was not trained twice


def _worker(args) -> dict:
    (cfg,) = args
    m = _run(cfg)
    return {"cached": m["stages"]["pretrain"]["cached"], "baseline": m["stages"]["pretrain"]["baseline_id"]}


@pytest.mark.integration  # make test-integration (subprocesses, sweeps, torchrun, wheel build)
def test_concurrent_jobs_train_the_baseline_once(fake_cifar, tmp_path) -> None:
    cfgs = [_cfg(fake_cifar, tmp_path, "method.ratio=0.5", f"finetune={p}") for p in ("finetune", "scratch_e")]
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_worker, [(c,) for c in cfgs])
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["baseline"] == results[1]["baseline"]
    history = (tmp_path / "cache" / "baselines" / results[0]["baseline"] / "history.jsonl").read_text().splitlines()
    assert len(history) == 2


def test_missing_data_names_the_expected_path(tmp_path) -> None:
    cfg = plain_cfg([*TINY_CIFAR, f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    with pytest.raises(PruneLabError) as err:
        _run(cfg)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "data.download=true" in msg


def test_cifar100_layout_loads(tmp_path) -> None:
    from pruning.data import load_cifar
    from tests.conftest import write_fake_cifar

    root = write_fake_cifar(tmp_path, variant="cifar100")
    data = load_cifar("cifar100", root, strict_sizes=False)
    assert data.num_classes == 100 and len(data.train) == 200 and data.train.images.shape[1:] == (3, 32, 32)


def test_dense_only_method(fake_cifar, tmp_path) -> None:
    m = _run(_cfg(fake_cifar, tmp_path, "method=none"))
    assert m["key"]["finetune"] == "none" and set(m["stages"]) == {"pretrain"}
    assert m["flops_reduction"] == 0.0


def test_augmentation_is_a_crop_and_flip() -> None:
    import torch

    from pruning.data import random_crop_flip

    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).reshape(2, 3, 32, 32).to(torch.uint8)
    out = random_crop_flip(images, pad=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    # pad=0 with no flip is the identity; a flip reverses the last axis
    same = random_crop_flip(images, pad=0, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(same[i], images[i]) or torch.equal(same[i], images[i].flip(-1))


def test_download_fetches_verifies_and_extracts_the_official_archive(tmp_path, monkeypatch) -> None:
    """The real download path, served from a local file:// URL (no internet here)."""
    import hashlib
    import tarfile

    from pruning import data as datasets
    from tests.conftest import write_fake_cifar

    src = write_fake_cifar(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    meta = {
        **datasets.CIFAR["cifar10"],
        "url": archive.as_uri(),
        "tgz_md5": hashlib.md5(archive.read_bytes()).hexdigest(),
    }
    monkeypatch.setitem(datasets.CIFAR, "cifar10", meta)
    data = datasets.load_cifar("cifar10", tmp_path / "dest", download=True, strict_sizes=False)
    assert len(data.train) == 200 and (tmp_path / "dest" / "cifar-10-batches-py" / "test_batch").is_file()

    monkeypatch.setitem(datasets.CIFAR, "cifar10", {**meta, "tgz_md5": "0" * 32})
    with pytest.raises(PruneLabError, match="wrong md5"):
        datasets.load_cifar("cifar10", tmp_path / "dest2", download=True, strict_sizes=False)
    assert not list((tmp_path / "dest2").glob("*.tar.gz"))  # no corrupt archive left behind


def test_latency_pair_alternates_dense_and_pruned(monkeypatch) -> None:
    """Side-by-side timing: rounds alternate which net runs first, and every round times both."""
    import torch

    from pruning.measure import measure_latency_pair

    calls = []

    class Net(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    out = measure_latency_pair(Net("d"), Net("p"), (3, 4, 4), "cpu", batch_size=2, warmup=1, repeats=4)
    assert calls == ["d", "p", "d", "p", "p", "d", "d", "p", "p", "d"]
    assert out["repeats"] == 4 and out["speedup"] == out["dense_ms"] / out["pruned_ms"]


@pytest.mark.integration  # slow (3-5 s on 2 cores): the fast tier stays under 5 min
def test_remeasure_latency_script_replaces_cpu_figures(fake_cifar, tmp_path) -> None:
    """scripts/remeasure_latency.py rebuilds both nets from the specs and times them again."""
    import importlib.util

    from omegaconf import OmegaConf

    cfg = _cfg(fake_cifar, tmp_path, "method.ratio=0.5", "finetune=finetune", "latency.cpu_batch_sizes=[1,4]")
    m = _run(cfg)
    run_dir = run_path(m, tmp_path)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")  # as prune-exp leaves it
    distorted = json.loads((run_dir / "metrics.json").read_text())
    distorted["latency"]["cpu_b4"] = {"dense_ms": 1531.6, "pruned_ms": 3918.0, "speedup": 0.39}
    (run_dir / "metrics.json").write_text(json.dumps(distorted))
    spec = importlib.util.spec_from_file_location(
        "remeasure", Path(__file__).parents[1] / "scripts" / "remeasure_latency.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(run_dir), "--reason", "test"]) == 0
    fixed = json.loads((run_dir / "metrics.json").read_text())
    assert set(fixed["latency"]) == {"cpu_b1", "cpu_b4"}
    assert (
        fixed["latency"]["cpu_b4"]["pruned_ms"] != 3918.0 and fixed["latency"]["cpu_b4"]["speedup"] != 0.39
    )  # re-timed
    assert fixed["latency_remeasured"]["reason"] == "test" and fixed["final"] == m["final"]
    with pytest.raises(SystemExit, match="not found"):
        script.main([str(tmp_path / "nowhere")])


# ----------------------------------------------------------------------------- baseline identity (issue 22)
SMALL_DENSE = ("method=none", "schedule.epochs=1", "model=vgg_small", "data.train_subset=50")


def _baseline_entry(metrics: dict, results: Path) -> Path:
    return results / "cache" / "baselines" / metrics["stages"]["pretrain"]["baseline_id"]


def test_a_run_records_the_checksum_of_the_baseline_it_descends_from(fake_cifar, tmp_path) -> None:
    from pruning.io import load_checkpoint
    from pruning.results import RunMetrics
    from pruning.rng import state_sha256

    first = _run(_cfg(fake_cifar, tmp_path, *SMALL_DENSE))
    entry = _baseline_entry(first, tmp_path)
    checksum = state_sha256(load_checkpoint(entry / "baseline.pt")["model"])
    assert first["baseline_sha256"] == first["stages"]["pretrain"]["baseline_sha256"] == checksum
    assert json.loads((entry / "info.json").read_text())["baseline_sha256"] == checksum
    assert RunMetrics.from_dict(first).baseline_sha256 == checksum  # a typed field: the report groups on it
    # an entry cached before checksums were recorded: loaded as it is, and its checksum pinned
    info = json.loads((entry / "info.json").read_text())
    del info["baseline_sha256"]
    (entry / "info.json").write_text(json.dumps(info))
    again = _run(_cfg(fake_cifar, tmp_path, *SMALL_DENSE, "rerun=true"))
    assert again["stages"]["pretrain"]["cached"] is True and again["baseline_sha256"] == checksum
    assert json.loads((entry / "info.json").read_text())["baseline_sha256"] == checksum


def test_a_cached_baseline_whose_weights_do_not_match_its_checksum_is_trained_again(fake_cifar, tmp_path) -> None:
    """One cache id, one net: weights that are not the recorded ones are a corrupt entry."""
    from pruning.io import load_checkpoint, save_checkpoint

    first = _run(_cfg(fake_cifar, tmp_path, *SMALL_DENSE))
    entry = _baseline_entry(first, tmp_path)
    state = load_checkpoint(entry / "baseline.pt")
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] * 1.001  # e.g. retrained under another torch build
    save_checkpoint(entry / "baseline.pt", state)
    again = _run(_cfg(fake_cifar, tmp_path, *SMALL_DENSE, "rerun=true"))
    assert again["stages"]["pretrain"]["cached"] is False  # trained again
    assert len(list(entry.glob("baseline.pt.corrupt-*"))) == 1  # the evidence kept
    assert again["baseline_sha256"] == first["baseline_sha256"]  # the same recipe on the same torch: the same net


def test_a_method_from_random_weights_records_the_checksum_of_its_initialisation(fake_cifar, tmp_path) -> None:
    import torch

    from pruning.models import build
    from pruning.pipeline import Run, validate
    from pruning.rng import state_sha256
    from pruning.runtime import make_runtime

    cfg = _cfg(fake_cifar, tmp_path, "method=pfs", "model=resnet20_pfs", "seed=3")
    method, spec = validate(cfg)
    run = Run(cfg, tmp_path / "run", method, spec, make_runtime(cfg, QUIET))
    run.input_shape = (3, 32, 32)
    dense = run.random_dense()
    torch.manual_seed(3)
    assert run.metrics.baseline_sha256 == state_sha256(build(spec).state_dict()) == state_sha256(dense.state_dict())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["baseline_sha256"] == run.metrics.baseline_sha256


def test_a_method_stage_names_its_source_by_the_baseline_id_and_checksum(fake_cifar, tmp_path, monkeypatch) -> None:
    """A search or a method's own training cached under a baseline is keyed by the exact net."""
    from pruning.methods.l1_norm import L1Norm

    seen, real_prune = [], L1Norm.prune

    def prune(self, model, ctx):
        seen.append(ctx.source_id)
        return real_prune(self, model, ctx)

    monkeypatch.setattr(L1Norm, "prune", prune)
    m = _run(_cfg(fake_cifar, tmp_path, *SMALL_DENSE, "method=l1_norm", "method.ratio=0.5", "finetune=none"))
    assert seen[-1] == f"{m['stages']['pretrain']['baseline_id']}-{m['baseline_sha256'][:12]}"  # (before: the plan)
