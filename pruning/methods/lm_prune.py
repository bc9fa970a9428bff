"""The shell that FLOP and AGP (the language-model pruning methods) share: a cache entry
``<cache_dir>/<name>/<source>-<digest>`` holding ``<name>.pt``, and a resumable training loop that
checkpoints model, optimisers, history, epoch, step and RNG to ``<run dir>/ckpt_<name>.pt`` at every
epoch's end, after measuring the valid bpc. Each method says only what is its own: its masks, its
loss and schedule, its epoch row and its result (``LMPruneMethod`` hooks, ``EpochTrainer`` hooks)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning import PruneLabError, rng
from pruning.cache import cached, digest
from pruning.io import load_checkpoint, load_or_quarantine, save_checkpoint, write_json
from pruning.measure import count_macs
from pruning.methods.base import Method, PruneContext
from pruning.models import build
from pruning.train import evaluate, reset_state


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


class LMPruneMethod(Method):
    """A method that prunes a character LM by training it: cache entry, run template, training loop."""

    language_models = True
    needs_pretrained = True
    label = "LM"  # how messages name the method ("FLOP", "AGP")

    # ------------------------------------------------------------------ hooks
    def identity_extra(self) -> dict[str, Any]:
        """Identity keys of the cache entry besides the shared ones."""
        return {}

    def identity_tag(self, net: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        """What a run-directory checkpoint must match to be resumed."""
        raise NotImplementedError

    def pack(self, out: dict) -> dict:
        """``run``'s output as saved in the cache entry."""
        return out

    def unpack(self, saved: dict) -> dict:
        """The cache entry's contents back as ``run``'s output (without "cached")."""
        return saved

    def prepare(self, net: nn.Module, plan: dict) -> tuple[Any, dict]:
        """Make ``net`` (a copy) prunable in place: (what ``train``/``finish`` need, the spec being trained)."""
        raise NotImplementedError

    def train(self, net: nn.Module, prepared: Any, ctx: PruneContext, work: Path | None, plan: dict) -> dict:
        raise NotImplementedError

    def finish(self, net: nn.Module, prepared: Any, trained: dict, macs_per_token: int) -> dict:
        """{"spec", "state", ...: the result} from the trained network."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shell
    def learn(self, model: nn.Module, ctx: PruneContext) -> tuple[dict, nn.Module]:
        """(the cached run's output, the pruned network built from it on ctx.device)."""
        if ctx.data is None:
            raise PruneLabError(f"{self.label} trains on text: PruneContext.data is required")
        self.validate(model.spec.get("arch", "?"), model.spec)
        learnt = self.cached_run(model, ctx)
        pruned = build(learnt["spec"])
        pruned.load_state_dict(learnt["state"])
        pruned.to(torch.device(ctx.device)).eval()
        return learnt, pruned

    def stage(self, learnt: dict, bpc_valid: float | None) -> dict[str, Any]:
        """The pruning stage's record (``PruneResult.own_stage``): samples are the characters (tokens) trained
        on, MACs per character those of the network being trained, every mask open."""
        result = learnt["result"]
        return {
            "name": self.name,
            "epochs": self.epochs,
            "samples": result["samples"],
            "macs_per_sample": result["macs_per_token"],
            "wall_s": result["wall_s"],
            "bpc_valid": bpc_valid,
            "cached": bool(learnt["cached"]),
        }

    def identity(self, model: nn.Module, ctx: PruneContext) -> dict[str, Any]:
        data = ctx.data
        return {
            "method": self.name,
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
            **self.identity_extra(),
            "settings": self.settings(),
        }

    def cached_run(self, model: nn.Module, ctx: PruneContext) -> dict:
        """Train and compact (or load from ``<cache_dir>/<name>/<source>-<digest>``); checkpointed every
        epoch in the run directory (else in the cache entry)."""
        work = Path(ctx.work_dir) if ctx.work_dir is not None else None
        if ctx.cache_dir is None or ctx.source_id is None:
            return {**self.run(model, ctx, work), "cached": False}
        entry_dir = Path(ctx.cache_dir) / self.name / f"{ctx.source_id}-{digest(self.identity(model, ctx))}"
        file = f"{self.name}.pt"

        def load(entry: Path) -> dict:
            return {**self.unpack(load_checkpoint(entry / file, map_location="cpu")), "cached": entry.name}

        def build_entry(entry: Path) -> dict:
            out = self.run(model, ctx, work if work is not None else entry)
            save_checkpoint(entry / file, self.pack(out))
            write_json(entry / "identity.json", self.identity(model, ctx))
            return {**out, "cached": False}

        what = f"cached {self.label}"
        out, hit = cached(entry_dir, load=load, build=build_entry, files=(file,), say=ctx.say, what=what)
        if hit and not ctx.quiet:
            ctx.say(f"{self.label}: cached ({entry_dir.name})")
        return out

    def run(self, model: nn.Module, ctx: PruneContext, work: Path | None) -> dict:
        """Make a copy prunable, train it, compact: {"spec", "state", ..., "result"}."""
        plan = self.recipe(model.spec)
        torch.manual_seed(ctx.seed)
        net = copy.deepcopy(model)
        reset_state(net)
        prepared, train_spec = self.prepare(net, plan)
        net.to(torch.device(ctx.device))
        macs_per_token = count_macs(build(train_spec), (1,))
        trained = self.train(net, prepared, ctx, work, plan)
        return self.finish(net, prepared, trained, macs_per_token)


class EpochTrainer:
    """The resumable epoch loop: each epoch trains on the shuffled windows, measures the valid bpc and
    checkpoints; a checkpoint of the same identity in the run directory is resumed after its epoch."""

    def __init__(self, method: LMPruneMethod, net: nn.Module, ctx: PruneContext, work: Path | None, plan: dict):
        self.method, self.net, self.ctx, self.plan = method, net, ctx, plan
        self.epochs, self.label = method.epochs, method.label
        self.data, self.device = ctx.data, torch.device(ctx.device)
        self.valid = self.data.with_eval_split("valid") if hasattr(self.data, "with_eval_split") else self.data
        self.batch_size, self.eval_batch = int(plan["batch_size"]), int(plan["eval_batch_size"])
        self.steps_per_epoch = int(self.data.num_train_batches(self.batch_size))
        self.total_steps = self.steps_per_epoch * self.epochs
        self.ckpt = work / f"ckpt_{method.name}.pt" if work is not None else None
        self.opts: list[torch.optim.Optimizer] = []  # the subclass's optimisers, stepped in this order
        self.clipped: list[torch.Tensor] = []  # the parameters whose gradient norm is clipped together
        self.history: list[dict] = []
        self.start, self.step, self.seen, self.wall_before = 0, 0, 0, 0.0
        self.t0 = 0.0
        self.tag = ""  # the digest of method.identity_tag, set by resume()

    # ------------------------------------------------------------------ hooks
    def extra_state(self) -> dict[str, Any]:
        """The method's own checkpoint entries."""
        return {}

    def load_extra(self, state: dict) -> None:
        """Restore ``extra_state`` (and whatever follows from the restored history)."""

    def begin_epoch(self, epoch: int) -> None:
        """Before the epoch's first batch."""

    def set_lrs(self, step: int) -> None:
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, loss: torch.Tensor, y: torch.Tensor) -> None:
        """After the optimiser steps of a batch (``loss``: what ``loss`` returned)."""

    def end_epoch(self, epoch: int, t_epoch: float) -> dict:
        """The epoch's history row."""
        raise NotImplementedError

    def epoch_message(self, row: dict, eta: float) -> str:
        raise NotImplementedError

    def finish(self) -> dict:
        """The method's results, before the checkpoint is removed."""
        return {}

    # ------------------------------------------------------------------ loop
    def lm_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(x), y)

    def valid_eval(self, during: Callable[[], Any] | None = None) -> tuple[dict, Any]:
        """The valid split's evaluation (the carried state kept), and ``during()`` measured in eval mode."""
        carried = carried_state(self.net)
        ev = evaluate(self.net, self.valid, self.eval_batch, device=self.device)
        extra = during() if during is not None else None
        restore_state(self.net, carried)
        self.net.train()
        return ev, extra

    def resume(self) -> None:
        ctx, method = self.ctx, self.method
        tag = digest(method.identity_tag(self.net, ctx))
        what = f"{self.label} checkpoint"
        state = load_or_quarantine(self.ckpt, ctx.say, map_location=self.device, what=what) if self.ckpt else None
        if state is not None and state.get("identity") != tag:
            ctx.say(f"{self.label}: ignoring a checkpoint of different settings in the run directory")
            state = None
        self.tag = tag
        if state is None:
            self.load_extra({})
            return
        self.net.load_state_dict(state["model"])
        for opt, opt_state in zip(self.opts, state["opts"], strict=True):
            opt.load_state_dict(opt_state)
        self.history, self.start, self.step, self.seen, self.wall_before = (
            state["history"],
            state["epoch"],
            state["step"],
            state["seen"],
            state["wall_s"],
        )
        self.load_extra(state)
        rng.restore(state, ctx.say, what=f"{self.label} checkpoint {self.ckpt}")
        if not ctx.quiet:
            ctx.say(f"{self.label}: resumed after epoch {self.start}/{self.epochs}")

    def save(self, epoch: int, wall: float) -> None:
        state = {
            "identity": self.tag,
            "model": self.net.state_dict(),
            "opts": [opt.state_dict() for opt in self.opts],
            **self.extra_state(),
            "history": self.history,
            "epoch": epoch + 1,
            "step": self.step,
            "seen": self.seen,
            "wall_s": wall,
            rng.RNG_KEY: rng.capture(),
        }
        save_checkpoint(self.ckpt, state)

    def fit(self) -> dict:
        """Train from the checkpoint (if any) to the last epoch: {"history", "epochs", "steps", "samples",
        ...the method's results, "wall_s"}."""
        ctx, net, clip = self.ctx, self.net, self.plan["clip_grad"]
        self.resume()
        self.t0 = time.perf_counter()
        net.train()
        for epoch in range(self.start, self.epochs):
            t_epoch = time.perf_counter()
            self.begin_epoch(epoch)
            generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
            for x, y in self.data.train_batches(self.batch_size, generator):
                self.step += 1
                x, y = x.to(self.device), y.to(self.device)
                self.set_lrs(self.step)
                loss = self.loss(x, y)
                for opt in self.opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.clipped, clip)
                for opt in self.opts:
                    opt.step()
                self.after_step(loss, y)
                self.seen += int(y.numel())
            row = self.end_epoch(epoch, t_epoch)
            self.history.append(row)
            wall = self.wall_before + time.perf_counter() - self.t0
            if self.ckpt is not None:
                self.save(epoch, wall)
            if not ctx.quiet:
                eta = (time.perf_counter() - self.t0) / (epoch + 1 - self.start) * (self.epochs - epoch - 1)
                ctx.say(self.epoch_message(row, eta))
        results = self.finish()
        if self.ckpt is not None:
            self.ckpt.unlink(missing_ok=True)
        return {
            "history": self.history,
            "epochs": self.epochs,
            "steps": self.step,
            "samples": self.seen,
            **results,
            "wall_s": round(self.wall_before + time.perf_counter() - self.t0, 2),
        }
