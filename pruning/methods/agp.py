"""AGP: automated gradual (magnitude) pruning, the baseline FLOP compares with.

Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model compression",
ICLR workshop 2018 (arXiv 1710.01878), as FLOP (Wang, Wohlwend & Lei, EMNLP 2020) ran it through
distiller's ``AutomatedGradualPruner``: github:asappresearch/flop (HEAD bdfc184) flop/agp.py,
examples/enwik8/train_enwik8_agp_{unstruct,struct}.py, examples/enwik8_tf/train_agp_{unstruct,struct}.py,
and github:IntelLabs/distiller pruning/automated_gradual_pruner.py + level_pruner.py (read, not copied).

1. From the dense trained model, train for ``epochs`` with the model family's recipe (FLOP's own LM
   recipes, pruning/methods/flop.py: SRU Adam x Noam, clip 0.3; Transformer-XL Adam cosine, clip 0.25).
2. At the start of every pruning epoch e = start, start + f, ... < end (f = ``frequency``, 1 in FLOP's
   runs) the target is s_e = s_f + (s_i - s_f) (1 - (e - start) / span)^3, span = ((end - start - 1) // f) f
   (distiller's compute_target_sparsity; s_i = ``initial_sparsity`` 0.05, s_f = ``sparsity``), so s_f is
   reached at the start of epoch start + span and held to the end.
3. Each pruned tensor separately gets a magnitude mask: its int(s_e * numel) smallest |values| are
   zeroed (distiller's SparsityLevelParameterPruner; ties broken by position, where distiller's
   ``|w| > k-th smallest |w|`` zeroes every tied value: see ``level_mask``).
4. The masks are re-applied after every optimiser step, so pruned values stay zero.
5. The last state is the result (the official scripts overwrite their checkpoint at every evaluation).

What is pruned (``mode``):
* ``unstructured`` (train_enwik8_agp_unstruct.py / enwik8_tf/train_agp_unstruct.py): every parameter of
  the recurrent / Transformer layers (official: ``model.rnn.named_parameters()``, ``model.layers...``), i.e.
  SRU: the U matrices AND the recurrent weight_c / bias vectors; Transformer-XL: the Linears, their biases
  and the LayerNorms. ``targets: weights`` restricts it to the layer matrices (``prunable_linears()``).
  Returned as ``PruneResult.masks`` (the pipeline keeps them at zero through fine-tuning).
  Difference: the official TXL was the factorised dense model (ProjectedLinear + ones-initialised mask
  vectors); ours prunes the pipeline's dense Linears.
* ``structured`` (train_enwik8_agp_struct.py / enwik8_tf/train_agp_struct.py): a learned scale ("mask")
  per rank-1 component of every projected linear (flop ProjectedLinearWithMask: x -> linear2(m * linear1(x)));
  AGP prunes these mask vectors by magnitude, i.e. whole components, the same fraction in each layer.
  SRU: layers 2.. (layer 1's Linear is not a ProjectedLinear and is not pruned; the prunable count is
  (in + out) r over the masked layers); masks initialised U(-1, 1) (``init_zero=True``) and trained by their
  own Adam at 1e-3, unclipped. Transformer-XL: every layer Linear, factorised at in*out // (in + out) by
  truncated SVD of the trained weights (as FLOP here, see flop.py; the official dense model was trained
  factorised), masks initialised to 1 and trained by the main Adam (clipped with everything).
  The result is physically smaller: zero components removed, mask values folded into Q (spec n_proj /
  ``ranks``). Not reproduced: the SRU script steps the embedding and output layer with two Adam
  optimisers at once (``emb_optimizer`` and ``optimizer``); here they take one step.
Defaults (null keys take the family's value): SRU start 0, end 20 (FLOP's configs at commit beefee4:
prune_end_epoch 20, Noam warmup_steps 4000), Transformer-XL start 1 (``prune_start_epoch + 1``), end 10.
The official AGP scripts select on the test split (``dev = create_batches(test, ...)``); here the
validation split is only reported.
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
from pruning.io import load_checkpoint, load_or_quarantine, save_checkpoint, write_json
from pruning.measure import count_macs
from pruning.methods.base import Method, PruneContext, PruneResult
from pruning.methods.flop import (
    RANK_RULES,
    RECIPES,
    carried_state,
    check_family,
    choice,
    factor_rank,
    factorised_linear,
    model_lr,
    number,
    restore_state,
)
from pruning.models import build
from pruning.models.sru_lm import ProjectedLinear
from pruning.models.transformer_xl import FactorisedLinear
from pruning.train import evaluate, reset_state

MODES = ("unstructured", "structured")
TARGETS = ("all", "weights")
MASK_INITS = ("uniform", "ones")

# AGP's own official values per family (the model's training recipe is flop.RECIPES)
AGP_DEFAULTS: dict[str, dict[str, Any]] = {
    "sru_lm": {"start_epoch": 0, "end_epoch": 20, "warmup_steps": 4000, "mask_init": "uniform", "mask_lr": 1e-3},
    "transformer_xl": {"start_epoch": 1, "end_epoch": 10, "warmup_steps": 0, "mask_init": "ones", "mask_lr": None},
}


def agp_sparsity(epoch: int, initial: float, final: float, start: int, end: int, frequency: int = 1) -> float | None:
    """distiller's AGP target at the start of ``epoch``; None when no pruning happens at that epoch."""
    if epoch < start or epoch >= end or (epoch - start) % frequency:
        return None
    span = ((end - start - 1) // frequency) * frequency
    return final + (initial - final) * (1.0 - (epoch - start) / span) ** 3


@torch.no_grad()
def level_mask(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask zeroing exactly the int(sparsity * numel) smallest |values|. (distiller keeps |w| > the
    k-th smallest |w|, which also zeroes every value tied with it: all of a mask vector initialised to
    ones, pruned before it has been trained. Here ties are broken by position.)"""
    k = int(sparsity * tensor.numel())
    mask = torch.ones_like(tensor)
    if k > 0:
        smallest = torch.topk(tensor.detach().abs().flatten(), k, largest=False, sorted=False).indices
        mask.view(-1)[smallest] = 0.0
    return mask


class MaskedProjectedLinear(nn.Module):
    """linear2(mask * linear1(x)): a learned scale per rank-1 component (flop ProjectedLinearWithMask)."""

    def __init__(self, linear1: nn.Linear, linear2: nn.Linear, init: str):
        super().__init__()
        self.linear1, self.linear2 = linear1, linear2
        self.in_features, self.rank, self.out_features = linear1.in_features, linear1.out_features, linear2.out_features
        self.mask = nn.Parameter(torch.ones(self.rank, device=linear1.weight.device, dtype=linear1.weight.dtype))
        if init == "uniform":  # official init_zero=True
            with torch.no_grad():
                self.mask.uniform_(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x) * self.mask)  # (..., in) -> (..., r) -> (..., out)

    def component_size(self) -> int:
        return self.in_features + self.out_features


def insert_masks(net: nn.Module, init: str, rank_rule: str) -> dict[str, MaskedProjectedLinear]:
    """Structured AGP's masked projected linears, in place (module docstring), by module path."""
    layers: dict[str, MaskedProjectedLinear] = {}
    if net.spec["arch"] == "sru_lm":
        for i, layer in enumerate(net.layers):
            if isinstance(layer.transform, ProjectedLinear):
                layer.transform = MaskedProjectedLinear(layer.transform.linear1, layer.transform.linear2, init)
                layers[f"layers.{i}.transform"] = layer.transform
        return layers
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
        parent, _, child = name.rpartition(".")
        masked = MaskedProjectedLinear(linear1, linear2, init)
        setattr(net.get_submodule(parent), child, masked)
        layers[name] = masked
    return layers


@torch.no_grad()
def compact_structured(net: nn.Module, layers: dict[str, MaskedProjectedLinear]) -> tuple[dict, dict, dict]:
    """The smaller dense network equal to ``net``: (spec, state_dict, kept components per layer)."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith(".mask")}
    spec = copy.deepcopy(net.spec)
    kept: dict[str, int] = {}
    for name, layer in layers.items():
        keep = layer.mask.nonzero().flatten()
        state[f"{name}.linear1.weight"] = layer.linear1.weight[keep].clone()  # (k, in)
        state[f"{name}.linear2.weight"] = layer.linear2.weight[:, keep] * layer.mask[keep]  # (out, k)
        if spec["arch"] == "sru_lm":
            spec["n_proj"][int(name.split(".")[1]) - 1] = int(keep.numel())
        else:
            spec.setdefault("ranks", {})[name] = int(keep.numel())
        kept[name] = int(keep.numel())
    return spec, state, kept


def unstructured_targets(net: nn.Module, targets: str) -> dict[str, torch.Tensor]:
    """The tensors unstructured AGP prunes: every parameter of the layers (official) or their matrices."""
    if targets == "weights":
        return {f"{name}.weight": m.weight for name, m in net.prunable_linears()}
    return {f"layers.{name}": p for name, p in net.layers.named_parameters()}


class AGP(Method):
    name = "agp"
    language_models = True
    needs_pretrained = True

    def __init__(
        self,
        sparsity: float = 0.8,
        mode: str = "unstructured",
        epochs: int = 100,
        start_epoch: int | None = None,
        end_epoch: int | None = None,
        initial_sparsity: float = 0.05,
        frequency: int = 1,
        targets: str = "all",
        mask_init: str | None = None,
        mask_lr: float | None = None,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        lr: float | None = None,
        warmup_steps: int | None = None,
        weight_decay: float | None = None,
        clip_grad: float | None = None,
        rank: str = "balanced",
        **_: Any,
    ):
        self.sparsity = number(
            "method.sparsity",
            sparsity,
            float,
            lambda v: 0 <= v < 1,
            "in [0, 1): the final sparsity of each pruned tensor",
        )
        self.mode = choice("method.mode", mode, MODES)
        self.epochs = number("method.epochs", epochs, int, lambda v: v >= 1, "an integer >= 1")
        self.initial_sparsity = number(
            "method.initial_sparsity", initial_sparsity, float, lambda v: 0 <= v < 1, "in [0, 1) (official 0.05)"
        )
        if self.initial_sparsity >= self.sparsity:
            raise PruneLabError(
                f"method.initial_sparsity={self.initial_sparsity} must be below method.sparsity={self.sparsity} "
                "(distiller asserts final > initial)"
            )
        self.frequency = number("method.frequency", frequency, int, lambda v: v >= 1, "an integer >= 1 (epochs)")
        self.targets = choice("method.targets", targets, TARGETS)
        self.rank = choice("method.rank", rank, RANK_RULES)
        given = {
            "start_epoch": (start_epoch, int, lambda v: v >= 0, "an integer >= 0"),
            "end_epoch": (end_epoch, int, lambda v: v >= 1, "an integer >= 1"),
            "mask_lr": (mask_lr, float, lambda v: v > 0, "> 0 (SRU official 1e-3)"),
            "batch_size": (batch_size, int, lambda v: v >= 1, "an integer >= 1"),
            "eval_batch_size": (eval_batch_size, int, lambda v: v >= 1, "an integer >= 1"),
            "lr": (lr, float, lambda v: v > 0, "> 0 (SRU: the Noam factor 2; TXL: 2.5e-4)"),
            "warmup_steps": (warmup_steps, int, lambda v: v >= 1, "an integer >= 1"),
            "weight_decay": (weight_decay, float, lambda v: v >= 0, ">= 0"),
            "clip_grad": (clip_grad, float, lambda v: v >= 0, ">= 0"),
        }
        self.options: dict[str, Any] = {}
        for key, (value, cast, ok, hint) in given.items():
            self.options[key] = None if value is None else number(f"method.{key}", value, cast, ok, hint)
        self.options["mask_init"] = None if mask_init is None else choice("method.mask_init", mask_init, MASK_INITS)

    # ------------------------------------------------------------------ identity
    def key(self) -> dict[str, Any]:
        return {"variant": self.mode, "ratio": self.sparsity}

    def tag(self) -> str:
        return f"{self.mode}-r{self.sparsity:g}"

    def settings(self) -> dict[str, Any]:
        return {
            "sparsity": self.sparsity,  # also the key's ratio: table rows filter on sparsity / mode
            "mode": self.mode,
            "epochs": self.epochs,
            "initial_sparsity": self.initial_sparsity,
            "frequency": self.frequency,
            "targets": self.targets,
            "rank": self.rank,
            **self.options,
        }

    def validate(self, model_name: str, spec: dict) -> None:
        family = check_family("agp", model_name, spec)
        plan = self.recipe(spec)
        start, end = plan["start_epoch"], plan["end_epoch"]
        if end > self.epochs:
            raise PruneLabError(
                f"method.end_epoch={end} is after the last epoch (method.epochs={self.epochs}): the target would "
                "never be reached; raise method.epochs or lower method.end_epoch"
            )
        if (end - start - 1) // self.frequency * self.frequency <= 0:
            raise PruneLabError(
                f"AGP needs at least two pruning epochs: end_epoch - start_epoch - 1 >= frequency "
                f"(start {start}, end {end}, frequency {self.frequency}; {family})"
            )

    def recipe(self, spec: dict) -> dict[str, Any]:
        family = spec["arch"]
        out = {**RECIPES[family], **AGP_DEFAULTS[family]}
        out.update({k: v for k, v in self.options.items() if v is not None})
        out.update(family=family, n_d=spec.get("n_d"), d_model=spec.get("d_model"))
        return out

    def schedule(self, spec: dict) -> list[dict[str, float]]:
        """[{"epoch", "sparsity"}] at every pruning epoch (0-based epochs)."""
        plan = self.recipe(spec)
        out = []
        for epoch in range(self.epochs):
            s = agp_sparsity(
                epoch, self.initial_sparsity, self.sparsity, plan["start_epoch"], plan["end_epoch"], self.frequency
            )
            if s is not None:
                out.append({"epoch": epoch, "sparsity": s})
        return out

    # ------------------------------------------------------------------ prune
    def prune(self, model: nn.Module, ctx: PruneContext) -> PruneResult:
        if ctx.data is None:
            raise PruneLabError("AGP trains on text: PruneContext.data is required")
        self.validate(model.spec.get("arch", "?"), model.spec)
        learnt = self.cached_run(model, ctx)
        pruned = build(learnt["spec"])
        pruned.load_state_dict(learnt["state"])
        pruned.to(torch.device(ctx.device)).eval()
        result = learnt["result"]
        masks = learnt.get("masks")
        extras = {
            "sparsity": {
                "target": self.sparsity,
                "achieved": result["achieved"],
                "expected": result["scheduled"],  # the schedule's last value (= target)
                "of": "prunable parameters",
            },
            "mode": self.mode,
            "prunable_params": result["prunable"],
            "prunable_params_kept": result["prunable_kept"],
            "pruned_tensors": result["pruned_tensors"],
            "schedule": result["schedule"],
            "kept_ranks": result.get("kept"),
            "final_valid_bpc": result["final_valid_bpc"],
            "history": result["history"],
            "agp_cached": learnt["cached"],
        }
        own_stage = {
            "name": "agp",
            "epochs": self.epochs,
            "samples": result["samples"],
            "macs_per_sample": result["macs_per_token"],
            "wall_s": result["wall_s"],
            "bpc_valid": result["final_valid_bpc"],
            "cached": bool(learnt["cached"]),
        }
        return PruneResult(
            model=pruned,
            spec=learnt["spec"],
            masks={k: v.to(torch.device(ctx.device)) for k, v in masks.items()} if masks else None,
            extras=extras,
            own_stage=own_stage,
        )

    # ------------------------------------------------------------------ cached run
    def identity(self, model: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        data = ctx.data
        return {
            "method": "agp",
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
            "mode": self.mode,
            "settings": self.settings(),
        }

    def cached_run(self, model: nn.Module, ctx: PruneContext) -> dict:
        work = Path(ctx.work_dir) if ctx.work_dir is not None else None
        if ctx.cache_dir is None or ctx.source_id is None:
            return {**self.run(model, ctx, work), "cached": False}
        entry_dir = Path(ctx.cache_dir) / "agp" / f"{ctx.source_id}-{digest(self.identity(model, ctx))}"

        def load(entry: Path) -> dict:
            state = load_checkpoint(entry / "agp.pt", map_location="cpu")
            return {**{k: state[k] for k in ("spec", "state", "masks", "result")}, "cached": entry.name}

        def build_entry(entry: Path) -> dict:
            out = self.run(model, ctx, work if work is not None else entry)
            save_checkpoint(entry / "agp.pt", out)
            write_json(entry / "identity.json", self.identity(model, ctx))
            return {**out, "cached": False}

        out, hit = cached(entry_dir, load=load, build=build_entry, files=("agp.pt",), say=ctx.say, what="cached AGP")
        if hit and not ctx.quiet:
            ctx.say(f"AGP: cached ({entry_dir.name})")
        return out

    def run(self, model: nn.Module, ctx: PruneContext, work: Path | None) -> dict:
        """Train with the schedule, then return {"spec", "state", "masks", "result"}."""
        device = torch.device(ctx.device)
        plan = self.recipe(model.spec)
        torch.manual_seed(ctx.seed)
        net = copy.deepcopy(model)
        reset_state(net)
        layers: dict[str, MaskedProjectedLinear] = {}
        if self.mode == "structured":
            layers = insert_masks(net, plan["mask_init"], self.rank)
            if not layers:
                raise PruneLabError("structured AGP: the model has no projected layer to prune (SRU depth 1?)")
            targets = {f"{name}.mask": layer.mask for name, layer in layers.items()}
        else:
            targets = unstructured_targets(net, self.targets)
        net.to(device)
        train_spec = copy.deepcopy(net.spec)
        if layers and train_spec["arch"] == "transformer_xl":
            train_spec["ranks"] = {name: layer.rank for name, layer in layers.items()}
        macs_per_token = count_macs(build(train_spec), (1,))
        trained = self.train(net, targets, ctx, work, plan)
        result = {k: v for k, v in trained.items() if k != "masks"}
        result["macs_per_token"] = macs_per_token
        result["pruned_tensors"] = len(targets)
        masks = None
        if self.mode == "structured":
            spec, state, kept = compact_structured(net, layers)
            prunable = sum(layer.component_size() * layer.rank for layer in layers.values())
            kept_size = sum(layers[name].component_size() * k for name, k in kept.items())
            result["kept"] = kept
        else:
            spec = copy.deepcopy(net.spec)
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            masks = {name: m.detach().cpu() for name, m in trained["masks"].items()}
            prunable = sum(m.numel() for m in masks.values())
            kept_size = int(sum(int(m.sum()) for m in masks.values()))
        result.update(prunable=prunable, prunable_kept=kept_size, achieved=1.0 - kept_size / prunable)
        state = {k: v.detach().cpu() for k, v in state.items()}
        return {"spec": spec, "state": state, "masks": masks, "result": result}

    # ------------------------------------------------------------------ training
    def train(
        self, net: nn.Module, targets: dict[str, torch.Tensor], ctx: PruneContext, work: Path | None, plan: dict
    ) -> dict:
        data, device = ctx.data, torch.device(ctx.device)
        valid = data.with_eval_split("valid") if hasattr(data, "with_eval_split") else data
        batch_size, eval_batch = int(plan["batch_size"]), int(plan["eval_batch_size"])
        # SRU structured: the masks have their own Adam (official optimizer_pm, lr 1e-3, no weight decay) and are
        # not clipped; otherwise one Adam over every parameter (TXL: masks included), all clipped together
        own_mask_optimiser = self.mode == "structured" and plan["family"] == "sru_lm"
        mask_ids = {id(p) for p in targets.values()} if own_mask_optimiser else set()
        model_params = [p for p in net.parameters() if id(p) not in mask_ids]
        opt_model = torch.optim.Adam(model_params, lr=1.0, weight_decay=plan["weight_decay"])
        opts = [opt_model]
        if own_mask_optimiser:
            opts.append(torch.optim.Adam(list(targets.values()), lr=plan["mask_lr"], weight_decay=0.0))
        clipped = model_params
        steps_per_epoch = int(data.num_train_batches(batch_size))
        total_steps = steps_per_epoch * self.epochs
        masks = {name: torch.ones_like(p) for name, p in targets.items()}

        def apply_masks() -> None:
            with torch.no_grad():
                for name, p in targets.items():
                    p.mul_(masks[name])

        ckpt = work / "ckpt_agp.pt" if work is not None else None
        tag = digest({"sparsity": self.sparsity, "mode": self.mode, "settings": self.settings(), "seed": ctx.seed})
        state = load_or_quarantine(ckpt, ctx.say, map_location=device, what="AGP checkpoint") if ckpt else None
        if state is not None and state.get("identity") != tag:
            ctx.say("AGP: ignoring a checkpoint of different settings in the run directory")
            state = None
        history: list[dict] = []
        start, step, seen, wall_before = 0, 0, 0, 0.0
        if state is not None:
            net.load_state_dict(state["model"])
            for opt, opt_state in zip(opts, state["opts"], strict=True):
                opt.load_state_dict(opt_state)
            masks = {k: v.to(device) for k, v in state["masks"].items()}
            history, start, step, seen, wall_before = (
                state["history"],
                state["epoch"],
                state["step"],
                state["seen"],
                state["wall_s"],
            )
            torch.set_rng_state(state["rng"].cpu())
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
            if not ctx.quiet:
                ctx.say(f"AGP: resumed after epoch {start}/{self.epochs}")

        t0 = time.perf_counter()
        scheduled = 0.0
        for row in history:
            scheduled = row.get("scheduled_sparsity", scheduled)
        net.train()
        for epoch in range(start, self.epochs):
            t_epoch = time.perf_counter()
            target = agp_sparsity(
                epoch, self.initial_sparsity, self.sparsity, plan["start_epoch"], plan["end_epoch"], self.frequency
            )
            if target is not None:  # a pruning epoch: new masks from the current magnitudes, per tensor
                scheduled = target
                masks = {name: level_mask(p, target) for name, p in targets.items()}
            apply_masks()
            reset_state(net)
            sums = torch.zeros(2, device=device)
            generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
            for x, y in data.train_batches(batch_size, generator):
                step += 1
                x, y = x.to(device), y.to(device)
                lr = model_lr(plan, step, total_steps)
                for group in opt_model.param_groups:
                    group["lr"] = lr
                loss = F.cross_entropy(net(x), y)
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                if plan["clip_grad"] > 0:
                    torch.nn.utils.clip_grad_norm_(clipped, plan["clip_grad"])
                for opt in opts:
                    opt.step()
                apply_masks()
                with torch.no_grad():
                    sums += torch.stack([loss.detach() * y.numel(), loss.new_tensor(float(y.numel()))])
                seen += int(y.numel())
            carried = carried_state(net)
            ev = evaluate(net, valid, eval_batch, device=device)
            restore_state(net, carried)
            net.train()
            total = sum(m.numel() for m in masks.values())
            zeros = int(sum(int((m == 0).sum()) for m in masks.values()))
            s = sums.tolist()
            row = {
                "epoch": epoch + 1,
                "step": step,
                "lm_bpc": s[0] / max(1.0, s[1]) / math.log(2.0),
                "valid_bpc": ev["bpc"],
                "scheduled_sparsity": scheduled,
                "pruned_epoch": target is not None,
                "mask_sparsity": zeros / total,
                "model_lr": model_lr(plan, max(1, step), total_steps),
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
                        "opts": [opt.state_dict() for opt in opts],
                        "masks": masks,
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
                eta = (time.perf_counter() - t0) / (epoch + 1 - start) * (self.epochs - epoch - 1)
                ctx.say(
                    f"AGP ({self.mode}): epoch {epoch + 1}/{self.epochs} LM {row['lm_bpc']:.3f} bpc, sparsity "
                    f"{row['mask_sparsity']:.3f} (scheduled {scheduled:.3f}, target {self.sparsity:.3f}), "
                    f"valid {row['valid_bpc']:.3f} bpc, ETA {eta / 60:.1f} min"
                )
        net.eval()
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        return {
            "history": history,
            "epochs": self.epochs,
            "steps": step,
            "samples": seen,
            "masks": masks,
            "scheduled": scheduled,
            "schedule": self.schedule(net.spec),
            "final_valid_bpc": history[-1]["valid_bpc"] if history else None,
            "wall_s": round(wall_before + time.perf_counter() - t0, 2),
        }
