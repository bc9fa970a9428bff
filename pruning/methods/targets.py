"""What a method was asked to reach and what it reached: ``extras["target"]``.

Every method with a target (a FLOPs reduction, a mean-MACs reduction, a parameter sparsity, or, for
ANP-VS, "remove something") records one dict, kept in ``metrics.json`` under ``extras.target``:

    {"quantity": "flops_reduction",   # what is measured (QUANTITIES below)
     "asked": 0.5,                    # the target, a fraction in [0, 1] (None: no amount asked)
     "achieved": 0.4792,              # what the run reached, same unit
     "met": True,                     # the rule below holds
     "rule": "|achieved - asked| <= 10% of asked"}  # how ``met`` was decided, in words

A run whose target is not met says so through ``ctx.say`` at the end of its pruning
(``warn_if_missed``), and ``prune-exp``'s summary repeats it in yellow (``pruning.summary``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

QUANTITIES = {
    "flops_reduction": "fraction of the reference network's FLOPs (MACs) removed",
    "mean_macs_reduction": "fraction of the dense network's MACs removed from the mean per-sample cost",
    "param_sparsity": "fraction of the prunable parameters removed",
    "pruned_units": "fraction of the mask units removed",
}


def relative_rule(asked: float, achieved: float, tolerance: float) -> tuple[bool, str]:
    """``met`` when |achieved - asked| <= tolerance * asked."""
    met = abs(float(achieved) - float(asked)) <= float(tolerance) * float(asked) + 1e-12
    return met, f"|achieved - asked| <= {100 * tolerance:g}% of asked"


def target_record(quantity: str, asked: float | None, achieved: float, met: bool, rule: str) -> dict[str, Any]:
    """``extras["target"]`` (module docstring)."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown target quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
    return {
        "quantity": quantity,
        "asked": None if asked is None else float(asked),
        "achieved": float(achieved),
        "met": bool(met),
        "rule": rule,
    }


def describe(record: dict[str, Any], method: str = "") -> str:
    """One line: ``SANP: target missed: asked 50.0% mean MACs removed, achieved 3.2% (rule ...)``."""
    what = {
        "flops_reduction": "FLOPs removed",
        "mean_macs_reduction": "mean MACs removed",
        "param_sparsity": "of the prunable parameters removed",
        "pruned_units": "of the units removed",
    }.get(record.get("quantity"), str(record.get("quantity")))
    asked = record.get("asked")
    asked_text = "something removed" if asked is None else f"{100 * asked:.1f}% {what}"
    state = "met" if record.get("met") else "missed"
    prefix = f"{method}: " if method else ""
    return (
        f"{prefix}target {state}: asked {asked_text}, achieved {100 * record['achieved']:.1f}% {what} "
        f"(rule: {record.get('rule')})"
    )


def warn_if_missed(record: dict[str, Any], say: Callable[[str], None], method: str) -> None:
    """``say`` a warning when the target was not met."""
    if not record.get("met"):
        say(f"warning: {describe(record, method)}")
