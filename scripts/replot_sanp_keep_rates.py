"""Redraw ``sanp_keep_rates.png`` of finished SANP runs from their ``sanp_keep_rates.json`` and
``metrics.json`` (after a change to the picture; no retraining, no code from the files).

    python scripts/replot_sanp_keep_rates.py results/runs/cifar10/resnet20/sanp-r0.5
"""

from __future__ import annotations

import sys
from pathlib import Path

from pruning.io import read_json
from pruning.methods.sanp import plot_keep_rates


def main() -> None:
    roots = [Path(a) for a in sys.argv[1:]] or [Path("results/runs")]
    for root in roots:
        for record_path in sorted(root.rglob("sanp_keep_rates.json")):
            metrics = read_json(record_path.parent / "metrics.json")
            if metrics.get("status") != "done":
                continue
            arch = (metrics.get("spec_dense") or {}).get("arch")
            target = float(metrics["key"]["ratio"])
            title = (
                f"SANP {arch}: mean MACs -{metrics['flops_reduction']:.1f}% (target -{100 * target:.0f}%), "
                f"top-1 {metrics['final']['top1']:.2f}%"
            )
            plot_keep_rates(read_json(record_path), record_path.with_suffix(".png"), title)
            print(record_path.with_suffix(".png"))


if __name__ == "__main__":
    main()
