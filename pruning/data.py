"""Datasets as in-memory uint8 tensors, with augmentation done as batched tensor ops.

Small-image datasets (CIFAR-10/100, the embedded digits) fit in memory: we keep them as
uint8 (N, C, H, W) tensors, so the same code runs on CPU or keeps the whole set on a GPU,
and pad-crop + flip are a few tensor ops per batch instead of per-image Python.

CIFAR is read from the official python-pickle layout (``cifar-10-batches-py/`` or
``cifar-100-python/`` under ``root``), downloaded on request. Integrity is checked by shape
and count; the official md5 sums are compared and recorded (a re-encoded copy, such as the
JPEG copy used on machines without internet, loads but is labelled as not official).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pruning import PruneLabError

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


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class ImageData:
    """A small-image dataset held in memory, plus what the pipeline records about it."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = True  # pad-4 random crop + horizontal flip (CIFAR recipe)
    info: dict = field(default_factory=dict)  # label, md5 status, fingerprint, sizes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> ImageData:
        return ImageData(self.name, self.train.to(device), self.test.to(device), self.num_classes,
                         self.mean, self.std, self.augment, self.info)

    def normalise(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, C, H, W), normalised per channel."""
        mean = torch.tensor(self.mean, device=images_u8.device).view(1, -1, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(self.std, device=images_u8.device).view(1, -1, 1, 1) * 255.0)
        return (images_u8.float() - mean) * inv_std

    def train_batches(self, batch_size: int, generator: torch.Generator, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented, normalised training batches; deterministic given the generator.

        All random numbers of the epoch (order, crop offsets, flips) are drawn up front on the
        CPU generator and moved to the data's device once, so the loop issues no host work per
        step. With ``world_size > 1`` (DDP) every rank draws the same permutation and takes
        every world_size-th index of it (the epoch is trimmed to a multiple of world_size)."""
        n = len(self.train)
        device = self.train.labels.device
        order = torch.randperm(n, generator=generator)
        pad = 4
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        if world_size > 1:
            keep = (n // world_size) * world_size
            order, dy, dx, flip = (t[:keep][rank::world_size] for t in (order, dy, dx, flip))
        order, dy, dx, flip = (t.to(device, non_blocking=True) for t in (order, dy, dx, flip))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            images = self.train.images.index_select(0, idx)
            if self.augment:
                sl = slice(start, start + batch_size)
                images = crop_flip(images, pad, dy[sl], dx[sl], flip[sl])
            yield self.normalise(images), self.train.labels.index_select(0, idx)

    def split_train(self, fraction: float, seed: int) -> tuple[ImageData, ImageData]:
        """Two datasets whose training sets are disjoint random parts of this one's (the first
        holds ``fraction`` of the images), sharing the test set: e.g. TAS updates weights on one
        half and architecture parameters on the other."""
        if not 0.0 < fraction < 1.0:
            raise PruneLabError(f"split fraction {fraction!r} must be in (0, 1)")
        n = len(self.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(self.train.labels.device)
        cut = int(round(n * fraction))
        if cut < 1 or cut >= n:
            raise PruneLabError(f"cannot split {n} training images at fraction {fraction}: one part would be empty")
        parts = []
        for idx in (order[:cut].sort().values, order[cut:].sort().values):
            train = Split(self.train.images.index_select(0, idx), self.train.labels.index_select(0, idx))
            parts.append(ImageData(self.name, train, self.test, self.num_classes, self.mean, self.std,
                                   self.augment, {**self.info, "split": {"fraction": fraction, "seed": seed, "size": len(idx)}}))
        return parts[0], parts[1]

    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` random training images, normalised and not augmented: the activations that
        data-driven pruning criteria (ThiNet, LASSO channel pruning) are computed on."""
        idx = torch.randperm(len(self.train), generator=generator)[:count].to(self.train.labels.device)
        return self.normalise(self.train.images.index_select(0, idx))

    def test_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Test batches in order; with DDP each rank gets a contiguous shard (no overlap)."""
        n = len(self.test)
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
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
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}: not part of the official "
                                     "CIFAR layout (dicts, lists, strings, bytes and numpy arrays only)")


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR python batch, read with the restricted unpickler; any problem names the file."""
    try:
        with open(path, "rb") as f:
            entry = CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError, MemoryError) as e:
        raise PruneLabError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}); it is corrupt, "
                            "truncated or not the official python-pickle layout: delete the folder and "
                            "re-extract the official archive (or use data.download=true)") from None
    except OSError as e:
        raise PruneLabError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(entry, dict):
        raise PruneLabError(f"{path} is not a CIFAR batch (holds a {type(entry).__name__}, not a dict); "
                            "re-extract the official archive")
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
            raise PruneLabError(f"{folder / fname} is not in the official CIFAR layout ({type(e).__name__}: {e}); "
                                "re-extract the official archive") from None
        images.append(data)
        labels.extend(batch_labels)
    data = np.concatenate(images).reshape(-1, 3, 32, 32)  # rows are R(1024) G(1024) B(1024)
    return data, np.asarray(labels, dtype=np.int64)


def load_cifar(name: str, root: str | Path, download: bool = False, check_md5: bool = True,
               strict_sizes: bool = True) -> ImageData:
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
    x_train, y_train = _read_batches(folder, list(meta["train"]), meta["label_key"])
    x_test, y_test = _read_batches(folder, list(meta["test"]), meta["label_key"])
    n_train, n_test = meta["sizes"]
    if (len(x_train), len(x_test)) != (n_train, n_test) and strict_sizes:
        raise PruneLabError(
            f"{folder}: expected {n_train} train / {n_test} test images, found {len(x_train)} / {len(x_test)} "
            "(incomplete or not CIFAR; data.strict_sizes=false accepts a partial set)"
        )
    bad = int(((y_train < 0) | (y_train >= meta["num_classes"])).sum())
    if bad:
        raise PruneLabError(f"{folder}: {bad} labels outside [0, {meta['num_classes']})")
    official = all(_md5(folder / f) == md5 for f, md5 in {**meta["train"], **meta["test"]}.items()) if check_md5 else None
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
    info = {"source": "sklearn.datasets.load_digits", "official_md5": None,
            "fingerprint": fingerprint(train.images, train.labels, test.images, test.labels)}
    mean = float(train.images.float().mean() / 255)
    std = float(train.images.float().std() / 255)
    return ImageData("digits", train, test, 10, (mean,), (std,), False, info)


def check_available(cfg: dict) -> None:
    """Fail before any training if a dataset is neither present nor going to be downloaded."""
    kind = cfg.get("kind", cfg["name"])
    if kind == "imagenet":
        check_imagenet(cfg)
    if kind in CIFAR and not cfg.get("download"):
        root = Path(cfg["root"]).expanduser().resolve()
        folder = root / CIFAR[kind]["folder"]
        missing = [f for f in [*CIFAR[kind]["train"], *CIFAR[kind]["test"]] if not (folder / f).is_file()]
        if missing:
            raise PruneLabError(_missing_cifar_message(kind, root, missing))


def load(cfg: dict) -> ImageData | FolderImageData:
    """Load the dataset a ``data`` config names (plain dict from conf/data/*.yaml)."""
    kind = cfg.get("kind", cfg["name"])
    if kind == "imagenet":
        return load_imagenet(cfg)
    if kind in CIFAR:
        data = load_cifar(kind, cfg["root"], download=bool(cfg.get("download")),
                          check_md5=cfg.get("check_md5", True), strict_sizes=cfg.get("strict_sizes", True))
    elif kind == "digits":
        data = load_digits_data()
    else:
        raise PruneLabError(f"unknown dataset kind {kind!r}; known: {', '.join([*CIFAR, 'digits', 'imagenet'])}")
    data.augment = bool(cfg.get("augment", data.augment))
    subset = cfg.get("train_subset")
    if subset is not None:
        subset = int(subset)
        if not 0 < subset <= len(data.train):
            raise PruneLabError(f"data.train_subset={subset} must be in [1, {len(data.train)}]")
        data.train = Split(data.train.images[:subset], data.train.labels[:subset])
    data.info.update(
        label=cfg.get("label") or default_label(kind, data.info.get("official_md5")),
        train_size=len(data.train),
        test_size=len(data.test),
        train_subset=subset or None,
    )
    return data


def default_label(kind: str, official_md5: bool | None) -> str:
    pretty = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "sklearn digits 8x8"}[kind]
    if official_md5 is False:
        return f"{pretty} (non-official copy: md5 differs)"
    return pretty


# ----------------------------------------------------------------------------- ImageNet (ImageFolder)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class FolderSplit:
    """One ImageFolder split: file paths and labels (labels as a tensor on the data's device,
    which is what train.py's loops read the device from)."""

    samples: list[tuple[str, int]]  # (absolute path, class index)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: str | torch.device) -> FolderSplit:
        return FolderSplit(self.samples, self.labels.to(device))

    def subset(self, indices: list[int]) -> FolderSplit:
        return FolderSplit([self.samples[i] for i in indices], self.labels[torch.as_tensor(indices, dtype=torch.long).to(self.labels.device)])


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


class FolderImageData:
    """ImageNet-style data: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` read through a
    DataLoader with workers (decoding + torchvision transforms on the CPU), batches moved to the
    device with ``non_blocking`` (pinned memory on CUDA).

    Train: RandomResizedCrop(crop) + RandomHorizontalFlip; test / sample_inputs: Resize(resize) +
    CenterCrop(crop); both normalised with the ImageNet mean/std. Same interface as ImageData.
    """

    def __init__(self, name: str, train: FolderSplit, test: FolderSplit, num_classes: int,
                 crop_size: int = 224, resize_size: int = 256, workers: int = 8, augment: bool = True,
                 info: dict | None = None, device: str | torch.device = "cpu") -> None:
        self.name, self.train, self.test, self.num_classes = name, train, test, num_classes
        self.crop_size, self.resize_size, self.workers = int(crop_size), int(resize_size), int(workers)
        self.augment, self.info, self.device = augment, dict(info or {}), torch.device(device)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._loaders: dict[tuple, tuple[torch.utils.data.DataLoader, _IndexSampler]] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)

    def _replace(self, **changes) -> FolderImageData:
        kw = dict(name=self.name, train=self.train, test=self.test, num_classes=self.num_classes,
                  crop_size=self.crop_size, resize_size=self.resize_size, workers=self.workers,
                  augment=self.augment, info=self.info, device=self.device)
        return FolderImageData(**{**kw, **changes})

    def to(self, device: str | torch.device) -> FolderImageData:
        return self._replace(train=self.train.to(device), test=self.test.to(device), device=device)

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
                _FilesDataset(samples, self.transform(split == "train")), batch_size=batch_size,
                sampler=sampler, num_workers=self.workers, pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0, drop_last=False,
            )
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def _batches(self, split: str, indices: list[int], batch_size: int):
        loader, sampler = self._loader(split, batch_size)
        sampler.indices = indices
        for images, labels in loader:  # (B, 3, crop, crop) float, (B,)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, generator: torch.Generator, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled, augmented batches. The order is a permutation drawn from the epoch
        generator; under DDP every rank draws the same one and takes every world_size-th index
        (a disjoint shard; the epoch is trimmed to a multiple of world_size). Augmentation
        randomness comes from the worker processes' seeds (or the main process RNG with
        ``workers=0``), which the pipeline's seeding makes reproducible."""
        n = len(self.train)
        order = torch.randperm(n, generator=generator)
        if world_size > 1:
            order = order[: (n // world_size) * world_size][rank::world_size]
        return self._batches("train", order.tolist(), batch_size)

    def test_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation batches in order; with DDP each rank gets a contiguous shard (no overlap)."""
        n = len(self.test)
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
        return self._batches("test", list(range(lo, hi)), batch_size)

    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` random training images with the test transform (resize + center crop, no
        augmentation), normalised, on the device: (count, 3, crop, crop)."""
        idx = torch.randperm(len(self.train), generator=generator)[:count].tolist()
        transform = self.transform(False)
        dataset = _FilesDataset(self.train.samples, transform)
        images = torch.stack([dataset[i][0] for i in idx])  # (count, 3, crop, crop)
        return images.to(self.device)

    def split_train(self, fraction: float, seed: int) -> tuple[FolderImageData, FolderImageData]:
        """Two datasets whose training sets are disjoint random parts of this one's (the first
        holds ``fraction`` of the images), sharing the validation set."""
        if not 0.0 < fraction < 1.0:
            raise PruneLabError(f"split fraction {fraction!r} must be in (0, 1)")
        n = len(self.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        cut = int(round(n * fraction))
        if cut < 1 or cut >= n:
            raise PruneLabError(f"cannot split {n} training images at fraction {fraction}: one part would be empty")
        parts = []
        for idx in (order[:cut].sort().values, order[cut:].sort().values):
            info = {**self.info, "split": {"fraction": fraction, "seed": seed, "size": len(idx)}}
            parts.append(self._replace(train=self.train.subset(idx.tolist()), info=info))
        return parts[0], parts[1]


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
        raise PruneLabError(f"{cfg.get('name', 'imagenet')} not found: missing {', '.join(missing)}/\n{_imagenet_help(root)}")
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
        entries = sorted((e for e in os.scandir(folder / wnid) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)),
                         key=lambda e: e.name)
        for e in entries:
            samples.append((e.path, label))
            listing.append((f"{folder.name}/{wnid}/{e.name}", e.stat().st_size))
    return samples, listing


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
        raise PruneLabError(f"{root}: no image files found (extensions {', '.join(IMAGE_EXTENSIONS)})\n{_imagenet_help(root)}")
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

    def split(samples):
        return FolderSplit(samples, torch.tensor([label for _, label in samples], dtype=torch.long))

    info = {"source": str(root), "official_md5": None, "fingerprint": h.hexdigest()[:16],
            "label": cfg.get("label") or "ImageNet (ILSVRC2012)", "num_classes": len(classes),
            "train_images": full_train, "train_size": len(train_samples), "test_size": len(val_samples),
            "train_subset": subset or None}
    return FolderImageData(cfg.get("name", "imagenet"), split(train_samples), split(val_samples), len(classes),
                           crop_size=int(cfg.get("image_size", 224)), resize_size=int(cfg.get("resize_size", 256)),
                           workers=int(cfg.get("workers", 8)), augment=bool(cfg.get("augment", True)), info=info)
