"""Hydra configuration (installed as ``pruning.conf``); YAML only."""
