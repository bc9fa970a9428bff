"""Language-model speed benchmark (``make bench``, issue 14): tokens per second of training and of
generation, dense vs pruned, measured side by side in one process.

For each model (default: the CPU configs ``sru_small`` and ``transformer_xl_small``; ``--full``
adds FLOP's ``sru`` and the enwik8-base ``transformer_xl``, a GPU job):

* variants: ``dense``; ``magnitude 50%`` (half of the layer matrices' weights set to zero, same
  shapes: unstructured sparsity does not make dense kernels faster, and the figure shows it);
  ``structured 50%`` (the shape FLOP produces: every factorised layer at half its rank; SRU: the
  projection ranks of layers 2..depth halved; Transformer-XL: each layer matrix factorised at half
  of in*out/(in+out) — only where the model family supports factorised specs);
* **training**: forward + backward + Adam step on batches of ``--batch`` lanes x ``--bptt``
  characters (the model carrying its state, as in training), tokens/s;
* **generation**: batch 1, one character per call, the state carried, greedy next character,
  tokens/s;
* **evaluation** (dense only): the final evaluation, a validation and a test split of
  ``--eval-chars`` random characters each, walked as one stream (``final_eval_batch_size`` 1) in
  the model's evaluation windows (``--eval-bptt``; Transformer-XL: its ``eval_tgt_len``):
  characters/s of the reference walk (``pruning.train.evaluate_walk``, window by window) and of the
  fast path (``pruning.text_data.evaluate_streams``, what ``final_lm_eval`` runs), measured side by
  side in alternating rounds, and how far apart their bits per character are.

Rounds alternate dense and pruned (dense first on even rounds), so load from other processes hits
both alike; medians over rounds, and the pruned/dense ratio. Random weights: speed does not depend
on training. Writes results/benchmarks/lm-<tag>.{md,json}.

    python scripts/bench_lm.py                      # CPU: small configs
    python scripts/bench_lm.py --rounds 1 --steps 1 --gen-tokens 4 --eval-chars 2000 --out /tmp/bench  # a smoke run
    python scripts/bench_lm.py --device cuda --full  # GPU: adds the paper-size models
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tabulate import tabulate

from pruning.methods.base import PruneContext
from pruning.methods.magnitude import Magnitude
from pruning.models import build, default_spec
from pruning.text_data import TextData, TokenSplit, evaluate_streams
from pruning.train import apply_masks, evaluate_walk

REPO = Path(__file__).resolve().parents[1]
VOCAB = 205  # enwik8's (FLOP's np.unique); speed barely depends on it


def model_spec(name: str) -> dict:
    cfg = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    return default_spec(cfg["arch"], num_classes=VOCAB, **{k: v for k, v in cfg.items() if k not in ("name", "arch")})


def structured_half(spec: dict) -> dict | None:
    """The FLOP-shaped network at half of every factorised rank (None: not expressible)."""
    spec = copy.deepcopy(spec)
    if spec["arch"] == "sru_lm":
        spec["n_proj"] = [max(1, int(r) // 2) for r in spec["n_proj"]]
        return spec
    if spec["arch"] == "transformer_xl":
        from pruning.models import transformer_xl

        if not hasattr(transformer_xl, "linear_shapes"):
            return None
        ranks = {}
        for name, (fan_in, fan_out, _bias) in transformer_xl.linear_shapes(spec).items():
            ranks[name] = max(1, (fan_in * fan_out // (fan_in + fan_out)) // 2)
        spec["ranks"] = ranks
        return spec
    return None


def variants(name: str, device: torch.device) -> list[tuple[str, torch.nn.Module, dict | None]]:
    """(name, model, masks): masks are re-applied after every optimiser step, as in training."""
    torch.manual_seed(0)
    spec = model_spec(name)
    dense = build(spec).to(device)
    out = [("dense", dense, None)]
    result = Magnitude(ratio=0.5).prune(copy.deepcopy(dense), PruneContext(device=str(device)))
    out.append(("magnitude 50%", result.model.to(device), {k: v.to(device) for k, v in result.masks.items()}))
    half = structured_half(spec)
    if half is not None:
        out.append(("structured 50%", build(half).to(device), None))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_round(model, optimizer, x, y, steps: int, device, masks=None) -> float:
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        apply_masks(model, masks)
    sync(device)
    return (time.perf_counter() - t0) / steps


@torch.no_grad()
def generate_round(model, tokens: int, device) -> float:
    model.eval()
    model.reset_state()
    nxt = torch.zeros(1, 1, dtype=torch.long, device=device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(tokens):
        nxt = model(nxt).argmax(-1).view(1, 1)
    sync(device)
    return (time.perf_counter() - t0) / tokens


def eval_window(spec: dict, args) -> int:
    return int(spec.get("eval_tgt_len") or args.eval_bptt)


def eval_round(model, data: TextData, window: int, fast: bool, device) -> tuple[float, dict]:
    """Seconds for the final evaluation (valid + test, one lane each) and its numbers."""
    sync(device)
    t0 = time.perf_counter()
    if fast:
        out = evaluate_streams(model, {"valid": data.valid, "test": data.test}, 1, window)
    else:
        out = {name: evaluate_walk(model, data.with_eval_split(name), 1, device=device) for name in ("valid", "test")}
    sync(device)
    return time.perf_counter() - t0, out


def bench_eval(name: str, args, device: torch.device) -> dict:
    """The final evaluation of the dense model, reference walk vs fast path (module docstring)."""
    torch.manual_seed(0)
    spec = model_spec(name)
    model = build(spec).to(device)
    window = eval_window(spec, args)
    g = torch.Generator().manual_seed(1)
    splits = [TokenSplit(torch.randint(0, VOCAB, (args.eval_chars,), generator=g, dtype=torch.uint8)) for _ in range(2)]
    data = TextData("random", splits[0], splits[0], splits[1], tuple(range(VOCAB)), eval_bptt=window).to(device)
    chars = 2 * (args.eval_chars - 1)
    times: dict[bool, list[float]] = {False: [], True: []}
    results: dict[bool, dict] = {}
    for r in range(args.eval_rounds):
        for fast in (False, True) if r % 2 == 0 else (True, False):
            seconds, results[fast] = eval_round(model, data, window, fast, device)
            times[fast].append(seconds)
    ref_s, fast_s = statistics.median(times[False]), statistics.median(times[True])
    delta = max(abs(results[True][s]["bpc"] - results[False][s]["bpc"]) for s in ("valid", "test"))
    return {
        "model": name,
        "eval_window": window,
        "chars": chars,
        "reference_chars_per_s": round(chars / ref_s, 1),
        "fast_chars_per_s": round(chars / fast_s, 1),
        "speedup": round(ref_s / fast_s, 3),
        "reference_s": round(ref_s, 3),
        "fast_s": round(fast_s, 3),
        "max_abs_delta_bpc": float(f"{delta:.3g}"),
    }


def bench(name: str, args, device: torch.device) -> list[dict]:
    nets = variants(name, device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (args.batch, args.bptt), generator=g).to(device)
    y = torch.randint(0, VOCAB, (args.batch * args.bptt,), generator=g).to(device)
    optims = [torch.optim.Adam(m.parameters(), lr=1e-4) for _, m, _ in nets]
    for (_, m, masks), opt in zip(nets, optims, strict=True):  # warm-up: allocator, kernels, state shapes
        train_round(m, opt, x, y, args.warmup, device, masks)
        generate_round(m, 4, device)
    train_s: list[list[float]] = [[] for _ in nets]
    gen_s: list[list[float]] = [[] for _ in nets]
    for r in range(args.rounds):
        order = range(len(nets)) if r % 2 == 0 else reversed(range(len(nets)))
        for i in order:
            train_s[i].append(train_round(nets[i][1], optims[i], x, y, args.steps, device, nets[i][2]))
            gen_s[i].append(generate_round(nets[i][1], args.gen_tokens, device))
    rows = []
    base_train, base_gen = statistics.median(train_s[0]), statistics.median(gen_s[0])
    for (variant, m, _), ts, gs in zip(nets, train_s, gen_s, strict=True):
        t, gtime = statistics.median(ts), statistics.median(gs)
        params = sum(int((p != 0).sum()) for p in m.parameters())
        rows.append(
            {
                "model": name,
                "variant": variant,
                "params_nonzero": params,
                "train_tokens_per_s": round(args.batch * args.bptt / t, 1),
                "train_speedup": round(base_train / t, 3),
                "generate_tokens_per_s": round(1.0 / gtime, 1),
                "generate_speedup": round(base_gen / gtime, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sru_small", "transformer_xl_small"])
    parser.add_argument("--full", action="store_true", help="add the paper-size sru and transformer_xl")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    parser.add_argument("--gen-tokens", type=int, default=64, help="generated characters per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--eval-chars", type=int, default=50_000, help="characters of each split of the final evaluation (0: skip it)"
    )
    parser.add_argument("--eval-bptt", type=int, default=128, help="evaluation window (SRU; Transformer-XL: its own)")
    parser.add_argument("--eval-rounds", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    models = list(args.models) + (["sru", "transformer_xl"] if args.full else [])
    rows = [row for name in models for row in bench(name, args, device)]
    eval_rows = [bench_eval(name, args, device) for name in models] if args.eval_chars > 0 else []
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    tag = args.tag or ("gpu" if device.type == "cuda" else f"cpu-{os.cpu_count()}core")
    meta = {
        "device": where,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch": args.batch,
        "bptt": args.bptt,
        "steps_per_round": args.steps,
        "generated_per_round": args.gen_tokens,
        "rounds": args.rounds,
        "eval_chars_per_split": args.eval_chars,
        "eval_rounds": args.eval_rounds,
        "weights": "random (speed does not depend on training)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"lm-{tag}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "eval_rows": eval_rows}, indent=2) + "\n"
    )
    table = tabulate(
        [
            [
                r["model"],
                r["variant"],
                f"{r['params_nonzero']:,}",
                f"{r['train_tokens_per_s']:,.0f}",
                f"{r['train_speedup']:.2f}×",
                f"{r['generate_tokens_per_s']:,.0f}",
                f"{r['generate_speedup']:.2f}×",
            ]
            for r in rows
        ],
        headers=["model", "variant", "non-zero params", "train tok/s", "train ×", "gen tok/s", "gen ×"],
        tablefmt="github",
    )
    text = (
        f"# Language-model speed: dense vs pruned ({where}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__})\n\n"
        f"Training: batches of {args.batch} lanes x {args.bptt} characters, forward + backward + Adam step; "
        f"generation: batch 1, one character per call, greedy, state carried. Medians of {args.rounds} interleaved "
        "rounds; × = pruned / dense tokens per second measured side by side (random weights). "
        f"`python scripts/bench_lm.py {' '.join(sys.argv[1:])}`\n\n{table}\n"
    )
    if eval_rows:
        eval_table = tabulate(
            [
                [
                    r["model"],
                    r["eval_window"],
                    f"{r['reference_chars_per_s']:,.0f}",
                    f"{r['fast_chars_per_s']:,.0f}",
                    f"{r['speedup']:.2f}×",
                    f"{r['reference_s']:.2f} / {r['fast_s']:.2f}",
                    f"{r['max_abs_delta_bpc']:.1e}",
                ]
                for r in eval_rows
            ],
            headers=["model", "window", "reference chars/s", "fast chars/s", "×", "seconds", "|Δ bpc|"],
            tablefmt="github",
        )
        text += (
            f"\n## Final evaluation: one stream, reference walk vs fast path\n\nA validation and a test split of "
            f"{args.eval_chars:,} random characters each, one lane (final_eval_batch_size 1), dense model: the "
            "reference walks each split window by window (`pruning.train.evaluate_walk`); the fast path "
            "(`pruning.text_data.evaluate_streams`, what `final_lm_eval` runs) walks both splits side by side, "
            "the SRU in long windows, the Transformer-XL's stream cut into lanes with an exact burn-in. Medians of "
            f"{args.eval_rounds} alternating rounds; |Δ bpc|: the larger difference of the two splits' bits per "
            f"character.\n\n{eval_table}\n"
        )
    (out / f"lm-{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
