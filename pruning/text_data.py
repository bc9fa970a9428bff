"""Byte-level text corpora for character language models: enwik8 and any file read the same way.

``TextData`` is the ``pruning.data_protocol.Data`` protocol for a token stream (``task = "language_model"``):

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
* **Newlines.** ``newlines: keep`` (default) keeps every byte, as FLOP's SRU loader (``read_corpus``
  reads the raw file). ``newlines: drop`` is the Transformer-XL protocol: ``prep_enwik8.py`` (from
  salesforce/awd-lstm-lm, fetched by kimiyoung/transformer-xl's ``getdata.sh``) splits the raw bytes
  90M / 5M / 5M and writes each byte as a number, a newline byte as a line break; ``data_utils.py``
  reads enwik8 line by line with ``add_eos=False``, so the newline bytes vanish and V = 204
  (41,055,436 parameters for the 12-layer base model). Here: split the raw bytes first, then remove
  byte 10 from each split (the official vocabulary orders symbols by frequency; ours by byte value:
  a relabelling of the same V symbols).
* **Content.** ``check_content`` (run by ``check_available`` before any run directory exists, and
  again by ``load_text``) refuses a file that is not text: more than 1% control bytes (NUL, 0x01-0x08,
  0x0E-0x1F, 0x7F), or more than 25% of a sample not valid UTF-8 (random bytes: ~11% control bytes
  and ~43% invalid UTF-8; the CIFAR-10 JPEG tarball: ~49% control bytes; real text: none of either).
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
* **Fast evaluation** (``evaluate_streams``, what ``final_lm_eval`` runs): the same number as
  walking each split's ``batch_size`` lanes in ``eval_bptt`` windows (``pruning.train.evaluate``),
  computed with fewer, larger batched calls. Streams are independent (each starts with an empty
  state), so valid's and test's lanes run side by side in one batch (the shorter padded at its end,
  padding not scored: the models are causal). A model whose result does not depend on where a
  stream is cut into windows (SRU: its whole state is carried exactly; ``stream_window_independent``)
  walks them in long windows. A model whose reach into the past through its state is bounded
  (Transformer-XL: ``stream_burn_in(window)`` tokens) has each stream cut into many lanes: every
  lane starts at a window boundary of the stream and first reads ``stream_burn_in`` tokens of the
  preceding text without scoring them, after which its memory is the stream's own, so each
  character is scored exactly as in the single stream (up to float reassociation). SRU's state
  is unbounded (a trained model still remembers text 4,096 characters back), so its streams are
  never cut. Losses are summed per character in float64 (the reference sums windows in float32;
  on 50,000-character splits the two differ by a few 1e-7 to 4e-6 bits per character).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.data_protocol import Data, canonical_device
from pruning.distributed import SINGLE, DistInfo, all_reduce_sum

ENWIK8 = {
    "url": "http://mattmahoney.net/dc/enwik8.zip",
    "member": "enwik8",
    "size": 100_000_000,
    "md5": "a1fa5ffddb56f4953e226637dabbb36a",  # of the extracted file (mattmahoney.net/dc/textdata.html)
    "split_bytes": 5_000_000,  # valid and test each (prep_enwik8.py: num_test_chars = 5000000)
}
LN2 = math.log(2.0)
VOCAB_MODES = ("unique", "bytes")
NEWLINE_MODES = ("keep", "drop")  # drop: the Transformer-XL protocol (see the module docstring)
NEWLINE = 10
# Bytes that text does not contain: C0 controls except TAB, LF, VT, FF, CR; and DEL.
CONTROL_BYTES = np.array([*range(0, 9), *range(14, 32), 127])
MAX_CONTROL_SHARE = 0.01  # of all bytes
MAX_INVALID_UTF8_SHARE = 0.25  # of the sample's bytes (Latin-1 text has a few percent)
SAMPLE_BYTES = 1 << 20  # per place sampled for the UTF-8 check: start, middle, end


def bits_per_char(nats: float) -> float:
    return nats / LN2


# ----------------------------------------------------------------------------- reading
def read_corpus_bytes(path: Path) -> bytes:
    """The bytes of a plain, gzipped (.gz) or zipped (.zip, one member) file."""
    if path.suffix in (".gz", ".zip") and path.is_file() and path.stat().st_size == 0:
        raise PruneLabError(
            f"{path} is empty (0 bytes), not a {path.suffix[1:]} archive. Fix: fetch or copy it again "
            "(an interrupted download?), or point data.path / data.root at a good copy."
        )
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
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError) as e:
        # gzip.BadGzipFile is an OSError; RuntimeError: an encrypted zip; NotImplementedError: its compression
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


def check_options(cfg: dict) -> tuple[str, str]:
    """``data.vocab`` and ``data.newlines``, checked."""
    vocab = str(cfg.get("vocab", "unique"))
    if vocab not in VOCAB_MODES:
        raise PruneLabError(
            f"data.vocab={vocab!r} is not a vocabulary mode. Fix: data.vocab=unique (the file's distinct bytes, "
            "FLOP's read_corpus) or data.vocab=bytes (all 256 byte values)"
        )
    newlines = str(cfg.get("newlines", "keep"))
    if newlines not in NEWLINE_MODES:
        raise PruneLabError(
            f"data.newlines={newlines!r}: use data.newlines=keep (every byte, FLOP's SRU loader) or "
            "data.newlines=drop (the Transformer-XL enwik8 protocol: newline bytes removed, V = 204)"
        )
    return vocab, newlines


def _stored_size(path: Path) -> int | None:
    """The content size without decompressing: a plain file's length, a one-member zip's
    recorded size; None for .gz (only reading tells) and for zips that are not one member."""
    if path.suffix == ".gz":
        return None
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                members = [i for i in z.infolist() if not i.is_dir()]
                return members[0].file_size if len(members) == 1 else None
        except (OSError, zipfile.BadZipFile):
            return None  # reading the file names the problem
    return path.stat().st_size


def _check_enwik8_size(cfg: dict, path: Path, size: int) -> None:
    if size != ENWIK8["size"] and cfg.get("strict_sizes", True):
        raise PruneLabError(
            f"{path} holds {size:,} bytes; enwik8 is {ENWIK8['size']:,}. Fix: re-download it "
            "(data.download=true after deleting the file), or data.strict_sizes=false to read a partial copy."
        )


def byte_counts(data: np.ndarray) -> np.ndarray:
    """How often each byte value occurs: (256,) int64 (in chunks: np.bincount widens its input to
    int64, 8x the memory of 100 MB at once, and is several times slower that way)."""
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, len(data), 1 << 22):
        counts += np.bincount(data[start : start + (1 << 22)], minlength=256)
    return counts


def check_text(raw: bytes | np.ndarray, path: Path, counts: np.ndarray | None = None) -> None:
    """Refuse content that is not text (see the module docstring): a byte-level language model
    trained on random bytes, an image archive or compressed data learns nothing and says so only
    in its bits per character. ``counts``: the byte counts of ``raw`` when already known."""
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes | bytearray) else raw
    n = len(data)
    if n == 0:
        return
    counts = byte_counts(data) if counts is None else counts
    control = int(counts[CONTROL_BYTES].sum())
    problem = None
    if control > MAX_CONTROL_SHARE * n:
        problem = (
            f"{control / n:.1%} of its {n:,} bytes are control bytes ({int(counts[0]):,} NUL bytes); "
            f"text has almost none (at most {MAX_CONTROL_SHARE:.0%} accepted)"
        )
    else:
        places = sorted({0, max(0, n // 2 - SAMPLE_BYTES // 2), max(0, n - SAMPLE_BYTES)})
        sample = b"".join(data[p : p + SAMPLE_BYTES].tobytes() for p in places)
        invalid = len(sample) - len(sample.decode("utf-8", errors="ignore").encode("utf-8"))  # bytes dropped
        if invalid > MAX_INVALID_UTF8_SHARE * len(sample):
            problem = (
                f"{invalid / len(sample):.0%} of a {len(sample):,}-byte sample is not valid UTF-8 "
                f"(at most {MAX_INVALID_UTF8_SHARE:.0%} accepted)"
            )
    if problem:
        raise PruneLabError(
            f"{path} is not text: {problem}. A byte-level language model needs a text file (UTF-8 or ASCII; "
            "plain, .gz, or .zip holding one file), not binary data, a compressed file under another name, "
            "or an archive of images. Fix: point data.path (data.root for enwik8) at a text file; convert "
            "UTF-16 text to UTF-8 first."
        )


@dataclass(frozen=True)
class CorpusLayout:
    """What ``check_content`` found: where the raw bytes are cut into train / valid / test, the
    vocabulary (the byte value of each token id) and the newline rule."""

    cuts: tuple[int, int]  # raw offsets: train = [0, cuts[0]), valid = [cuts[0], cuts[1]), test = the rest
    vocab: tuple[int, ...]
    newlines: str

    def splits(self, raw: bytes) -> list[np.ndarray]:
        """The three splits as byte arrays, newline bytes removed with ``newlines: drop``."""
        data = np.frombuffer(raw, dtype=np.uint8)
        parts = [data[: self.cuts[0]], data[self.cuts[0] : self.cuts[1]], data[self.cuts[1] :]]
        return [part[part != NEWLINE] for part in parts] if self.newlines == "drop" else parts


def check_content(cfg: dict, path: Path, raw: bytes) -> CorpusLayout:
    """Every check of a corpus's content: enwik8's size, that it is text, the split sizes, the
    vocabulary against ``data.num_classes``. One pass of byte counts per split, no copies."""
    kind = cfg.get("kind", cfg["name"])
    vocab_mode, newlines = check_options(cfg)
    if kind == "enwik8":
        _check_enwik8_size(cfg, path, len(raw))
    data = np.frombuffer(raw, dtype=np.uint8)
    n = len(data)
    if n == 0:
        raise PruneLabError(
            f"{path} is empty (0 bytes): there is nothing to train on. Fix: point "
            f"{'data.root' if kind == 'enwik8' else 'data.path'} at the corpus file (a failed download or copy?)"
        )
    valid_n, test_n = _split_sizes(cfg, n, path)
    cuts = (n - valid_n - test_n, n - test_n)
    counts = [byte_counts(part) for part in (data[: cuts[0]], data[cuts[0] : cuts[1]], data[cuts[1] :])]
    check_text(data, path, counts=sum(counts))
    if newlines == "drop":
        for part in counts:
            part[NEWLINE] = 0
        short = [(name, int(c.sum())) for name, c in zip(("train", "valid", "test"), counts, strict=True)]
        short = [(name, size) for name, size in short if size < 2]
        if short:
            raise PruneLabError(
                f"{path}: with data.newlines=drop the {short[0][0]} split keeps {short[0][1]} bytes (it is all "
                "newlines); each split needs at least 2. Fix: data.newlines=keep, or larger split sizes."
            )
    present = sum(counts) > 0
    vocab = tuple(range(256)) if vocab_mode == "bytes" else tuple(int(b) for b in np.flatnonzero(present))
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != len(vocab):
        kept = ", newlines dropped" if newlines == "drop" else ""
        raise PruneLabError(
            f"{path} has {len(vocab)} distinct symbols (data.vocab={vocab_mode}{kept}) but "
            f"data.num_classes={expected}: the model's output size. Fix: data.num_classes={len(vocab)}"
        )
    return CorpusLayout(cuts, vocab, newlines)


_CHECKED: set[tuple] = set()  # corpora already checked in this process: (file identity, settings)


def check_available(cfg: dict) -> None:
    """Before any run directory exists: the options, that the file is there, and its content
    (``check_content``); a corpus that passed once in this process (same file, size, mtime and
    settings) is not read again."""
    check_options(cfg)
    kind = cfg.get("kind", cfg["name"])
    if kind == "enwik8" and cfg.get("download"):
        root = Path(cfg["root"]).expanduser().resolve()
        if enwik8_path(root) is None:
            return  # downloaded (and checked) by the run
    path = corpus_path(cfg)
    if kind == "enwik8":
        stored = _stored_size(path)
        if stored is not None:  # before decompressing 100 MB
            _check_enwik8_size(cfg, path, stored)
    stat = path.stat()
    settings = ("kind", "vocab", "newlines", "num_classes", "strict_sizes", "test_bytes", "valid_bytes")
    key = (
        str(path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ino,
        *(str(cfg.get(k)) for k in (*settings, "test_fraction", "valid_fraction")),
    )
    if key in _CHECKED:
        return
    check_content(cfg, path, read_corpus_bytes(path))
    _CHECKED.add(key)


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


# ----------------------------------------------------------------------------- fast evaluation
EVAL_LANES = {"cpu": 16, "cuda": 512}  # evaluate_streams' default lane budget per device type
BURN_IN_SHARE = 8  # a cut lane scores >= 8x the characters it reads unscored (<= 12.5% extra work)
FREE_WINDOW_POSITIONS = 2048  # lanes x window of a window-independent model (SRU): long windows, small tensors
MAX_FREE_WINDOW = 2048


@dataclass(frozen=True)
class EvalLane:
    """One row of ``evaluate_streams``' batch: positions ``[start, start + length)`` of stream
    ``stream``; the first ``burn_in`` of them are read but not scored."""

    stream: int
    start: int
    length: int
    burn_in: int


def plan_lanes(lengths: list[int], burn_in: int | None, window: int, max_lanes: int) -> list[EvalLane]:
    """Lanes for streams of ``lengths`` positions. ``burn_in`` None: one lane per stream (a stream
    that cannot be cut exactly). Otherwise each stream is cut into chunks of C positions (C a
    multiple of ``window``, so every lane starts on a window boundary of its stream): lane k reads
    ``[kC, (k+1)C + burn_in)`` and scores it from ``kC + burn_in`` (lane 0 from 0: the stream
    starts empty too), so consecutive lanes score adjacent, disjoint ranges. At most about
    ``max_lanes`` lanes in all, each scoring at least ``BURN_IN_SHARE`` x ``burn_in`` positions."""
    if burn_in is None or max_lanes <= len(lengths):
        return [EvalLane(i, 0, n, 0) for i, n in enumerate(lengths)]
    longest = max(lengths)
    per_stream = max(1, max_lanes // len(lengths))
    if burn_in > 0:
        per_stream = min(per_stream, max(1, (longest - burn_in) // (BURN_IN_SHARE * burn_in)))
    chunk = max(1, math.ceil(max(1, longest - burn_in) / per_stream / window)) * window
    out = []
    for i, n in enumerate(lengths):
        for k in range(max(1, math.ceil((n - burn_in) / chunk))):
            start = k * chunk
            out.append(EvalLane(i, start, min(n, start + chunk + burn_in) - start, burn_in if k else 0))
    return out


def _language_model(model: torch.nn.Module) -> torch.nn.Module:
    """The stateful language model inside ``model`` (a wrapper's module): the first with ``reset_state``."""
    return next((m for m in model.modules() if callable(getattr(m, "reset_state", None))), model)


def evaluate_streams(
    model: torch.nn.Module,
    splits: dict[str, TokenSplit],
    batch_size: int,
    window: int,
    *,
    max_lanes: int | None = None,
    dist: DistInfo = SINGLE,
    engine: Any = None,
    on_window: Callable[[int, int], None] | None = None,
    every: int = 4,
) -> dict[str, dict]:
    """Loss (nats per character), bits per character, top-1 / top-5 (%) of each split, each cut
    into ``batch_size`` lanes (``lanes``) walked from an empty state: the numbers of
    ``pruning.train.evaluate`` over ``test_batches`` with ``eval_bptt = window``, computed as the
    module docstring's "Fast evaluation" says. ``max_lanes``: how many lanes run side by side
    (default ``EVAL_LANES`` of the device type); under DDP the lanes are shared out among the
    ranks and the sums added up, so every rank gets the whole number. ``engine``: a
    ``pruning.train.Engine`` (autocast), as ``evaluate`` takes it. ``on_window(done, total)``
    every ``every`` windows and after the last (no host synchronisation in between). Each split's
    dict also holds ``chars``, the number of characters scored."""
    lm = _language_model(model)
    device = next(model.parameters()).device
    burn_hook = getattr(lm, "stream_burn_in", None)
    burn_in = int(burn_hook(window)) if callable(burn_hook) else None
    free = bool(getattr(lm, "stream_window_independent", False))
    if free:
        burn_in = None  # never cut (its state is not bounded); walk long windows instead
    names = list(splits)
    streams = [lanes(splits[name], batch_size) for name in names]  # (inputs, targets), each (B, P)
    rows = [(g, b) for g, (x, _) in enumerate(streams) for b in range(x.shape[0])]
    lengths = [streams[g][0].shape[1] for g, _ in rows]
    budget = max_lanes or EVAL_LANES.get(device.type, EVAL_LANES["cpu"])
    plan = plan_lanes(lengths, burn_in, window, budget)[dist.rank :: dist.world_size]
    totals = torch.zeros(len(names), 4, dtype=torch.float64, device=device)  # loss, top-1, top-5, count
    model.eval()
    lm.reset_state()
    if plan:
        span = max(lane.length for lane in plan)
        step = max(window, min(MAX_FREE_WINDOW, FREE_WINDOW_POSITIONS // len(plan))) if free else window
        x = torch.zeros(len(plan), span, dtype=streams[0][0].dtype)
        y = torch.zeros_like(x)
        scored = torch.zeros(len(plan), span, dtype=torch.bool)
        for j, lane in enumerate(plan):
            g, b = rows[lane.stream]
            x[j, : lane.length] = streams[g][0][b, lane.start : lane.start + lane.length]
            y[j, : lane.length] = streams[g][1][b, lane.start : lane.start + lane.length]
            scored[j, lane.burn_in : lane.length] = True
        x, y, scored = x.to(device), y.to(device), scored.to(device)
        group = torch.tensor([rows[lane.stream][0] for lane in plan], device=device)
        per_lane = torch.zeros(len(plan), 3, dtype=torch.float64, device=device)
        count = len(range(0, span, step))
        with torch.inference_mode():
            for i, t in enumerate(range(0, span, step)):
                xw, yw, mask = x[:, t : t + step].long(), y[:, t : t + step].long(), scored[:, t : t + step]
                if engine is None:
                    logits = model(xw).float()  # (lanes * w, V), rows (lane, t)
                else:
                    with engine.autocast(device):
                        logits = model(engine.inputs(xw)).float()
                target = yw.reshape(-1)
                loss = F.cross_entropy(logits, target, reduction="none").view_as(mask)
                # rank of the target: how many logits beat it (a tie counts for the target; topk
                # would break it by position) -- one compare instead of a top-5 sort per row
                above = (logits > logits.gather(1, target[:, None])).sum(1).view_as(mask)
                per_lane[:, 0] += torch.where(mask, loss, 0.0).sum(1, dtype=torch.float64)
                per_lane[:, 1] += ((above < 1) & mask).sum(1)
                per_lane[:, 2] += ((above < 5) & mask).sum(1)
                if on_window is not None and ((i + 1) % every == 0 or i + 1 == count):
                    on_window(i + 1, count)
        totals[:, :3].index_add_(0, group, per_lane)
        totals[:, 3].index_add_(0, group, scored.sum(1, dtype=torch.float64))
        lm.reset_state()  # no inference-mode tensors left in the model's state
    totals = all_reduce_sum(totals, dist).tolist()
    out = {}
    for name, (loss, top1, top5, n) in zip(names, totals, strict=True):
        out[name] = {
            "top1": 100.0 * top1 / n,
            "top5": 100.0 * top5 / n,
            "test_loss": loss / n,
            "bpc": loss / n / LN2,
            "chars": int(n),
        }
    return out


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
        device = canonical_device(device)
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


def _split_sizes(cfg: dict, n: int, path: Path | str = "the corpus") -> tuple[int, int]:
    """(valid, test) sizes in bytes of an ``n``-byte corpus; every split needs at least 2 bytes."""
    kind = cfg.get("kind", cfg["name"])
    if cfg.get("test_bytes") is not None or kind == "enwik8":
        test = int(cfg.get("test_bytes") or ENWIK8["split_bytes"])
        valid = int(cfg.get("valid_bytes") or test)
        how = f"data.valid_bytes={valid:,} / data.test_bytes={test:,}"
    else:
        valid_fraction, test_fraction = float(cfg.get("valid_fraction", 0.05)), float(cfg.get("test_fraction", 0.05))
        test = int(round(n * test_fraction))
        valid = int(round(n * valid_fraction))
        fractions = f"data.valid_fraction={valid_fraction:g} / data.test_fraction={test_fraction:g}"
        how = f"{fractions}: {valid:,} / {test:,} bytes"
    if valid < 2 or test < 2 or valid + test >= n - 2:
        raise PruneLabError(
            f"{path} holds {n:,} bytes: too small for validation and test splits of {how}, plus training "
            f"({n - valid - test:,} bytes left; validation and test need at least 2 bytes each, training 3). "
            "Fix: a larger file, or other split sizes (data.valid_fraction / data.test_fraction, or "
            "data.valid_bytes / data.test_bytes)."
        )
    return valid, test


def encode(raw: bytes | np.ndarray, vocab_mode: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Token ids (uint8) and the byte value of each id. ``unique``: the ids of FLOP's
    ``np.unique(data, return_inverse=True)``, computed with a 256-entry lookup table (no sort)."""
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes | bytearray) else raw
    if vocab_mode == "bytes":
        return data, tuple(range(256))
    if vocab_mode != "unique":
        raise PruneLabError(f"data.vocab={vocab_mode!r}: use unique (FLOP's read_corpus) or bytes (all 256 values)")
    present = byte_counts(data) > 0
    rank = (np.cumsum(present) - 1).astype(np.uint8)  # byte value -> its index among the present values
    return rank[data], tuple(int(b) for b in np.flatnonzero(present))


def load_text(cfg: dict) -> TextData:
    """Read, check, encode and split the corpus a text ``data`` config names."""
    kind = cfg.get("kind", cfg["name"])
    if kind == "enwik8":
        root = Path(cfg["root"]).expanduser().resolve()
        if enwik8_path(root) is None and cfg.get("download"):
            download_enwik8(root)
    path = corpus_path(cfg)
    raw = read_corpus_bytes(path)
    layout = check_content(cfg, path, raw)
    vocab_mode, newlines = check_options(cfg)
    info: dict[str, Any] = {"source": str(path), "bytes": len(raw), "newlines": newlines}
    if kind == "enwik8" and cfg.get("check_md5", True):
        info["official_md5"] = hashlib.md5(raw).hexdigest() == ENWIK8["md5"]
    parts = layout.splits(raw)
    joined = np.concatenate(parts) if newlines == "drop" else np.frombuffer(raw, dtype=np.uint8)
    ids, vocab = encode(joined, vocab_mode)
    assert vocab == layout.vocab
    tensor = torch.from_numpy(ids.copy())
    n_train, n_valid = len(parts[0]), len(parts[1])
    train = TokenSplit(tensor[:n_train])
    valid = TokenSplit(tensor[n_train : n_train + n_valid])
    test = TokenSplit(tensor[n_train + n_valid :])
    fingerprint = hashlib.sha1(raw)
    if newlines == "drop":  # other tokens from the same file: another baseline (keep: ids unchanged)
        fingerprint.update(b"\0newlines=drop")
    info["fingerprint"] = fingerprint.hexdigest()[:16]
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
