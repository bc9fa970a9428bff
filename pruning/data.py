"""Datasets behind one protocol: what the pipeline, the training loops and the methods use.

The protocol
------------
``Data`` (abstract) is everything a run may ask of a dataset, with nothing image-specific in it;
``ClassificationData`` adds ``num_classes`` / ``mean`` / ``std`` for labelled images. A dataset
object has ``name``, ``train`` and ``test`` splits (``len()``, ``.to(device)``,
``.subset(indices)``), ``info`` (what metrics.json records: source, label, official_md5,
fingerprint, sizes), ``augment``, ``device`` (where its batches land; recorded by
``to(device)``), and:

    train_batches(batch_size, generator, rank=0, world_size=1) -> iterator of (inputs, targets)
    test_batches(batch_size, rank=0, world_size=1)             -> iterator of (inputs, targets), in order
    sample_inputs(count, generator)                            -> un-augmented training inputs
    input_shape                                                -> one input's shape, no batch dimension
    to(device), split_train(fraction, seed), subset_train(count), label, fingerprint
    subset_test(count)                                         -> labelled images: a balanced test subset

Written once in ``Data``: ``to``, ``split_train``, ``subset_train``, ``label``, ``fingerprint`` and
the DDP sharding rules (train: every rank draws the same permutation and takes every
world_size-th index of it, trimmed to a multiple of world_size; test: contiguous shards). Each
kind supplies how its batches are made:

* ``ImageData``: small image sets in memory as uint8 (N, C, H, W) tensors, so the same code runs
  on CPU or keeps the whole set on a GPU, and pad-crop + flip are a few batched tensor ops
  instead of per-image Python. CIFAR-10/100 (official python-pickle layout), the MNIST family
  (official IDX files: MNIST, Fashion-MNIST) and the embedded sklearn digits.
* ``FolderImageData``: ImageNet-style class folders read through a DataLoader with workers.

CIFAR is read from ``cifar-10-batches-py/`` or ``cifar-100-python/`` under ``root``, the MNIST
family from the four IDX files (gzipped or not) directly in ``root``; both download on request.
Integrity is checked by shape and count; the official md5 sums are compared and recorded (a
re-encoded copy, such as the JPEG copy of CIFAR used on machines without internet, loads but is
labelled as not official).

Language models: ``pruning.text_data.TextData``
-----------------------------------------------
A byte-level corpus (enwik8; any file through ``data=text_corpus``) is a ``Data`` subclass whose
splits are contiguous uint8 streams (train / valid / test): ``train_batches`` cuts the stream into
``batch_size`` contiguous lanes and yields BPTT windows in order (x (B, T), y (B*T,) int64);
``test_batches`` walks the valid or test stream the same way, so bits per character is exact;
``input_shape`` is ``(1,)`` (MACs per character); ``task = "language_model"``. ``load`` below
dispatches to it; the loops in train.py pick the metric by ``data.task``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning import PruneLabError
from pruning.data_protocol import Data, canonical_device, rank_share, shard

# Official archive + per-file md5 sums (the same values torchvision checks).
CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "tgz_md5": "c58f30108f718f92721af3b95e74349a",
        "train": {
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        },
        "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
        "label_key": "labels",
        "num_classes": 10,
        "sizes": (50000, 10000),
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2023, 0.1994, 0.2010),
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "tgz_md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": {"train": "16019d7e3df5f24257cddd939b257f8d"},
        "test": {"test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
        "label_key": "fine_labels",
        "num_classes": 100,
        "sizes": (50000, 10000),
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}

# The MNIST family in the official IDX format. Per file: (md5 of the official .gz archive, md5 of
# the extracted file). The archive sums are torchvision's (MNIST.resources / FashionMNIST.resources)
# and check downloads; the extracted sums identify the official *content* whichever way it is
# stored (gzipped, extracted, or re-gzipped as Debian's dataset-fashion-mnist package does), and
# are what ``official_md5`` reports. Normalisation: the standard constants, i.e. the mean/std of
# the full official training set (MNIST's 0.1307/0.3081 as in the PyTorch examples; Fashion-MNIST's
# 0.2860/0.3530 measured on its 60,000 training images), kept fixed for subsets and partial copies.
IDX = {
    "mnist": {
        "pretty": "MNIST",
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        "files": {
            "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        },
        "num_classes": 10,
        "sizes": (60000, 10000),
        "mean": (0.1307,),
        "std": (0.3081,),
    },
    "fashion_mnist": {
        "pretty": "Fashion-MNIST",
        "mirrors": [
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ],
        "files": {
            "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
        "num_classes": 10,
        "sizes": (60000, 10000),
        "mean": (0.2860,),
        "std": (0.3530,),
    },
}
IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES, IDX_LABELS = 2051, 2049  # magic numbers: 0x00000803 (uint8, 3 dims), 0x00000801 (uint8, 1 dim)
IDX_IMAGE_SIZE = 28


# ----------------------------------------------------------------------------- the protocol
# ``Data`` and the shared helpers live in pruning.data_protocol (text_data builds on them too)


class ClassificationData(Data):
    """Labelled images: batches are (float inputs (B, *input_shape), normalised with
    ``mean``/``std`` per channel; int64 class indices (B,) in [0, num_classes))."""

    task = "classification"
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def subset_test(self, count: int) -> ClassificationData:
        """Only ``count`` test items (``data.test_subset``: a quick look evaluates less): the first
        count/C of every class in file order (``balanced_indices``), kept in file order, so the
        subset is deterministic and balanced; the training set is unchanged."""
        if not 0 < count <= len(self.test):
            raise PruneLabError(
                f"data.test_subset={count} must be in [1, {len(self.test):,}] (the test images read); "
                "data.test_subset=null evaluates on all of them"
            )
        labels = self.test.labels.tolist()
        return self._replace(test=self.test.subset(balanced_indices(labels, count, self.num_classes)))


# ----------------------------------------------------------------------------- in-memory images
@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, indices: Sequence[int] | torch.Tensor) -> Split:
        idx = torch.as_tensor(indices, dtype=torch.long).to(self.labels.device)
        return Split(self.images.index_select(0, idx), self.labels.index_select(0, idx))


@dataclass
class ImageData(ClassificationData):
    """A small-image dataset held in memory, plus what the pipeline records about it."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True  # pad-4 random crop + horizontal flip (CIFAR recipe)
    info: dict = field(default_factory=dict)  # label, md5 status, fingerprint, sizes
    device: torch.device | None = None  # where the tensors are (None: read from them)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device) if self.device is not None else self.train.labels.device

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def _replace(self, **changes: Any) -> ImageData:
        return dataclasses.replace(self, **changes)

    def normalise(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, C, H, W), normalised per channel."""
        mean = torch.tensor(self.mean, device=images_u8.device).view(1, -1, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(self.std, device=images_u8.device).view(1, -1, 1, 1) * 255.0)
        return (images_u8.float() - mean) * inv_std

    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented, normalised training batches; deterministic given the generator.

        All random numbers of the epoch (order, crop offsets, flips) are drawn up front on the
        CPU generator and moved to the data's device once, so the loop issues no host work per
        step. With ``world_size > 1`` (DDP) every rank draws the same permutation and takes
        every world_size-th index of it (the epoch is trimmed to a multiple of world_size)."""
        n = len(self.train)
        order = torch.randperm(n, generator=generator)
        pad = 4
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        if world_size > 1:
            order, dy, dx, flip = (rank_share(t, rank, world_size) for t in (order, dy, dx, flip))
        order, dy, dx, flip = (t.to(self.device, non_blocking=True) for t in (order, dy, dx, flip))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            images = self.train.images.index_select(0, idx)
            if self.augment:
                sl = slice(start, start + batch_size)
                images = crop_flip(images, pad, dy[sl], dx[sl], flip[sl])
            yield self.normalise(images), self.train.labels.index_select(0, idx)

    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` random training images, normalised and not augmented: (count, C, H, W)."""
        idx = torch.randperm(len(self.train), generator=generator)[:count].to(self.device)
        return self.normalise(self.train.images.index_select(0, idx))

    def test_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Test batches in order; with DDP each rank gets a contiguous shard (no overlap)."""
        lo, hi = shard(len(self.test), rank, world_size)
        for start in range(lo, hi, batch_size):
            end = min(start + batch_size, hi)
            yield self.normalise(self.test.images[start:end]), self.test.labels[start:end]


def crop_flip(images: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``pad``, crop HxW at per-image offsets (dy, dx), flip where ``flip``.

    Batched: per-image gather indices instead of a Python loop over images.
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = dy[:, None] + ar_h[None, :]  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], ar_w.flip(0)[None, :], ar_w[None, :])  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))  # (B, C, H, W+2p)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random pad-crop + horizontal flip of a batch (offsets drawn from ``generator``)."""
    b = images.shape[0]
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    return crop_flip(images, pad, dy, dx, flip)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(*tensors: torch.Tensor) -> str:
    """Short content hash of the data actually used (images + labels)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _missing_cifar_message(name: str, root: Path, missing: list[str]) -> str:
    meta = CIFAR[name]
    folder = root / meta["folder"]
    return (
        f"{name} not found: expected the official python version at {folder}/ "
        f"(missing: {', '.join(missing)}).\n"
        f"  Fix: run again with data.download=true (needs internet), or download {meta['url']} "
        f"and extract it into {root}/ (it creates {meta['folder']}/),\n"
        f"  or point data.root (or paths.data_root / $PRUNE_LAB_DATA) at the folder that holds {meta['folder']}/."
    )


def download_cifar(name: str, root: Path) -> None:
    meta = CIFAR[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(meta["url"]).name
    tmp = archive.with_suffix(".part")
    try:
        with urllib.request.urlopen(meta["url"], timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PruneLabError(
            f"could not download {meta['url']} ({e}). Without internet, copy the archive to {archive} "
            f"or extract it into {root}/ and run again."
        ) from None
    if _md5(tmp) != meta["tgz_md5"]:
        tmp.unlink(missing_ok=True)
        raise PruneLabError(f"downloaded {archive.name} has the wrong md5; try again")
    tmp.rename(archive)
    with tarfile.open(archive, "r:gz") as tar:
        try:
            tar.extractall(root, filter="data")  # refuses absolute paths / links out of root
        except TypeError:  # Python < 3.10.12 has no extraction filters
            tar.extractall(root)


class CifarUnpickler(pickle.Unpickler):
    """Reads the official CIFAR python batches and nothing else: dicts, lists, strings, bytes,
    numbers and numpy arrays. Any other global a pickle names (``os.system``, a class, ...) is
    refused, so a crafted file in ``data.root`` cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load global {module}.{name}: not part of the official "
            "CIFAR layout (dicts, lists, strings, bytes and numpy arrays only)"
        )


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR python batch, read with the restricted unpickler; any problem names the file."""
    try:
        with open(path, "rb") as f:
            entry = CifarUnpickler(f, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        UnicodeDecodeError,
        MemoryError,
    ) as e:
        raise PruneLabError(
            f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}); it is corrupt, "
            "truncated or not the official python-pickle layout: delete the folder and "
            "re-extract the official archive (or use data.download=true)"
        ) from None
    except OSError as e:
        raise PruneLabError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(entry, dict):
        raise PruneLabError(
            f"{path} is not a CIFAR batch (holds a {type(entry).__name__}, not a dict); re-extract the official archive"
        )
    return entry


def _read_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for fname in files:
        entry = read_cifar_batch(folder / fname)
        try:
            data = np.asarray(entry["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError(f"'data' has shape {data.shape}, expected (N, 3072)")
            batch_labels = [int(v) for v in entry[label_key]]
            if len(batch_labels) != len(data):
                raise ValueError(f"{len(batch_labels)} labels for {len(data)} images")
        except (KeyError, ValueError, TypeError) as e:
            raise PruneLabError(
                f"{folder / fname} is not in the official CIFAR layout ({type(e).__name__}: {e}); "
                "re-extract the official archive"
            ) from None
        images.append(data)
        labels.extend(batch_labels)
    data = np.concatenate(images).reshape(-1, 3, 32, 32)  # rows are R(1024) G(1024) B(1024)
    return data, np.asarray(labels, dtype=np.int64)


def _read_cifar(name: str, folder: Path, strict_sizes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images and labels of a CIFAR folder, every content check made (layout,
    sizes, label range); any problem is a ``PruneLabError`` naming the file and the fix."""
    meta = CIFAR[name]
    x_train, y_train = _read_batches(folder, list(meta["train"]), meta["label_key"])
    x_test, y_test = _read_batches(folder, list(meta["test"]), meta["label_key"])
    n_train, n_test = meta["sizes"]
    if (len(x_train), len(x_test)) != (n_train, n_test) and strict_sizes:
        raise PruneLabError(
            f"{folder}: expected {n_train:,} train / {n_test:,} test images, found {len(x_train):,} / {len(x_test):,} "
            f"(incomplete, or a subset of {PRETTY[name]}). Fix: data.strict_sizes=false to train on this smaller "
            "set (its tables say so), or re-extract the official archive (data.download=true)"
        )
    for labels, split in ((y_train, "train"), (y_test, "test")):
        bad = int(((labels < 0) | (labels >= meta["num_classes"])).sum())
        if bad:
            raise PruneLabError(
                f"{folder}: {bad:,} {split} labels outside [0, {meta['num_classes']}): not {PRETTY[name]}. "
                "Fix: re-extract the official archive (data.download=true)"
            )
    return x_train, y_train, x_test, y_test


def load_cifar(
    name: str, root: str | Path, download: bool = False, check_md5: bool = True, strict_sizes: bool = True
) -> ImageData:
    if name not in CIFAR:
        raise PruneLabError(f"unknown CIFAR variant {name!r}; known: {', '.join(CIFAR)}")
    meta = CIFAR[name]
    root = Path(root).expanduser().resolve()
    folder = root / meta["folder"]
    files = [*meta["train"], *meta["test"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and download:
        download_cifar(name, root)
        missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise PruneLabError(_missing_cifar_message(name, root, missing))
    x_train, y_train, x_test, y_test = _read_cifar(name, folder, strict_sizes)
    official = (
        all(_md5(folder / f) == md5 for f, md5 in {**meta["train"], **meta["test"]}.items()) if check_md5 else None
    )
    train = Split(torch.from_numpy(x_train), torch.from_numpy(y_train))
    test = Split(torch.from_numpy(x_test), torch.from_numpy(y_test))
    info = {
        "source": str(folder),
        "official_md5": official,
        "fingerprint": fingerprint(train.images, train.labels, test.images, test.labels),
    }
    return ImageData(name, train, test, meta["num_classes"], meta["mean"], meta["std"], True, info)


def load_digits_data(test_fraction: float = 0.2) -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images, offline): the embedded
    default dataset. Deterministic split: every 5th image is a test image."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    step = round(1 / test_fraction)
    is_test = np.arange(len(labels)) % step == 0
    train = Split(torch.from_numpy(images[~is_test]), torch.from_numpy(labels[~is_test]))
    test = Split(torch.from_numpy(images[is_test]), torch.from_numpy(labels[is_test]))
    info = {
        "source": "sklearn.datasets.load_digits",
        "official_md5": None,
        "fingerprint": fingerprint(train.images, train.labels, test.images, test.labels),
    }
    mean = float(train.images.float().mean() / 255)
    std = float(train.images.float().std() / 255)
    return ImageData("digits", train, test, 10, (mean,), (std,), False, info)


def _check_fixed_shape(kind: str, cfg: dict) -> None:
    """``data.num_classes`` / ``in_channels`` / ``image_size`` of a dataset whose files fix them
    (CIFAR, the MNIST family, digits) must be those values: the model is built from them."""
    meta = CIFAR.get(kind) or IDX.get(kind) or {}
    fixed = {
        "num_classes": meta.get("num_classes", 10),
        "in_channels": 3 if kind in CIFAR else 1,
        "image_size": 32 if kind in CIFAR else (IDX_IMAGE_SIZE if kind in IDX else 8),
    }
    units = {"num_classes": "classes", "in_channels": "channels", "image_size": "pixels a side"}
    for key, value in fixed.items():
        given = cfg.get(key)
        if given is not None and str(given) != str(value):
            raise PruneLabError(
                f"data.{key}={given!r}, but {PRETTY[kind]} has {value} {units[key]}: the model is built from it. "
                f"Fix: data.{key}={value} (or leave it out: data={cfg.get('name', kind)} sets it)"
            )


_CHECKED: set[tuple] = set()  # datasets whose content passed in this process: (files' identity, settings)


def _files_key(paths: list[Path], *settings: Any) -> tuple:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for p in paths]
    return (*stats, *settings)


def check_available(cfg: dict) -> None:
    """Fail before any training, and before any run directory exists, if a dataset is neither
    present nor going to be downloaded, or if its files are broken: IDX headers and lengths,
    CIFAR batches, counts, label range, the official sizes (``strict_sizes``), and the class
    count / image shape the config gives. Text corpora: ``pruning.text_data.check_available``.
    Files that passed once in this process (same size and mtime) are not read again."""
    kind = cfg.get("kind", cfg["name"])
    if kind in TEXT_KINDS:
        from pruning import text_data

        text_data.check_available(cfg)
        return
    if kind == "imagenet":
        check_imagenet(cfg)
    if kind in (*CIFAR, *IDX, "digits"):
        _check_fixed_shape(kind, cfg)
    strict = bool(cfg.get("strict_sizes", True))
    if kind in CIFAR:
        root = Path(cfg["root"]).expanduser().resolve()
        folder = root / CIFAR[kind]["folder"]
        files = [*CIFAR[kind]["train"], *CIFAR[kind]["test"]]
        missing = [f for f in files if not (folder / f).is_file()]
        if missing and cfg.get("download"):
            return  # downloaded (and checked) by the run
        if missing:
            raise PruneLabError(_missing_cifar_message(kind, root, missing))
        key = _files_key([folder / f for f in files], kind, strict)
        if key not in _CHECKED:
            _read_cifar(kind, folder, strict)
            _CHECKED.add(key)
    if kind in IDX:
        root = Path(cfg["root"]).expanduser().resolve()
        paths = [idx_path(root, name) for name in IDX[kind]["files"]]
        if None in paths and cfg.get("download"):
            return
        if None in paths:
            missing = [name for name, p in zip(IDX[kind]["files"], paths, strict=True) if p is None]
            raise PruneLabError(_missing_idx_message(kind, root, missing))
        key = _files_key(paths, kind, strict)  # type: ignore[arg-type]
        if key not in _CHECKED:
            _read_idx(kind, root, strict, check_md5=False)
            _CHECKED.add(key)


TEXT_KINDS = ("enwik8", "text_corpus")
KINDS = (*CIFAR, *IDX, "digits", "imagenet", *TEXT_KINDS)


def load(cfg: dict) -> Data:
    """Load the dataset a ``data`` config names (plain dict from conf/data/*.yaml)."""
    kind = cfg.get("kind", cfg["name"])
    if kind in TEXT_KINDS:
        from pruning.text_data import load_text

        return load_text(cfg)
    if kind == "imagenet":
        return load_imagenet(cfg)
    files = dict(
        download=bool(cfg.get("download")),
        check_md5=cfg.get("check_md5", True),
        strict_sizes=cfg.get("strict_sizes", True),
    )
    if kind in CIFAR:
        data = load_cifar(kind, cfg["root"], **files)
    elif kind in IDX:
        data = load_idx(kind, cfg["root"], **files)
    elif kind == "digits":
        data = load_digits_data()
    else:
        raise PruneLabError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    data.augment = bool(cfg.get("augment", data.augment))
    sizes = (len(data.train), len(data.test))  # as read, before train_subset / test_subset
    subset = cfg.get("train_subset")
    if subset is not None:
        subset = int(subset)
        data = data.subset_train(subset)
    test_subset = cfg.get("test_subset")
    if test_subset is not None:
        test_subset = int(test_subset)
        data = data.subset_test(test_subset)
    data.info.update(
        label=cfg.get("label") or default_label(kind, data.info.get("official_md5"), sizes),
        train_size=len(data.train),
        test_size=len(data.test),
        train_subset=subset or None,
        test_subset=test_subset or None,
    )
    return data


PRETTY = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "digits": "sklearn digits 8x8",
    **{kind: meta["pretty"] for kind, meta in IDX.items()},
}


def default_label(kind: str, official_md5: bool | None, sizes: tuple[int, int] | None = None) -> str:
    """The table label of ``kind`` when ``data.label`` is not set. ``sizes``: the (train, test)
    sizes read, for the MNIST family (a smaller set than the official one is named as such)."""
    pretty = PRETTY[kind]
    official_sizes = IDX[kind]["sizes"] if kind in IDX else None
    if sizes is not None and official_sizes is not None and tuple(sizes) != tuple(official_sizes):
        return f"{pretty} (not the official set: {sizes[0]:,} train / {sizes[1]:,} test images)"
    if official_md5 is False:
        return f"{pretty} (non-official copy: md5 differs)"
    return pretty


# ----------------------------------------------------------------------------- MNIST family (IDX)
def idx_path(root: Path, name: str) -> Path | None:
    """The file holding ``name`` under ``root``: the extracted file if present, else ``name.gz``."""
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _missing_idx_message(kind: str, root: Path, missing: list[str]) -> str:
    meta = IDX[kind]
    expected = "\n".join(f"    {root / name}.gz   (or extracted: {root / name})" for name in missing)
    return (
        f"{kind} not found: expected the official IDX files in {root}/; missing:\n{expected}\n"
        f"  Fix: run again with data.download=true (needs internet), or download "
        f"{', '.join(f'{n}.gz' for n in missing)} from {meta['mirrors'][0]} into {root}/ (gzipped or extracted),\n"
        f"  or point data.root (or paths.data_root / $PRUNE_LAB_DATA) at the folder that holds them."
    )


def _fetch(urls: list[str], dest: Path, md5: str) -> None:
    """Download the first of ``urls`` that answers with the right md5 into ``dest``, atomically
    (a per-process temp file in the same folder, renamed once its md5 is right)."""
    errors = []
    for url in urls:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")  # per process: concurrent jobs
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            if _md5(tmp) != md5:
                errors.append(f"{url}: wrong md5")
                continue
            os.replace(tmp, dest)
            return
        except OSError as e:
            errors.append(f"{url}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    raise PruneLabError(
        f"could not download {dest.name} ({'; '.join(errors)}). Without internet, copy the official "
        f"file to {dest} (gzipped or extracted) and run again."
    )


def download_idx(kind: str, root: Path) -> None:
    """Fetch the official archives of ``kind`` that are missing from ``root`` (md5 checked)."""
    meta = IDX[kind]
    root.mkdir(parents=True, exist_ok=True)
    for name, (gz_md5, _) in meta["files"].items():
        if idx_path(root, name) is None:
            _fetch([f"{mirror}{name}.gz" for mirror in meta["mirrors"]], root / f"{name}.gz", gz_md5)


def read_idx_bytes(path: Path) -> bytes:
    """The IDX bytes of ``path``, gunzipped if its name ends in .gz; problems name the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PruneLabError(f"cannot read {path}: {e.strerror or e}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise PruneLabError(
            f"{path} is not a readable gzip file ({type(e).__name__}: {e}); it is corrupt "
            "or truncated: delete it and download it again (data.download=true)"
        ) from None


def parse_idx(raw: bytes, path: Path, magic: int) -> np.ndarray:
    """A uint8 IDX file (``magic`` 2051: images, 3 dims; 2049: labels, 1 dim) as an array of the
    dimensions its header gives (big-endian uint32s). Strict: wrong magic, a short header or
    payload, or bytes past the payload are errors that name ``path``."""
    ndim = magic & 0xFF
    what = {IDX_IMAGES: "images", IDX_LABELS: "labels"}[magic]
    fix = "delete it and download it again (data.download=true)"
    if len(raw) < 4:
        raise PruneLabError(f"{path} is truncated: {len(raw)} bytes, not even an IDX header; {fix}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise PruneLabError(
            f"{path}: bad magic number {found} (0x{found:08x}); an MNIST-format {what} file starts with "
            f"{magic} (0x{magic:08x}: uint8 data, {ndim} dimension{'s' if ndim > 1 else ''}). Wrong file in "
            f"this place, or not the official IDX format; {fix}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PruneLabError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte IDX header; {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header
    if payload < expected:
        raise PruneLabError(
            f"{path} is truncated: its header announces {dims[0]:,} {what} ({' x '.join(map(str, dims))} = "
            f"{expected:,} bytes) but it holds {payload:,} bytes of data; {fix}"
        )
    if payload > expected:
        raise PruneLabError(
            f"{path} has {payload - expected:,} bytes after the {dims[0]:,} {what} its header announces "
            f"({' x '.join(map(str, dims))}); not a valid IDX file; {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_split(kind: str, root: Path, split: str, check_md5: bool) -> tuple[np.ndarray, np.ndarray, bool | None]:
    """(images (N, 1, 28, 28) uint8, labels (N,) int64, content md5s official?) of one split."""
    meta = IDX[kind]
    image_name, label_name = IDX_SPLITS[split]
    image_path, label_path = idx_path(root, image_name), idx_path(root, label_name)
    assert image_path is not None and label_path is not None  # checked by the caller
    image_raw, label_raw = read_idx_bytes(image_path), read_idx_bytes(label_path)
    images = parse_idx(image_raw, image_path, IDX_IMAGES)
    labels = parse_idx(label_raw, label_path, IDX_LABELS)
    fix = f"Fix: replace both with the official {meta['pretty']} files (data.download=true after deleting them)"
    if images.shape[1:] != (IDX_IMAGE_SIZE, IDX_IMAGE_SIZE):
        raise PruneLabError(
            f"{image_path}: its header gives {images.shape[1]}x{images.shape[2]} images; "
            f"{meta['pretty']} images are {IDX_IMAGE_SIZE}x{IDX_IMAGE_SIZE}. {fix}"
        )
    if len(images) != len(labels):
        raise PruneLabError(
            f"count mismatch: {image_path} holds {len(images):,} images but {label_path} "
            f"holds {len(labels):,} labels; the two files are from different sets. {fix}"
        )
    bad = int((labels >= meta["num_classes"]).sum())
    if bad:
        raise PruneLabError(f"{label_path}: {bad:,} labels outside [0, {meta['num_classes']}). {fix}")
    official = None
    if check_md5:
        official = (
            hashlib.md5(image_raw).hexdigest() == meta["files"][image_name][1]
            and hashlib.md5(label_raw).hexdigest() == meta["files"][label_name][1]
        )
    return images[:, None], labels.astype(np.int64), official


def _read_idx(kind: str, root: Path, strict_sizes: bool, check_md5: bool) -> tuple[tuple, tuple]:
    """Both splits of an IDX dataset, every content check made (headers, sizes against the file
    lengths, image size, counts, label range, the official sizes unless ``strict_sizes`` is off)."""
    meta = IDX[kind]
    train = _read_idx_split(kind, root, "train", check_md5)
    test = _read_idx_split(kind, root, "test", check_md5)
    n_train, n_test = meta["sizes"]
    if (len(train[0]), len(test[0])) != (n_train, n_test) and strict_sizes:
        raise PruneLabError(
            f"{root}: expected {n_train:,} train / {n_test:,} test images, found {len(train[0]):,} / {len(test[0]):,} "
            f"(incomplete, or a subset of {meta['pretty']}). Fix: data.strict_sizes=false to train on this smaller "
            "set (its tables say so), or put the four official files there (data.download=true)"
        )
    return train, test


def load_idx(
    kind: str, root: str | Path, download: bool = False, check_md5: bool = True, strict_sizes: bool = True
) -> ImageData:
    """MNIST or Fashion-MNIST from the four official IDX files (each gzipped or extracted)
    directly in ``root``: 28x28 grey images, 10 classes, normalised with the standard constants
    (see ``IDX``). ``official_md5`` compares the extracted content with the official files."""
    if kind not in IDX:
        raise PruneLabError(f"unknown IDX dataset {kind!r}; known: {', '.join(IDX)}")
    meta = IDX[kind]
    root = Path(root).expanduser().resolve()
    missing = [name for name in meta["files"] if idx_path(root, name) is None]
    if missing and download:
        download_idx(kind, root)
        missing = [name for name in meta["files"] if idx_path(root, name) is None]
    if missing:
        raise PruneLabError(_missing_idx_message(kind, root, missing))
    (x_train, y_train, official_train), (x_test, y_test, official_test) = _read_idx(kind, root, strict_sizes, check_md5)
    train = Split(torch.from_numpy(x_train.copy()), torch.from_numpy(y_train))
    test = Split(torch.from_numpy(x_test.copy()), torch.from_numpy(y_test))
    info = {
        "source": str(root),
        "official_md5": (official_train and official_test) if check_md5 else None,
        "fingerprint": fingerprint(train.images, train.labels, test.images, test.labels),
    }
    return ImageData(kind, train, test, meta["num_classes"], meta["mean"], meta["std"], False, info)


# ----------------------------------------------------------------------------- ImageNet (ImageFolder)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class FolderSplit:
    """One ImageFolder split: file paths and labels (labels as a tensor on the data's device)."""

    samples: list[tuple[str, int]]  # (absolute path, class index)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: str | torch.device) -> FolderSplit:
        return FolderSplit(self.samples, self.labels.to(device))

    def subset(self, indices: Sequence[int] | torch.Tensor) -> FolderSplit:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return FolderSplit(
            [self.samples[i] for i in idx.tolist()], self.labels.index_select(0, idx.to(self.labels.device))
        )


class _IndexSampler(torch.utils.data.Sampler):
    """Yields the indices it was last given: one DataLoader (and its persistent workers) serves
    every epoch while the epoch generator decides the order."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _FilesDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from torchvision.datasets.folder import default_loader

        path, target = self.samples[index]
        return self.transform(default_loader(path)), target


class FolderImageData(ClassificationData):
    """ImageNet-style data: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` read through a
    DataLoader with workers (decoding + torchvision transforms on the CPU), batches moved to the
    device with ``non_blocking`` (pinned memory on CUDA).

    Train: RandomResizedCrop(crop) + RandomHorizontalFlip; test / sample_inputs: Resize(resize) +
    CenterCrop(crop); both normalised with the ImageNet mean/std.
    """

    def __init__(
        self,
        name: str,
        train: FolderSplit,
        test: FolderSplit,
        num_classes: int,
        crop_size: int = 224,
        resize_size: int = 256,
        workers: int = 8,
        augment: bool = True,
        info: dict | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.name, self.train, self.test, self.num_classes = name, train, test, num_classes
        self.crop_size, self.resize_size, self.workers = int(crop_size), int(resize_size), int(workers)
        self.augment, self.info, self.device = augment, dict(info or {}), canonical_device(device)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._loaders: dict[tuple, tuple[torch.utils.data.DataLoader, _IndexSampler]] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)

    def _replace(self, **changes) -> FolderImageData:
        kw = dict(
            name=self.name,
            train=self.train,
            test=self.test,
            num_classes=self.num_classes,
            crop_size=self.crop_size,
            resize_size=self.resize_size,
            workers=self.workers,
            augment=self.augment,
            info=self.info,
            device=self.device,
        )
        return FolderImageData(**{**kw, **changes})

    def transform(self, train: bool):
        from torchvision import transforms as T

        norm = [T.ToTensor(), T.Normalize(self.mean, self.std)]
        if train and self.augment:
            return T.Compose([T.RandomResizedCrop(self.crop_size), T.RandomHorizontalFlip(), *norm])
        return T.Compose([T.Resize(self.resize_size), T.CenterCrop(self.crop_size), *norm])

    def _loader(self, split: str, batch_size: int) -> tuple[torch.utils.data.DataLoader, _IndexSampler]:
        key = (split, batch_size)
        if key not in self._loaders:
            samples = self.train.samples if split == "train" else self.test.samples
            sampler = _IndexSampler()
            loader = torch.utils.data.DataLoader(
                _FilesDataset(samples, self.transform(split == "train")),
                batch_size=batch_size,
                sampler=sampler,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                drop_last=False,
            )
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def _batches(self, split: str, indices: list[int], batch_size: int):
        loader, sampler = self._loader(split, batch_size)
        sampler.indices = indices
        for images, labels in loader:  # (B, 3, crop, crop) float, (B,)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented batches. The order is a permutation drawn from the epoch
        generator; under DDP every rank draws the same one and takes every world_size-th index
        (a disjoint shard; the epoch is trimmed to a multiple of world_size). Augmentation
        randomness comes from the worker processes' seeds (or the main process RNG with
        ``workers=0``), which the pipeline's seeding makes reproducible."""
        order = torch.randperm(len(self.train), generator=generator)
        if world_size > 1:
            order = rank_share(order, rank, world_size)
        return self._batches("train", order.tolist(), batch_size)

    def test_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation batches in order; with DDP each rank gets a contiguous shard (no overlap)."""
        lo, hi = shard(len(self.test), rank, world_size)
        return self._batches("test", list(range(lo, hi)), batch_size)

    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` random training images with the test transform (resize + center crop, no
        augmentation), normalised, on the device: (count, 3, crop, crop)."""
        idx = torch.randperm(len(self.train), generator=generator)[:count].tolist()
        transform = self.transform(False)
        dataset = _FilesDataset(self.train.samples, transform)
        images = torch.stack([dataset[i][0] for i in idx])  # (count, 3, crop, crop)
        return images.to(self.device)

    def subset_indices(self, count: int) -> list[int]:
        """``count`` training images spread evenly over the classes (the first count/C of each)."""
        return _per_class_subset(self.train.samples, count, self.num_classes)


def _imagenet_help(root: Path) -> str:
    return (
        f"  Expected layout: {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG (one folder per class, "
        "the same class folders in both).\n"
        "  Fix: download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org "
        "(account needed), extract the train archive and its per-class tars into train/, extract the val "
        "images into val/ and sort them into class folders (e.g. with the widely used valprep.sh),\n"
        "  then point data.root (or paths.data_root / $PRUNE_LAB_DATA) at the folder holding train/ and val/."
    )


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def check_imagenet(cfg: dict) -> tuple[Path, list[str]]:
    """The root and class list of an ImageFolder dataset, or a PruneLabError saying what is wrong."""
    root = Path(cfg["root"]).expanduser().resolve()
    missing = [str(root / s) for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise PruneLabError(
            f"{cfg.get('name', 'imagenet')} not found: missing {', '.join(missing)}/\n{_imagenet_help(root)}"
        )
    classes = _class_folders(root / "train")
    val_classes = _class_folders(root / "val")
    if not classes:
        raise PruneLabError(f"{root}/train/ has no class folders\n{_imagenet_help(root)}")
    if classes != val_classes:
        only_train = sorted(set(classes) - set(val_classes))[:3]
        only_val = sorted(set(val_classes) - set(classes))[:3]
        raise PruneLabError(
            f"{root}: train/ and val/ class folders differ (only in train: {only_train}, only in val: {only_val}); "
            f"val images must be sorted into the same class folders (valprep.sh)\n{_imagenet_help(root)}"
        )
    expected = int(cfg["num_classes"])
    if len(classes) != expected:
        raise PruneLabError(
            f"{root}/train/ has {len(classes)} class folders but data.num_classes={expected}; "
            f"set data.num_classes={len(classes)} or point data.root at the full dataset"
        )
    return root, classes


def _scan(folder: Path, classes: list[str]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(path, class index) of every image, sorted by class then file name, and (relative path,
    size in bytes) for the fingerprint: one scandir per class folder, no image decoding."""
    samples, listing = [], []
    for label, wnid in enumerate(classes):
        entries = sorted(
            (e for e in os.scandir(folder / wnid) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)),
            key=lambda e: e.name,
        )
        for e in entries:
            samples.append((e.path, label))
            listing.append((f"{folder.name}/{wnid}/{e.name}", e.stat().st_size))
    return samples, listing


def balanced_indices(labels: Sequence[int], total: int, num_classes: int) -> list[int]:
    """Indices (ascending) of ``total`` items: the first ``total // C`` of every class in order
    (one more for the first ``total % C`` classes); where a class has fewer items than its
    share, the next items in order that are not yet taken fill the count."""
    quota = [total // num_classes + (1 if c < total % num_classes else 0) for c in range(num_classes)]
    taken = [0] * num_classes
    keep = []
    for i, label in enumerate(labels):
        if 0 <= label < num_classes and taken[label] < quota[label]:
            taken[label] += 1
            keep.append(i)
    if len(keep) < total:  # some class is short of its share
        chosen = set(keep)
        keep += [i for i in range(len(labels)) if i not in chosen][: total - len(keep)]
    return sorted(keep)


def _per_class_subset(samples: list[tuple[str, int]], total: int, num_classes: int) -> list[int]:
    """Indices of the first ``total // C`` images of every class (one more for the first
    ``total % C`` classes), in file order."""
    quota = [total // num_classes + (1 if c < total % num_classes else 0) for c in range(num_classes)]
    taken = [0] * num_classes
    keep = []
    for i, (_, label) in enumerate(samples):
        if taken[label] < quota[label]:
            taken[label] += 1
            keep.append(i)
    return keep


def load_imagenet(cfg: dict) -> FolderImageData:
    """ImageFolder train/val under ``data.root``; ``train_subset=N`` keeps N training images in
    total, spread evenly over the classes (the first N/C of each class in file order)."""
    root, classes = check_imagenet(cfg)
    train_samples, train_list = _scan(root / "train", classes)
    val_samples, val_list = _scan(root / "val", classes)
    if not train_samples or not val_samples:
        raise PruneLabError(
            f"{root}: no image files found (extensions {', '.join(IMAGE_EXTENSIONS)})\n{_imagenet_help(root)}"
        )
    h = hashlib.sha1()
    for rel, size in train_list + val_list:
        h.update(f"{rel}\t{size}\n".encode())
    full_train = len(train_samples)
    subset = cfg.get("train_subset")
    if subset is not None:
        subset = int(subset)
        if not 0 < subset <= len(train_samples):
            raise PruneLabError(f"data.train_subset={subset} must be in [1, {len(train_samples)}]")
        train_samples = [train_samples[i] for i in _per_class_subset(train_samples, subset, len(classes))]
    test_subset = cfg.get("test_subset")
    if test_subset is not None:
        test_subset = int(test_subset)
        if not 0 < test_subset <= len(val_samples):
            raise PruneLabError(
                f"data.test_subset={test_subset} must be in [1, {len(val_samples):,}] (the validation images); "
                "data.test_subset=null evaluates on all of them"
            )
        labels = [label for _, label in val_samples]
        val_samples = [val_samples[i] for i in balanced_indices(labels, test_subset, len(classes))]

    def split(samples):
        return FolderSplit(samples, torch.tensor([label for _, label in samples], dtype=torch.long))

    info = {
        "source": str(root),
        "official_md5": None,
        "fingerprint": h.hexdigest()[:16],
        "label": cfg.get("label") or "ImageNet (ILSVRC2012)",
        "num_classes": len(classes),
        "train_images": full_train,
        "train_size": len(train_samples),
        "test_size": len(val_samples),
        "train_subset": subset or None,
        "test_subset": test_subset or None,
    }
    return FolderImageData(
        cfg.get("name", "imagenet"),
        split(train_samples),
        split(val_samples),
        len(classes),
        crop_size=int(cfg.get("image_size", 224)),
        resize_size=int(cfg.get("resize_size", 256)),
        workers=int(cfg.get("workers", 8)),
        augment=bool(cfg.get("augment", True)),
        info=info,
    )
