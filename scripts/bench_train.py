"""Training-speed benchmark (``make bench``): what the hardware can do, what each engine option
gets of it, and what ``prune-exp`` gets of that, measured side by side in one run.

1. **Peak**: the machine's measured fp32 matrix-product rate (GFLOP/s; a large ``torch.mm`` at
   the torch thread count; on CUDA also bf16), the yardstick for "fraction of peak".
2. **Raw train step** (model, loss, SGD step on one resident batch: no data pipeline) for each
   engine option: contiguous NCHW fp32 eager (``engine=plain``, the reference numerics),
   channels_last, torch.compile (its compile time reported apart, with the images after which
   it pays), bf16 autocast, and combinations. Images/s (median of interleaved rounds, so load
   from other processes hits every variant alike), training GFLOP/s (3 x forward MACs x 2 per
   image), fraction of peak, and the ratio to NCHW.
3. **prune-exp epoch**: ``prune-exp method=none finetune=none`` on the CIFAR-10 copy (a
   subprocess, the real thing: uint8 data, batched augmentation, the loop, checkpointing, the
   test-set evaluation) for ``engine=auto`` (the default) and ``engine=plain`` (the CPU default
   until issue 23). From its history: training images/s against the raw step of the same engine
   (the pipeline's overhead), evaluation images/s, the epoch as run, and a full CIFAR-10 epoch
   (50,000 training + 10,000 test images) projected from the two measured rates.
4. **Parity** (``--parity-seeds``): the same short prune-exp training with ``engine=auto`` and
   ``engine=plain`` for several seeds: top-1 per engine (mean ± std) and the paired difference,
   to show the default changes results only within float noise.
5. **Latency** of the dense vs L1-norm paper variants (ResNet-56-A/B, ResNet-110-A/B, VGG-16-A):
   FLOPs speedup next to the measured speedup.

Writes results/benchmarks/<tag>.{md,json} (tag: cpu-<N>core, or gpu-<name>).

    python scripts/bench_train.py                                   # CPU, all sections
    python scripts/bench_train.py --device cuda --epoch-train 50000 # on a GPU
    python scripts/bench_train.py --quick --out /tmp/b              # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tabulate import tabulate

from pruning.measure import count_macs, measure_latency_pair
from pruning.methods.base import PruneContext
from pruning.methods.l1_norm import L1Norm
from pruning.models import build, default_spec
from pruning.train import Engine, Schedule, make_optimizer

MODELS = {  # name: (family, depth, prune-exp model config)
    "resnet20": ("resnet_cifar", 20, "resnet20"),
    "resnet56": ("resnet_cifar", 56, "resnet56"),
    "resnet110": ("resnet_cifar", 110, "resnet110"),
    "vgg16": ("vgg_cifar", 16, "vgg16"),
}
VARIANTS = {  # name: Engine
    "NCHW (plain)": Engine(),
    "channels_last": Engine(channels_last=True),
    "compile": Engine(compile=True),
    "channels_last+compile": Engine(channels_last=True, compile=True),
    "bf16": Engine(amp_bf16=True),
    "channels_last+bf16": Engine(channels_last=True, amp_bf16=True),
}
GPU_VARIANTS = {**VARIANTS, "fast (cl+bf16+compile, CUDA graphs)": Engine(True, True, True, "reduce-overhead")}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None) -> float:
    """Measured matrix-product rate: the best of 5 timed ``n x n @ n x n`` products (2 n^3 FLOPs)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


@torch.no_grad()
def conv_gflops(device: torch.device, channels: int = 512, size: int = 14, batch: int = 64) -> float:
    """Measured rate of a large 3x3 convolution in channels_last (the convolution library's best
    case: on a CPU oneDNN, which may use wider vector units than the BLAS behind torch.mm)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    conv(x)
    sync(device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        conv(x)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * batch * channels * channels * 9 * size * size / best / 1e9


def train_step_rows(
    name: str, device: torch.device, batch: int, variants: dict[str, Engine], rounds: int, steps: int, peak: float
) -> list[dict]:
    """Raw train step per engine variant: one resident batch, the same initial weights."""
    arch, depth, _ = MODELS[name]
    spec = default_spec(arch, depth=depth)
    macs = count_macs(build(spec), (3, 32, 32))
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    state = {}
    for vname, engine in variants.items():
        torch.manual_seed(0)
        model = build(spec).to(device)
        forward = engine.prepare(model)
        opt = make_optimizer(model, Schedule(epochs=1, lr=0.05, batch_size=batch))

        def step(forward=forward, opt=opt, engine=engine) -> None:
            with engine.autocast(device):
                loss = F.cross_entropy(forward(engine.inputs(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sync(device)
        t0 = time.perf_counter()
        step()  # compile / kernel choice / allocator
        sync(device)
        first_s = time.perf_counter() - t0
        for _ in range(2 if device.type == "cpu" else 10):
            step()
        sync(device)
        state[vname] = {"step": step, "first_s": first_s, "times": []}
    for _ in range(rounds):  # interleaved: load from elsewhere hits every variant alike
        for entry in state.values():
            t0 = time.perf_counter()
            for _ in range(steps):
                entry["step"]()
            sync(device)
            entry["times"].append(time.perf_counter() - t0)
    rows, base = [], None
    for vname, entry in state.items():
        ips = steps * batch / statistics.median(entry["times"])
        base = base or ips
        gflops = ips * 6 * macs / 1e9  # forward 2 FLOPs per MAC, backward twice the forward
        row = {
            "model": name,
            "batch": batch,
            "variant": vname,
            "img/s": ips,
            "× NCHW": ips / base,
            "GFLOP/s": gflops,
            "% of peak": 100 * gflops / peak,
            "first step s": entry["first_s"],
        }
        twin = {"compile": "NCHW (plain)", "channels_last+compile": "channels_last"}.get(vname)
        if twin in state:  # compile pays once its saving per image has repaid its compile time
            twin_ips = steps * batch / statistics.median(state[twin]["times"])
            saving = 1 / twin_ips - 1 / ips
            extra = entry["first_s"] - state[twin]["first_s"]
            row["compile pays after img"] = extra / saving if saving > 0 else None
        rows.append(row)
    return rows


def prune_exp(overrides: list[str], root: Path, timeout: int = 3600) -> dict:
    """Run prune-exp (dense training only) in its own results root; its history and config."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pruning.cli.exp", "method=none", "finetune=none", "quiet=true"]
    cmd += ["latency.enabled=false", f"paths.results_root={root}", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"prune-exp failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    (history,) = root.glob("cache/baselines/*/history.jsonl")
    (metrics,) = root.glob("runs/**/metrics.json")
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    shown = " ".join(c for c in cmd[3:] if not c.startswith("paths.results_root="))
    return {"history": rows, "metrics": json.loads(metrics.read_text()), "command": shown}


def epoch_rows(
    name: str, data_root: str, engines: list[str], epochs: int, n_train: int | None, n_test: int | None, raw: dict
) -> list[dict]:
    """prune-exp's epoch per engine; the last epoch's train / eval split from its history."""
    _, _, model_cfg = MODELS[name]
    rows = []
    for engine in engines:
        overrides = [f"model={model_cfg}", "data=cifar10", f"data.root={data_root}", f"engine={engine}"]
        overrides += [f"schedule.epochs={epochs}", "seed=0"]
        overrides += [f"data.train_subset={n_train}"] if n_train else []
        overrides += [f"data.test_subset={n_test}"] if n_test else []
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            run = prune_exp(overrides, Path(tmp))
        last, data = run["history"][-1], run["metrics"]["data"]
        train_n, test_n = int(data["train_size"]), int(data["test_size"])
        train_ips, eval_ips = train_n / last["train_s"], test_n / last["eval_s"]
        step = raw.get((name, "NCHW (plain)" if engine == "plain" else "channels_last"))
        rows.append(
            {
                "model": name,
                "engine": engine,
                "train img": train_n,
                "test img": test_n,
                "train img/s": train_ips,
                "raw step img/s": step,
                "train / raw step": train_ips / step if step else None,
                "eval img/s": eval_ips,
                "epoch s (as run)": last["epoch_s"],
                "epoch img/s (as run)": train_n / last["epoch_s"],
                "full CIFAR-10 epoch min": (50_000 / train_ips + 10_000 / eval_ips) / 60,
                "command": "prune-exp " + run["command"],
            }
        )
    base = {r["model"]: r for r in rows if r["engine"] == "plain"}.get(name)
    for r in rows:
        r["epoch × plain"] = (
            (r["train img"] / r["epoch s (as run)"]) / (base["train img"] / base["epoch s (as run)"]) if base else None
        )
    return rows


PARITY_ARMS = {  # name: prune-exp engine overrides
    "plain": ["engine=plain"],
    "auto": ["engine=auto"],
    "auto+bf16": ["engine=auto", "engine.amp_bf16=true"],
}


def parity_rows(
    data_root: str, seeds: int, epochs: int, n_train: int, n_test: int, arms: list[str]
) -> tuple[list[dict], list[dict]]:
    """ResNet-20 trained by prune-exp under each engine arm from the same seeds: final top-1 per
    run, and per arm the mean / std over seeds and the paired difference to engine=plain."""
    runs = []
    for seed in range(seeds):
        for arm in arms:
            overrides = ["model=resnet20", "data=cifar10", f"data.root={data_root}", *PARITY_ARMS[arm]]
            overrides += [f"schedule.epochs={epochs}", f"seed={seed}", f"data.train_subset={n_train}"]
            overrides += [f"data.test_subset={n_test}"]
            with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
                run = prune_exp(overrides, Path(tmp))
            last = run["history"][-1]
            runs.append({"seed": seed, "engine": arm, "top1": last["top1"], "train img/s": n_train / last["train_s"]})
    sd = statistics.stdev if seeds > 1 else (lambda v: 0.0)
    budget = f"ResNet-20, {epochs} epochs on {n_train} CIFAR-10 training images, {n_test} test images, {seeds} seeds"
    base = [r["top1"] for r in runs if r["engine"] == "plain"]
    summary = []
    for arm in arms:
        top1 = [r["top1"] for r in runs if r["engine"] == arm]
        diffs = [a - b for a, b in zip(top1, base, strict=True)] if base else []
        summary.append(
            {
                "engine": arm,
                "top1 mean": statistics.mean(top1),
                "top1 std": sd(top1),
                "Δ vs plain mean": statistics.mean(diffs) if diffs else None,
                "Δ vs plain std": sd(diffs) if diffs else None,
                "train img/s": statistics.median(r["train img/s"] for r in runs if r["engine"] == arm),
                "budget": budget,
            }
        )
    return runs, summary


def latency_rows(device: torch.device, repeats: int) -> list[dict]:
    rows = []
    settings = [("cpu", 1), ("cpu", 64)] + ([(str(device), 256)] if device.type == "cuda" else [])
    for name, arch, depth, variant in [
        ("ResNet-56-A", "resnet_cifar", 56, "A"),
        ("ResNet-56-B", "resnet_cifar", 56, "B"),
        ("ResNet-110-A", "resnet_cifar", 110, "A"),
        ("ResNet-110-B", "resnet_cifar", 110, "B"),
        ("VGG-16-A", "vgg_cifar", 16, "A"),
    ]:
        dense = build(default_spec(arch, depth=depth))
        pruned = L1Norm(variant=variant).prune(dense, PruneContext()).model
        row = {"model": name, "FLOPs×": count_macs(dense, (3, 32, 32)) / count_macs(pruned, (3, 32, 32))}
        for dev, batch in settings:
            pair = measure_latency_pair(dense, pruned, (3, 32, 32), dev, batch, warmup=10, repeats=repeats)
            d, p = pair["dense_ms"], pair["pruned_ms"]
            tag = "cpu" if dev == "cpu" else "gpu"
            row[f"{tag} b{batch} dense ms"] = d
            row[f"{tag} b{batch} pruned ms"] = p
            row[f"measured× {tag} b{batch}"] = d / p
        rows.append(row)
    return rows


def table(rows: list[dict], drop: tuple[str, ...] = ()) -> str:
    shown = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    return tabulate(shown, headers="keys", tablefmt="github", floatfmt=".2f", missingval="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "vgg16"], choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=64, help="raw-step batch (the CIFAR recipes' 64)")
    parser.add_argument("--variants", nargs="+", default=None, help="raw-step variants (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (CPU 3, GPU 5)")
    parser.add_argument("--steps", type=int, default=None, help="steps per round (CPU 8, GPU 50)")
    parser.add_argument("--data-root", default=os.environ.get("CIFAR10_DIR", "data/cifar10-jpeg"))
    parser.add_argument("--data-label", default="CIFAR-10 (JPEG q75 copy)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epoch-models", nargs="+", default=None, help="prune-exp epochs for (default: --models)")
    parser.add_argument("--epoch-train", type=int, default=5000, help="training images per prune-exp epoch (0: all)")
    parser.add_argument("--epoch-test", type=int, default=2000, help="test images evaluated (0: all 10,000)")
    parser.add_argument("--epochs", type=int, default=2, help="prune-exp epochs; the last one is reported")
    parser.add_argument("--parity-seeds", type=int, default=3, help="engine=auto vs plain parity runs (0: skip)")
    parser.add_argument("--parity-epochs", type=int, default=4)
    parser.add_argument("--parity-train", type=int, default=5000)
    parser.add_argument("--parity-arms", nargs="+", default=list(PARITY_ARMS), choices=list(PARITY_ARMS))
    parser.add_argument("--latency-repeats", type=int, default=10, help="0: skip the latency section")
    parser.add_argument("--quick", action="store_true", help="a smoke test: ResNet-20, tiny settings, no latency")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--tag", default=None, help="file name for the results (default: from the machine)")
    parser.add_argument("--from-json", default=None, help="re-render the .md of a saved .json and exit")
    args = parser.parse_args()
    if args.from_json:
        saved = Path(args.from_json)
        write_atomic(saved.with_suffix(".md"), render_md(json.loads(saved.read_text())))
        print(f"wrote {saved.with_suffix('.md')}")
        return
    if args.quick:
        args.models, args.rounds, args.steps, args.epochs = ["resnet20"], 1, 1, 1
        args.epoch_train, args.epoch_test, args.parity_seeds, args.latency_repeats = 500, 200, 0, 0
        args.variants = args.variants or ["NCHW (plain)", "channels_last"]

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    on_gpu = device.type == "cuda"
    rounds, steps = args.rounds or (5 if on_gpu else 3), args.steps or (50 if on_gpu else 8)
    variants = GPU_VARIANTS if on_gpu else VARIANTS
    if args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; known: {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in args.variants}
    machine = machine_name(device)
    has_data = (Path(args.data_root) / "cifar-10-batches-py").is_dir()
    print(f"device: {machine}; torch {torch.__version__}", flush=True)

    if on_gpu:  # fp32 as fp32: no TF32 in the yardstick
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sizes = (4096, 8192) if on_gpu else (1024, 2048, 4096)
    peak = {
        "fp32 mm GFLOP/s": max(peak_gflops(device, n=n) for n in sizes),
        "fp32 conv3x3 GFLOP/s": conv_gflops(device),
    }
    peak["fp32 GFLOP/s"] = max(peak.values())  # the yardstick: the best the machine was measured to do
    if on_gpu:
        peak["bf16 mm GFLOP/s"] = peak_gflops(device, torch.bfloat16)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the training default
    print(f"peak: {peak}", flush=True)

    step_rows = []
    for name in args.models:
        rows = train_step_rows(name, device, args.batch, variants, rounds, steps, peak["fp32 GFLOP/s"])
        step_rows += rows
        print(table(rows), flush=True)
    raw = {(r["model"], r["variant"]): r["img/s"] for r in step_rows}

    ep_rows = []
    if has_data and args.epochs > 0:
        engines = ["plain", "auto"] + (["fast"] if on_gpu else [])
        for name in args.epoch_models or args.models:
            rows = epoch_rows(
                name, args.data_root, engines, args.epochs, args.epoch_train or None, args.epoch_test or None, raw
            )
            ep_rows += rows
            print(table(rows, drop=("command",)), flush=True)
    elif not has_data:
        print(f"no CIFAR-10 under {args.data_root}: the prune-exp epoch and parity sections are skipped", flush=True)

    parity_runs, parity = [], None
    if has_data and args.parity_seeds > 0:
        parity_runs, parity = parity_rows(
            args.data_root,
            args.parity_seeds,
            args.parity_epochs,
            args.parity_train,
            args.epoch_test or 2000,
            args.parity_arms,
        )
        print(table(parity, drop=("budget",)), flush=True)

    lat = latency_rows(device, args.latency_repeats) if args.latency_repeats > 0 else []
    if lat:
        print(table(lat), flush=True)

    tag = args.tag or ("gpu-" + machine.replace(" ", "-").lower() if on_gpu else f"cpu-{os.cpu_count()}core")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_train.py " + " ".join(sys.argv[1:])
    payload = {
        "machine": machine,
        "device": str(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "data": f"{args.data_label} from {args.data_root}" if has_data else None,
        "batch": args.batch,
        "rounds": rounds,
        "steps": steps,
        "epochs": args.epochs,
        "peak": peak,
        "train_step": step_rows,
        "epoch": ep_rows,
        "parity": {"summary": parity, "runs": parity_runs} if parity else None,
        "latency": lat,
    }
    write_atomic(out / f"{tag}.json", json.dumps(payload, indent=2))
    write_atomic(out / f"{tag}.md", render_md(payload))
    print(f"wrote {out / (tag + '.md')}", flush=True)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# short column names: every table fits 120 columns
STEP_COLUMNS = {"model": "model", "variant": "variant", "img/s": "img/s", "× NCHW": "× NCHW", "GFLOP/s": "GFLOP/s"}
STEP_COLUMNS |= {
    "% of peak": "% peak",
    "first step s": "1st step s",
    "compile pays after img": "compile pays (img)",
}
EPOCH_COLUMNS = {"model": "model", "engine": "engine", "train img/s": "train img/s", "raw step img/s": "raw img/s"}
EPOCH_COLUMNS |= {"train / raw step": "÷ raw", "eval img/s": "eval img/s", "epoch s (as run)": "epoch s"}
EPOCH_COLUMNS |= {"epoch × plain": "× plain", "full CIFAR-10 epoch min": "C10 epoch min"}
LATENCY_COLUMNS = {"model": "model", "FLOPs×": "FLOPs×"}
for _b in (1, 64, 256):
    _t = "cpu" if _b < 256 else "gpu"
    LATENCY_COLUMNS |= {f"{_t} b{_b} dense ms": f"b{_b} dense ms", f"{_t} b{_b} pruned ms": f"b{_b} pruned ms"}
    LATENCY_COLUMNS |= {f"measured× {_t} b{_b}": f"b{_b} ×"}


def renamed(rows: list[dict], columns: dict[str, str]) -> list[dict]:
    return [{new: r[old] for old, new in columns.items() if old in r} for r in rows]


def render_md(p: dict) -> str:
    """The markdown page of one benchmark run (``--from-json`` re-renders a saved one)."""
    md = [
        f"# Training speed — {p['machine']}\n",
        f"Generated by `{p['command']}` (torch {p['torch']}, {p['date']}). Data for the prune-exp sections: "
        + (p["data"] or "absent (those sections skipped)")
        + ".\n",
        "## Peak (measured)\n",
        "The best of a large `torch.mm` (n = 1024 / 2048 / 4096; CUDA: 4096 / 8192, no TF32) and a large 3x3 "
        "convolution in channels_last (CPU: oneDNN); `fp32 GFLOP/s`, the larger, is the yardstick of `% peak`.\n",
        table([p["peak"]]) + "\n",
        f"## Raw train step (batch {p['batch']}, one resident batch, SGD; median of {p['rounds']} interleaved "
        f"rounds of {p['steps']} steps)\n",
        "GFLOP/s = img/s x 6 x forward MACs (forward 2 FLOPs per MAC, backward twice the forward). `1st step s` "
        "includes compilation for the compile variants (a warm inductor cache makes it short; a cold one cost "
        "12-40 s here); `compile pays (img)`: training images until its saving over the same variant without "
        "compile repays that time (empty: it never does). bf16 rows can pass 100%: the yardstick is fp32.\n",
        table(renamed(p["train_step"], STEP_COLUMNS)) + "\n",
    ]
    if p["epoch"]:
        first = p["epoch"][0]
        md += [
            f"## prune-exp epoch (dense training, epoch {p['epochs']} of {p['epochs']}; {first['train img']} "
            f"training and {first['test img']} test images)\n",
            "`÷ raw`: the pipeline's training images/s (data, augmentation, the loop) over the raw step of the "
            "same engine (NCHW for plain, channels_last for auto). `epoch s`: the epoch as run, evaluation "
            "included; `× plain`: its images/s over engine=plain's. `C10 epoch min`: a full CIFAR-10 epoch, "
            "50,000 training images at the measured training rate + 10,000 test images at the measured "
            "evaluation rate.\n",
            table(renamed(p["epoch"], EPOCH_COLUMNS)) + "\n",
            "Commands:\n",
            *[f"    {r['command']}" for r in p["epoch"]],
            "",
        ]
    if p["parity"]:
        summary = p["parity"]["summary"]
        md += [
            "## Parity: the same prune-exp training under each engine, same seeds\n",
            "Top-1 after the budget below; Δ: paired difference to engine=plain (same seed, same initial "
            "weights and data order). A difference inside the seed spread is float noise, not an effect. "
            f"Budget: {summary[0]['budget']}.\n",
            table(summary, drop=("budget",)) + "\n",
            table(p["parity"]["runs"]) + "\n",
        ]
    if p["latency"]:
        md += [
            "## Inference latency: dense vs L1-norm paper variants (median ms, CPU unless gpu; ×: measured speedup)\n",
            table(renamed(p["latency"], LATENCY_COLUMNS)) + "\n",
        ]
    return "\n".join(md)


if __name__ == "__main__":
    main()
