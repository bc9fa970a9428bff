"""``prune-report``: paper tables (paper / ours / Δ) and sweep plots from finished runs.

    prune-report                                   # every spec in conf/report/, all formats
    prune-report rethinking_l1_cifar10 --format latex
    prune-report --format html                     # one self-contained page: results/tables/report.html
    prune-report --results-root results --out results/tables
    PRUNE_LAB_RESULTS=/scratch/runs prune-report    # the same root prune-exp wrote to; tables in /scratch/runs/tables

A thin argparse wrapper around ``pruning.report`` (no Hydra). Exit status: 0 on success, 2 on a
bad table name, a missing results root or an invalid report spec.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from pruning import PruneLabError
from pruning.io import check_writable
from pruning.report import FORMATS, HTML_NAME, REPORT_FORMATS, generate_reports, load_specs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prune-report",
        description="Render paper tables (paper / ours / delta) and sweep plots from the "
        "metrics.json of finished runs.",
    )
    parser.add_argument("tables", nargs="*", help="report specs to render (default: all in conf/report/)")
    parser.add_argument(
        "--results-root",
        default=None,
        help="searched recursively for metrics.json (default: $PRUNE_LAB_RESULTS, else "
        "results: the same root prune-exp writes to; prune-exp's "
        "paths.results_root=DIR is accepted too)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: RESULTS_ROOT/tables)")
    parser.add_argument(
        "--format",
        choices=[*FORMATS, *REPORT_FORMATS, "all"],
        default="all",
        help="md, csv, latex: one file per table; html: one self-contained page with every table and figure "
        f"({HTML_NAME}); all (default): every one of them",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # prune-exp's spelling of the results root works here too
    argv = [
        a
        for arg in argv
        for a in (("--results-root", arg.split("=", 1)[1]) if arg.startswith("paths.results_root=") else (arg,))
    ]
    args = _parser().parse_args(argv)
    if args.results_root is None:
        args.results_root = os.environ.get("PRUNE_LAB_RESULTS") or "results"
    if args.out is None:
        args.out = str(Path(args.results_root) / "tables")
    errors = Console(stderr=True)
    try:
        specs = load_specs()
        unknown = [name for name in args.tables if name not in specs]
        if unknown:
            errors.print(
                f"prune-report: error: unknown table {', '.join(map(repr, unknown))}; available: {', '.join(specs)}",
                markup=False,
            )
            return 2
        if not Path(args.results_root).is_dir():
            errors.print(
                f"prune-report: error: results root {args.results_root!r} does not "
                "exist (run prune-exp first, or pass --results-root)",
                markup=False,
            )
            return 2
        check_writable(Path(args.out), fix="pass --out DIR to write the tables elsewhere")
        formats = (*FORMATS, *REPORT_FORMATS) if args.format == "all" else (args.format,)
        written = generate_reports(
            args.results_root, args.out, names=args.tables or None, formats=formats, console=Console()
        )
    except PruneLabError as e:
        errors.print(f"prune-report: error: {e}", markup=False)
        return 2
    except KeyboardInterrupt:  # files already written are complete (atomic writes)
        errors.print("prune-report: interrupted (Ctrl-C)", markup=False)
        return 130
    errors.print(f"prune-report: wrote {len(written)} files to {args.out}", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
