"""``prune-report``: paper tables (paper / ours / Δ) and sweep plots from finished runs.

    prune-report                                   # every spec in conf/report/, all formats
    prune-report rethinking_l1_cifar10 --format latex
    prune-report --results-root results --out results/tables

A thin argparse wrapper around ``pruning.report`` (no Hydra). Exit status: 0 on success, 2 on a
bad table name, a missing results root or an invalid report spec.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from pruning import PruneLabError
from pruning.report import FORMATS, generate_reports, load_specs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prune-report",
        description="Render paper tables (paper / ours / delta) and sweep plots from the "
                    "metrics.json of finished runs.")
    parser.add_argument("tables", nargs="*",
                        help="report specs to render (default: all in conf/report/)")
    parser.add_argument("--results-root", default="results",
                        help="searched recursively for metrics.json (default: results)")
    parser.add_argument("--out", default="results/tables",
                        help="output directory (default: results/tables)")
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="all",
                        help="file format(s) to write (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    errors = Console(stderr=True)
    try:
        specs = load_specs()
        unknown = [name for name in args.tables if name not in specs]
        if unknown:
            errors.print(f"prune-report: error: unknown table {', '.join(map(repr, unknown))}; "
                         f"available: {', '.join(specs)}", markup=False)
            return 2
        if not Path(args.results_root).is_dir():
            errors.print(f"prune-report: error: results root {args.results_root!r} does not "
                         "exist (run prune-exp first, or pass --results-root)", markup=False)
            return 2
        formats = FORMATS if args.format == "all" else (args.format,)
        written = generate_reports(args.results_root, args.out, names=args.tables or None,
                                   formats=formats, console=Console())
    except PruneLabError as e:
        errors.print(f"prune-report: error: {e}", markup=False)
        return 2
    errors.print(f"prune-report: wrote {len(written)} files to {args.out}", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
