"""The method interface every pruning method implements, and the result it returns.

The pipeline calls, in order: ``validate(spec)`` before anything runs, ``pretrain_extras()``
(what the method changes in dense training, so the baseline cache keys on it), and
``prune(model, ctx)`` on the trained dense model. Methods that search or train their own way
(TAS, FLOP, ...) override more hooks later; the finetune / scratch-E / scratch-B policy is
the pipeline's, never the method's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from pruning import PruneLabError

if TYPE_CHECKING:
    from pruning.data import Data


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class PruneContext:
    """What a method may use while pruning: the data (for data-driven criteria), the device,
    and the input shape (for FLOPs targets); methods that search (TAS) also get a work
    directory for resumable checkpoints and their own outputs, and whether to stay quiet."""

    data: Data | None = None  # pruning.data protocol (None: a data-free method, e.g. in dry runs)
    device: str = "cpu"
    input_shape: tuple[int, ...] = (3, 32, 32)
    seed: int = 0
    work_dir: Path | None = None  # the run directory (None: no checkpoints / outputs)
    quiet: bool = True
    cache_dir: Path | None = None  # where expensive, shareable results are cached (pruning.cache.cached)
    source_id: str | None = None  # the dense baseline's cache id: what a cached search depends on
    say: Callable[[str], None] = _stderr  # progress / warnings (the pipeline passes its console)


@dataclass
class PruneResult:
    model: nn.Module  # the pruned network (weights copied from the dense one)
    spec: dict  # its width spec (JSON-able), used to rebuild it for scratch training
    keep: dict[str, list[int]] | None = None  # structured: kept channel indices per group
    masks: dict[str, Any] | None = None  # unstructured: {param name: 0/1 mask}
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific numbers for metrics
    # the method's own training stage, if it has one (TAS's search, PFS's gate learning, ...):
    # {"name": "search", "epochs": E, "samples": images processed, "macs_per_sample": forward MACs
    #  of the network trained, "wall_s": t, ...}; recorded as metrics.stages[name] with its cost
    own_stage: dict[str, Any] | None = None


class Method:
    """Base class. ``name`` is the config name; ``key()`` the fields that identify a run."""

    name = "base"
    prunes = True  # False for the dense-only baseline
    data_free_architecture = False  # True: the pruned widths do not depend on the trained weights
    needs_pretrained = True  # False: the method starts from random weights (no dense pretraining)
    language_models = False  # True: it also prunes the character language models (SRU, Transformer-XL)

    def key(self) -> dict[str, Any]:
        return {"variant": None, "ratio": None}

    def settings(self) -> dict[str, Any]:
        """Settings besides ``key()`` that change a run's result (e.g. Network Slimming's
        sparsity s): written to metrics.json as ``method_settings``, so that prune-report never
        averages runs made with different settings."""
        return {}

    def tag(self) -> str:
        k = self.key()
        if k.get("variant") is not None:
            return str(k["variant"])
        if k.get("ratio") is not None:
            return f"r{k['ratio']:g}"
        return "dense"

    def validate(self, model_name: str, spec: dict) -> None:  # noqa: B027
        """Raise PruneLabError on a configuration this method cannot run."""

    def dense_spec(self, spec: dict) -> dict:
        """The dense network this method starts from, given the model config's spec (default: that
        spec). TAS returns the full-width net of its own family (official shortcuts), so the
        baseline it distils from and every FLOPs reduction refer to the same family."""
        return spec

    def pretrain_extras(self) -> dict[str, Any]:
        return {}

    def pretrain_grad_hook(self):
        """Optional callable(model) run between backward() and step() during dense training
        (Network Slimming's L1 on BN scales); None for plain training."""
        return None

    def architecture(self, spec: dict) -> dict | None:
        """The pruned spec when the widths are fixed before any data is seen (a ratio or a
        paper variant) even though *which* channels survive is data-driven (ThiNet, LASSO);
        dry runs and run plans report its FLOPs. None: unknown before pruning."""
        return None

    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        raise NotImplementedError

    def distillation(self) -> dict[str, float] | None:
        """Knowledge distillation for the second stage: {"alpha": a, "temperature": T} makes
        the pipeline train the pruned net against the frozen dense net (TAS); None: plain CE."""
        return None

    def scratch_init(self, model: nn.Module, masks: dict[str, Any] | None) -> None:  # noqa: B027
        """Re-initialise a freshly built pruned network for scratch-E/B (default: the model's
        own init is kept)."""


def check_ratio(ratio: Any, what: str = "method.ratio") -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise PruneLabError(f"{what}={ratio!r} is not a number; use a fraction in [0, 1), e.g. {what}=0.5") from None
    if not 0.0 <= r < 1.0:
        raise PruneLabError(
            f"{what}={ratio!r} is outside [0, 1): it is the fraction of channels removed; e.g. {what}=0.5"
        )
    return r
