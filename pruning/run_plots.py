"""Shared pieces of the per-run pictures the search / gate / mask methods draw next to their JSON
records (TAS ``tas_widths.png``, PFS ``pfs_gates.png``, SANP ``sanp_keep_rates.png``, ANP
``anp_masks.png``); ``scripts/replot_run_figures.py`` redraws them from the records.

Conventions: matplotlib's object-oriented API on the Agg canvas (no pyplot state, safe in worker
processes), layer names as tick labels, legends and colour bars outside the axes, saved with
``bbox_inches="tight"`` (nothing clipped) through :func:`pruning.io.atomic_write`. A picture is a
by-product: :func:`draw_safely` turns any failure (no matplotlib, a font problem) into a warning so
that the method's run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pruning.io import atomic_write

DPI = 110


def new_figure(width: float, height: float) -> Any:
    """A ``matplotlib.figure.Figure`` on an Agg canvas with constrained layout (aligned columns,
    room for rotated tick labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: Path, dpi: int = DPI) -> None:
    """PNG, atomically (temp file + rename), cropped to everything drawn (``bbox_inches="tight"``)."""
    atomic_write(Path(path), lambda f: figure.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))


def draw_safely(draw: Callable[..., Any], *args: Any, say: Callable[[str], None] = print, what: str = "") -> Any:
    """``draw(*args)``; on any failure, one warning through ``say`` and ``None`` (the run goes on)."""
    try:
        return draw(*args)
    except Exception as e:  # noqa: BLE001 - a picture must never fail a run
        say(f"warning: could not draw {what or getattr(draw, '__name__', 'the picture')}: {type(e).__name__}: {e}")
        return None


def short_layer_name(name: str) -> str:
    """A module path as a tick label: ``stages.1.2.conv0`` -> ``1.2.conv0`` (stage.block.layer);
    other names unchanged (``stem``, ``features.3``, ``conv1``)."""
    return name.removeprefix("stages.")


def layer_figure_width(n: int, per_layer: float = 0.32, base: float = 3.5, lo: float = 8.0, hi: float = 22.0) -> float:
    """Figure width (inches) for ``n`` layers side by side: wide enough for readable labels, capped
    (beyond the cap the labels are thinned, see :func:`set_layer_ticks`)."""
    return min(hi, max(lo, per_layer * n + base))


def set_layer_ticks(
    axes: Any, names: Sequence[str], axis: str = "x", max_labels: int = 64, fontsize: float | None = None
) -> None:
    """Layer names as the tick labels of ``axis`` at positions 0..n-1 (every k-th name when there are
    more than ``max_labels``); on x: level when few and short, else rotated 45 or (long or many) 90
    degrees."""
    n = len(names)
    step = max(1, -(-n // max_labels))
    positions = list(range(0, n, step))
    labels = [names[i] for i in positions]
    longest = max((len(s) for s in labels), default=0)
    if fontsize is None:
        fontsize = 9 if n <= 24 else 8 if n <= 48 else 7
    if axis == "x":
        slot = axes.get_figure().get_size_inches()[0] * 0.75 / max(1, len(positions))  # inches per label
        if longest * fontsize * 0.62 / 72 <= 0.85 * slot:  # fits level (approximate glyph width)
            rotation, ha = 0, "center"
        elif n <= 24 and longest <= 14:
            rotation, ha = 45, "right"
        else:
            rotation, ha = 90, "center"
        axes.set_xticks(positions, labels, rotation=rotation, ha=ha, rotation_mode="anchor" if ha == "right" else None)
        axes.tick_params(axis="x", labelsize=fontsize)
        axes.set_xlim(-0.6, n - 0.4)
    else:
        axes.set_yticks(positions, labels)
        axes.tick_params(axis="y", labelsize=fontsize)


def legend_outside(axes: Any, fontsize: float = 8, **kwargs: Any) -> Any:
    """The legend to the right of the axes, top-aligned: never over the data."""
    return axes.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=fontsize, frameon=False, **kwargs
    )


def colorbar_outside(figure: Any, mappable: Any, axes: Any, label: str) -> Any:
    """A colour bar in a slim inset just right of ``axes``: the axes keep their width, so panels
    stacked below stay aligned with it."""
    cax = axes.inset_axes([1.01, 0.0, 0.018, 1.0])
    bar = figure.colorbar(mappable, cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=8)
    return bar
