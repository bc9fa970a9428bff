"""Redraw the per-run pictures of finished runs from their recorded JSON (after a change to a
picture; no retraining, no code from the files): every run directory under the given folders
(default ``results/runs``) whose ``metrics.json`` says ``done`` and that holds one of

    tas_search.json      -> tas_widths.png       (TAS width / depth distributions)
    pfs_gates.json       -> pfs_gates.png        (Pruning from Scratch gates and kept widths)
    sanp_keep_rates.json -> sanp_keep_rates.png  (SANP per-layer / per-class keep rates)
    anp_masks.json       -> anp_masks.png        (ANP units kept and E[pi] per mask site)

    python scripts/replot_run_figures.py                          # every run under results/runs
    python scripts/replot_run_figures.py results/runs/cifar10/resnet20/sanp-r0.5 --only sanp
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pruning import PruneLabError
from pruning.io import read_json


def _tas(record_path: Path, metrics: dict) -> Path:
    from pruning.methods.tas import plot_distributions, widths_title

    log = read_json(record_path)
    last = log["epochs"][-1]
    out = record_path.parent / "tas_widths.png"
    trained = metrics.get("spec_pruned") if isinstance(metrics.get("spec_pruned"), dict) else None
    if trained is not None and trained.get("arch") != "resnet_tas":
        trained = None
    reduction = metrics.get("flops_reduction") if trained is not None else None
    title = widths_title(
        len(log["epochs"]),
        float(log["ratio"]),
        last["flops_ratio_argmax"],
        float(reduction) if isinstance(reduction, (int, float)) else None,
    )
    plot_distributions(last, out, title, trained)  # the trained net's widths, the argmax behind them
    return out


def _pfs(record_path: Path, metrics: dict) -> Path:
    from pruning.methods.pfs import gates_title, net_name, pfs_dense_spec, plot_gates

    record = read_json(record_path)
    try:
        net = net_name(pfs_dense_spec(metrics.get("spec_dense") or {}))
    except (PruneLabError, KeyError):
        net = str((metrics.get("spec_dense") or {}).get("arch"))
    epochs = (metrics.get("method_settings") or {}).get("gate_epochs") or len(record.get("history") or [])
    title = gates_title(
        net,
        record["expansion"],
        record["sparsity_level"],
        epochs,
        record["saved_epoch"],
        record["ratio"],
        record["achieved"],
    )
    out = record_path.with_suffix(".png")
    plot_gates(record["layers"], out, title)
    return out


def _sanp(record_path: Path, metrics: dict) -> Path:
    from pruning.methods.sanp import keep_rates_title, plot_keep_rates

    title = keep_rates_title(
        (metrics.get("spec_dense") or {}).get("arch"),
        metrics["flops_reduction"],
        float(metrics["key"]["ratio"]),
        metrics["final"]["top1"],
    )
    out = record_path.with_suffix(".png")
    plot_keep_rates(read_json(record_path), out, title)
    return out


def _anp(record_path: Path, metrics: dict) -> Path:
    from pruning.methods.anp import masks_title, plot_masks

    record = read_json(record_path)
    extras = metrics.get("extras") or {}
    settings = metrics.get("method_settings") or {}
    threshold = record.get("threshold", settings.get("threshold", 1e-3))
    title = masks_title(
        record.get("variant") or extras.get("variant") or metrics["key"].get("variant"),
        (metrics.get("spec_dense") or {}).get("arch"),
        metrics["key"].get("data"),
        extras.get("masked_top1"),
        extras.get("removed_top1"),
    )
    out = record_path.with_suffix(".png")
    plot_masks(record, out, title, float(threshold))
    return out


# record file -> (short name for --only, redraw(record_path, metrics) -> written picture)
FIGURES: dict[str, tuple[str, Callable[[Path, dict], Path]]] = {
    "tas_search.json": ("tas", _tas),
    "pfs_gates.json": ("pfs", _pfs),
    "sanp_keep_rates.json": ("sanp", _sanp),
    "anp_masks.json": ("anp", _anp),
}


def replot(roots: list[Path], only: set[str] | None = None, say: Callable[[str], Any] = print) -> list[Path]:
    """Redraw every picture found under ``roots``; returns the written paths."""
    written: list[Path] = []
    for root in roots:
        for record_name, (short, redraw) in FIGURES.items():
            if only and short not in only:
                continue
            for record_path in sorted(Path(root).rglob(record_name)):
                metrics_path = record_path.parent / "metrics.json"
                if not metrics_path.exists():
                    say(f"skipped {record_path}: no metrics.json next to it")
                    continue
                metrics = read_json(metrics_path)
                if metrics.get("status") != "done":
                    say(f"skipped {record_path}: run status {metrics.get('status')!r}")
                    continue
                written.append(redraw(record_path, metrics))
                say(str(written[-1]))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, help="folders to search (default: results/runs)")
    parser.add_argument("--only", action="append", choices=sorted(s for s, _ in FIGURES.values()), help="repeatable")
    args = parser.parse_args(argv)
    written = replot(args.roots or [Path("results/runs")], set(args.only or []))
    print(f"{len(written)} picture(s) redrawn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
