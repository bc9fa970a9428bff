#!/usr/bin/env bash
# Re-run committed runs, each from its own recorded command line (<run_dir>/.hydra/overrides.yaml),
# with rerun=true: the same run directory, retrained from the dense baseline in this machine's cache.
#
#   bash scripts/rerun_runs.sh RUN_DIR [RUN_DIR ...]
#   bash scripts/rerun_runs.sh --baseline resnet20-cifar10-61eb24e05f47 --pretrain-top1 58.09
#
# The second form picks every committed run whose dense baseline had that cache id and that
# pretrain top-1: the runs that descend from a stale copy of a baseline (issue 22: the seed-0
# ResNet-20 of the 8-epoch CIFAR-10 evidence was trained twice under one id, 58.09 under torch
# 2.15 and 57.19 under torch 2.14.1), so that every row of a table descends from one dense net.
# Runs are sequential; a killed script resumes with the same command (finished runs are skipped
# only without rerun=true, so a re-run already redone is recognised by its baseline_sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
PRUNE_EXP=${PRUNE_EXP:-.venv/bin/prune-exp}
PY=${PY:-.venv/bin/python}

if [ "${1:-}" = "--baseline" ]; then
  mapfile -t DIRS < <("$PY" - "$2" "$4" <<'EOF'
import json, sys
from pathlib import Path
baseline, top1 = sys.argv[1], float(sys.argv[2])
for path in sorted(Path("results/runs").rglob("metrics.json")):
    m = json.loads(path.read_text())
    pre = (m.get("stages") or {}).get("pretrain") or {}
    redone = m.get("baseline_sha256") and m.get("status") == "done"
    if pre.get("baseline_id") == baseline and (pre.get("top1") == top1 or m.get("status") != "done") and not redone:
        print(path.parent)
EOF
  )
else
  DIRS=("$@")
fi
echo "rerun_runs: ${#DIRS[@]} runs"
for dir in "${DIRS[@]}"; do
  mapfile -t ARGS < <("$PY" -c "import sys, yaml; print('\n'.join(yaml.safe_load(open(sys.argv[1]))))" \
    "$dir/.hydra/overrides.yaml")
  echo "rerun_runs: $dir"
  "$PRUNE_EXP" "${ARGS[@]}" rerun=true
done
