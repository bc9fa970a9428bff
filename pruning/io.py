"""File writes and reads that fail safely.

* Atomic: write to a temp file in the target's folder, fsync, rename. A killed process never
  leaves a half-written metrics.json, history or checkpoint; stray temp files from a kill are
  removed by ``clean_stray_temp_files`` (called under the owner's lock).
* Files get the user's umask (``mkstemp`` alone gives 0600, which breaks a results root shared
  by a cluster group).
* A full disk, a read-only or unwritable folder is a ``PruneLabError`` that says so and names the
  file, not a low-level ``unexpected pos`` from the zip writer (checkpoints are serialised in
  memory first, so the only write that can fail is a plain ``write`` with its real errno).
* A checkpoint or JSON file that cannot be read back is a ``CorruptFileError`` naming the file;
  ``quarantine`` moves it aside so that the caller can rebuild it.
* Checkpoints are loaded with ``weights_only=True``: no code runs from a results file.
* Nothing is written through a symbolic link (a results root may be shared by a group): a write
  replaces the link (``atomic_write``, ``atomic_copy``, ``LinkReplacingFileHandler``), a name that
  becomes a path component must be one safe component (``check_name``), and a run directory that
  a link leads out of is refused before anything is written (``refuse_symlinks``, ``check_inside``).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from pruning import CorruptFileError, PruneLabError

TEMP_SUFFIX = ".tmp"
ROOT_FIX = "point paths.results_root (env PRUNE_LAB_RESULTS) at a writable directory"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def os_error_message(e: OSError, path: Path, action: str = "write", fix: str = ROOT_FIX) -> str:
    """One sentence a user can act on, for the errors a results root can give."""
    where = f"{action} {path}"
    if e.errno == errno.ENOSPC:
        return f"no space left on device: cannot {where}; free some space, or {fix}"
    if e.errno == errno.EDQUOT:
        return f"disk quota exceeded: cannot {where}; free some space, or {fix}"
    if e.errno == errno.EROFS:
        return f"read-only file system: cannot {where}; {fix}"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: cannot {where}; {fix} (or fix its permissions)"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot {where}: a file stands where a directory is needed ({e.strerror})"
    return f"cannot {where}: {e.strerror or e}"


def ensure_dir(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PruneLabError(os_error_message(e, path, "create the directory")) from None
    return path


def check_writable(path: Path, fix: str = ROOT_FIX) -> None:
    """Fail early (before any training) when ``path`` cannot be created or written: tries a temp
    file in it, or in its nearest existing ancestor when it does not exist yet (creates nothing)."""
    path = Path(path).absolute()
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise PruneLabError(f"cannot write {path}: {probe_dir} is a file, not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".prune-lab-probe.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PruneLabError(os_error_message(e, path, fix=fix)) from None


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise PruneLabError(os_error_message(e, path)) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically; a link at ``target`` is replaced, not followed
    (``shutil.copyfile`` writes through it)."""
    write_bytes(Path(target), Path(source).read_bytes())


class LinkReplacingFileHandler(logging.FileHandler):
    """``logging.FileHandler`` (Hydra's job log, ``<run_dir>/<job>.log``) that never appends
    through a symbolic link: a link at the log's path is removed and a regular file created."""

    def _open(self):  # noqa: ANN202  (logging's own hook)
        path = Path(self.baseFilename)
        if path.is_symlink():
            path.unlink()
        append = "a" in self.mode
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o666)  # the umask applies
        return os.fdopen(fd, "a" if append else "w", encoding=self.encoding, errors=self.errors)


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
SAFE_NAME_RULE = (
    "use one path component of letters, digits, '_', '-', '.' and '+' (not starting with '.' or '-', "
    "at most 128 characters)"
)


def check_name(value: Any, key: str) -> str:
    """``value`` as a string when it can be one folder or file name inside the results root or
    the cache (no '/', no '..', no hidden names); else a ``PruneLabError`` naming the key."""
    text = str(value)
    if not SAFE_NAME.fullmatch(text):
        raise PruneLabError(f"{key}={text!r} cannot name a folder of the results: {SAFE_NAME_RULE}")
    return text


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root`` once links and '..' are resolved (``root`` itself counts)."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_inside(path: Path, root: Path, what: str = "the run directory", key: str = "paths.results_root") -> None:
    if not is_inside(path, root):
        raise PruneLabError(
            f"{what} {path} resolves to {Path(path).resolve()}, outside {key}={root}; "
            "prune-exp writes only inside it (check the names in the config and the links under it)"
        )


def _link_message(link: Path) -> str:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return (
        f"{link} is a symbolic link (to {target}): prune-exp never writes through a link inside the results "
        f"root (a shared root could point it at anyone's files); remove the link ({link}) and re-run"
    )


def refuse_symlinks(path: Path, root: Path | None = None, contents: bool = True) -> None:
    """``PruneLabError`` naming the link when ``path`` (a run directory or cache entry), or a folder
    on its way down from ``root`` (``root`` itself may be a link: that is the user's choice), is a
    symbolic link, or when ``path`` holds a link that leads out of it (``contents``). Links that
    stay inside ``path`` (wandb's ``latest-run``) are harmless and allowed. Creates nothing."""
    path = Path(path).absolute()
    if root is not None:
        root = Path(root).absolute()
        below = Path(os.path.normpath(path))
        base = Path(os.path.normpath(root))
        if base in below.parents:
            current = base
            for part in below.relative_to(base).parts:
                current = current / part
                if current.is_symlink():
                    raise PruneLabError(_link_message(current))
                if not current.exists():
                    return
    if path.is_symlink():
        raise PruneLabError(_link_message(path))
    if not contents or not path.is_dir():
        return
    real = path.resolve()
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(folder) / name
            if entry.is_symlink() and not is_inside(entry, real):
                raise PruneLabError(_link_message(entry))


def portable_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` relative to the working directory when it lies inside it (what a committed
    metrics.json should hold: no machine's absolute checkout path); else, when it lies inside
    ``root`` (the results root, e.g. $PRUNE_LAB_RESULTS=/scratch/prl), as ``<root's name>/<path
    inside it>`` (``prl/runs/...``, the same form as ``results/runs/...``); else as given."""
    path = Path(path)
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        pass
    if root is not None:
        try:
            return str(Path(Path(root).name) / path.absolute().relative_to(Path(root).absolute()))
        except ValueError:
            pass
    return str(path)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    """Parsed JSON, or ``CorruptFileError`` naming the file when it is truncated or not JSON."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(
            path, f"{path} is corrupt or truncated (not valid JSON: {e}); delete it or move it aside and re-run"
        ) from None
    except RecursionError:  # a crafted file: [[[[...]]]] deeper than Python's recursion limit
        raise CorruptFileError(
            path, f"{path} is corrupt (JSON nested too deeply to read); delete it or move it aside and re-run"
        ) from None


def read_json_object(path: Path) -> dict:
    """``read_json`` for files that hold one JSON object (metrics.json, a cache entry's info.json):
    a list, a string or a number there is a ``CorruptFileError`` naming the file."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise CorruptFileError(
            path,
            f"{path} is corrupt (holds a JSON {type(value).__name__}, not an object); "
            "delete it or move it aside and re-run",
        )
    return value


def save_checkpoint(path: Path, obj: dict) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialise in memory: the file write is then one plain, errno-honest write
    write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by ``save_checkpoint`` (plain dicts of tensors), loaded with
    ``weights_only=True``. Truncated, corrupt or foreign files raise ``CorruptFileError``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        AttributeError,
        TypeError,
    ) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptFileError(
            path,
            f"{path} cannot be loaded (truncated, corrupt or not a prune-lab "
            f"checkpoint: {first_line[:200]}); delete it or move it aside and re-run",
        ) from None
    if not isinstance(state, dict):
        raise CorruptFileError(
            path,
            f"{path} is not a prune-lab checkpoint (holds a {type(state).__name__}, "
            "not a dict); delete it or move it aside and re-run",
        )
    return state


def quarantine(path: Path) -> Path:
    """Move a corrupt file aside (``NAME.corrupt-<timestamp>``) so it can be rebuilt; returns the
    new path. The evidence is kept for inspection, never silently deleted."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or target.is_symlink():  # two in one second: keep both pieces of evidence
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
    except OSError as e:
        raise PruneLabError(os_error_message(e, path, "move aside the corrupt file")) from None
    return target


def load_or_quarantine(
    path: Path, say: Callable[[str], None], map_location: str | torch.device = "cpu", what: str = "checkpoint"
) -> dict | None:
    """The checkpoint at ``path``; None when absent, or when corrupt (then moved aside, with a
    message saying so, and the caller rebuilds what it held)."""
    if not Path(path).exists():
        return None
    try:
        return load_checkpoint(path, map_location=map_location)
    except CorruptFileError as e:
        moved = quarantine(path)
        say(f"warning: {e}. Moved it to {moved.name}; the {what} is rebuilt.")
        return None


def clean_stray_temp_files(folder: Path) -> list[Path]:
    """Remove temp files that a killed ``atomic_write`` left in ``folder`` (call this only while
    holding the lock that owns the folder, so no live writer's temp file is removed)."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
