"""Thin command-line entry points (installed as ``pruning.cli``): ``prune-exp`` (Hydra) and
``prune-report``. Only this package imports Hydra's runtime."""
