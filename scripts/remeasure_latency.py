"""Re-measure the dense vs pruned CPU latency of finished runs, in place.

A run measures latency once, at its end; on a shared machine another process can distort that
figure (one committed run timed its dense net at 1.5 s per batch of 64 instead of ~37 ms).
Latency depends on the architecture only, so this script rebuilds both nets from the run's
metrics.json (``spec_dense`` / ``spec_pruned``; weights are not needed) and times them side by
side with the pipeline's own ``measure_latency_pair``, at the CPU batch sizes, warm-up and
repeats of the run's ``.hydra/config.yaml``. It replaces the ``cpu_b*`` entries and records
when and why under ``latency_remeasured``; GPU entries are left alone (re-measure those on the
GPU by re-running with ``rerun=true``).

    python scripts/remeasure_latency.py RUN_DIR [RUN_DIR ...] [--reason TEXT]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import OmegaConf

from pruning.io import read_json, write_json
from pruning.measure import measure_latency_pair
from pruning.models import build


def remeasure(run_dir: Path, reason: str) -> dict:
    metrics_path, config_path = run_dir / "metrics.json", run_dir / ".hydra" / "config.yaml"
    for path in (metrics_path, config_path):
        if not path.is_file():
            raise SystemExit(
                f"error: {path} not found (pass a finished run directory that holds "
                "metrics.json and .hydra/config.yaml)"
            )
    metrics = read_json(metrics_path)
    if metrics.get("status") != "done" or not metrics.get("spec_pruned"):
        raise SystemExit(f"error: {run_dir} is not a finished pruning run (status {metrics.get('status')!r})")
    cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    data, lat = cfg["data"], cfg.get("latency") or {}
    shape = (int(data["in_channels"]), int(data["image_size"]), int(data["image_size"]))
    dense, pruned = build(metrics["spec_dense"]), build(metrics["spec_pruned"])
    latency = dict(metrics.get("latency") or {})
    for batch in lat.get("cpu_batch_sizes", [1, 64]):
        latency[f"cpu_b{int(batch)}"] = measure_latency_pair(
            dense,
            pruned,
            shape,
            "cpu",
            int(batch),
            warmup=int(lat.get("warmup", 3)),
            repeats=int(lat.get("repeats", 10)),
        )
    metrics["latency"] = latency
    metrics["latency_remeasured"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": "scripts/remeasure_latency.py",
        "reason": reason,
    }
    write_json(metrics_path, metrics)
    return latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--reason", default="re-measured side by side", help="recorded in metrics.json")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        latency = remeasure(run_dir, args.reason)
        cpu = ", ".join(
            f"{k}: {v['dense_ms']:.2f} / {v['pruned_ms']:.2f} ms = {v['speedup']:.2f}x"
            for k, v in sorted(latency.items())
            if k.startswith("cpu")
        )
        print(f"{run_dir}: {cpu}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
