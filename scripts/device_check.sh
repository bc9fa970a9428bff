#!/usr/bin/env bash
# The GPU check (issue 23), one script within ~8 minutes on one NVIDIA GPU:
#   1. install the project (editable; dependencies the machine lacks from --wheels DIR, else PyPI)
#   2. the tests that need CUDA (pytest -m cuda: engine options vs fp32, GPU vs CPU evaluation,
#      prune-exp end to end on CUDA)
#   3. the training benchmark: raw step per engine option, prune-exp's ResNet-56 epoch on the full
#      CIFAR-10 (plain / auto / fast), dense-vs-pruned latency (scripts/bench_train.py)
#   4. a short real run of two methods (L1-norm ResNet-56-B fine-tuned; TAS on ResNet-20)
# and writes one JSON: results/benchmarks/device-check-<gpu>.json (with the benchmark's .md beside it).
#
#   bash scripts/device_check.sh --cifar-jpeg DIR [--wheels DIR] [--out FILE]
#   bash scripts/device_check.sh --device cpu --quick     # what a CPU can test of it (tests/test_device_check.py)
#
# --cifar-jpeg DIR: a copy of ../shared/data/cifar10 (cifar10-jpeg.tar.gz + prepare.py, 19 MB); it is
# decoded to data/cifar10-jpeg. Without CIFAR-10 the benchmark's epoch section and the two runs use
# what is there (--data-root, default data/cifar10-jpeg) or are skipped with the reason in the JSON.
set -uo pipefail

PY=${PYTHON:-python3}
DEVICE=cuda
QUICK=0
WHEELS=""
CIFAR_JPEG=""
DATA_ROOT=data/cifar10-jpeg
OUT=""
BUDGET_S=480
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --wheels) WHEELS=$2; shift 2 ;;
        --cifar-jpeg) CIFAR_JPEG=$2; shift 2 ;;
        --data-root) DATA_ROOT=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --budget-s) BUDGET_S=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "device_check.sh: --device $DEVICE: use cuda or cpu" >&2; exit 2 ;; esac
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then echo "device_check.sh: --wheels $WHEELS is not a folder" >&2; exit 2; fi
if [ -n "$CIFAR_JPEG" ] && [ ! -f "$CIFAR_JPEG/prepare.py" ]; then
    echo "device_check.sh: --cifar-jpeg $CIFAR_JPEG has no prepare.py (give a copy of ../shared/data/cifar10)" >&2
    exit 2
fi
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # paths given are relative to where it was called
[ -n "$WHEELS" ] && WHEELS=$(abs "$WHEELS")
[ -n "$CIFAR_JPEG" ] && CIFAR_JPEG=$(abs "$CIFAR_JPEG")
[ -n "$OUT" ] && OUT=$(abs "$OUT")
[ "$DATA_ROOT" != data/cifar10-jpeg ] && DATA_ROOT=$(abs "$DATA_ROOT")
cd "$(dirname "$0")/.." || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
STAGES="$WORK/stages.jsonl"
: >"$STAGES"

left() { echo $((BUDGET_S - ($(date +%s) - START))); }
# stage NAME TIMEOUT_S COMMAND...: run it with a time limit, log to $WORK/NAME.log, record the outcome
stage() {
    local name=$1 limit=$2
    shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s)" >&2
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    tail -n 5 "$WORK/$name.log" >&2
    "$PY" - "$name" "$rc" $(($(date +%s) - t0)) "$WORK/$name.log" >>"$STAGES" <<'EOF'
import json, sys
name, rc, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tail = open(log, errors="replace").read()[-2000:]
print(json.dumps({"stage": name, "rc": rc, "seconds": seconds, "timed_out": rc in (124, 137), "log_tail": tail}))
EOF
    return $rc
}
skip() {
    "$PY" -c 'import json,sys; print(json.dumps({"stage": sys.argv[1], "skipped": sys.argv[2]}))' "$1" "$2" >>"$STAGES"
    echo "== $1 skipped: $2" >&2
}

# 1. install
do_install() {
    if [ -n "$WHEELS" ]; then
        "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation -e . || return 1
    elif "$PY" -c "import hydra, omegaconf, pandas, tabulate, rich, torch, torchvision" 2>/dev/null; then
        "$PY" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    else
        "$PY" -m pip install -q -e . || return 1
    fi
    "$PY" -c "import pruning, torch; print('pruning', pruning.__file__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
}
export -f do_install
export PY WHEELS
stage install 240 bash -c do_install || echo "install failed: see the JSON" >&2

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "device_check.sh: --device cuda but torch sees no CUDA device (use --device cpu to test the script)" >&2
    exit 2
fi

# data: decode the carried JPEG copy of CIFAR-10 (~10-20 s)
if [ -n "$CIFAR_JPEG" ] && [ ! -f "$DATA_ROOT/cifar-10-batches-py/test_batch" ]; then
    stage cifar10 120 "$PY" "$CIFAR_JPEG/prepare.py" "$DATA_ROOT"
fi
HAVE_CIFAR=0
[ -f "$DATA_ROOT/cifar-10-batches-py/test_batch" ] && HAVE_CIFAR=1

# 2. the tests that need CUDA
if [ "$DEVICE" = cuda ]; then
    stage cuda_tests 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py --junitxml="$WORK/cuda-tests.xml"
else
    stage cuda_tests 60 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py --junitxml="$WORK/cuda-tests.xml"
fi

# 3. the benchmark
if [ "$QUICK" = 1 ]; then
    BENCH=(--quick --device "$DEVICE")
else
    BENCH=(--device "$DEVICE" --models resnet56 --epoch-models resnet56 --epoch-train 0 --epoch-test 0 --epochs 2)
    BENCH+=(--parity-seeds 0 --latency-repeats 20)
    BENCH+=(--variants "NCHW (plain)" channels_last channels_last+bf16 "fast (cl+bf16+compile, CUDA graphs)")
fi
stage benchmark $(($(left) > 300 ? 300 : $(left))) \
    "$PY" scripts/bench_train.py "${BENCH[@]}" --data-root "$DATA_ROOT" --out "$WORK/bench" --tag bench

# 4. a short real run of two methods
RUNS="$WORK/results"
if [ "$HAVE_CIFAR" = 1 ]; then
    DATA=(data=cifar10 "data.root=$DATA_ROOT")
    if [ "$QUICK" = 1 ]; then DATA+=(data.train_subset=500 data.test_subset=200); fi
    EPOCHS=(schedule.epochs=$([ "$QUICK" = 1 ] && echo 1 || echo 4) schedule.finetune_epochs=$([ "$QUICK" = 1 ] && echo 1 || echo 2))
    L1=(model=resnet56 method=l1_norm method.variant=B "${EPOCHS[@]}")
    TAS=(model=resnet20 method=tas method.ratio=0.45 method.search_epochs=$([ "$QUICK" = 1 ] && echo 1 || echo 2) "${EPOCHS[@]}")
else
    DATA=(data=digits)
    L1=(method=l1_norm schedule.epochs=2 schedule.finetune_epochs=1)
    TAS=()
fi
COMMON=(device="$DEVICE" quiet=true "paths.results_root=$RUNS" latency.repeats=5)
if [ "$(left)" -gt 30 ]; then
    stage run_l1_norm $(($(left) > 150 ? 150 : $(left))) "$PY" -m pruning.cli.exp "${DATA[@]}" "${L1[@]}" "${COMMON[@]}"
else
    skip run_l1_norm "out of time ($(left) s left of $BUDGET_S)"
fi
if [ ${#TAS[@]} -eq 0 ]; then
    skip run_tas "no CIFAR-10 under $DATA_ROOT (give --cifar-jpeg DIR)"
elif [ "$(left)" -gt 30 ]; then
    stage run_tas $(($(left) > 150 ? 150 : $(left))) "$PY" -m pruning.cli.exp "${DATA[@]}" "${TAS[@]}" "${COMMON[@]}"
else
    skip run_tas "out of time ($(left) s left of $BUDGET_S)"
fi

# one JSON
GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo unknown)
SLUG=$(echo "$GPU" | tr '[:upper:] ' '[:lower:]-' | tr -cd 'a-z0-9._-')
OUT=${OUT:-results/benchmarks/device-check-$SLUG.json}
mkdir -p "$(dirname "$OUT")"
"$PY" - "$WORK" "$OUT" "$GPU" "$DEVICE" "$QUICK" "$START" "$BUDGET_S" <<'EOF'
import json, os, platform, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

work, out, gpu, device, quick, start, budget = sys.argv[1:8]
work, out = Path(work), Path(out)
stages = [json.loads(line) for line in (work / "stages.jsonl").read_text().splitlines() if line.strip()]
report = {
    "gpu": gpu,
    "device": device,
    "quick": quick == "1",
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "host": platform.node(),
    "total_s": int(time.time()) - int(start),
    "budget_s": int(budget),
    "stages": stages,
}
try:
    import torch

    report["torch"], report["cuda"] = torch.__version__, torch.version.cuda
except ImportError:
    pass
junit = work / "cuda-tests.xml"
if junit.exists():
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    report["cuda_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
bench = work / "bench" / "bench.json"
if bench.exists():
    report["benchmark"] = json.loads(bench.read_text())
    md = out.with_suffix(".md")
    md.write_text((work / "bench" / "bench.md").read_text())
runs = []
for metrics in sorted((work / "results").glob("runs/**/metrics.json")):
    m = json.loads(metrics.read_text())
    final = m.get("final") or {}
    runs.append(
        {
            "run": str(metrics.parent.relative_to(work / "results")),
            "status": m.get("status"),
            "top1_dense": (m.get("stages", {}).get("pretrain") or {}).get("top1"),
            "top1": final.get("top1"),
            "flops_reduction": m.get("flops_reduction"),
            "params_reduction": m.get("params_reduction"),
            "latency": m.get("latency"),
            "wall_s": sum(
                float((s or {}).get("wall_s") or 0) for s in (m.get("stages") or {}).values() if isinstance(s, dict)
            ),
            "data": (m.get("data") or {}).get("name"),
        }
    )
report["runs"] = runs
failed = [s["stage"] for s in stages if s.get("rc", 0) != 0]
report["ok"] = not failed and bool(runs)
report["failed_stages"] = failed
tmp = out.with_suffix(".json.tmp")
tmp.write_text(json.dumps(report, indent=2))
os.replace(tmp, out)
print(f"wrote {out} ({report['total_s']} s; ok={report['ok']}; failed: {failed or 'none'})")
EOF
status=$?
[ $status -ne 0 ] && exit $status
"$PY" -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['ok'] else 1)" "$OUT"
