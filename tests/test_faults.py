"""Bad input and faults: every user error is refused up front with a message naming the key or
file and the fix (exit 2, nothing written); SIGTERM / Ctrl-C stop a run resumably; corrupt files
are named and rebuilt; a full disk or a read-only root says so; files keep the user's umask;
no code runs from a data or results file."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pruning.cli.precheck import precheck

from pruning import CorruptFileError, PruneLabError
from tests.conftest import plain_cfg, write_fake_cifar

TINY_DIGITS = [
    "schedule.epochs=2",
    "schedule.finetune_epochs=1",
    "data.train_subset=256",
    "latency.cpu_batch_sizes=[1]",
    "latency.repeats=2",
    "quiet=true",
]


def prune_exp(args: list[str], results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(results), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "pruning.cli.exp", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=results,
        timeout=300,
    )


# ----------------------------------------------------------------------------- up-front checks
@pytest.mark.parametrize(
    "args,expected",
    [
        (["-m", "experiment=rethinkng_l1_cifar10"], "experiment='rethinkng_l1_cifar10' is not an option"),
        (["table_row=l1_vgg16_Z"], "l1_resnet110_A, l1_resnet110_B"),
        (["-m", "model=resnet20,resnet57"], "model='resnet57' is not an option"),
        (["hydra/launcher=slurm"], "valid options: basic"),
        (["schedule.batch_size=0"], "schedule.batch_size=0 must be >= 1"),
        (["schedule.batch_size=-3"], "schedule.batch_size=-3 must be >= 1"),
        (["schedule.lr=abc"], "schedule.lr='abc' is not a number"),
        (["schedule.lr=0"], "schedule.lr=0 must be > 0"),
        (["schedule.epochs=0"], "schedule.epochs=0, but method=l1_norm needs a trained dense model"),
        (["data.train_subset=0"], "data.train_subset=0 must be >= 1"),
        (["seed=-1"], "seed=-1 must be >= 0"),
        (["seed=abc"], "seed='abc' is not an integer"),
        (["seed=1.5"], "seed=1.5 is not an integer"),
        (["model=vgg16"], "model=vgg16 cannot run on data=digits (input 1x8x8)"),
        (["schedule.lr_schedule=linear"], "schedule.lr_schedule='linear' is not a schedule"),
        (["schedule.no_such_key=1"], "schedule.no_such_key is not a key of schedule=digits"),
        (["method.ratio=0.2,0.4"], "is a sweep (several values): add -m"),
        (["method.ratio=[0.2"], "cannot parse the command line"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(tmp_path, monkeypatch, args, expected) -> None:
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message = precheck(args)
    assert message is not None and expected in message, message
    assert not (tmp_path / "results").exists()


def test_documented_quick_run_keys_compose(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path))
    assert (
        precheck(
            [
                "schedule.epochs=3",
                "schedule.finetune_epochs=1",
                "data.train_subset=500",
                "schedule.lr_schedule=cosine",
                "schedule.warmup_epochs=1",
            ]
        )
        is None
    )


def test_user_errors_exit_2_without_traceback_or_directories(tmp_path) -> None:
    for args in (["-m", "experiment=no_such_table"], ["seed=abc"], ["-m", "seed=0,abc", *TINY_DIGITS]):
        out = prune_exp(args, tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and "prune-exp: error" in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_unwritable_results_root_is_named(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    message = precheck([f"paths.results_root={blocker / 'results'}"])
    assert message is not None and "is a file, not a directory" in message


# ----------------------------------------------------------------------------- signals
@pytest.mark.integration  # make test-integration
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_a_run_resumably(tmp_path, sig, code) -> None:
    args = [
        "schedule.epochs=4000",  # ~2 min at 0.03 s an epoch: the signal always lands mid-run
        "schedule.finetune_epochs=1",
        "data.train_subset=64",
        "latency.enabled=false",
        "quiet=true",
    ]
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pruning.cli.exp", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("cache/baselines/*/ckpt.pt")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "re-run the same command to resume" in stderr
    (metrics_path,) = tmp_path.glob("runs/**/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["status"] == "interrupted" and metrics["error"] == ("SIGTERM" if code == 143 else "Ctrl-C (SIGINT)")
    (ckpt,) = tmp_path.glob("cache/baselines/*/ckpt.pt")
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < 4000
    assert not list(tmp_path.rglob("*.tmp"))
    if sig == signal.SIGTERM:  # the same command resumes from the last finished epoch
        history = ckpt.parent / "history.jsonl"
        rows_before = len(history.read_text().splitlines())
        assert rows_before == epoch


# ----------------------------------------------------------------------------- corrupt files
def _run(cfg: dict, run_dir: Path, capsys=None) -> dict:
    from pruning.pipeline import run

    return run(cfg, run_dir)


def test_corrupt_cached_baseline_is_moved_aside_and_retrained(tmp_path, capsys) -> None:
    cfg = plain_cfg(TINY_DIGITS, tmp_path)
    first = _run(cfg, tmp_path / "run1")
    (baseline,) = tmp_path.glob("cache/baselines/*/baseline.pt")
    baseline.write_bytes(baseline.read_bytes()[:1000])  # a truncated write
    cfg2 = plain_cfg([*TINY_DIGITS, "finetune=scratch_e"], tmp_path)
    second = _run(cfg2, tmp_path / "run2")
    assert second["status"] == "done" and second["stages"]["pretrain"]["cached"] is False
    assert second["stages"]["pretrain"]["top1"] == pytest.approx(first["stages"]["pretrain"]["top1"])
    assert list(baseline.parent.glob("baseline.pt.corrupt-*")) and baseline.exists()
    assert "moved aside" in capsys.readouterr().err


def test_corrupt_stage_checkpoint_and_metrics_restart_cleanly(tmp_path, capsys) -> None:
    cfg = plain_cfg(TINY_DIGITS, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ckpt_finetune.pt").write_bytes(b"PK\x03\x04 not a zip")
    (run_dir / "metrics.json").write_text('{"status": "runn')
    (run_dir / ".metrics.json.x1y2.tmp").write_text("left by a killed write")
    metrics = _run(cfg, run_dir)
    assert metrics["status"] == "done"
    assert list(run_dir.glob("ckpt_finetune.pt.corrupt-*")) and list(run_dir.glob("metrics.json.corrupt-*"))
    assert not list(run_dir.glob("*.tmp"))
    err = capsys.readouterr().err
    assert "ckpt_finetune.pt" in err and "starts over" in err


def test_load_checkpoint_names_the_file_and_never_runs_code(tmp_path) -> None:
    from pruning.io import load_checkpoint

    truncated = tmp_path / "t.pt"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=str(truncated)):
        load_checkpoint(truncated)
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    torch.save({"x": _Evil(str(marker))}, evil)
    with pytest.raises(CorruptFileError, match="evil.pt"):
        load_checkpoint(evil)
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_corrupt_metrics_json_is_named_by_read_json(tmp_path) -> None:
    from pruning.io import read_json

    path = tmp_path / "metrics.json"
    path.write_text('{"a": ')
    with pytest.raises(CorruptFileError, match="metrics.json is corrupt or truncated"):
        read_json(path)


# ----------------------------------------------------------------------------- data files
def test_crafted_cifar_pickle_cannot_run_code(tmp_path) -> None:
    from pruning.data import load_cifar

    root = write_fake_cifar(tmp_path / "c", n_train_per_batch=4, n_test=4)
    marker = tmp_path / "pwned"
    with open(root / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Evil(str(marker)), "labels": [0]}, f, protocol=2)
    with pytest.raises(PruneLabError, match=r"data_batch_3 is not a readable CIFAR batch .*refused to load global"):
        load_cifar("cifar10", root, strict_sizes=False)
    assert not marker.exists()


def test_truncated_cifar_batch_names_the_file(tmp_path) -> None:
    from pruning.data import load_cifar

    root = write_fake_cifar(tmp_path / "c", n_train_per_batch=4, n_test=4)
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(PruneLabError, match="test_batch is not a readable CIFAR batch.*re-extract"):
        load_cifar("cifar10", root, strict_sizes=False)


def test_official_layout_still_loads(tmp_path) -> None:
    from pruning.data import load_cifar

    data = load_cifar("cifar10", write_fake_cifar(tmp_path / "c", n_train_per_batch=4, n_test=4), strict_sizes=False)
    assert len(data.train) == 20 and data.train.images.shape[1:] == (3, 32, 32)


def test_method_target_outside_pruning_methods_is_refused() -> None:
    from pruning.pipeline import make_method

    with pytest.raises(PruneLabError, match="not a prune-lab method"):
        make_method({"_target_": "os.system", "name": "l1_norm"})


def test_migration_script_takes_the_class_from_prune_labs_own_config(tmp_path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import migrate_method_settings as migrate
    finally:
        sys.path.pop(0)
    config = tmp_path / "config.yaml"
    config.write_text(
        "method:\n  _target_: tests.no_such_module.Boom\n  name: network_slimming\n  ratio: 0.7\n  sparsity: 0.0001\n"
    )
    assert migrate.settings_from_config(config) == {"sparsity": 0.0001}
    config.write_text("method:\n  _target_: os.system\n  name: ../../evil\n")
    with pytest.raises(PruneLabError, match="not one of prune-lab's methods"):
        migrate.settings_from_config(config)


# ----------------------------------------------------------------------------- writes
def test_writes_keep_the_umask_and_name_a_full_disk(tmp_path, monkeypatch) -> None:
    import errno

    from pruning import io

    old = os.umask(0o002)
    try:
        io.write_json(tmp_path / "m.json", {"a": 1})
        io.save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o664

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(PruneLabError, match="no space left on device: cannot write .*c.pt"):
        io.save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)})
    assert torch.load(tmp_path / "c.pt", weights_only=True)["w"].sum() == 0  # old file intact
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture
def tmpfs(tmp_path):
    """A real 300 kB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk_and_read_only_root(tmpfs, tmp_path) -> None:
    cfg = plain_cfg(TINY_DIGITS, tmpfs / "results")
    with pytest.raises(PruneLabError, match="no space left on device"):
        _run(cfg, tmpfs / "results" / "runs" / "r")
    assert not list(tmpfs.rglob("*.tmp"))
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    message = precheck([f"paths.results_root={tmpfs / 'elsewhere'}"])
    assert message is not None and message.startswith("read-only file system")
    from pruning.cli.report import main as report_main

    assert report_main(["--results-root", str(tmpfs / "results")]) == 2


# ----------------------------------------------------------------------------- prune-report root
def test_report_reads_and_writes_under_the_prune_exp_results_root(tmp_path, monkeypatch) -> None:
    from pruning.cli.report import main as report_main

    root = tmp_path / "shared_root"
    (root / "runs").mkdir(parents=True)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(root))
    assert report_main(["sweep", "--format", "md"]) == 0
    assert list((root / "tables").glob("sweep*.md")) and not list(checkout.rglob("*"))
    monkeypatch.delenv("PRUNE_LAB_RESULTS")
    assert report_main(["sweep", "--format", "csv", f"paths.results_root={root}"]) == 0
    assert list((root / "tables").glob("sweep*.csv")) and not list(checkout.rglob("*"))


# ----------------------------------------------------------------------------- ETA
def test_eta_extrapolates_from_the_steps_after_the_first(tmp_path) -> None:
    """A slow first step (allocator warm-up, kernel choice, compile) must not inflate the ETA:
    the per-epoch estimate comes from the later steps."""
    from pruning.data import load_digits_data
    from pruning.models import build, default_spec
    from pruning.train import Schedule, run_stage

    data = load_digits_data()
    model = build(default_spec("vgg_cifar", depth=11, in_channels=1, hidden=0, cfg=[8, "M", 8, "M", 8]))
    calls, seen = [], []

    def slow_first_step(_model) -> None:
        if not calls:
            time.sleep(1.0)
        calls.append(1)

    stats = run_stage(
        "pretrain",
        model,
        data,
        Schedule(epochs=1, lr=0.01, batch_size=128),
        tmp_path / "ckpt.pt",
        tmp_path / "h.jsonl",
        0,
        grad_hook=slow_first_step,
        quiet=True,
        on_epoch=lambda epoch, seconds: seen.append(seconds),
    )
    epoch_s = json.loads((tmp_path / "h.jsonl").read_text().splitlines()[0])["epoch_s"]
    assert stats["epochs"] == 1 and epoch_s >= 1.0
    assert len(seen) == 1 and seen[0] < 0.5 * epoch_s
