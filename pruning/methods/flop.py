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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pruning import PruneLabError
from pruning.hardconcrete import (
    HardConcreteLayer,
    HardConcreteLinear,
    HardConcreteProjectedLinear,
    hard_size,
)
from pruning.methods.base import PruneContext, PruneResult
from pruning.methods.lm_prune import EpochTrainer, LMPruneMethod
from pruning.methods.targets import target_record, warn_if_missed
from pruning.models.sru_lm import ProjectedLinear, _num_matrices, layer1_matrices
from pruning.models.transformer_xl import FactorisedLinear
from pruning.progress import StageProgress, eval_steps
from pruning.train import reset_state

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


def optional_numbers(given: dict[str, tuple[Any, Any, Any, str]]) -> dict[str, Any]:
    """{key: None (null: the family's value) or ``number("method.<key>", value, cast, ok, hint)``}."""
    return {
        k: None if v is None else number(f"method.{k}", v, cast, ok, hint) for k, (v, cast, ok, hint) in given.items()
    }


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


def replace_factorised(net: nn.Module, rank_rule: str, make: Callable[[nn.Linear, nn.Linear], nn.Module]) -> dict:
    """Replace every Linear of a Transformer-XL's layers (in place, in model order) by ``make(linear1,
    linear2)`` of its factors (truncated SVD at ``rank_rule``; an already factorised layer's own factors);
    returns the new modules by module path."""
    targets = []
    for name, module in net.named_modules():
        parent = name.rpartition(".")[0]
        if not name.startswith("layers.") or isinstance(net.get_submodule(parent), FactorisedLinear):
            continue
        if isinstance(module, (FactorisedLinear, nn.Linear)):
            targets.append((name, module))
    layers = {}
    for name, module in targets:
        if isinstance(module, FactorisedLinear):
            linear1, linear2 = module.linear1, module.linear2
        else:
            linear1, linear2 = factorised_linear(
                module, factor_rank(module.in_features, module.out_features, rank_rule)
            )
        new = make(linear1, linear2)
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent), child, new)
        layers[name] = new
    return layers


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
    return replace_factorised(net, rank_rule, lambda p, q: HardConcreteProjectedLinear(p, q, **mask_kwargs))


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
            keep_components(spec, state, name, layer, keep, values)
        kept[name] = int(keep.numel())
    return spec, state, kept


def keep_components(spec: dict, state: dict, name: str, layer: nn.Module, keep: torch.Tensor, values) -> None:
    """Into ``state`` / ``spec``: the projected layer ``name`` (linear2(m * linear1(x))) cut to its ``keep``
    components, their mask ``values`` folded into Q; its rank in the spec (SRU n_proj, TXL ranks)."""
    state[f"{name}.linear1.weight"] = layer.linear1.weight[keep].clone()  # (n_kept, in)
    state[f"{name}.linear2.weight"] = layer.linear2.weight[:, keep] * values  # (out, n_kept)
    if spec["arch"] == "sru_lm":
        spec["n_proj"][int(name.split(".")[1]) - 1] = int(keep.numel())
    else:
        spec.setdefault("ranks", {})[name] = int(keep.numel())


def prunable_sizes(layers: dict[str, HardConcreteLayer]) -> dict[str, int]:
    return {name: layer.prunable_size() for name, layer in layers.items()}


def expected_sparsity(layers: dict[str, HardConcreteLayer], prunable: int) -> torch.Tensor:
    return 1.0 - sum(layer.expected_size() for layer in layers.values()) / prunable


def hard_sparsity(layers: dict[str, HardConcreteLayer], prunable: int) -> float:
    return 1.0 - sum(hard_size(layer) for layer in layers.values()) / prunable


# ----------------------------------------------------------------------------- the method
class FLOP(LMPruneMethod):
    name = "flop"
    label = "FLOP"

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
        self.options = optional_numbers(  # null: the family's official value (RECIPES)
            {
                "batch_size": (batch_size, int, lambda v: v >= 1, "an integer >= 1 (SRU: 64, TXL: 22)"),
                "eval_batch_size": (eval_batch_size, int, lambda v: v >= 1, "an integer >= 1"),
                "lr": (lr, float, lambda v: v > 0, "> 0 (SRU: the Noam factor 2; TXL: 2.5e-4)"),
                "warmup_steps": (warmup_steps, int, lambda v: v >= 1, "an integer >= 1 (SRU Noam warm-up, 16000)"),
                "weight_decay": (weight_decay, float, lambda v: v >= 0, ">= 0"),
                "clip_grad": (clip_grad, float, lambda v: v >= 0, ">= 0 (0: no clipping)"),
                "prune_lr": (prune_lr, float, lambda v: v > 0, "> 0 (SRU: 3, TXL: 1)"),
                "prune_warmup": (prune_warmup, int, lambda v: v >= 0, "an integer >= 0 (steps)"),
                "init_mean": (init_mean, float, lambda v: 0 < v < 1, "in (0, 1) (SRU: 0.5, TXL: 0.05)"),
                "eval_every": (eval_every, int, lambda v: v >= 0, "an integer >= 0 (0: once per epoch)"),
            }
        )
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
        learnt, pruned = self.learn(model, ctx)
        result = learnt["result"]
        met = result["achieved"] > self.sparsity - self.accept_margin  # the acceptance rule (official)
        rule = f"achieved > asked - {self.accept_margin:g} (the acceptance rule)"
        if self.accept_upper is not None:
            met = met and result["achieved"] <= self.sparsity + self.accept_upper
            rule = f"asked - {self.accept_margin:g} < achieved <= asked + {self.accept_upper:g} (the acceptance rule)"
        target = target_record("param_sparsity", self.sparsity, result["achieved"], met, rule)
        warn_if_missed(target, ctx.say, "FLOP")
        extras = {
            "target": target,
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
        own_stage = self.stage(learnt, result["best_valid_bpc"])
        return PruneResult(model=pruned, spec=learnt["spec"], extras=extras, own_stage=own_stage)

    # ------------------------------------------------------------------ run (the shell: lm_prune.LMPruneMethod)
    def pack(self, out: dict) -> dict:
        return {"model": out["state"], "spec": out["spec"], "result": out["result"]}

    def unpack(self, saved: dict) -> dict:
        return {"spec": saved["spec"], "state": saved["model"], "result": saved["result"]}

    def prepare(self, net: nn.Module, plan: dict) -> tuple[dict[str, HardConcreteLayer], dict]:
        """Insert the hard-concrete masks: (the masked layers, the factorised spec every mask open)."""
        mask_kwargs = {"init_mean": plan["init_mean"], "init_std": self.init_std}
        layers = insert_hard_concrete(net, mask_kwargs, self.rank)
        if not layers:
            raise PruneLabError("FLOP: the model has no layer to prune (SRU depth 1 with n_e == n_d?)")
        return layers, factorised_spec(net, layers)

    def train(
        self, net: nn.Module, layers: dict[str, HardConcreteLayer], ctx: PruneContext, work: Path | None, plan: dict
    ) -> dict:
        return FLOPTrainer(self, net, layers, ctx, work, plan).fit()

    def finish(self, net: nn.Module, layers: dict[str, HardConcreteLayer], trained: dict, macs_per_token: int) -> dict:
        """Select (done by the trainer), compact: {"spec", "state", "result"}."""
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

    def identity_tag(self, net: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        """What a run-directory checkpoint must match to be resumed."""
        return {"sparsity": self.sparsity, "settings": self.settings(), "seed": ctx.seed, "spec": net.spec}


class ProgressTrainer(EpochTrainer):
    """``EpochTrainer`` with a progress bar and ETA over its steps and valid evaluations
    (``pruning.progress``), for FLOP and AGP: started at the first epoch this process trains (after
    a resume), a step counted after each batch (``after_step``), each ``valid_eval`` timed."""

    progress: StageProgress | None = None

    def evaluations_per_epoch(self) -> int:
        return 1

    def begin_progress(self, epoch: int) -> None:
        if self.progress is not None:
            return
        tokens_per_step = self.batch_size * int(getattr(self.data, "bptt", 1))
        self.progress = StageProgress(
            self.label,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            quiet=self.ctx.quiet,
            start_epoch=epoch,
            eval_steps=eval_steps(len(self.valid.test), tokens_per_step),
            evals_per_epoch=self.evaluations_per_epoch(),
            say=self.ctx.say,
        )
        self.progress.start()

    def valid_eval(self, during: Callable[[], Any] | None = None) -> tuple[dict, Any]:
        if self.progress is None:
            return super().valid_eval(during)
        with self.progress.evaluating():
            return super().valid_eval(during)

    def fit(self) -> dict:
        try:
            return super().fit()
        finally:
            if self.progress is not None:
                self.progress.stop()


class FLOPTrainer(ProgressTrainer):
    """Weights, masks and the lambdas trained on L_LM + the Lagrangian; the best accepted state kept."""

    def __init__(
        self,
        method: FLOP,
        net: nn.Module,
        layers: dict[str, HardConcreteLayer],
        ctx: PruneContext,
        work: Path | None,
        plan: dict,
    ):
        super().__init__(method, net, ctx, work, plan)
        self.layers = layers
        hc_params = [layer.mask.log_alpha for layer in layers.values()]
        hc_ids = {id(p) for p in hc_params}
        model_params = [p for p in net.parameters() if id(p) not in hc_ids]
        self.lambdas = nn.Parameter(torch.zeros(2, device=self.device))  # l1, l2
        if plan["family"] == "sru_lm":  # three optimisers (train_enwik8.py)
            self.opt_model = torch.optim.Adam(model_params, lr=1.0, weight_decay=plan["weight_decay"])
            self.opt_hc = torch.optim.Adam(hc_params, lr=1.0, weight_decay=0.0)
            self.clipped = model_params
        else:  # one Adam over model.parameters(), log_alpha included (enwik8_tf/train.py)
            groups = [{"params": model_params, "scale": 1.0}, {"params": hc_params, "scale": method.mask_lr_scale}]
            self.opt_model = torch.optim.Adam(groups, lr=1.0, weight_decay=plan["weight_decay"])
            self.opt_hc = None
            self.clipped = model_params + hc_params
        self.opt_lambda = torch.optim.Adam([self.lambdas], lr=1.0, weight_decay=0.0, maximize=True)
        self.opts = [o for o in (self.opt_model, self.opt_hc, self.opt_lambda) if o is not None]
        self.prunable = sum(prunable_sizes(layers).values())
        self.final_target = method.sparsity
        self.best = {"bpc": math.inf, "state": None, "step": None, "hard": None}

    def extra_state(self) -> dict[str, Any]:
        return {"lambdas": self.lambdas.detach(), "best": self.best}

    def load_extra(self, state: dict) -> None:
        if state:
            with torch.no_grad():
                self.lambdas.copy_(state["lambdas"])
            self.best = state["best"]

    def set_lrs(self, step: int) -> None:
        plan, scale = self.plan, self.method.mask_lr_scale
        for group in self.opt_model.param_groups:  # TXL: log_alpha's group at mask_lr_scale x the lr
            group["lr"] = model_lr(plan, step, self.total_steps) * group.get("scale", 1.0)
        if self.opt_hc is not None:  # the official first step uses prune_lr, then the model's factor
            factor = plan["prune_lr"] if step == 1 else plan["lr"]
            for group in self.opt_hc.param_groups:  # mask_lr_scale: 1 officially (short budgets: more)
                lr = factor * noam(step, plan["warmup_steps"]) / math.sqrt(plan["n_d"])
                group["lr"] = lr * scale
        for group in self.opt_lambda.param_groups:
            group["lr"] = lambda_lr(plan, step)

    def evaluations_per_epoch(self) -> int:
        every = int(self.plan["eval_every"])
        return 1 + (self.steps_per_epoch // every if every > 0 else 0)  # every eval_every steps + the epoch's end

    def begin_epoch(self, epoch: int) -> None:
        self.begin_progress(epoch)
        reset_state(self.net)  # official: init_hidden at each epoch
        self.sums = torch.zeros(3, device=self.device)  # LM loss * tokens, tokens, expected sparsity (last)
        self.evals: list[dict] = []

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.lm = self.lm_loss(x, y)  # logits (B*T, V)
        target = target_at(self.plan, self.final_target, self.step)
        self.s_hat = expected_sparsity(self.layers, self.prunable)
        return self.lm + lagrangian(self.lambdas, self.s_hat, target)

    def after_step(self, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.progress.step()
        with torch.no_grad():
            n = float(y.numel())
            self.sums[0] += self.lm.detach() * n
            self.sums[1] += n
            self.sums[2] = self.s_hat.detach()
        step = self.step
        if self.plan["eval_every"] > 0 and step % self.plan["eval_every"] == 0:
            self.evals.append(self.evaluate_now())
            if not self.ctx.quiet:
                last = self.evals[-1]
                done = step - self.start * self.steps_per_epoch
                eta = (time.perf_counter() - self.t0) / max(1, done) * (self.total_steps - step)
                self.ctx.say(
                    f"FLOP: step {step}/{self.total_steps} valid {last['valid_bpc']:.3f} bpc, hard sparsity "
                    f"{last['hard_sparsity']:.3f}{' (accepted)' if last['accepted'] else ''}, "
                    f"ETA {eta / 60:.1f} min"
                )

    def evaluate_now(self) -> dict:
        method, best, target = self.method, self.best, self.final_target
        ev, hard = self.valid_eval(lambda: hard_sparsity(self.layers, self.prunable))
        accept = ev["bpc"] < best["bpc"] and hard > target - method.accept_margin
        if method.accept_upper is not None:  # two-sided: also no sparser than target + accept_upper
            accept = accept and hard <= target + method.accept_upper
        if accept:
            best.update(
                bpc=ev["bpc"],
                step=self.step,
                hard=hard,
                state={k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()},
            )
        return {"valid_bpc": ev["bpc"], "hard_sparsity": hard, "accepted": accept, "step": self.step}

    def end_epoch(self, epoch: int, t_epoch: float) -> dict:
        self.evals.append(self.evaluate_now())  # the epoch's end (official SRU: i == N - 1)
        s = self.sums.tolist()
        last, step = self.evals[-1], self.step
        self.progress.end_epoch(f"valid {last['valid_bpc']:.3f} bpc, hard sparsity {last['hard_sparsity']:.3f}")
        return {
            "epoch": epoch + 1,
            "step": step,
            "lm_bpc": s[0] / max(1.0, s[1]) / math.log(2.0),
            "expected_sparsity": s[2],
            "target_sparsity": target_at(self.plan, self.final_target, max(1, step)),
            "hard_sparsity": last["hard_sparsity"],
            "valid_bpc": last["valid_bpc"],
            "accepted": any(e["accepted"] for e in self.evals),
            "lambda_1": float(self.lambdas[0].detach()),
            "lambda_2": float(self.lambdas[1].detach()),
            "model_lr": model_lr(self.plan, max(1, step), self.total_steps),
            "evaluations": self.evals if len(self.evals) > 1 else None,
            "epoch_s": round(time.perf_counter() - t_epoch, 2),
        }

    def epoch_message(self, row: dict, eta: float) -> str:
        return (
            f"FLOP: epoch {row['epoch']}/{self.epochs} LM {row['lm_bpc']:.3f} bpc, sparsity expected "
            f"{row['expected_sparsity']:.3f} hard {row['hard_sparsity']:.3f} "
            f"(target {row['target_sparsity']:.3f}), "
            f"valid {row['valid_bpc']:.3f} bpc{' (accepted)' if row['accepted'] else ''}, "
            f"lambda {row['lambda_1']:.3g}/{row['lambda_2']:.3g}, ETA {eta / 60:.1f} min"
        )

    def finish(self) -> dict:
        best, history = self.best, self.history
        accepted = best["state"] is not None
        final_lambdas = [float(v) for v in self.lambdas.detach()]
        if accepted:
            self.net.load_state_dict(best["state"])
        else:
            floor = self.final_target - self.method.accept_margin
            self.ctx.say(
                f"warning: FLOP: no evaluation reached hard sparsity > {floor:.3f}; "
                "the last state is used (more epochs, a shorter prune_warmup or a larger prune_lr may help)"
            )
        return {
            "accepted": accepted,
            "best_valid_bpc": best["bpc"] if accepted else (history[-1]["valid_bpc"] if history else None),
            "selected_step": best["step"] if accepted else self.step,
            "hard_at_selection": best["hard"] if accepted else (history[-1]["hard_sparsity"] if history else None),
            "lambdas": final_lambdas,
        }
