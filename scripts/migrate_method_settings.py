"""Add ``method_settings`` to metrics.json files written before prune-exp recorded it.

prune-report keeps runs with different method settings apart (e.g. Network Slimming's sparsity
s, ThiNet / LASSO's oneshot vs layerwise mode) using metrics.json ``method_settings``. Older
runs lack it; this script rebuilds it from each run's own resolved config (``.hydra/config.yaml``
in the run directory) through the method class, the same code prune-exp now uses. Runs that
already have it (unless --force), or have no saved config, are left alone (the latter are listed).

    python scripts/migrate_method_settings.py results/runs [--dry-run] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pruning.conf
from omegaconf import OmegaConf

from pruning import PruneLabError
from pruning.io import write_json
from pruning.pipeline import make_method

METHOD_CONF = Path(pruning.conf.__file__).resolve().parent / "method"


def settings_from_config(config_path: Path) -> dict:
    """The method settings a run was made with: the class comes from prune-lab's own
    ``conf/method/<name>.yaml`` (never from the run's ``_target_``, so a results file cannot
    make this script import anything), the arguments from the run's config."""
    method_cfg = OmegaConf.to_container(OmegaConf.load(config_path).method, resolve=True)
    name = str(method_cfg.get("name"))
    shipped = METHOD_CONF / f"{name}.yaml"
    if not name.isidentifier() or not shipped.is_file():
        raise PruneLabError(f"{config_path}: method name {name!r} is not one of prune-lab's methods")
    method_cfg["_target_"] = OmegaConf.to_container(OmegaConf.load(shipped))["_target_"]
    return make_method(method_cfg).settings()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a results/runs directory")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    parser.add_argument(
        "--force", action="store_true", help="rebuild the field where it exists too (after a method gained settings)"
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory (pass the results/runs folder)", file=sys.stderr)
        return 2
    changed, missing = 0, []
    for path in sorted(args.root.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        if "method_settings" in metrics and not args.force:
            continue
        config = path.parent / ".hydra" / "config.yaml"
        if not config.is_file():
            missing.append(path)
            continue
        try:
            settings = settings_from_config(config)
        except PruneLabError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if metrics.get("method_settings") == settings:
            continue
        print(f"{path}: method_settings = {settings}")
        if not args.dry_run:
            metrics["method_settings"] = settings
            write_json(path, metrics)
        changed += 1
    print(f"{changed} file(s) {'would change' if args.dry_run else 'updated'}")
    for path in missing:
        print(f"left alone (no .hydra/config.yaml beside it): {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
