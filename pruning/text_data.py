"""Byte-level text corpora for character language models: enwik8 and any file read the same way.

``TextData`` is the ``pruning.data.Data`` protocol for a token stream (``task = "language_model"``):

* **Reading.** ``data=enwik8`` reads the official ``enwik8.zip`` (Hutter Prize, mattmahoney.net)
  or the extracted ``enwik8`` file in ``data.root``; the content must be 100,000,000 bytes, and
  its md5 is compared with the published a1fa5ffddb56f4953e226637dabbb36a (recorded as
  ``official_md5``). ``data.download=true`` fetches the official archive (content md5 checked
  before the file is kept). ``data=text_corpus data.path=FILE`` reads any file the same way:
  plain, ``.gz`` or ``.zip`` (one member).
* **Vocabulary.** ``vocab: unique`` maps the sorted distinct byte values of the whole file to ids
  0..V-1, as FLOP's ``read_corpus`` does (``np.unique(..., return_inverse=True)``: 205 symbols for
  enwik8); ``vocab: bytes`` uses the byte values themselves (V = 256). ``data.num_classes`` is V
  (the model's output size is fixed before the data is read) and is checked against the file.
* **Splits.** As the Transformer-XL (``prep_enwik8.py``) and FLOP (``read_corpus``) code: the last
  ``test_bytes`` bytes are the test split, the ``valid_bytes`` before them validation, the rest
  training (enwik8: 90M / 5M / 5M). For other corpora ``valid_fraction`` / ``test_fraction``
  (default 5% each) give the sizes. ``train_subset=N``: only the first N training bytes.
* **Batches.** As FLOP's ``create_batches``: a split of N tokens is cut into ``batch_size``
  contiguous lanes of (N - 1) // batch_size tokens; inputs are the lanes, targets the lanes
  shifted by one. Training walks the lanes in BPTT windows of ``bptt`` tokens, in order (no
  shuffling, as the official loops: the model carries its hidden state / memory from window to
  window); batches are ``x`` (B, T) int64 and ``y`` (B*T,) int64 (row-major, the order of the
  models' logits). Evaluation walks the split the same way in ``eval_bptt`` windows.
* **Metric.** The models' cross-entropy is in nats per character; bits per character is that
  divided by ln 2 (the official ``log2(ppl)``). During training the per-epoch evaluation reads the
  validation split (the official code selects on dev); the final evaluation (valid and test) runs
  with ``final_eval_batch_size`` lanes (FLOP: 1, a single stream, so every character but the first
  is predicted with its whole past).
* ``input_shape`` is ``(1,)``: one token, so the MAC counter gives multiply-accumulates per
  character.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning import PruneLabError
from pruning.data import Data, _canonical_device

ENWIK8 = {
    "url": "http://mattmahoney.net/dc/enwik8.zip",
    "member": "enwik8",
    "size": 100_000_000,
    "md5": "a1fa5ffddb56f4953e226637dabbb36a",  # of the extracted file (mattmahoney.net/dc/textdata.html)
    "split_bytes": 5_000_000,  # valid and test each (prep_enwik8.py: num_test_chars = 5000000)
}
LN2 = math.log(2.0)


def bits_per_char(nats: float) -> float:
    return nats / LN2


# ----------------------------------------------------------------------------- reading
def read_corpus_bytes(path: Path) -> bytes:
    """The bytes of a plain, gzipped (.gz) or zipped (.zip, one member) file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                members = [i for i in z.infolist() if not i.is_dir()]
                if len(members) != 1:
                    names = ", ".join(i.filename for i in members[:5]) or "none"
                    raise PruneLabError(
                        f"{path} holds {len(members)} files ({names}); a corpus archive must hold exactly one. "
                        "Fix: extract the file you mean and set data.path to it."
                    )
                return z.read(members[0])
        return path.read_bytes()
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as e:
        raise PruneLabError(
            f"cannot read the corpus {path}: {e}. Fix: check the file (a truncated download? re-fetch it) "
            "or point data.path / data.root at a good copy."
        ) from None


def enwik8_path(root: Path) -> Path | None:
    """The enwik8 file in ``root``: the extracted ``enwik8`` or the official ``enwik8.zip``."""
    for name in ("enwik8", "enwik8.zip"):
        if (root / name).is_file():
            return root / name
    return None


def _missing_enwik8_message(root: Path) -> str:
    return (
        f"enwik8 not found: expected {root / 'enwik8'} (extracted) or {root / 'enwik8.zip'} (the official archive).\n"
        f"  Fix: run again with data.download=true (needs internet), or download {ENWIK8['url']} into {root}/,\n"
        "  or point data.root (or paths.data_root / $PRUNE_LAB_DATA) at the folder that holds it."
    )


def download_enwik8(root: Path) -> None:
    """Fetch the official enwik8.zip into ``root``; it is kept only if its member is the official
    content (size and md5), so an interrupted or wrong download never looks like data."""
    root.mkdir(parents=True, exist_ok=True)
    dest = root / "enwik8.zip"
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(ENWIK8["url"], timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        raw = _zip_member(tmp)
        if len(raw) != ENWIK8["size"] or hashlib.md5(raw).hexdigest() != ENWIK8["md5"]:
            raise PruneLabError(f"downloaded {ENWIK8['url']} is not the official enwik8 (size or md5 differ); retry")
        os.replace(tmp, dest)
    except OSError as e:
        raise PruneLabError(
            f"could not download {ENWIK8['url']} ({e}). Without internet, copy enwik8.zip (or the extracted enwik8) "
            f"to {root}/ and run again."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _zip_member(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(z.infolist()[0])
    except (zipfile.BadZipFile, IndexError, zlib.error) as e:
        raise PruneLabError(f"{path} is not a readable zip archive ({e}); download it again") from None


def corpus_path(cfg: dict) -> Path:
    """The file a text ``data`` config reads (enwik8: found in data.root; text_corpus: data.path)."""
    kind = cfg.get("kind", cfg["name"])
    if kind == "enwik8":
        root = Path(cfg["root"]).expanduser().resolve()
        found = enwik8_path(root)
        if found is None:
            raise PruneLabError(_missing_enwik8_message(root))
        return found
    if not cfg.get("path"):
        raise PruneLabError(
            "data=text_corpus needs the file to read: add data.path=FILE (plain text, .gz or .zip), "
            "e.g. data.path=../shared/data/pydocs/pydocs-3.11.txt.gz"
        )
    path = Path(str(cfg["path"])).expanduser()
    if not path.is_file():
        raise PruneLabError(f"data.path={cfg['path']}: no such file. Fix: give the path of a text file (.gz/.zip ok).")
    return path


def check_available(cfg: dict) -> None:
    kind = cfg.get("kind", cfg["name"])
    if kind == "enwik8" and cfg.get("download"):
        return
    corpus_path(cfg)


# ----------------------------------------------------------------------------- the dataset
@dataclass
class TokenSplit:
    """One contiguous token stream: ids (N,) uint8 (vocabularies up to 256 symbols)."""

    ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device: str | torch.device) -> TokenSplit:
        return TokenSplit(self.ids.to(device))

    def head(self, count: int) -> TokenSplit:
        return TokenSplit(self.ids[:count])


def lanes(split: TokenSplit, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FLOP's create_batches, batch-first: inputs and targets (batch_size, (N - 1) // batch_size)."""
    n = len(split)
    per_lane = (n - 1) // batch_size
    if per_lane < 1:
        raise PruneLabError(f"a split of {n} tokens cannot be cut into {batch_size} lanes; use a smaller batch size")
    length = per_lane * batch_size
    x = split.ids[:length].view(batch_size, per_lane)
    y = split.ids[1 : length + 1].view(batch_size, per_lane)
    return x, y


def windows(x: torch.Tensor, y: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for t in range(0, x.shape[1], bptt):
        yield x[:, t : t + bptt].long(), y[:, t : t + bptt].reshape(-1).long()


@dataclass
class TextData(Data):
    """A byte-level corpus split into train / valid / test streams (see the module docstring)."""

    name: str
    train: TokenSplit
    valid: TokenSplit
    test: TokenSplit
    vocab: tuple[int, ...]  # byte value of each token id
    bptt: int = 256
    eval_bptt: int = 256
    final_eval_batch_size: int = 1
    eval_split: str = "valid"  # what test_batches walks: valid during training, test for the final number
    augment: bool = False
    info: dict = field(default_factory=dict)
    device: torch.device | None = None

    task = "language_model"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device) if self.device is not None else self.train.ids.device

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1,)  # one token: MACs per character

    def _replace(self, **changes: Any) -> TextData:
        return dataclasses.replace(self, **changes)

    def to(self, device: str | torch.device) -> TextData:
        device = _canonical_device(device)
        return self._replace(
            train=self.train.to(device), valid=self.valid.to(device), test=self.test.to(device), device=device
        )

    def with_eval_split(self, split: str) -> TextData:
        if split not in ("valid", "test"):
            raise PruneLabError(f"eval split {split!r}: use valid or test")
        return self._replace(eval_split=split)

    def num_train_batches(self, batch_size: int, world_size: int = 1) -> int:
        per_lane = (len(self.train) - 1) // (batch_size * world_size)
        return max(1, math.ceil(per_lane / self.bptt))

    def train_batches(
        self, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """BPTT windows over ``batch_size`` contiguous lanes, in order (``generator`` unused: the
        official loops do not shuffle a token stream). Under DDP the stream is cut into
        batch_size x world_size lanes and each rank takes every world_size-th lane."""
        x, y = lanes(self.train, batch_size * world_size)
        if world_size > 1:
            x, y = x[rank::world_size], y[rank::world_size]
        yield from windows(x, y, self.bptt)

    def test_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The ``eval_split`` stream in ``batch_size`` lanes, ``eval_bptt`` windows, in order;
        under DDP each rank takes every world_size-th lane."""
        split = self.valid if self.eval_split == "valid" else self.test
        x, y = lanes(split, batch_size * world_size)
        if world_size > 1:
            x, y = x[rank::world_size], y[rank::world_size]
        yield from windows(x, y, self.eval_bptt)

    def sample_inputs(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` random training windows of ``bptt`` tokens: (count, bptt) int64."""
        hi = len(self.train) - self.bptt
        starts = torch.randint(0, max(1, hi), (count,), generator=generator).to(self.device)
        idx = starts[:, None] + torch.arange(self.bptt, device=self.device)[None, :]
        return self.train.ids[idx].long()

    def subset_indices(self, count: int) -> list[int]:  # pragma: no cover - streams are cut, not indexed
        raise PruneLabError("a token stream has no per-item indices; use subset_train (the first N bytes)")

    def subset_train(self, count: int) -> TextData:
        """Only the first ``count`` training tokens (``data.train_subset``); valid and test unchanged."""
        if not 0 < count <= len(self.train):
            raise PruneLabError(f"data.train_subset={count} must be in [1, {len(self.train)}] (training bytes)")
        return self._replace(train=self.train.head(count))

    def split_train(self, fraction: float, seed: int) -> tuple[TextData, TextData]:
        """Two contiguous parts of the training stream (the first holds ``fraction``)."""
        if not 0.0 < fraction < 1.0:
            raise PruneLabError(f"split fraction {fraction!r} must be in (0, 1)")
        cut = int(round(len(self.train) * fraction))
        first, second = TokenSplit(self.train.ids[:cut]), TokenSplit(self.train.ids[cut:])
        return (
            self._replace(train=first, info={**self.info, "split": {"fraction": fraction, "part": 0}}),
            self._replace(train=second, info={**self.info, "split": {"fraction": fraction, "part": 1}}),
        )


def _split_sizes(cfg: dict, n: int) -> tuple[int, int]:
    kind = cfg.get("kind", cfg["name"])
    if cfg.get("test_bytes") is not None or kind == "enwik8":
        test = int(cfg.get("test_bytes") or ENWIK8["split_bytes"])
        valid = int(cfg.get("valid_bytes") or test)
    else:
        test = int(round(n * float(cfg.get("test_fraction", 0.05))))
        valid = int(round(n * float(cfg.get("valid_fraction", 0.05))))
    if valid < 2 or test < 2 or valid + test >= n - 2:
        raise PruneLabError(
            f"cannot split {n:,} bytes into {n - valid - test:,} train / {valid:,} valid / {test:,} test; "
            "Fix: use a larger file or smaller data.valid_fraction / data.test_fraction (or valid_bytes / test_bytes)"
        )
    return valid, test


def encode(raw: bytes, vocab_mode: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Token ids (uint8) and the byte value of each id."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if vocab_mode == "bytes":
        return data, tuple(range(256))
    if vocab_mode != "unique":
        raise PruneLabError(f"data.vocab={vocab_mode!r}: use unique (FLOP's read_corpus) or bytes (all 256 values)")
    unique, ids = np.unique(data, return_inverse=True)
    return ids.astype(np.uint8), tuple(int(b) for b in unique)


def load_text(cfg: dict) -> TextData:
    """Read, check, encode and split the corpus a text ``data`` config names."""
    kind = cfg.get("kind", cfg["name"])
    if kind == "enwik8":
        root = Path(cfg["root"]).expanduser().resolve()
        if enwik8_path(root) is None and cfg.get("download"):
            download_enwik8(root)
    path = corpus_path(cfg)
    raw = read_corpus_bytes(path)
    info: dict[str, Any] = {"source": str(path), "bytes": len(raw)}
    if kind == "enwik8":
        if len(raw) != ENWIK8["size"] and cfg.get("strict_sizes", True):
            raise PruneLabError(
                f"{path} holds {len(raw):,} bytes; enwik8 is {ENWIK8['size']:,}. Fix: re-download it "
                "(data.download=true after deleting the file), or data.strict_sizes=false to read a partial copy."
            )
        if cfg.get("check_md5", True):
            info["official_md5"] = hashlib.md5(raw).hexdigest() == ENWIK8["md5"]
    ids, vocab = encode(raw, str(cfg.get("vocab", "unique")))
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != len(vocab):
        raise PruneLabError(
            f"{path} has {len(vocab)} distinct symbols (data.vocab={cfg.get('vocab', 'unique')}) but "
            f"data.num_classes={expected}: the model's output size. Fix: data.num_classes={len(vocab)}"
        )
    valid_n, test_n = _split_sizes(cfg, len(ids))
    n = len(ids)
    tensor = torch.from_numpy(ids.copy())
    train = TokenSplit(tensor[: n - valid_n - test_n])
    valid = TokenSplit(tensor[n - valid_n - test_n : n - test_n])
    test = TokenSplit(tensor[n - test_n :])
    info["fingerprint"] = hashlib.sha1(raw).hexdigest()[:16]
    data = TextData(
        name=cfg["name"],
        train=train,
        valid=valid,
        test=test,
        vocab=vocab,
        bptt=int(cfg.get("bptt", 256)),
        eval_bptt=int(cfg.get("eval_bptt") or cfg.get("bptt", 256)),
        final_eval_batch_size=int(cfg.get("final_eval_batch_size", 1)),
        info=info,
    )
    sizes = (len(train), len(valid), len(test))
    subset = cfg.get("train_subset")
    if subset is not None:
        data = data.subset_train(int(subset))
    default = (
        ("enwik8" if info.get("official_md5", True) else "enwik8 (not the official md5)")
        if kind == "enwik8"
        else path.name.split(".")[0]
    )
    data.info.update(
        label=cfg.get("label") or default,
        train_size=len(data.train),
        valid_size=sizes[1],
        test_size=sizes[2],
        train_subset=int(subset) if subset is not None else None,
        vocab_size=len(vocab),
    )
    return data
