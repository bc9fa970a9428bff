"""The dense baseline only: no pruning, no second stage. ``prune-exp method=none``."""

from __future__ import annotations

from pruning.methods.base import Method


class NoPruning(Method):
    name = "none"
    prunes = False
    language_models = True
