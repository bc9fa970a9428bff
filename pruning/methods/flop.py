"""FLOP: structured pruning of language models by L0 (hard-concrete) masks on factorised layers.

Wang, Wohlwend & Lei, "Structured Pruning of Large Language Models", EMNLP 2020 (arXiv 1910.04732).
Re-implemented from github:asappresearch/flop (HEAD bdfc184): flop/hardconcrete.py, flop/linear.py,
flop/utils.py, examples/enwik8/train_enwik8.py (SRU) and examples/enwik8_tf/train.py (Transformer-XL);
read, not copied (shared/reference/papers-pfs-anp-sanp-flop.md section 4 lists the checked constants).

1. Every weight matrix of the recurrent / attention layers is a product P Q of rank r; a hard-concrete
   mask z (pruning/hardconcrete.py) gates its r rank-1 components: W = P diag(z) Q.
2. The dense trained model is pruned by training weights and masks jointly for ``epochs`` with
   L = L_LM + l1 (s_hat - t) + l2 (s_hat - t)^2, s_hat = 1 - E[size] / prunable size, the target
   t = sparsity * min(1, step / prune_warmup); l1, l2 start at 0 and are trained by gradient ascent.
3. The valid bpc is measured every ``eval_every`` steps and at each epoch's end; the best one is kept
   only if the hard sparsity of the eval masks is > sparsity - ``accept_margin`` (0.02); with
   ``accept_upper`` (not official) also only if it is <= sparsity + accept_upper, so a short run whose
   sparsity overshoots the target keeps a state within the band (the official runs settle over ~100 epochs).
4. The kept network's zero components are removed and its eval-mask values folded into Q: a smaller
   dense network (``PruneResult.spec``) that computes exactly what the masked network computed in eval.
5. Its spec is the matched-size architecture for scratch-E/B (finetune=scratch_e|scratch_b).

What is factorised and masked (flop.make_hard_concrete):
* SRU (family sru_lm): layer 1's U (an nn.Linear, official CustomLinear) -> HardConcreteLinear, a mask
  over its n_e inputs (removing an input also removes that embedding column: the skip term of layer 1
  is U3, so this is exact); layers 2.. keep their ProjectedLinear (linear1 n_d -> n_proj, linear2
  n_proj -> 3 n_d) -> HardConcreteProjectedLinear, a mask over the n_proj components. (If the dense
  layer 1 has n_e == n_d its skip term is the embedding itself; that layer is then left unmasked.)
* Transformer-XL: every nn.Linear of the layers (qkv_net, r_net, o_net, fc1, fc2) is factorised at
  r = in*out // (in + out) (the official ProjectedLinear default: the same parameter count as the Linear;
  ``rank: full`` uses min(in, out), which is exact) and masked. DIFFERENCE from the official code: FLOP
  trained the factorised dense model from scratch (``make_projected_linear`` before training), while
  here the pipeline's dense model has plain Linears, so each is initialised from the trained weights by
  truncated SVD, W = U S V^T -> P = S_r^1/2 V_r^T (linear1), Q = U_r S_r^1/2 (linear2), the bias kept.
  At the balanced rank this truncation changes the function before pruning starts (the first valid bpc
  in the history shows by how much). A spec that is already factorised (``ranks``) is used as it is.

Training recipes (config keys left null take the official value of the model's family):
* sru_lm (train_enwik8.py --noam): three Adam optimisers.
  model (every parameter but log_alpha): lr = lr * noam(step) / sqrt(n_d), lr 2, weight decay 1e-7,
  gradient norm clipped at 0.3 over these parameters only;
  log_alpha: Adam, weight decay 0, lr = lr * noam(step) / sqrt(n_d) (the official sets prune_lr * ... for
  the very first step only, then overwrites it every step with the model's factor; reproduced);
  lambdas: Adam, lr prune_lr * noam(step) / sqrt(n_d) (prune_lr 3), ascent.
  noam(step) = min(step^-1/2, step * warmup_steps^-3/2), warmup 16000, the step counted from the start
  of pruning (the official script restarts its counter, so the model lr warms up again); t uses
  step / prune_warmup with the 1-based step, prune_warmup 0 (no warm-up); init_mean 0.5; batch 64;
  valid evaluated with the training batch once per epoch (log_period 10^6).
* transformer_xl (enwik8_tf/train.py): one Adam over all parameters including log_alpha, lr 2.5e-4
  cosine-annealed to 0 over the run's steps (official: over --max_step), no weight decay, clip 0.25 over
  all of them; lambdas: Adam at prune_lr / sqrt(d_model) / sqrt(max(1, step - 1)) (LambdaLR, prune_lr 1);
  t uses the 0-based step (train_step before its increment), prune_warmup 64000; init_mean 0.05;
  batch 22 (run_enwik8_base.sh), eval batch 10, eval every 4000 steps (the epoch-end evaluation here is
  an addition, so each resumable epoch checkpoint holds an up-to-date best).
Gradient ascent on the lambdas uses Adam(maximize=True), identical to the official Adam at a negative lr.

Choices where the official code is silent or broken:
* Acceptance uses the FINAL target (official: ``sparsity > args.prune_sparsity - 0.02`` in both scripts),
  not the warmed-up t. The TXL script also moves its best-loss mark on a rejected evaluation; here (as
  the SRU script) only an accepted evaluation moves it. If no evaluation is ever accepted (the official
  script would crash on an undefined checkpoint), the last state is used and extras say ``accepted:
  false``.
* "achieved" sparsity counts the compact network's prunable parameters (components x their size),
  so it equals the hard sparsity at the accepted evaluation. A layer-1 SRU mask that closes every input
  keeps one zero column (n_e >= 1); the removed embedding columns are a saving not counted as prunable.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError
from pruning.cache import cached, digest
from pruning.hardconcrete import (
    HardConcreteLayer,
    HardConcreteLinear,
    HardConcreteProjectedLinear,
    hard_size,
)
from pruning.io import load_checkpoint, load_or_quarantine, save_checkpoint, write_json
from pruning.measure import count_macs
from pruning.methods.base import Method, PruneContext, PruneResult
from pruning.models import build
from pruning.models.sru_lm import ProjectedLinear, _num_matrices, layer1_matrices
from pruning.models.transformer_xl import FactorisedLinear
from pruning.train import evaluate, reset_state

SUPPORTED = "model=sru / sru_small (family sru_lm) or model=transformer_xl / transformer_xl_small"
FAMILIES = ("sru_lm", "transformer_xl")
RANK_RULES = ("balanced", "full")

# The official values per family (module docstring); a config key left null takes these.
RECIPES: dict[str, dict[str, Any]] = {
    "sru_lm": {
        "batch_size": 64,
        "eval_batch_size": 64,
        "lr": 2.0,
        "warmup_steps": 16000,
        "weight_decay": 1e-7,
        "clip_grad": 0.3,
        "prune_lr": 3.0,
        "prune_warmup": 0,
        "init_mean": 0.5,
        "eval_every": 0,
    },
    "transformer_xl": {
        "batch_size": 22,
        "eval_batch_size": 10,
        "lr": 2.5e-4,
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "clip_grad": 0.25,
        "prune_lr": 1.0,
        "prune_warmup": 64000,
        "init_mean": 0.05,
        "eval_every": 4000,
    },
}


def number(what: str, value: Any, cast, ok, hint: str):
    """``cast(value)`` if it is a valid number for ``what``, else a PruneLabError naming the key."""
    try:
        x = cast(value)
        good = ok(x) and (float(value) == x if cast is int else math.isfinite(x))
        if isinstance(value, bool):
            good = False
    except (TypeError, ValueError):
        good = False
    if not good:
        raise PruneLabError(f"{what}={value!r} must be {hint}")
    return x


def choice(what: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise PruneLabError(f"{what}={value!r}: use one of {', '.join(options)}")
    return str(value)


def check_family(method: str, model_name: str, spec: dict) -> str:
    arch = spec.get("arch")
    if arch not in FAMILIES:
        raise PruneLabError(
            f"method={method} does not support model={model_name} (arch {arch!r}); supported: {SUPPORTED}"
        )
    return str(arch)


# ----------------------------------------------------------------------------- learning rates
def noam(step: int, warmup: int) -> float:
    """min(step^-1/2, step * warmup^-3/2) (train_enwik8.py, step >= 1)."""
    return min(step**-0.5, step * warmup**-1.5)


def model_lr(recipe: dict, step: int, total_steps: int) -> float:
    """The model optimiser's lr at optimiser step ``step`` (1-based) of the pruning run."""
    if recipe["family"] == "sru_lm":
        return recipe["lr"] * noam(step, recipe["warmup_steps"]) / math.sqrt(recipe["n_d"])
    # CosineAnnealingLR(max_step, eta_min 0) stepped after each step: step k uses epoch k - 1
    return 0.5 * recipe["lr"] * (1.0 + math.cos(math.pi * min(1.0, (step - 1) / max(1, total_steps))))


def lambda_lr(recipe: dict, step: int) -> float:
    """The lambdas' (ascent) lr at optimiser step ``step`` (1-based)."""
    if recipe["family"] == "sru_lm":
        return recipe["prune_lr"] * noam(step, recipe["warmup_steps"]) / math.sqrt(recipe["n_d"])
    return recipe["prune_lr"] / math.sqrt(recipe["d_model"]) / math.sqrt(max(1, step - 1))


def target_at(recipe: dict, sparsity: float, step: int) -> float:
    """t = sparsity * min(1, n / prune_warmup); n = the 1-based step (SRU) or the 0-based one (TXL)."""
    warmup = recipe["prune_warmup"]
    if warmup <= 0:
        return sparsity
    n = step if recipe["family"] == "sru_lm" else step - 1
    return sparsity * min(1.0, n / warmup)


def lagrangian(lambdas: torch.Tensor, expected_sparsity: torch.Tensor, target: float) -> torch.Tensor:
    """l1 (s_hat - t) + l2 (s_hat - t)^2."""
    gap = expected_sparsity - target
    return lambdas[0] * gap + lambdas[1] * gap * gap


# ----------------------------------------------------------------------------- factorised, masked network
def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD of ``weight`` (out, in): P (rank, in) and Q (out, rank) with Q P the best rank-r
    approximation, the singular values split evenly (sqrt into each factor)."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(weight.dtype), (u[:, :rank] * root).to(weight.dtype)


def factor_rank(in_features: int, out_features: int, rule: str) -> int:
    """balanced: in*out // (in + out), the official ProjectedLinear default; full: min(in, out)."""
    if rule == "full":
        return min(in_features, out_features)
    return in_features * out_features // (in_features + out_features)


def factorised_linear(linear: nn.Linear, rank: int) -> tuple[nn.Linear, nn.Linear]:
    """linear1 (in -> rank, no bias), linear2 (rank -> out, the bias) from ``linear`` by truncated SVD."""
    p, q = svd_factors(linear.weight, rank)
    kw = {"device": linear.weight.device, "dtype": linear.weight.dtype}
    linear1 = nn.Linear(linear.in_features, rank, bias=False, **kw)
    linear2 = nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **kw)
    with torch.no_grad():
        linear1.weight.copy_(p)
        linear2.weight.copy_(q)
        if linear.bias is not None:
            linear2.bias.copy_(linear.bias)
    return linear1, linear2


def insert_hard_concrete(
    net: nn.Module, mask_kwargs: dict[str, Any], rank_rule: str = "balanced"
) -> dict[str, HardConcreteLayer]:
    """Replace the prunable layers of ``net`` (in place) by hard-concrete layers (module docstring);
    returns them by module path, in model order."""
    layers: dict[str, HardConcreteLayer] = {}
    arch = net.spec["arch"]
    if arch == "sru_lm":
        for i, layer in enumerate(net.layers):
            transform = layer.transform
            if isinstance(transform, ProjectedLinear):
                hc = HardConcreteProjectedLinear(transform.linear1, transform.linear2, **mask_kwargs)
            elif isinstance(transform, nn.Linear) and layer.k == 4:
                hc = HardConcreteLinear(transform, **mask_kwargs)
            else:  # k == 3: the embedding also feeds the identity skip term; its width cannot shrink
                continue
            layer.transform = hc
            layers[f"layers.{i}.transform"] = hc
        return layers
    if arch != "transformer_xl":
        raise PruneLabError(f"FLOP: no hard-concrete layout for arch {arch!r}")
    targets = []
    for name, module in net.named_modules():
        parent = name.rpartition(".")[0]
        if not name.startswith("layers.") or isinstance(net.get_submodule(parent), FactorisedLinear):
            continue
        if isinstance(module, (FactorisedLinear, nn.Linear)):
            targets.append((name, module))
    for name, module in targets:
        if isinstance(module, FactorisedLinear):
            linear1, linear2 = module.linear1, module.linear2
        else:
            linear1, linear2 = factorised_linear(
                module, factor_rank(module.in_features, module.out_features, rank_rule)
            )
        hc = HardConcreteProjectedLinear(linear1, linear2, **mask_kwargs)
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent), child, hc)
        layers[name] = hc
    return layers


def factorised_spec(net: nn.Module, layers: dict[str, HardConcreteLayer]) -> dict:
    """The spec of the network being trained, every mask open (its MACs are the stage's per-token cost)."""
    spec = copy.deepcopy(net.spec)
    if spec["arch"] == "transformer_xl":
        spec["ranks"] = {name: layer.rank for name, layer in layers.items()}
    return spec


@torch.no_grad()
def compact(net: nn.Module, layers: dict[str, HardConcreteLayer]) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """The smaller dense network equal to ``net`` in eval mode: (spec, state_dict, kept components
    per layer). Zero components are removed and the eval-mask values folded into Q (or W's columns)."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith(".mask.log_alpha")}
    spec = copy.deepcopy(net.spec)
    kept: dict[str, int] = {}
    for name, layer in layers.items():
        keep, values = layer.compact()
        if isinstance(layer, HardConcreteLinear):  # SRU layer 1: inputs = embedding columns
            if keep.numel() == 0:  # n_e >= 1: keep one input whose column is zero (exact)
                keep, values = layer.mask.log_alpha.argmax().view(1), values.new_zeros(1)
            state[f"{name}.weight"] = layer.weight[:, keep] * values  # (k * n_d, n_kept)
            state["embedding.weight"] = state["embedding.weight"][:, keep].clone()  # (V, n_kept)
            k1 = layer1_matrices(spec)
            spec["n_e"] = int(keep.numel())
            spec.pop("layer1_matrices", None)
            if _num_matrices(spec["n_e"], spec["n_d"]) != k1:
                spec["layer1_matrices"] = k1
        else:
            state[f"{name}.linear1.weight"] = layer.linear1.weight[keep].clone()  # (n_kept, in)
            state[f"{name}.linear2.weight"] = layer.linear2.weight[:, keep] * values  # (out, n_kept)
            if spec["arch"] == "sru_lm":
                spec["n_proj"][int(name.split(".")[1]) - 1] = int(keep.numel())
            else:
                spec.setdefault("ranks", {})[name] = int(keep.numel())
        kept[name] = int(keep.numel())
    return spec, state, kept


def prunable_sizes(layers: dict[str, HardConcreteLayer]) -> dict[str, int]:
    return {name: layer.prunable_size() for name, layer in layers.items()}


def expected_sparsity(layers: dict[str, HardConcreteLayer], prunable: int) -> torch.Tensor:
    return 1.0 - sum(layer.expected_size() for layer in layers.values()) / prunable


def hard_sparsity(layers: dict[str, HardConcreteLayer], prunable: int) -> float:
    return 1.0 - sum(hard_size(layer) for layer in layers.values()) / prunable


def carried_state(net: nn.Module) -> dict[str, Any]:
    """The hidden state / memory a stateful LM carries between windows (evaluation resets it)."""
    out = {}
    for key in ("_state", "_memory"):
        if hasattr(net, key):
            value = getattr(net, key)
            out[key] = dict(value) if isinstance(value, dict) else value
    return out


def restore_state(net: nn.Module, carried: dict[str, Any]) -> None:
    for key, value in carried.items():
        setattr(net, key, value)


# ----------------------------------------------------------------------------- the method
class FLOP(Method):
    name = "flop"
    language_models = True
    needs_pretrained = True

    def __init__(
        self,
        sparsity: float = 0.5,
        epochs: int = 100,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        lr: float | None = None,
        warmup_steps: int | None = None,
        weight_decay: float | None = None,
        clip_grad: float | None = None,
        prune_lr: float | None = None,
        prune_warmup: int | None = None,
        init_mean: float | None = None,
        init_std: float = 0.01,
        eval_every: int | None = None,
        accept_margin: float = 0.02,
        rank: str = "balanced",
        mask_lr_scale: float = 1.0,
        accept_upper: float | None = None,
        **_: Any,
    ):
        self.sparsity = number(
            "method.sparsity",
            sparsity,
            float,
            lambda v: 0 <= v < 1,
            "in [0, 1): the fraction of prunable parameters removed",
        )
        self.epochs = number("method.epochs", epochs, int, lambda v: v >= 1, "an integer >= 1")
        opt = {}  # null: the family's official value (RECIPES)
        checks = {
            "batch_size": (int, lambda v: v >= 1, "an integer >= 1 (SRU: 64, TXL: 22)"),
            "eval_batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
            "lr": (float, lambda v: v > 0, "> 0 (SRU: the Noam factor 2; TXL: 2.5e-4)"),
            "warmup_steps": (int, lambda v: v >= 1, "an integer >= 1 (SRU Noam warm-up, 16000)"),
            "weight_decay": (float, lambda v: v >= 0, ">= 0"),
            "clip_grad": (float, lambda v: v >= 0, ">= 0 (0: no clipping)"),
            "prune_lr": (float, lambda v: v > 0, "> 0 (SRU: 3, TXL: 1)"),
            "prune_warmup": (int, lambda v: v >= 0, "an integer >= 0 (steps)"),
            "init_mean": (float, lambda v: 0 < v < 1, "in (0, 1) (SRU: 0.5, TXL: 0.05)"),
            "eval_every": (int, lambda v: v >= 0, "an integer >= 0 (0: once per epoch)"),
        }
        given = dict(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            lr=lr,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            clip_grad=clip_grad,
            prune_lr=prune_lr,
            prune_warmup=prune_warmup,
            init_mean=init_mean,
            eval_every=eval_every,
        )
        for key, value in given.items():
            cast, ok, hint = checks[key]
            opt[key] = None if value is None else number(f"method.{key}", value, cast, ok, hint)
        self.options = opt
        self.init_std = number("method.init_std", init_std, float, lambda v: v >= 0, ">= 0 (official 0.01)")
        self.accept_margin = number("method.accept_margin", accept_margin, float, lambda v: v >= 0, ">= 0 (0.02)")
        self.rank = choice("method.rank", rank, RANK_RULES)
        self.accept_upper = (
            None
            if accept_upper is None
            else number("method.accept_upper", accept_upper, float, lambda v: v >= 0, ">= 0, or null (official)")
        )
        self.mask_lr_scale = number(
            "method.mask_lr_scale", mask_lr_scale, float, lambda v: v > 0, "> 0 (official: 1, the model's lr)"
        )

    # ------------------------------------------------------------------ identity
    def key(self) -> dict[str, Any]:
        return {"variant": None, "ratio": self.sparsity}

    def settings(self) -> dict[str, Any]:
        return {
            "sparsity": self.sparsity,  # also the key's ratio: table rows filter on sparsity
            "epochs": self.epochs,
            **{k: v for k, v in self.options.items()},
            "init_std": self.init_std,
            "accept_margin": self.accept_margin,
            "rank": self.rank,
            **({"mask_lr_scale": self.mask_lr_scale} if self.mask_lr_scale != 1.0 else {}),  # official runs: absent
            **({"accept_upper": self.accept_upper} if self.accept_upper is not None else {}),
        }

    def validate(self, model_name: str, spec: dict) -> None:
        check_family("flop", model_name, spec)

    def recipe(self, spec: dict) -> dict[str, Any]:
        """The training recipe for this model: the official values, overridden by non-null config keys."""
        family = spec["arch"]
        out = {**RECIPES[family], **{k: v for k, v in self.options.items() if v is not None}}
        out["family"] = family
        out["n_d"] = spec.get("n_d")
        out["d_model"] = spec.get("d_model")
        return out

    # ------------------------------------------------------------------ prune
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        if ctx.data is None:
            raise PruneLabError("FLOP trains on text: PruneContext.data is required")
        self.validate(model.spec.get("arch", "?"), model.spec)
        learnt = self.cached_run(model, ctx)
        pruned = build(learnt["spec"])
        pruned.load_state_dict(learnt["state"])
        pruned.to(torch.device(ctx.device)).eval()
        result = learnt["result"]
        extras = {
            "sparsity": {
                "target": self.sparsity,
                "achieved": result["achieved"],
                "expected": result["expected"],
                "of": "prunable parameters",
            },
            "prunable_params": result["prunable"],
            "prunable_params_kept": result["prunable_kept"],
            "hard_sparsity_at_selection": result["hard_at_selection"],
            "lambda_1": result["lambdas"][0],
            "lambda_2": result["lambdas"][1],
            "kept_ranks": result["kept"],
            "full_ranks": result["full"],
            "best_valid_bpc": result["best_valid_bpc"],
            "accepted": result["accepted"],
            "selected_step": result["selected_step"],
            "history": result["history"],
            "flop_cached": learnt["cached"],
        }
        own_stage = {
            "name": "flop",
            "epochs": self.epochs,
            "samples": result["samples"],  # characters (tokens) trained on
            "macs_per_sample": result["macs_per_token"],  # per character, the factorised network, every mask open
            "wall_s": result["wall_s"],
            "bpc_valid": result["best_valid_bpc"],
            "cached": bool(learnt["cached"]),
        }
        return PruneResult(model=pruned, spec=learnt["spec"], extras=extras, own_stage=own_stage)

    # ------------------------------------------------------------------ cached run
    def identity(self, model: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        data = ctx.data
        return {
            "method": "flop",
            "source": ctx.source_id,
            "seed": ctx.seed,
            "spec": model.spec,
            "data": {
                "name": data.name,
                "train_size": len(data.train),
                "bptt": getattr(data, "bptt", None),
                "fingerprint": (getattr(data, "info", None) or {}).get("fingerprint"),
            },
            "sparsity": self.sparsity,
            "settings": self.settings(),
        }

    def cached_run(self, model: nn.Module, ctx: PruneContext) -> dict:
        """Train and compact (or load from ``<cache_dir>/flop/<source>-<digest>``); checkpointed every
        epoch in the run directory (else in the cache entry)."""
        work = Path(ctx.work_dir) if ctx.work_dir is not None else None
        if ctx.cache_dir is None or ctx.source_id is None:
            return {**self.run(model, ctx, work), "cached": False}
        entry_dir = Path(ctx.cache_dir) / "flop" / f"{ctx.source_id}-{digest(self.identity(model, ctx))}"

        def load(entry: Path) -> dict:
            state = load_checkpoint(entry / "flop.pt", map_location="cpu")
            return {"spec": state["spec"], "state": state["model"], "result": state["result"], "cached": entry.name}

        def build_entry(entry: Path) -> dict:
            out = self.run(model, ctx, work if work is not None else entry)
            save_checkpoint(entry / "flop.pt", {"model": out["state"], "spec": out["spec"], "result": out["result"]})
            write_json(entry / "identity.json", self.identity(model, ctx))
            return {**out, "cached": False}

        out, hit = cached(entry_dir, load=load, build=build_entry, files=("flop.pt",), say=ctx.say, what="cached FLOP")
        if hit and not ctx.quiet:
            ctx.say(f"FLOP: cached ({entry_dir.name})")
        return out

    def run(self, model: nn.Module, ctx: PruneContext, work: Path | None) -> dict:
        """Insert the masks, train, select, compact: {"spec", "state", "result"}."""
        device = torch.device(ctx.device)
        recipe = self.recipe(model.spec)
        torch.manual_seed(ctx.seed)
        net = copy.deepcopy(model)
        reset_state(net)
        mask_kwargs = {"init_mean": recipe["init_mean"], "init_std": self.init_std}
        layers = insert_hard_concrete(net, mask_kwargs, self.rank)
        if not layers:
            raise PruneLabError("FLOP: the model has no layer to prune (SRU depth 1 with n_e == n_d?)")
        net.to(device)
        train_spec = factorised_spec(net, layers)
        macs_per_token = count_macs(build(train_spec), (1,))
        trained = self.train(net, layers, ctx, work, recipe)
        prunable = sum(prunable_sizes(layers).values())
        net.eval()
        expected = float(expected_sparsity(layers, prunable).detach())
        spec, state, kept = compact(net, layers)
        kept_size = sum(layers[name].component_size() * k for name, k in kept.items())
        result = {
            **{k: v for k, v in trained.items() if k != "wall_s"},
            "achieved": 1.0 - kept_size / prunable,
            "expected": expected,
            "prunable": prunable,
            "prunable_kept": kept_size,
            "kept": kept,
            "full": {name: int(layer.mask.n) for name, layer in layers.items()},
            "macs_per_token": macs_per_token,
            "wall_s": trained["wall_s"],
        }
        state = {k: v.detach().cpu() for k, v in state.items()}
        return {"spec": spec, "state": state, "result": result}

    # ------------------------------------------------------------------ training
    def train(
        self, net: nn.Module, layers: dict[str, HardConcreteLayer], ctx: PruneContext, work: Path | None, recipe: dict
    ) -> dict:
        data, device = ctx.data, torch.device(ctx.device)
        valid = data.with_eval_split("valid") if hasattr(data, "with_eval_split") else data
        batch_size, eval_batch = int(recipe["batch_size"]), int(recipe["eval_batch_size"])
        hc_params = [layer.mask.log_alpha for layer in layers.values()]
        hc_ids = {id(p) for p in hc_params}
        model_params = [p for p in net.parameters() if id(p) not in hc_ids]
        lambdas = nn.Parameter(torch.zeros(2, device=device))  # l1, l2
        if recipe["family"] == "sru_lm":  # three optimisers (train_enwik8.py)
            opt_model = torch.optim.Adam(model_params, lr=1.0, weight_decay=recipe["weight_decay"])
            opt_hc = torch.optim.Adam(hc_params, lr=1.0, weight_decay=0.0)
            clipped = model_params
        else:  # one Adam over model.parameters(), log_alpha included (enwik8_tf/train.py)
            groups = [{"params": model_params, "scale": 1.0}, {"params": hc_params, "scale": self.mask_lr_scale}]
            opt_model = torch.optim.Adam(groups, lr=1.0, weight_decay=recipe["weight_decay"])
            opt_hc = None
            clipped = model_params + hc_params
        opt_lambda = torch.optim.Adam([lambdas], lr=1.0, weight_decay=0.0, maximize=True)
        opts = [o for o in (opt_model, opt_hc, opt_lambda) if o is not None]
        prunable = sum(prunable_sizes(layers).values())
        steps_per_epoch = int(data.num_train_batches(batch_size))
        total_steps = steps_per_epoch * self.epochs
        final_target = self.sparsity

        def set_lrs(step: int) -> None:
            for group in opt_model.param_groups:  # TXL: log_alpha's group at mask_lr_scale x the lr
                group["lr"] = model_lr(recipe, step, total_steps) * group.get("scale", 1.0)
            if opt_hc is not None:  # the official first step uses prune_lr, then the model's factor
                factor = recipe["prune_lr"] if step == 1 else recipe["lr"]
                for group in opt_hc.param_groups:  # mask_lr_scale: 1 officially (short budgets: more)
                    lr = factor * noam(step, recipe["warmup_steps"]) / math.sqrt(recipe["n_d"])
                    group["lr"] = lr * self.mask_lr_scale
            for group in opt_lambda.param_groups:
                group["lr"] = lambda_lr(recipe, step)

        ckpt = work / "ckpt_flop.pt" if work is not None else None
        tag = digest(self.identity_tag(net, ctx))
        state = load_or_quarantine(ckpt, ctx.say, map_location=device, what="FLOP checkpoint") if ckpt else None
        if state is not None and state.get("identity") != tag:
            ctx.say("FLOP: ignoring a checkpoint of different settings in the run directory")
            state = None
        history: list[dict] = []
        start, step, seen, wall_before = 0, 0, 0, 0.0
        best = {"bpc": math.inf, "state": None, "step": None, "hard": None}
        if state is not None:
            net.load_state_dict(state["model"])
            with torch.no_grad():
                lambdas.copy_(state["lambdas"])
            for opt, opt_state in zip(opts, state["opts"], strict=True):
                opt.load_state_dict(opt_state)
            history, start, step, seen, wall_before = (
                state["history"],
                state["epoch"],
                state["step"],
                state["seen"],
                state["wall_s"],
            )
            best = state["best"]
            torch.set_rng_state(state["rng"].cpu())
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
            if not ctx.quiet:
                ctx.say(f"FLOP: resumed after epoch {start}/{self.epochs}")

        def evaluate_now() -> dict:
            carried = carried_state(net)
            ev = evaluate(net, valid, eval_batch, device=device)
            hard = hard_sparsity(layers, prunable)
            restore_state(net, carried)
            net.train()
            accept = ev["bpc"] < best["bpc"] and hard > final_target - self.accept_margin
            if self.accept_upper is not None:  # two-sided: also no sparser than target + accept_upper
                accept = accept and hard <= final_target + self.accept_upper
            if accept:
                best.update(
                    bpc=ev["bpc"],
                    step=step,
                    hard=hard,
                    state={k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()},
                )
            return {"valid_bpc": ev["bpc"], "hard_sparsity": hard, "accepted": accept, "step": step}

        t0 = time.perf_counter()
        net.train()
        for epoch in range(start, self.epochs):
            t_epoch = time.perf_counter()
            reset_state(net)  # official: init_hidden at each epoch
            sums = torch.zeros(3, device=device)  # LM loss * tokens, tokens, expected sparsity (last)
            evals: list[dict] = []
            generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
            for x, y in data.train_batches(batch_size, generator):
                step += 1
                x, y = x.to(device), y.to(device)
                set_lrs(step)
                logits = net(x)  # (B*T, V)
                lm = F.cross_entropy(logits, y)
                target = target_at(recipe, final_target, step)
                s_hat = expected_sparsity(layers, prunable)
                loss = lm + lagrangian(lambdas, s_hat, target)
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe["clip_grad"] > 0:
                    torch.nn.utils.clip_grad_norm_(clipped, recipe["clip_grad"])
                for opt in opts:
                    opt.step()
                with torch.no_grad():
                    n = float(y.numel())
                    sums[0] += lm.detach() * n
                    sums[1] += n
                    sums[2] = s_hat.detach()
                seen += int(y.numel())
                if recipe["eval_every"] > 0 and step % recipe["eval_every"] == 0:
                    evals.append(evaluate_now())
                    if not ctx.quiet:
                        last = evals[-1]
                        done = step - start * steps_per_epoch
                        eta = (time.perf_counter() - t0) / max(1, done) * (total_steps - step)
                        ctx.say(
                            f"FLOP: step {step}/{total_steps} valid {last['valid_bpc']:.3f} bpc, hard sparsity "
                            f"{last['hard_sparsity']:.3f}{' (accepted)' if last['accepted'] else ''}, "
                            f"ETA {eta / 60:.1f} min"
                        )
            evals.append(evaluate_now())  # the epoch's end (official SRU: i == N - 1)
            s = sums.tolist()
            last = evals[-1]
            row = {
                "epoch": epoch + 1,
                "step": step,
                "lm_bpc": s[0] / max(1.0, s[1]) / math.log(2.0),
                "expected_sparsity": s[2],
                "target_sparsity": target_at(recipe, final_target, max(1, step)),
                "hard_sparsity": last["hard_sparsity"],
                "valid_bpc": last["valid_bpc"],
                "accepted": any(e["accepted"] for e in evals),
                "lambda_1": float(lambdas[0].detach()),
                "lambda_2": float(lambdas[1].detach()),
                "model_lr": model_lr(recipe, max(1, step), total_steps),
                "evaluations": evals if len(evals) > 1 else None,
                "epoch_s": round(time.perf_counter() - t_epoch, 2),
            }
            history.append(row)
            wall = wall_before + time.perf_counter() - t0
            if ckpt is not None:
                save_checkpoint(
                    ckpt,
                    {
                        "identity": tag,
                        "model": net.state_dict(),
                        "lambdas": lambdas.detach(),
                        "opts": [opt.state_dict() for opt in opts],
                        "best": best,
                        "history": history,
                        "epoch": epoch + 1,
                        "step": step,
                        "seen": seen,
                        "wall_s": wall,
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    },
                )
            if not ctx.quiet:
                done = epoch + 1 - start
                eta = (time.perf_counter() - t0) / done * (self.epochs - epoch - 1)
                ctx.say(
                    f"FLOP: epoch {epoch + 1}/{self.epochs} LM {row['lm_bpc']:.3f} bpc, sparsity expected "
                    f"{row['expected_sparsity']:.3f} hard {row['hard_sparsity']:.3f} "
                    f"(target {row['target_sparsity']:.3f}), "
                    f"valid {row['valid_bpc']:.3f} bpc{' (accepted)' if row['accepted'] else ''}, "
                    f"lambda {row['lambda_1']:.3g}/{row['lambda_2']:.3g}, ETA {eta / 60:.1f} min"
                )
        accepted = best["state"] is not None
        final_lambdas = [float(v) for v in lambdas.detach()]
        if accepted:
            net.load_state_dict(best["state"])
        else:
            ctx.say(
                f"warning: FLOP: no evaluation reached hard sparsity > {final_target - self.accept_margin:.3f}; "
                "the last state is used (more epochs, a shorter prune_warmup or a larger prune_lr may help)"
            )
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        return {
            "history": history,
            "epochs": self.epochs,
            "steps": step,
            "samples": seen,
            "accepted": accepted,
            "best_valid_bpc": best["bpc"] if accepted else (history[-1]["valid_bpc"] if history else None),
            "selected_step": best["step"] if accepted else step,
            "hard_at_selection": best["hard"] if accepted else (history[-1]["hard_sparsity"] if history else None),
            "lambdas": final_lambdas,
            "wall_s": round(wall_before + time.perf_counter() - t0, 2),
        }

    def identity_tag(self, net: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        """What a run-directory checkpoint must match to be resumed."""
        return {"sparsity": self.sparsity, "settings": self.settings(), "seed": ctx.seed, "spec": net.spec}
