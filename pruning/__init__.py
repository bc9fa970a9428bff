"""prune-lab: reproduce network-pruning papers' comparison tables from one pipeline.

The library is Hydra-free: everything here takes plain Python objects (dicts, tensors,
modules). The Hydra entry points live in ``pruning.cli`` (``cli/`` in the repository).
"""

__version__ = "0.1.0"


class PruneLabError(Exception):
    """An error caused by the user's input (config, data, paths). The CLI prints it
    without a traceback and exits with status 2."""
