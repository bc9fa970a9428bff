#!/usr/bin/env bash
# Re-run committed runs, each from its own recorded command line (<run_dir>/.hydra/overrides.yaml),
# in the same run directory, from the dense baseline in this machine's cache.
#
#   bash scripts/rerun_runs.sh RUN_DIR [RUN_DIR ...]
#   bash scripts/rerun_runs.sh --baseline resnet20-cifar10-61eb24e05f47 --pretrain-top1 58.09 [--reverse]
#
# The second form picks every committed run whose dense baseline had that cache id and that
# pretrain top-1: the runs that descend from a stale copy of a baseline (issue 22: the seed-0
# ResNet-20 of the 8-epoch CIFAR-10 evidence was trained twice under one id, 58.09 under torch
# 2.15 and 57.19 under torch 2.14.1), so that every row of a table descends from one dense net.
# A run recorded before baseline_sha256 existed is re-run from scratch (rerun=true); one already
# started by this script (it records baseline_sha256) is resumed if unfinished and skipped if done,
# so a killed script continues with the same command. Two copies may share the work (--reverse
# takes the list from its end): a run the other copy holds is skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
PRUNE_EXP=${PRUNE_EXP:-.venv/bin/prune-exp}
PY=${PY:-.venv/bin/python}

if [ "${1:-}" = "--baseline" ]; then
  mapfile -t DIRS < <("$PY" - "$2" "$4" "${5:-}" <<'PYEOF'
import json, sys
from pathlib import Path
baseline, top1, order = sys.argv[1], float(sys.argv[2]), sys.argv[3]
picked = []
for path in sorted(Path("results/runs").rglob("metrics.json")):
    m = json.loads(path.read_text())
    pre = (m.get("stages") or {}).get("pretrain") or {}
    redone = m.get("baseline_sha256") and m.get("status") == "done"
    if pre.get("baseline_id") == baseline and (pre.get("top1") == top1 or m.get("status") != "done") and not redone:
        picked.append(str(path.parent))
print("\n".join(reversed(picked) if order == "--reverse" else picked))
PYEOF
  )
else
  DIRS=("$@")
fi
echo "rerun_runs: ${#DIRS[@]} runs"
failed=0
for dir in "${DIRS[@]}"; do
  [ -n "$dir" ] || continue
  state=$("$PY" -c "
import json, sys
m = json.load(open(sys.argv[1]))
print('done' if m.get('baseline_sha256') and m.get('status') == 'done' else 'resume' if m.get('baseline_sha256') else 'rerun')
" "$dir/metrics.json" 2>/dev/null || echo rerun)
  if [ "$state" = "done" ]; then
    echo "rerun_runs: $dir already re-run, skipped"
    continue
  fi
  # the recorded command without its rerun= (this script decides: a resume must not start over)
  mapfile -t ARGS < <("$PY" -c "import sys, yaml; print('\n'.join(o for o in yaml.safe_load(open(sys.argv[1])) if not o.startswith('rerun=')))" \
    "$dir/.hydra/overrides.yaml")
  extra=()
  [ "$state" = "rerun" ] && extra=(rerun=true)
  echo "rerun_runs: $dir ($state)"
  "$PRUNE_EXP" "${ARGS[@]}" "${extra[@]}" || { echo "rerun_runs: $dir did not finish (exit $?)"; failed=1; }
done
exit $failed
