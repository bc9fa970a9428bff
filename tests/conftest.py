"""Shared fixtures: CIFAR files in the exact official python-pickle format (tiny), config
composition through Hydra's compose API, a fast CPU config for pipeline runs, and tiny character
language models on a generated corpus (the AGP and FLOP tests)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning.methods.base import PruneContext
from pruning.models import build, default_spec
from pruning.text_data import TextData, TokenSplit

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10"

os.environ.setdefault("COLUMNS", "120")


def write_fake_cifar(
    root: Path, n_train_per_batch: int = 40, n_test: int = 60, seed: int = 0, variant: str = "cifar10"
) -> Path:
    """Write ``root/cifar-10-batches-py`` (or ``cifar-100-python``) exactly as the official
    archive lays it out: pickled dicts with uint8 'data' rows (3072 = R|G|B planes) and labels.
    Images carry a class-dependent colour so a small net can learn them."""
    rng = np.random.default_rng(seed)
    n_classes = 10 if variant == "cifar10" else 100

    def batch(n: int, name: str) -> dict:
        labels = rng.integers(0, n_classes, n)
        base = (labels[:, None] * 97 % 256).astype(np.float64)
        data = np.clip(base + rng.normal(0, 30, (n, 3072)), 0, 255).astype(np.uint8)
        key = "labels" if variant == "cifar10" else "fine_labels"
        out = {
            "batch_label": name.encode(),
            key: labels.tolist(),
            "data": data,
            "filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        if variant == "cifar100":
            out["coarse_labels"] = (labels // 5).tolist()
        return out

    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(n_train_per_batch, f"training batch {i} of 5") for i in range(1, 6)}
        files["test_batch"] = batch(n_test, "testing batch 1 of 1")
        meta = {
            "label_names": [f"class{i}" for i in range(10)],
            "num_cases_per_batch": n_train_per_batch,
            "num_vis": 3072,
        }
        files["batches.meta"] = meta
    else:
        folder = root / "cifar-100-python"
        files = {
            "train": batch(5 * n_train_per_batch, "training batch 1 of 1"),
            "test": batch(n_test, "testing batch 1 of 1"),
        }
        files["meta"] = {
            "fine_label_names": [f"c{i}" for i in range(100)],
            "coarse_label_names": [f"s{i}" for i in range(20)],
        }
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return root


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Path:
    return write_fake_cifar(tmp_path / "cifar")


def compose(overrides: list[str]):
    import pruning.cli.exp  # noqa: F401  (registers the run-directory resolver)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=False)


def plain_cfg(overrides: list[str], results: Path) -> dict:
    from omegaconf import OmegaConf

    cfg = compose([f"paths.results_root={results}", "quiet=true", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


TINY_CIFAR = [
    "data=cifar10",
    "data.strict_sizes=false",
    "model=resnet20",
    "schedule.epochs=2",
    "schedule.finetune_epochs=1",
    "schedule.batch_size=50",
    "latency.cpu_batch_sizes=[1]",
    "latency.repeats=3",
]


# ----------------------------------------------------------------------------- shared helpers
# (every test module takes these from here, never from another test module)
QUICK_DIGITS = ["schedule.epochs=2", "schedule.finetune_epochs=1", "quiet=true"]
IMAGENET_CLASSES = ["n01440764", "n01443537", "n01484850"]


def prune_exp(args: list[str], results: Path, cwd: Path | None = None):
    """``prune-exp ARGS`` in a subprocess, results under ``results``."""
    import subprocess
    import sys

    env = {**os.environ, "PRUNE_LAB_RESULTS": str(results), "COLUMNS": "160", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "pruning.cli.exp", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd or results, timeout=600)


def metrics_files(results: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted((results / "runs").rglob("metrics.json"))]


def pipeline_cfg(fake_cifar: Path, results: Path, *extra: str) -> dict:
    """A tiny CIFAR pipeline config (TINY_CIFAR) over the fake CIFAR files."""
    return plain_cfg([*TINY_CIFAR, f"data.root={fake_cifar}", *extra], results)


def run_path(metrics: dict, results_root: Path) -> Path:
    """The directory a run record names. ``run_dir`` is relative to the working directory, or
    ``<results root's name>/runs/...`` when the results root lies outside it (tests: tmp_path)."""
    path = Path(metrics["run_dir"])
    return path if path.is_absolute() or path.exists() else Path(results_root).parent / path


def run_pipeline(cfg: dict) -> dict:
    """``pruning.pipeline.run`` in its deterministic run directory, quietly."""
    from rich.console import Console

    from pruning.pipeline import run, run_subdir

    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    return run(cfg, Path(cfg["paths"]["results_root"]) / "runs" / run_subdir(cfg), console=quiet)


def write_image_folder(root: Path, n_train: int = 6, n_val: int = 3, side: int = 40, seed: int = 0) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG``: class-coloured noisy JPEGs, as ImageNet is laid out."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(IMAGENET_CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([80 * c, 255 - 80 * c, 120], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 25, (side, side + 4 * i % 9, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{split}_{i}.JPEG", quality=90)
    return root


# ------------------------------------------------------------------ IDX files (MNIST family), official format
def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 IDX: magic 0x0000 08 <ndim>, then each dimension as a big-endian uint32, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    raw = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def write_fake_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0) -> Path:
    """The four MNIST files in ``root`` (class-dependent brightness, so a net can learn them)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.clip(labels[:, None, None] * 25 + rng.normal(0, 20, (n, 28, 28)), 0, 255)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


# ----------------------------------------------------------------------------- character LMs (AGP, FLOP)
VOCAB = 12
TINY_SRU = dict(num_classes=VOCAB, depth=2, n_d=32, n_proj=16, dropout=0.0)  # n_e = V = 12 < n_d: k = 4
TINY_TXL = dict(
    num_classes=VOCAB, n_layer=1, d_model=32, n_head=2, d_head=16, d_inner=64, dropout=0.0, tgt_len=32, mem_len=16
)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tiny training runs (use: pytestmark = usefixtures(...))."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_corpus(n: int = 10_000, seed: int = 0, held_out: int | None = None) -> TextData:
    """A stream of 20 random 'words' (2-5 symbols of a 12-symbol alphabet): learnable, not trivial.
    The valid and test splits are the last ``held_out`` symbols each (default n // 10)."""
    g = torch.Generator().manual_seed(seed)
    words = [torch.randint(0, VOCAB, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g) for _ in range(20)]
    ids = torch.cat([words[int(i)] for i in torch.randint(0, 20, (n // 3,), generator=g)])[:n].to(torch.uint8)
    cut = n // 10 if held_out is None else held_out
    split = lambda a, b: TokenSplit(ids[a:b])  # noqa: E731
    return TextData(
        "tiny", split(0, n - 2 * cut), split(n - 2 * cut, n - cut), split(n - cut, n), tuple(range(VOCAB)), 32, 32
    )


def lm_model(family: str, seed: int = 0, **kw) -> torch.nn.Module:
    """A tiny SRU (family sru_lm) or Transformer-XL, seeded."""
    torch.manual_seed(seed)
    return build(default_spec(family, **{**(TINY_SRU if family == "sru_lm" else TINY_TXL), **kw}))


def tokens(batch: int = 3, length: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def lm_ctx(tmp_path: Path, run: str = "run", data: TextData | None = None, cache: bool = False, **kw) -> PruneContext:
    """A PruneContext on ``data`` (default: ``tiny_corpus()``) with the run directory ``tmp_path/run``
    and, with ``cache``, the cache ``tmp_path/cache`` for the source "dense-src"."""
    work = tmp_path / run
    work.mkdir(parents=True, exist_ok=True)
    return PruneContext(
        data=data if data is not None else tiny_corpus(),
        input_shape=(1,),
        work_dir=work,
        cache_dir=tmp_path / "cache" if cache else None,
        source_id="dense-src" if cache else None,
        **kw,
    )


# a fast pipeline run of a character LM on write_corpus's text, and a tiny SRU under it
LM_QUICK = [
    "schedule.epochs=1",
    "schedule.finetune_epochs=1",
    "schedule.batch_size=4",
    "schedule.bptt=16",
    "schedule.eval_bptt=16",
    "schedule.warmup_steps=5",
    "schedule.test_batch_size=4",
    "latency.cpu_batch_sizes=[1]",
    "latency.repeats=3",
]
TINY_SRU_PIPELINE = ["model=sru_small", "model.depth=2", "model.n_d=32", "model.n_proj=16", "model.n_e=16", *LM_QUICK]


def write_corpus(path: Path, n: int = 6000) -> str:
    """A tiny text file for data=text_corpus: random words and tags."""
    words = [b"alpha ", b"beta ", b"gamma ", b"delta. ", b"<tag>", b"</tag>\n"]
    g = torch.Generator().manual_seed(0)
    path.write_bytes(b"".join(words[int(i)] for i in torch.randint(0, len(words), (n // 5,), generator=g))[:n])
    return str(path)


def text_corpus_cfg(tmp_path: Path, *overrides: str) -> dict:
    """The plain config of a pipeline run on ``write_corpus``'s text, results under tmp_path/results."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    return plain_cfg(["data=text_corpus", f"data.path={corpus}", *overrides], tmp_path / "results")
