"""prune-lab: reproduce network-pruning papers' comparison tables from one pipeline.

The library is Hydra-free: everything here takes plain Python objects (dicts, tensors,
modules). The Hydra entry points live in ``pruning.cli`` (``cli/`` in the repository).
"""

__version__ = "0.1.0"


class PruneLabError(Exception):
    """An error caused by the user's input (config, data, paths). The CLI prints it
    without a traceback and exits with status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM sends on time-out or pre-emption), raised in the main thread so a run
    stops the way Ctrl-C stops it: status ``interrupted``, checkpoints intact, resumable."""


class CorruptFileError(PruneLabError):
    """A file prune-lab wrote or reads (checkpoint, cache entry, metrics.json, dataset batch)
    cannot be read back. ``path`` names it; callers that can rebuild it move it aside instead."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = path
