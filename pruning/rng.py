"""What makes a run repeatable bit for bit: the random-number state of the process and a checksum
of the weights a run starts from.

* ``capture()`` / ``restore(...)``: the torch CPU generator, the CUDA generators (when CUDA is
  initialised), numpy's and Python's ``random`` global states, as plain tensors and numbers
  (a checkpoint holding them still loads with ``weights_only=True``). Every epoch checkpoint of
  a stage or of a method's own loop stores ``capture()`` under ``RNG_KEY``; a resumed loop then
  draws the dropout masks (and any other global random numbers) it would have drawn unkilled.
  Data order never needs this: every loop builds its epoch's ``torch.Generator`` from
  (seed, epoch).
* ``seed_all(seed)``: seed the four generators at the start of a stage, so that a stage's random
  stream depends on its seed only, not on what ran before it in the same process.
* ``state_sha256(state_dict)``: a sha256 over a network's tensors in a fixed order (name, dtype,
  shape, raw bytes): which exact dense net a run descends from (``RunMetrics.baseline_sha256``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

RNG_KEY = "rng_state"  # where an epoch checkpoint holds ``capture()``


def capture() -> dict[str, Any]:
    """The process's random-number state (see the module docstring)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_words, py_gauss = random.getstate()
    cuda, cuda_device = None, None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
        cuda_device = torch.cuda.current_device()
    return {
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
        "cuda_device": cuda_device,  # the device this process trains on (its rank's, under DDP)
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "words": torch.tensor(py_words, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }


def restore(checkpoint: Mapping[str, Any], say: Callable[[str], None], what: str = "checkpoint") -> bool:
    """Restore the state ``capture()`` stored in ``checkpoint[RNG_KEY]``; True when the resume
    is exact. An older checkpoint without it still resumes: with only the torch states some
    loops saved before (``rng`` / ``cuda_rng``), or none, and ``say`` warns that the resumed
    run's random numbers (dropout masks, ...) differ from an uninterrupted run's."""
    state = checkpoint.get(RNG_KEY)
    if isinstance(state, Mapping):
        _set_torch(state.get("torch"), state.get("cuda"), state.get("cuda_device"))
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                numpy_state["name"],
                numpy_state["keys"].cpu().numpy().astype(np.uint32),
                int(numpy_state["pos"]),
                int(numpy_state["has_gauss"]),
                float(numpy_state["cached_gaussian"]),
            )
        )
        python_state = state["python"]
        words = tuple(int(w) for w in python_state["words"].tolist())
        random.setstate((int(python_state["version"]), words, python_state["gauss_next"]))
        return True
    legacy = checkpoint.get("rng")
    if isinstance(legacy, torch.Tensor):  # an older loop's checkpoint: torch CPU (+ CUDA) only
        cuda = checkpoint.get("cuda_rng")
        _set_torch(legacy, [cuda] if isinstance(cuda, torch.Tensor) else None)
        missing = "numpy's and Python's random states"
    else:
        missing = "random-number states"
    say(
        f"warning: the {what} predates saved {missing}: the resumed run continues on another random stream "
        "(dropout masks, ...), so it is not bit-identical to an uninterrupted run"
    )
    return False


def _set_torch(cpu: torch.Tensor | None, cuda: list[torch.Tensor] | None, cuda_device: int | None = None) -> None:
    """Under DDP rank 0 writes the checkpoint and every rank restores it: each rank's own device
    gets the state of the device rank 0 trained on (the ranks draw the same stream from one seed)."""
    if cpu is not None:
        torch.set_rng_state(cpu.cpu())
    if cuda and torch.cuda.is_available():
        for index, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), index)
        if cuda_device is not None and 0 <= int(cuda_device) < len(cuda):
            torch.cuda.set_rng_state(cuda[int(cuda_device)].cpu(), torch.cuda.current_device())


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def state_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) over a state_dict: every entry in sorted name order as its name, dtype, shape
    and raw bytes (little-endian, as on every platform torch runs on). Equal for equal weights
    on any device; any changed bit, buffer or name changes it."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):  # e.g. a stray extra state: its repr is its identity
            h.update(f"{name}\0{value!r}\0".encode())
            continue
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}\0{tensor.dtype}\0{tuple(value.shape)}\0".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
