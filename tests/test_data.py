"""The data protocol, the MNIST-family IDX reader (files written here in the exact official
format, gzipped and extracted), the explicit device of the training loops, and the real
Fashion-MNIST / MNIST-5k copies when /work/shared/data is there."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning import PruneLabError
from pruning import data as datasets
from tests.conftest import REPO, plain_cfg, write_fake_cifar, write_fake_mnist, write_idx

SHARED = REPO.parent / "shared" / "data"
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _cfg(root: Path, **extra) -> dict:
    return {
        "name": "mnist",
        "kind": "mnist",
        "root": str(root),
        "download": False,
        "check_md5": True,
        "strict_sizes": False,
        "label": None,
        "train_subset": None,
        "augment": False,
        **extra,
    }


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "extracted"])
def test_idx_files_load_as_28x28_grey_images(tmp_path, gz) -> None:
    root = write_fake_mnist(tmp_path / "mnist", gz=gz)
    data = datasets.load(_cfg(root))
    assert isinstance(data, datasets.ClassificationData) and data.task == "classification"
    assert (len(data.train), len(data.test), data.input_shape, data.num_classes) == (60, 20, (1, 28, 28), 10)
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    assert data.train.labels.tolist() == [i % 10 for i in range(60)]
    assert (data.mean, data.std, data.augment) == ((0.1307,), (0.3081,), False)
    # pixels exactly as written, row-major
    images = np.frombuffer(
        gzip.decompress((root / f"{NAMES[0]}.gz").read_bytes()) if gz else (root / NAMES[0]).read_bytes(),
        np.uint8,
        offset=16,
    ).reshape(60, 1, 28, 28)
    assert torch.equal(data.train.images, torch.from_numpy(images.copy()))
    assert data.info["official_md5"] is False and data.fingerprint == data.info["fingerprint"]
    assert data.label == data.info["label"] == "MNIST (not the official set: 60 train / 20 test images)"
    assert (data.info["train_size"], data.info["test_size"]) == (60, 20)


def test_gz_and_extracted_files_mix_and_give_the_same_data(tmp_path) -> None:
    gz = datasets.load(_cfg(write_fake_mnist(tmp_path / "a", gz=True)))
    mixed = write_fake_mnist(tmp_path / "b", gz=False)
    (mixed / NAMES[1]).unlink()
    write_idx(mixed / NAMES[1], gz.train.labels.numpy(), gz=True)
    both = datasets.load(_cfg(mixed))
    assert both.fingerprint == gz.fingerprint


def test_official_md5_compares_the_extracted_content(tmp_path, monkeypatch) -> None:
    """A re-gzipped copy of the official files (Debian's Fashion-MNIST) is still official."""
    root = write_fake_mnist(tmp_path / "m", gz=True)
    sums = {n: ("0" * 32, hashlib.md5(gzip.decompress((root / f"{n}.gz").read_bytes())).hexdigest()) for n in NAMES}
    monkeypatch.setitem(datasets.IDX, "mnist", {**datasets.IDX["mnist"], "files": sums, "sizes": (60, 20)})
    data = datasets.load(_cfg(root, strict_sizes=True))
    assert data.info["official_md5"] is True and data.label == "MNIST"
    assert datasets.load(_cfg(root, check_md5=False)).info["official_md5"] is None
    assert datasets.load(_cfg(root, label="MNIST (my copy)")).label == "MNIST (my copy)"


def test_strict_sizes_names_the_expected_counts(tmp_path) -> None:
    root = write_fake_mnist(tmp_path / "m")
    with pytest.raises(
        PruneLabError, match=r"expected 60,000 train / 10,000 test images, found 60 / 20.*strict_sizes=false"
    ):
        datasets.load(_cfg(root, strict_sizes=True))


def test_fashion_mnist_is_the_same_reader_with_its_own_constants(tmp_path) -> None:
    root = write_fake_mnist(tmp_path / "f")
    data = datasets.load({**_cfg(root), "name": "fashion_mnist", "kind": "fashion_mnist"})
    assert (data.name, data.mean, data.std) == ("fashion_mnist", (0.2860,), (0.3530,))
    assert data.label.startswith("Fashion-MNIST (not the official set")


# ----------------------------------------------------------------------------- strict parsing
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "extracted"])
def test_bad_magic_names_the_file(tmp_path, gz) -> None:
    root = write_fake_mnist(tmp_path / "m", gz=gz)
    suffix = ".gz" if gz else ""
    labels = (root / f"{NAMES[1]}{suffix}").read_bytes()
    (root / f"{NAMES[0]}{suffix}").write_bytes(labels)  # a labels file where the images belong
    with pytest.raises(
        PruneLabError, match=r"train-images-idx3-ubyte.*bad magic number 2049 \(0x00000801\).*starts with 2051"
    ):
        datasets.load(_cfg(root))


def test_truncated_payload_header_and_gzip_are_named(tmp_path) -> None:
    root = write_fake_mnist(tmp_path / "m", gz=False)
    path = root / NAMES[2]
    full = path.read_bytes()
    path.write_bytes(full[:-100])
    with pytest.raises(
        PruneLabError,
        match=rf"{path} is truncated: its header announces 20 images "
        r"\(20 x 28 x 28 = 15,680 bytes\) but it holds 15,580",
    ):
        datasets.load(_cfg(root))
    path.write_bytes(full[:10])
    with pytest.raises(PruneLabError, match=rf"{path} is truncated: 10 bytes, shorter than its 16-byte IDX header"):
        datasets.load(_cfg(root))
    path.write_bytes(full + b"\0\0\0")
    with pytest.raises(PruneLabError, match=rf"{path} has 3 bytes after the 20 images"):
        datasets.load(_cfg(root))
    path.unlink()
    gz = write_idx(path, np.zeros((20, 28, 28)), gz=True)
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(PruneLabError, match=rf"{gz} is not a readable gzip file.*corrupt or truncated"):
        datasets.load(_cfg(root))


def test_count_mismatch_size_and_label_range_are_named(tmp_path) -> None:
    root = write_fake_mnist(tmp_path / "m", gz=False)
    write_idx(root / NAMES[1], np.arange(59) % 10, gz=False)
    with pytest.raises(
        PruneLabError,
        match=r"count mismatch: .*train-images-idx3-ubyte holds 60 images "
        r"but .*train-labels-idx1-ubyte holds 59 labels",
    ):
        datasets.load(_cfg(root))
    write_idx(root / NAMES[1], np.full(60, 10), gz=False)
    with pytest.raises(PruneLabError, match=r"train-labels-idx1-ubyte: 60 labels outside \[0, 10\)"):
        datasets.load(_cfg(root))
    write_idx(root / NAMES[1], np.arange(60) % 10, gz=False)
    write_idx(root / NAMES[0], np.zeros((60, 32, 32)), gz=False)
    with pytest.raises(PruneLabError, match=r"idx3-ubyte: its header gives 32x32 images; MNIST images are"):
        datasets.load(_cfg(root))


def test_missing_files_give_the_exact_paths_and_the_fix(tmp_path) -> None:
    root = write_fake_mnist(tmp_path / "m")
    (root / f"{NAMES[3]}.gz").unlink()
    for call in (datasets.load, datasets.check_available):
        with pytest.raises(PruneLabError) as err:
            call(_cfg(root))
        msg = str(err.value)
        assert f"{root / NAMES[3]}.gz" in msg and NAMES[0] not in msg
        assert "data.download=true" in msg and "https://ossci-datasets.s3.amazonaws.com/mnist/" in msg
    datasets.check_available(_cfg(root, download=True))  # will be downloaded: no error up front


# ----------------------------------------------------------------------------- download
def _mirror(tmp_path: Path, monkeypatch, good_md5: bool = True) -> Path:
    source = write_fake_mnist(tmp_path / "mirror")
    sums = {
        n: (hashlib.md5((source / f"{n}.gz").read_bytes()).hexdigest() if good_md5 else "0" * 32, "0" * 32)
        for n in NAMES
    }
    mirrors = [(tmp_path / "offline").as_uri() + "/", source.as_uri() + "/"]  # the first one fails
    monkeypatch.setitem(datasets.IDX, "mnist", {**datasets.IDX["mnist"], "files": sums, "mirrors": mirrors})
    return source


def test_download_fetches_the_missing_archives_md5_checked(tmp_path, monkeypatch) -> None:
    source = _mirror(tmp_path, monkeypatch)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / NAMES[0]).write_bytes(gzip.decompress((source / f"{NAMES[0]}.gz").read_bytes()))  # present: kept
    data = datasets.load(_cfg(dest, download=True))
    assert len(data.train) == 60 and not (dest / f"{NAMES[0]}.gz").exists()
    assert sorted(p.name for p in dest.iterdir()) == sorted([NAMES[0], *(f"{n}.gz" for n in NAMES[1:])])


def test_download_with_wrong_md5_or_no_internet_fails_clearly(tmp_path, monkeypatch) -> None:
    _mirror(tmp_path, monkeypatch, good_md5=False)
    with pytest.raises(
        PruneLabError, match=r"could not download train-images-idx3-ubyte.gz .*wrong md5.*Without internet, copy"
    ):
        datasets.load(_cfg(tmp_path / "dest", download=True))
    assert list((tmp_path / "dest").iterdir()) == []  # no partial files left
    monkeypatch.setitem(datasets.IDX, "mnist", {**datasets.IDX["mnist"], "mirrors": ["http://127.0.0.1:9/"]})
    with pytest.raises(PruneLabError, match=r"could not download .*http://127.0.0.1:9/train-images-idx3-ubyte.gz"):
        datasets.load(_cfg(tmp_path / "dest", download=True))


# ----------------------------------------------------------------------------- the protocol
def test_existing_datasets_keep_their_fingerprints_and_splits(tmp_path) -> None:
    """Cached baselines are keyed by these fingerprints: the refactor must not move them."""
    digits = datasets.load({"name": "digits"})
    assert digits.fingerprint == "6a0d06de3d586b39" and digits.info["label"] == "sklearn digits 8x8"
    a, b = digits.split_train(0.5, seed=3)
    order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.train.labels, digits.train.labels[order[:718].sort().values])
    assert torch.equal(b.train.images, digits.train.images[order[718:].sort().values])
    assert a.test is digits.test and a.info["split"] == {"fraction": 0.5, "seed": 3, "size": 718}
    cifar = datasets.load({"name": "cifar10", "root": str(write_fake_cifar(tmp_path / "c")), "strict_sizes": False})
    assert cifar.fingerprint == datasets.fingerprint(
        cifar.train.images, cifar.train.labels, cifar.test.images, cifar.test.labels
    )
    sub = datasets.load({"name": "digits", "train_subset": 100})
    assert torch.equal(sub.train.images, digits.train.images[:100]) and sub.fingerprint == digits.fingerprint


def test_every_kind_implements_the_protocol() -> None:
    for cls in (datasets.ImageData, datasets.FolderImageData):
        assert issubclass(cls, datasets.ClassificationData) and issubclass(cls, datasets.Data)
        assert not getattr(cls, "__abstractmethods__", None), cls
    with pytest.raises(TypeError):
        datasets.Data()  # abstract


def test_to_records_the_device_and_batches_follow_the_protocol(tmp_path) -> None:
    data = datasets.load(_cfg(write_fake_mnist(tmp_path / "m", n_train=50, n_test=21)))
    assert data.device == torch.device("cpu")
    moved = data.to("cpu")
    assert moved.device == torch.device("cpu") and moved.info is data.info
    x, y = next(iter(moved.train_batches(16, torch.Generator().manual_seed(0))))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (16,)
    shards = [torch.cat([lab for _, lab in moved.test_batches(8, r, 2)]) for r in (0, 1)]
    assert torch.equal(torch.cat(shards), moved.test.labels)
    ddp = [
        torch.cat([lab for _, lab in moved.train_batches(7, torch.Generator().manual_seed(1), r, 2)]) for r in (0, 1)
    ]
    assert len(ddp[0]) == len(ddp[1]) == 25
    assert moved.sample_inputs(5, torch.Generator().manual_seed(0)).shape == (5, 1, 28, 28)
    sub = moved.subset_train(30)
    assert len(sub.train) == 30 and sub.device == moved.device
    with pytest.raises(PruneLabError, match=r"data.train_subset=51 must be in \[1, 50\]"):
        moved.subset_train(51)


def test_training_loops_take_the_device_explicitly(tmp_path) -> None:
    from pruning.models import build, default_spec
    from pruning.train import Schedule, evaluate, make_optimizer, run_stage, train_one_epoch

    data = datasets.load(_cfg(write_fake_mnist(tmp_path / "m", n_train=40, n_test=20))).to("cpu")
    torch.manual_seed(0)
    model = build(default_spec("vgg_cifar", depth=5, in_channels=1, hidden=0, cfg=[4, "M", 4]))
    assert evaluate(model, data, 8, device="cpu") == evaluate(model, data, 8)
    stats = train_one_epoch(
        model,
        data,
        make_optimizer(model, Schedule(epochs=1, lr=0.01)),
        16,
        torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    assert set(stats) == {"train_loss", "train_top1"}
    out = run_stage(
        "pretrain",
        model,
        data,
        Schedule(epochs=1, lr=0.01, batch_size=16),
        tmp_path / "c.pt",
        tmp_path / "h.jsonl",
        0,
        quiet=True,
        device="cpu",
    )
    assert out["epochs"] == 1 and "peak_rss_mb" in out


# ----------------------------------------------------------------------------- configs and CLI
def test_configs_compose_and_validate_with_vgg_small(tmp_path) -> None:
    from pruning.pipeline import validate

    root = write_fake_mnist(tmp_path / "fm")
    for name, schedule in (("mnist", "mnist_quick"), ("fashion_mnist", "fashion_mnist_quick")):
        cfg = plain_cfg([f"data={name}", "model=vgg_small", f"data.root={root}", "data.strict_sizes=false"], tmp_path)
        assert (cfg["data"]["kind"], cfg["data"]["in_channels"], cfg["data"]["image_size"]) == (name, 1, 28)
        assert cfg["schedule"]["name"] == schedule
        validate(cfg)
        assert datasets.load(cfg["data"]).input_shape == (1, 28, 28)


@pytest.mark.integration  # slow (3-5 s on 2 cores): the fast tier stays under 5 min
def test_prune_exp_validates_fashion_mnist(tmp_path) -> None:
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(tmp_path / "results"), "COLUMNS": "160"}
    base = [sys.executable, "-m", "pruning.cli.exp", "data=fashion_mnist", "model=vgg_small", "quiet=true"]
    missing = subprocess.run(
        [*base, f"data.root={tmp_path / 'absent'}"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert missing.returncode == 2 and f"{tmp_path / 'absent' / NAMES[0]}.gz" in missing.stderr
    dry = subprocess.run(
        [*base, f"data.root={tmp_path / 'absent'}", "dry_run=true"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr


# ----------------------------------------------------------------------------- real data (when present)
@pytest.mark.skipif(not (SHARED / "mnist-5k").is_dir(), reason="no /work/shared/data/mnist-5k here")
def test_real_mnist_5k_subset() -> None:
    data = datasets.load(_cfg(SHARED / "mnist-5k"))
    assert (len(data.train), len(data.test)) == (4000, 1000)
    assert torch.bincount(data.train.labels).tolist() == [400] * 10
    assert torch.bincount(data.test.labels).tolist() == [100] * 10
    assert data.info["official_md5"] is False
    assert data.label == "MNIST (not the official set: 4,000 train / 1,000 test images)"
    with pytest.raises(PruneLabError, match="strict_sizes=false"):
        datasets.load(_cfg(SHARED / "mnist-5k", strict_sizes=True))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="no /work/shared/data/fashion-mnist here")
def test_real_fashion_mnist_loads_and_trains(tmp_path) -> None:
    from pruning.pipeline import run

    cfg = _cfg(SHARED / "fashion-mnist", name="fashion_mnist", kind="fashion_mnist", strict_sizes=True)
    data = datasets.load(cfg)
    assert (len(data.train), len(data.test), data.input_shape) == (60000, 10000, (1, 28, 28))
    assert data.info["official_md5"] is True and data.label == "Fashion-MNIST"  # Debian's re-gzipped copy
    assert torch.bincount(data.train.labels).tolist() == [6000] * 10
    x = torch.cat([xb for xb, _ in data.test_batches(5000)])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # the constants fit the test set too

    # the dense baseline through the pipeline (2 short epochs; the 10,000 test images are evaluated each epoch)
    run_cfg = plain_cfg(
        [
            "data=fashion_mnist",
            "model=vgg_small",
            "method=none",
            f"data.root={SHARED / 'fashion-mnist'}",
            "data.train_subset=2000",
            "schedule.epochs=2",
            "schedule.batch_size=32",
            "latency.cpu_batch_sizes=[1]",
            "latency.repeats=3",
            "device=cpu",
        ],
        tmp_path,
    )
    run_dir = tmp_path / "run"
    metrics = run(run_cfg, run_dir)
    assert metrics["status"] == "done" and metrics["data"]["label"] == "Fashion-MNIST"
    assert metrics["final"]["top1"] > 60.0, metrics["final"]  # 10 classes: far above chance
    assert json.loads((run_dir / "metrics.json").read_text())["data"]["official_md5"] is True


# ----------------------------------------------------------------------------- checked before any run directory
def _break(root: Path, case: str) -> str:
    """Break the fake MNIST files in ``root`` as ``case`` says; returns what the message must match."""
    images, labels = root / NAMES[0], root / NAMES[1]
    if case == "bad magic":
        images.write_bytes(labels.read_bytes())
        return r"train-images-idx3-ubyte: bad magic number 2049"
    if case == "bad dims":
        write_idx(root / NAMES[2], np.zeros((20, 14, 56)), gz=False)
        return r"t10k-images-idx3-ubyte: its header gives 14x56 images; MNIST images are 28x28.*Fix:"
    if case == "shorter than the header says":
        images.write_bytes(images.read_bytes()[:-100])
        return r"train-images-idx3-ubyte is truncated: its header announces 60 images"
    if case == "longer than the header says":
        labels.write_bytes(labels.read_bytes() + b"\0")
        return r"train-labels-idx1-ubyte has 1 bytes after the 60 labels"
    if case == "truncated gzip":
        (root / NAMES[3]).unlink()
        write_idx(root / NAMES[3], np.arange(20) % 10, gz=True).write_bytes(
            gzip.compress(labels.read_bytes(), mtime=0)[:-12]
        )
        return r"t10k-labels-idx1-ubyte.gz is not a readable gzip file"
    if case == "images vs labels count":
        write_idx(root / NAMES[3], np.arange(19) % 10, gz=False)
        return r"count mismatch: .*holds 20 images but .*holds 19 labels.*Fix:"
    if case == "labels out of range":
        write_idx(root / NAMES[3], np.full(20, 12), gz=False)
        return r"t10k-labels-idx1-ubyte: 20 labels outside \[0, 10\).*Fix:"
    raise AssertionError(case)


BROKEN_IDX = [
    "bad magic",
    "bad dims",
    "shorter than the header says",
    "longer than the header says",
    "truncated gzip",
    "images vs labels count",
    "labels out of range",
]


@pytest.mark.parametrize("case", BROKEN_IDX)
def test_broken_idx_files_are_refused_by_the_up_front_check(tmp_path, case) -> None:
    """``check_available`` (prune-exp's precheck: before Hydra makes the run directory) reads the
    IDX headers and lengths, so a broken file never leaves a failed run behind."""
    root = write_fake_mnist(tmp_path / "m", gz=False)
    datasets.check_available(_cfg(root))  # intact: passes
    datasets._CHECKED.clear()
    pattern = _break(root, case)
    with pytest.raises(PruneLabError, match=pattern):
        datasets.check_available(_cfg(root))
    with pytest.raises(PruneLabError, match=pattern):  # the loader says the same
        datasets.load(_cfg(root))


def test_strict_sizes_is_checked_up_front_and_names_the_fix(tmp_path) -> None:
    root = write_fake_mnist(tmp_path / "m")
    for kind in ("mnist", "fashion_mnist"):
        with pytest.raises(PruneLabError, match=r"found 60 / 20 .*Fix: data\.strict_sizes=false"):
            datasets.check_available(_cfg(root, name=kind, kind=kind, strict_sizes=True))
    cifar = write_fake_cifar(tmp_path / "c")
    cifar_cfg = {"name": "cifar10", "kind": "cifar10", "root": str(cifar)}
    with pytest.raises(PruneLabError, match=r"found 200 / 60 .*Fix: data\.strict_sizes=false"):
        datasets.check_available({**cifar_cfg, "strict_sizes": True})
    datasets.check_available({**cifar_cfg, "strict_sizes": False})


def test_broken_cifar_batches_are_refused_up_front(tmp_path) -> None:
    root = write_fake_cifar(tmp_path / "c")
    cfg = {"name": "cifar10", "kind": "cifar10", "root": str(root), "strict_sizes": False}
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(PruneLabError, match=r"data_batch_3 is not a readable CIFAR batch"):
        datasets.check_available(cfg)


@pytest.mark.parametrize(
    "kind,key,value,right",
    [
        ("mnist", "num_classes", 5, 10),
        ("fashion_mnist", "in_channels", 3, 1),
        ("cifar10", "num_classes", 100, 10),
        ("cifar100", "image_size", 28, 32),
        ("digits", "image_size", 28, 8),
    ],
)
def test_class_count_and_image_shape_must_be_the_datasets(tmp_path, kind, key, value, right) -> None:
    """The model is built from data.num_classes / in_channels / image_size: a value the files
    contradict (MNIST with 5 classes) would crash mid-training; refuse it up front."""
    cfg = {"name": kind, "kind": kind, "root": str(tmp_path / "absent"), "download": True, key: value}
    with pytest.raises(PruneLabError, match=rf"data\.{key}={value}.* has {right} .*Fix: data\.{key}={right}"):
        datasets.check_available(cfg)
    datasets.check_available({**cfg, key: right})  # (download=true: the files come later)


def test_each_dataset_is_read_once_per_process_unless_its_files_change(tmp_path, monkeypatch) -> None:
    root = write_fake_mnist(tmp_path / "m", gz=False)
    reads = []
    real = datasets._read_idx
    monkeypatch.setattr(datasets, "_read_idx", lambda *a, **k: reads.append(a) or real(*a, **k))
    datasets.check_available(_cfg(root))
    datasets.check_available(_cfg(root))
    assert len(reads) == 1
    _break(root, "labels out of range")  # a new file: read again
    with pytest.raises(PruneLabError, match="outside"):
        datasets.check_available(_cfg(root))
    assert len(reads) == 2


@pytest.mark.integration  # prune-exp in a subprocess (~4 s each)
@pytest.mark.parametrize("case", ["bad magic", "images vs labels count", "strict sizes", "num_classes"])
def test_prune_exp_refuses_broken_image_data_and_leaves_nothing(tmp_path, case) -> None:
    root = write_fake_mnist(tmp_path / "m", gz=False)
    extra = ["data.strict_sizes=false"]
    if case == "strict sizes":
        extra, pattern = [], r"data\.strict_sizes=false"
    elif case == "num_classes":
        extra, pattern = [*extra, "data.num_classes=5"], r"data\.num_classes=10"
    else:
        pattern = _break(root, case)
    results = tmp_path / "results"
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(results), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "pruning.cli.exp", "data=mnist", f"data.root={root}", "model=lenet5_caffe", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert re.search(pattern, " ".join(out.stderr.split())), out.stderr
    assert not list(results.rglob("*")) if results.exists() else True
