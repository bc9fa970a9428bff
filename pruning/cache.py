"""Cached artefacts shared by runs: dense baselines, TAS searches, and whatever later methods
compute once and reuse (PFS gates, FLOP masks, ...).

    value, hit = cached(directory, load=read_it, build=make_it, say=print)

* ``directory`` is the entry, named by a content hash of everything that determines it (the
  caller's identity); a file lock in it makes concurrent sweep jobs wait for one builder.
* ``load(directory)`` returns the value or raises (``CorruptFileError``, ``KeyError``,
  ``TypeError``, ``RuntimeError``) when the entry is absent, incomplete or unreadable; a corrupt
  entry's files are moved aside (``*.corrupt-<time>``) and the value is built again, instead of
  failing every run that shares it until someone deletes it by hand.
* ``build(directory)`` computes the value, writes the entry's files (atomically) and returns it;
  it may checkpoint inside ``directory`` and resume from there when killed.
* Under DDP only rank 0 takes the lock and decides; every rank then loads or builds together.
* An entry is ``<cache_dir>/<kind>/<name>``: both names must be safe folder names and the entry
  must hold no link that leads out of it (its ``.lock`` would be truncated through one), so a
  crafted ``model.name`` or a link planted in a shared cache never writes outside the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from pruning import CorruptFileError, PruneLabError, distributed
from pruning.distributed import SINGLE, DistInfo
from pruning.io import (
    SAFE_NAME,
    SAFE_NAME_RULE,
    check_inside,
    clean_stray_temp_files,
    ensure_dir,
    os_error_message,
    quarantine,
    refuse_symlinks,
)

T = TypeVar("T")
# AttributeError: a JSON file of the wrong shape (info.json holding a string: ``info.get``)
UNREADABLE = (CorruptFileError, KeyError, TypeError, RuntimeError, ValueError, AttributeError)


def check_entry(directory: Path, what: str = "cached artefact") -> None:
    """``PruneLabError`` unless ``directory`` is ``<cache folder>/<kind>/<name>`` with two safe
    names, lies inside the cache folder once resolved, and holds no link leading out of it."""
    directory = Path(directory)
    for part in (directory.parent.name, directory.name):
        if not SAFE_NAME.fullmatch(part):
            raise PruneLabError(
                f"the {what} {directory} would not be a folder of its cache ({part!r}: {SAFE_NAME_RULE}); "
                "check the names in the config (model.name, data.name)"
            )
    refuse_symlinks(directory, directory.parent.parent)
    check_inside(directory, directory.parent.parent, f"the {what}", "its cache folder")


def digest(identity: Any, length: int = 12) -> str:
    """A short content hash of a JSON-able identity (sorted keys)."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:length]


def cached(
    directory: Path,
    *,
    load: Callable[[Path], T],
    build: Callable[[Path], T],
    files: tuple[str, ...],
    say: Callable[[str], None],
    what: str = "cached artefact",
    dist: DistInfo = SINGLE,
) -> tuple[T, bool]:
    """The entry's value and whether it came from the cache (see the module docstring).
    ``files``: the entry's final files; all present means the entry is complete."""
    directory = Path(directory)
    check_entry(directory, what)
    lock = FileLock(str(directory / ".lock"))
    if dist.is_main:
        ensure_dir(directory)
        try:
            lock.acquire()
        except OSError as e:
            raise PruneLabError(os_error_message(e, directory / ".lock")) from None
        clean_stray_temp_files(directory)  # left by a killed write; we hold the lock
    try:
        value = _try_load(directory, load, files, say, what) if dist.is_main else None
        hit = distributed.broadcast(value is not None, dist)  # rank 0's finding
        if hit:
            return (value if dist.is_main else load(directory)), True
        return build(directory), False
    finally:
        distributed.barrier(dist)
        if dist.is_main:
            lock.release()


def _try_load(
    directory: Path, load: Callable[[Path], T], files: tuple[str, ...], say: Callable[[str], None], what: str
) -> T | None:
    if not all((directory / name).exists() for name in files):
        return None
    try:
        return load(directory)
    except UNREADABLE as e:
        bad = getattr(e, "path", None)
        for name in files:
            if (directory / name).exists():
                quarantine(directory / name)
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        say(
            f"warning: the {what} in {directory} is unreadable ({Path(bad).name + ': ' if bad else ''}{reason}); "
            "moved aside (*.corrupt-*), building it again"
        )
        return None
