"""One look per method in every report figure, and points that cannot hide each other.

Every figure of ``prune-report`` (a paper table's accuracy-vs-FLOPs panels, the sweep plot) draws
a method in the same colour and with the same marker shape (:data:`METHOD_STYLES`): L1-norm is
the blue circle in ``sweep_*`` as in ``pfs_evidence_*``. The second-stage policy (or, in a paper
table, the column) is the marker's fill: fine-tuned full, scratch-E left half, scratch-B right
half (:data:`FILLS`); a paper's published value is hollow. Points of different series that land
on (nearly) the same spot are spread sideways by a small, labelled offset (:func:`dodge_offsets`).

Which method a run is: its ``method``, except that ANP-VS's variants (BP, ANP without VS) are
methods of their own in the ANP tables and a dense run is "dense", "AT" or "TRADES" by its
adversarial training (:func:`style_key`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodStyle:
    color: str
    marker: str


# colours: tab10 for the common methods, tab20b/c dark tones for the rest; markers all distinct
METHOD_STYLES: dict[str, MethodStyle] = {
    "dense": MethodStyle("#7f7f7f", "*"),
    "l1_norm": MethodStyle("#1f77b4", "o"),
    "network_slimming": MethodStyle("#ff7f0e", "D"),
    "magnitude": MethodStyle("#2ca02c", "s"),
    "sanp": MethodStyle("#d62728", "v"),
    "tas": MethodStyle("#9467bd", "^"),
    "thinet": MethodStyle("#8c564b", "P"),
    "channel_pruning": MethodStyle("#e377c2", "X"),
    "pfs": MethodStyle("#bcbd22", "h"),
    "flop": MethodStyle("#17becf", "<"),
    "agp": MethodStyle("#843c39", ">"),
    "anp_vs": MethodStyle("#7b4173", "D"),
    "anp_novs": MethodStyle("#ce6dbd", "d"),
    "bp": MethodStyle("#393b79", "v"),
    "at": MethodStyle("#637939", "s"),
    "trades": MethodStyle("#8c6d31", "p"),
    "wanda": MethodStyle("#6b6ecf", "8"),
    "sparsegpt": MethodStyle("#b5cf6b", "H"),
}
_SPARE_COLORS = ("#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#a55194", "#8ca252", "#bd9e39")
_SPARE_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h")

# a policy's (or a paper table column's) fill and line style; paper values are hollow
FILLS = ("full", "left", "right", "bottom", "top")
POLICY_FILLS = {"finetune": "full", "scratch_e": "left", "scratch_b": "right", "none": "full"}
POLICY_LINESTYLES = {"finetune": "-", "scratch_e": ":", "scratch_b": "-.", "none": "-"}
FILL_WORDS = {
    "full": "filled",
    "left": "left half filled",
    "right": "right half filled",
    "bottom": "lower half",
    "top": "upper half",
}
MARKER_SIZE = 9.5
DODGE_NOTE = "points that would coincide are offset sideways"


def style_key(method: Any, variant: Any = None, adv_train: Any = None) -> str:
    """The method a run's colour and marker follow (module docstring)."""
    method = str(method)
    if method == "anp":
        return str(variant) if isinstance(variant, str) and variant else "anp_vs"
    if method == "none":
        return {"pgd": "at", "trades": "trades"}.get(str(adv_train), "dense")
    return method


def method_style(key: str) -> MethodStyle:
    """The colour and marker of ``key`` (:func:`style_key`); an unknown method gets a fixed
    spare one derived from its name (the same in every figure and every run of the report)."""
    if key in METHOD_STYLES:
        return METHOD_STYLES[key]
    h = zlib.crc32(key.encode("utf-8"))
    return MethodStyle(_SPARE_COLORS[h % len(_SPARE_COLORS)], _SPARE_MARKERS[(h // 7) % len(_SPARE_MARKERS)])


def run_style_key(run: Any) -> str:
    """:func:`style_key` of a run record (a mapping or a DataFrame row)."""
    get = run.get if hasattr(run, "get") else (lambda k, d=None: getattr(run, k, d))
    return style_key(get("method"), get("variant"), get("adv_train"))


def marker_kwargs(key: str, fill: str = "full", hollow: bool = False, size: float = MARKER_SIZE) -> dict[str, Any]:
    """``plot`` / ``errorbar`` keywords for a marker of method ``key``: its colour and shape,
    ``fill`` (a :data:`FILLS` entry; ``hollow``: a paper value), a white-less alternate half."""
    style = method_style(key)
    return {
        "color": style.color,
        "marker": style.marker,
        "markersize": size,
        "markeredgecolor": style.color,
        "markeredgewidth": 1.3,
        "fillstyle": "none" if hollow else fill,
        "markerfacecoloralt": "white",
    }


def dodge_offsets(
    points: Sequence[tuple[float, float]],
    x_span: tuple[float, float],
    y_span: tuple[float, float],
    log_x: bool = False,
    near: float = 0.025,
    step: float = 0.022,
) -> list[float]:
    """Per point, an x offset (in data units; a factor for ``log_x``) that spreads points lying
    within ``near`` of the axes' spans of each other (both directions; chains join) side by side:
    ``step`` of the x span apart around their mean x, in their left-to-right order; 0 (1 for
    ``log_x``) for a point that nothing covers. ``near`` and ``step``: about a marker's size."""

    def tx(x: float) -> float:
        return math.log10(x) if log_x and x > 0 else x

    x_lo, x_hi = (tx(v) for v in x_span)
    width = (x_hi - x_lo) or 1.0
    height = (y_span[1] - y_span[0]) or 1.0
    normal = [((tx(x) - x_lo) / width, (y - y_span[0]) / height) for x, y in points]
    parent = list(range(len(points)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(points)):
        for j in range(i):
            if abs(normal[i][0] - normal[j][0]) < near and abs(normal[i][1] - normal[j][1]) < near:
                parent[root(i)] = root(j)
    clusters: dict[int, list[int]] = {}
    for i in range(len(points)):
        clusters.setdefault(root(i), []).append(i)
    offsets = [1.0 if log_x else 0.0] * len(points)
    for members in clusters.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda i: (normal[i][0], i))  # left to right as they were: never swapped
        center = sum(normal[i][0] for i in members) / len(members)
        for rank, i in enumerate(members):
            shift = (center + (rank - (len(members) - 1) / 2) * step - normal[i][0]) * width
            offsets[i] = 10**shift if log_x else shift
    return offsets


def shifted(x: float, offset: float, log_x: bool = False) -> float:
    """``x`` moved by a :func:`dodge_offsets` offset."""
    return x * offset if log_x else x + offset
