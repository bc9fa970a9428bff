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

from pruning import PruneLabError
from pruning.methods.base import PruneContext, PruneResult
from pruning.methods.flop import (
    RANK_RULES,
    RECIPES,
    ProgressTrainer,
    check_family,
    choice,
    keep_components,
    model_lr,
    number,
    optional_numbers,
    replace_factorised,
)
from pruning.methods.lm_prune import LMPruneMethod
from pruning.methods.targets import relative_rule, target_record, warn_if_missed
from pruning.models.sru_lm import ProjectedLinear
from pruning.train import reset_state

MODES = ("unstructured", "structured")
TARGETS = ("all", "weights")
MASK_INITS = ("uniform", "ones")
TARGET_TOLERANCE = 0.02  # extras["target"] is met when |achieved - asked| <= 2% of asked

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
    return replace_factorised(net, rank_rule, lambda p, q: MaskedProjectedLinear(p, q, init))


@torch.no_grad()
def compact_structured(net: nn.Module, layers: dict[str, MaskedProjectedLinear]) -> tuple[dict, dict, dict]:
    """The smaller dense network equal to ``net``: (spec, state_dict, kept components per layer)."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith(".mask")}
    spec = copy.deepcopy(net.spec)
    kept: dict[str, int] = {}
    for name, layer in layers.items():
        keep = layer.mask.nonzero().flatten()
        keep_components(spec, state, name, layer, keep, layer.mask[keep])
        kept[name] = int(keep.numel())
    return spec, state, kept


def unstructured_targets(net: nn.Module, targets: str) -> dict[str, torch.Tensor]:
    """The tensors unstructured AGP prunes: every parameter of the layers (official) or their matrices."""
    if targets == "weights":
        return {f"{name}.weight": m.weight for name, m in net.prunable_linears()}
    return {f"layers.{name}": p for name, p in net.layers.named_parameters()}


class AGP(LMPruneMethod):
    name = "agp"
    label = "AGP"

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
        self.options: dict[str, Any] = optional_numbers(given)
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
        learnt, pruned = self.learn(model, ctx)
        result = learnt["result"]
        masks = learnt.get("masks")
        met, rule = relative_rule(self.sparsity, result["achieved"], TARGET_TOLERANCE)
        target = target_record("param_sparsity", self.sparsity, result["achieved"], met, rule)
        warn_if_missed(target, ctx.say, "AGP")
        extras = {
            "target": target,
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
        own_stage = self.stage(learnt, result["final_valid_bpc"])
        return PruneResult(
            model=pruned,
            spec=learnt["spec"],
            masks={k: v.to(torch.device(ctx.device)) for k, v in masks.items()} if masks else None,
            extras=extras,
            own_stage=own_stage,
        )

    # ------------------------------------------------------------------ run (the shell: lm_prune.LMPruneMethod)
    def identity_extra(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def identity_tag(self, net: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        """What a run-directory checkpoint must match to be resumed."""
        return {"sparsity": self.sparsity, "mode": self.mode, "settings": self.settings(), "seed": ctx.seed}

    def unpack(self, saved: dict) -> dict:
        return {k: saved[k] for k in ("spec", "state", "masks", "result")}

    def prepare(self, net: nn.Module, plan: dict) -> tuple[tuple[dict, dict[str, torch.Tensor]], dict]:
        """The tensors to prune (structured: the inserted mask vectors): ((masked layers, targets), the spec
        being trained)."""
        layers: dict[str, MaskedProjectedLinear] = {}
        if self.mode == "structured":
            layers = insert_masks(net, plan["mask_init"], self.rank)
            if not layers:
                raise PruneLabError("structured AGP: the model has no projected layer to prune (SRU depth 1?)")
            targets = {f"{name}.mask": layer.mask for name, layer in layers.items()}
        else:
            targets = unstructured_targets(net, self.targets)
        train_spec = copy.deepcopy(net.spec)
        if layers and train_spec["arch"] == "transformer_xl":
            train_spec["ranks"] = {name: layer.rank for name, layer in layers.items()}
        return (layers, targets), train_spec

    def train(
        self, net: nn.Module, prepared: tuple[dict, dict], ctx: PruneContext, work: Path | None, plan: dict
    ) -> dict:
        return AGPTrainer(self, net, prepared[1], ctx, work, plan).fit()

    def finish(self, net: nn.Module, prepared: tuple[dict, dict], trained: dict, macs_per_token: int) -> dict:
        """{"spec", "state", "masks", "result"}: structured, the compact network; else the masked one."""
        layers, targets = prepared
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


class AGPTrainer(ProgressTrainer):
    """The model's recipe, new magnitude masks at each pruning epoch, re-applied after every step."""

    def __init__(
        self, method: AGP, net: nn.Module, targets: dict[str, torch.Tensor], ctx: PruneContext, work, plan: dict
    ):
        super().__init__(method, net, ctx, work, plan)
        self.targets = targets
        # SRU structured: the masks have their own Adam (official optimizer_pm, lr 1e-3, no weight decay) and are
        # not clipped; otherwise one Adam over every parameter (TXL: masks included), all clipped together
        own_mask_optimiser = method.mode == "structured" and plan["family"] == "sru_lm"
        mask_ids = {id(p) for p in targets.values()} if own_mask_optimiser else set()
        model_params = [p for p in net.parameters() if id(p) not in mask_ids]
        self.opt_model = torch.optim.Adam(model_params, lr=1.0, weight_decay=plan["weight_decay"])
        self.opts = [self.opt_model]
        if own_mask_optimiser:
            self.opts.append(torch.optim.Adam(list(targets.values()), lr=plan["mask_lr"], weight_decay=0.0))
        self.clipped = model_params
        self.masks = {name: torch.ones_like(p) for name, p in targets.items()}
        self.scheduled = 0.0

    def apply_masks(self) -> None:
        with torch.no_grad():
            for name, p in self.targets.items():
                p.mul_(self.masks[name])

    def extra_state(self) -> dict[str, Any]:
        return {"masks": self.masks}

    def load_extra(self, state: dict) -> None:
        if state:
            self.masks = {k: v.to(self.device) for k, v in state["masks"].items()}
        for row in self.history:
            self.scheduled = row.get("scheduled_sparsity", self.scheduled)

    def begin_epoch(self, epoch: int) -> None:
        self.begin_progress(epoch)
        method, plan = self.method, self.plan
        self.target = agp_sparsity(
            epoch, method.initial_sparsity, method.sparsity, plan["start_epoch"], plan["end_epoch"], method.frequency
        )
        if self.target is not None:  # a pruning epoch: new masks from the current magnitudes, per tensor
            self.scheduled = self.target
            self.masks = {name: level_mask(p, self.target) for name, p in self.targets.items()}
        self.apply_masks()
        reset_state(self.net)
        self.sums = torch.zeros(2, device=self.device)

    def set_lrs(self, step: int) -> None:
        lr = model_lr(self.plan, step, self.total_steps)
        for group in self.opt_model.param_groups:
            group["lr"] = lr

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lm_loss(x, y)

    def after_step(self, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.progress.step()
        self.apply_masks()
        with torch.no_grad():
            self.sums += torch.stack([loss.detach() * y.numel(), loss.new_tensor(float(y.numel()))])

    def end_epoch(self, epoch: int, t_epoch: float) -> dict:
        ev, _ = self.valid_eval()
        total = sum(m.numel() for m in self.masks.values())
        zeros = int(sum(int((m == 0).sum()) for m in self.masks.values()))
        s = self.sums.tolist()
        self.progress.end_epoch(f"valid {ev['bpc']:.3f} bpc, sparsity {zeros / total:.3f}")
        return {
            "epoch": epoch + 1,
            "step": self.step,
            "lm_bpc": s[0] / max(1.0, s[1]) / math.log(2.0),
            "valid_bpc": ev["bpc"],
            "scheduled_sparsity": self.scheduled,
            "pruned_epoch": self.target is not None,
            "mask_sparsity": zeros / total,
            "model_lr": model_lr(self.plan, max(1, self.step), self.total_steps),
            "epoch_s": round(time.perf_counter() - t_epoch, 2),
        }

    def epoch_message(self, row: dict, eta: float) -> str:
        method = self.method
        return (
            f"AGP ({method.mode}): epoch {row['epoch']}/{self.epochs} LM {row['lm_bpc']:.3f} bpc, sparsity "
            f"{row['mask_sparsity']:.3f} (scheduled {self.scheduled:.3f}, target {method.sparsity:.3f}), "
            f"valid {row['valid_bpc']:.3f} bpc, ETA {eta / 60:.1f} min"
        )

    def finish(self) -> dict:
        self.net.eval()
        history = self.history
        return {
            "masks": self.masks,
            "scheduled": self.scheduled,
            "schedule": self.method.schedule(self.net.spec),
            "final_valid_bpc": history[-1]["valid_bpc"] if history else None,
        }
