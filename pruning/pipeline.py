"""The one pipeline every method runs through, as a list of named stages:

    pretrain (dense baseline, cached)  ->  prune (the method; it may search or train its own way)
      ->  second stage (finetune | scratch_e | scratch_b)  ->  evaluate + measure

``run(cfg, run_dir)`` takes the composed config as a plain dict (no Hydra objects) and writes
``run_dir/metrics.json`` (``pruning.results.RunMetrics``), ``history.jsonl`` and per-stage
checkpoints. Each stage is a short function below; the pipeline never names a method: a method
says what it needs through ``pruning.methods.base.Method`` (pretrained dense net or not, its own
pretraining penalty, its pruned architecture known before data or not, distillation, scratch
init) and records what it did in ``PruneResult.extras``.

* Expensive artefacts (the dense baseline here; a method's search) go through
  ``pruning.cache.cached``: content-hashed, file-locked, corrupt entries rebuilt.
* Every stage checkpoints each epoch; re-running a killed command resumes; a finished run is
  skipped (``rerun=true`` forces it).
* Every run measures dense vs pruned latency, prints its plan and an ETA, and records per stage
  peak memory and its training cost (samples seen x forward MACs).
* Under torchrun (DDP) every rank runs this same code; rank 0 alone writes and takes locks.
* ``logger=`` streams each stage's epochs and the final metrics to an experiment tracker
  (``pruning.trackers``; rank 0 only; a tracker failure is a warning, never the run's end).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from rich.console import Console
from rich.markup import escape

from pruning import CorruptFileError, PruneLabError, Terminated, distributed, rng, trackers
from pruning import data as datasets
from pruning.cache import cached, digest
from pruning.config import (  # noqa: F401  (re-exported: the pipeline's public names)
    LATER_SCHEDULE_DEFAULTS,
    METHODS_PACKAGE,
    MODEL_KEYS,
    POLICIES,
    adversarial_training,
    check_path_names,
    data_input_shape,
    make_method,
    model_spec,
    policy_schedule,
    pretrain_schedule,
    resolve_device,
    robustness_settings,
    run_key,
    run_subdir,
)
from pruning.config import validate as validate_config
from pruning.io import (
    clean_stray_temp_files,
    ensure_dir,
    load_checkpoint,
    load_or_quarantine,
    os_error_message,
    portable_path,
    quarantine,
    read_json,
    read_json_object,
    refuse_symlinks,
    save_checkpoint,
    write_json,
)
from pruning.measure import count_macs, count_params, reduction
from pruning.methods.base import Method, PruneContext
from pruning.models import build
from pruning.provenance import git_commit, now, versions
from pruning.results import LatencyRecord, RunKey, RunMetrics, StageRecord
from pruning.runtime import Eta, Runtime, make_runtime, measure_latencies
from pruning.train import evaluate, run_stage


# ----------------------------------------------------------------------------- entry point
def validate(cfg: dict) -> tuple[Method, dict]:
    """Every check made before a run starts (prune-exp's precheck and a sweep's ValidateSweep call
    this one): ``pruning.config.validate`` and the ``logger`` (a known tracker whose package is
    installed, ``pruning.trackers.check``). Returns the method and the dense spec."""
    checked = validate_config(cfg)
    trackers.check(cfg)
    return checked


def run(cfg: dict, run_dir: str | Path, console: Console | None = None) -> dict:
    """Run (or resume, or skip) one experiment; returns the metrics written to metrics.json."""
    console = console or Console(stderr=True)
    cfg = copy.deepcopy(cfg)
    run_dir = Path(run_dir)
    method, spec = validate(cfg)
    check_path_names(cfg, method)  # names become folders (run dir, cache ids): never one outside the root
    refuse_symlinks(run_dir, (cfg.get("paths") or {}).get("results_root"))  # never write through a planted link
    rt = make_runtime(cfg, console)
    finished = _finished_run(run_dir, cfg, rt)
    if finished is not None and not _missing_evaluations(finished, cfg):
        return finished
    lock = FileLock(str(run_dir / ".lock"))
    if rt.dist.is_main:
        ensure_dir(run_dir)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise PruneLabError(f"another process is running {run_dir}; wait for it or kill it") from None
        except OSError as e:
            raise PruneLabError(os_error_message(e, run_dir / ".lock")) from None
        clean_stray_temp_files(run_dir)  # left by a killed write; we hold the run's lock
    tracker, status = trackers.NullTracker(), "failed"
    try:
        tracker = trackers.make_tracker(
            cfg, main=rt.dist.is_main, warn=lambda message: rt.say(f"[yellow]warning:[/] {escape(message)}")
        )
        tracker.start(cfg, run_dir, run_subdir(cfg))
        if finished is not None:  # done, but robustness=... asks for evaluations it lacks
            metrics = Run(cfg, run_dir, method, spec, rt, tracker).evaluate_finished(finished)
        else:
            metrics = Run(cfg, run_dir, method, spec, rt, tracker).execute()
        status = "done"
        return metrics
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        tracker.close(status)
        if rt.dist.is_main:
            lock.release()


def _finished_run(run_dir: Path, cfg: dict, rt: Runtime) -> dict | None:
    """The metrics of a finished run (skipped unless rerun=true); a corrupt metrics.json (not JSON,
    nested too deeply, not an object) is moved aside (the run's checkpoints decide what is redone)."""
    path = run_dir / "metrics.json"
    if not path.exists() or cfg.get("rerun"):
        return None
    try:
        previous = read_json_object(path)
    except CorruptFileError as e:
        if rt.dist.is_main:
            rt.say(
                f"[yellow]warning:[/] {e}. Moved it to {quarantine(path).name}; the run resumes from its checkpoints."
            )
        return None
    if previous.get("status") == "done":
        rt.say(f"[yellow]already finished, skipped:[/] {run_dir} (rerun=true forces it)")
        return previous
    return None


def _missing_evaluations(finished: dict, cfg: dict) -> list[str]:
    """The robustness evaluations the config asks for that a finished run has not recorded
    (with these settings)."""
    rob = robustness_settings(cfg)
    if rob is None:
        return []
    have = finished.get("evaluations") or {}
    return [name for name, setting in evaluation_plan(rob).items() if (have.get(name) or {}).get("settings") != setting]


def evaluation_plan(rob: dict) -> dict[str, dict]:
    """Name -> settings of each robustness evaluation (what identifies a recorded one)."""
    common = {"test_subset": rob["test_subset"], "seed": rob["seed"]}
    pgd = rob["pgd"]
    plan = {pgd.name: {**pgd.describe(), **common, "box": "white"}}
    if rob["fgsm"] is not None:
        plan["fgsm"] = {**rob["fgsm"].describe(), **common, "box": "white"}
    if rob["black_box"]:
        plan[f"{pgd.name}_bb"] = {
            **pgd.describe(),
            **common,
            "box": "black",
            "source": rob["source"],
            "source_seed_offset": rob["source_seed_offset"],
        }
    return plan


class Run:
    """One run's state while its stages execute; ``execute`` lists the stages in order."""

    def __init__(
        self, cfg: dict, run_dir: Path, method: Method, spec: dict, rt: Runtime, tracker: trackers.Tracker | None = None
    ):
        self.cfg, self.run_dir, self.method, self.spec, self.rt = cfg, run_dir, method, spec, rt
        self.tracker = tracker or trackers.NullTracker()
        self.seed = int(cfg["seed"])
        key = run_key(cfg, method)
        self.metrics = RunMetrics(
            key=RunKey.from_dict(key),
            status="running",
            method_settings=method.settings(),
            run_dir=portable_path(run_dir, (cfg.get("paths") or {}).get("results_root")),
            started=now(),
            dry_run=bool(cfg.get("dry_run")),
            versions=versions(),
            git_commit=git_commit(),
            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            device=rt.device if rt.device == "cpu" else torch.cuda.get_device_name(rt.device),
            world_size=rt.dist.world_size,
            engine=asdict(rt.engine),
        )

    def save(self) -> None:
        if self.rt.dist.is_main:
            self.metrics.updated = now()
            write_json(self.run_dir / "metrics.json", self.metrics.to_dict())

    def execute(self) -> dict:
        if self.cfg.get("rerun") and self.rt.dist.is_main:
            for stale in [self.run_dir / "metrics.json", self.run_dir / "pruned.pt", *self.run_dir.glob("ckpt_*.pt")]:
                stale.unlink(missing_ok=True)
        distributed.barrier(self.rt.dist)
        try:
            if self.cfg.get("dry_run"):
                return self.dry_run()
            self.load_data()
            dense = self.pretrain() if self.method.needs_pretrained else self.random_dense()
            if not self.method.prunes:
                self.final_model = dense
                return self.finish_dense_only()
            pruned, masks = self.prune(dense)
            self.second_stage(dense, pruned, masks)
            return self.finish()
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt)
            self.metrics.status = "interrupted" if interrupted else "failed"
            self.metrics.error = (
                ("SIGTERM" if isinstance(e, Terminated) else "Ctrl-C (SIGINT)")
                if interrupted
                else f"{type(e).__name__}: {e}"
            )
            try:
                self.save()
            except PruneLabError:  # e.g. the disk is full: the original error is the one to report
                pass
            raise

    # ------------------------------------------------------------------------- stages
    def load_data(self) -> None:
        self.data = load_data(self.cfg, self.rt.device)
        self.input_shape = self.data.input_shape
        self.metrics.data = {"name": self.data.name, **self.data.info}
        if "/" in str(self.data.info.get("source", "")):  # a path: no machine's absolute checkout path
            self.metrics.data["source"] = portable_path(self.data.info["source"])
        pre = pretrain_schedule(self.cfg)
        self.planned = plan(self.cfg, self.method, self.spec, self.input_shape)
        self.metrics.budget = {
            "pretrain_epochs": pre.epochs,
            "batch_size": pre.batch_size,
            "train_subset": self.data.info.get("train_subset"),
            # a quick look's evaluation on N test images (only when set: the data block has it too)
            **({"test_subset": self.data.info["test_subset"]} if self.data.info.get("test_subset") else {}),
            "planned_stage_epochs": self.planned["stage"],
        }
        second = self.cfg["finetune"]["name"] if self.method.prunes else "no second stage"
        epochs = (
            ""
            if not self.method.prunes
            else f"{self.planned['stage']} epochs"
            if self.planned["stage"] is not None
            else "(epochs set by the pruned FLOPs)"
        )
        first = (
            f"pretrain {pre.epochs} epochs (cached if already trained)"
            if self.method.needs_pretrained
            else "no pretraining (the method starts from random weights)"
        )
        self.rt.say(f"[bold]plan:[/] {first} -> {second} {epochs}")
        self.save()

    def pretrain(self) -> torch.nn.Module:
        later = self.planned["later_dense_epochs"]
        t0 = time.perf_counter()
        dense, info = pretrain(
            self.cfg, self.data, self.spec, self.method, self.rt, Eta(self.rt, later), on_row=self.tracker.log_row
        )
        record = StageRecord.from_dict(
            {
                k: info.get(k)
                for k in (
                    "top1",
                    "top1_best",
                    "top5",
                    "bpc",
                    "bpc_valid",
                    "epochs",
                    "wall_s",
                    "cached",
                    "baseline_id",
                    "baseline_sha256",
                    "epoch_s_median",
                    "peak_gpu_mem_mb",
                    "peak_rss_mb",
                )
                if k in info
            }
        )
        record.load_s = round(time.perf_counter() - t0, 2) if info["cached"] else 0.0
        self.base_info = info
        if info["cached"]:  # its curves, for this run's tracker too (logged once: pruning.trackers)
            entry = Path(self.cfg["paths"]["cache_dir"]) / "baselines" / str(info["baseline_id"])
            self.tracker.replay(trackers.history_rows(entry / "history.jsonl"))
        m = self.metrics
        m.baseline_sha256 = info["baseline_sha256"]  # the exact dense net this run descends from
        m.params_dense = count_params(dense)
        m.flops_dense = count_macs(dense, self.input_shape)
        m.spec_dense = self.spec
        _add_cost(record, m.flops_dense, len(self.data.train), _passes(self.cfg, "pretrain"))
        m.stages["pretrain"] = record
        self.save()
        return dense

    def random_dense(self) -> torch.nn.Module:
        """The dense network at its initialisation, for methods that start from random weights
        (no pretraining stage, no baseline cache); its checksum names the initialisation."""
        rng.seed_all(self.seed)
        dense = build(self.spec).to(self.rt.device)
        m = self.metrics
        m.baseline_sha256 = rng.state_sha256(dense.state_dict())
        m.params_dense, m.flops_dense, m.spec_dense = (
            count_params(dense),
            count_macs(dense, self.input_shape),
            self.spec,
        )
        self.base_info = {"cached": False, "baseline_id": None}
        self.save()
        return dense

    def finish_dense_only(self) -> dict:
        m = self.metrics
        m.params_pruned, m.flops_pruned = m.params_dense, m.flops_dense
        m.params_reduction, m.flops_reduction, m.flops_speedup = 0.0, 0.0, 1.0
        pre = m.stages["pretrain"]
        m.final = {"top1": pre.top1, "top1_best": pre.top1_best, "top5": pre.top5}
        if pre.bpc is not None:
            m.final.update(bpc=pre.bpc, bpc_valid=pre.bpc_valid)
        return self.finish()

    def prune(self, dense: torch.nn.Module) -> tuple[torch.nn.Module, dict | None]:
        """Rank 0 runs the method (which may search or train its own way) and saves the pruned
        network; every rank loads it."""
        pruned_path = self.run_dir / "pruned.pt"
        t0 = time.perf_counter()
        main = self.rt.dist.is_main
        if main and pruned_path.exists():
            load_or_quarantine(pruned_path, self.rt.say, what="pruned network")  # corrupt: moved aside, pruned again
        if main and not pruned_path.exists():
            ctx = PruneContext(
                data=self.data,
                device=self.rt.device,
                input_shape=self.input_shape,
                seed=self.seed,
                work_dir=self.run_dir,
                quiet=self.rt.quiet,
                cache_dir=Path(self.cfg["paths"]["cache_dir"]),
                source_id=source_id(self.base_info),
                say=lambda message: self.rt.say(escape(message)),
            )  # a method's text, not markup
            result = self.method.prune(dense, ctx)
            save_checkpoint(
                pruned_path,
                {
                    "model": result.model.state_dict(),
                    "spec": result.spec,
                    "masks": result.masks,
                    "keep": result.keep,
                    "extras": result.extras,
                    "own_stage": result.own_stage,
                },
            )
        distributed.barrier(self.rt.dist)
        state = load_checkpoint(pruned_path, map_location=self.rt.device)
        pruned = build(state["spec"]).to(self.rt.device)
        pruned.load_state_dict(state["model"])
        masks = state.get("masks")
        after = self._evaluate_pruned(pruned)
        self.metrics.stages["prune"] = StageRecord(
            top1=after["top1"],
            top5=after["top5"],
            wall_s=round(time.perf_counter() - t0, 2),
            bpc_valid=after.get("bpc"),
        )
        extras = dict(state.get("extras") or {})
        cost = extras.pop("cost_per_sample", None)  # a dynamic network: MACs per test sample (mean, p5, p95)
        self.metrics.sparsity = extras.pop("sparsity", None)  # a sparsity target: {"target", "achieved", "of"}
        _record_sizes(self.metrics, pruned, masks, self.input_shape, cost)
        inputs = self._latency_inputs()
        if (self.cfg.get("latency") or {}).get("enabled", True):  # seconds to minutes (batch 64 on a CPU)
            self.rt.say("[dim]latency: timing the dense and the pruned network[/]")
        timings = measure_latencies(dense, pruned, self.input_shape, self.cfg, self.rt, inputs=inputs)
        if getattr(self.data, "task", "") == "language_model" and inputs is not None:
            for name, rec in timings.items():  # a call reads batch x window characters (the state carried)
                tokens = int(name.rsplit("_b", 1)[1]) * int(inputs.shape[1])
                rec.update(
                    inputs="test text windows",
                    tokens_per_call=tokens,
                    dense_tokens_per_s=round(tokens / rec["dense_ms"] * 1000.0, 1),
                    pruned_tokens_per_s=round(tokens / rec["pruned_ms"] * 1000.0, 1),
                )
        self.metrics.latency = {name: LatencyRecord.from_dict(name, rec) for name, rec in timings.items()}
        self.metrics.extras = extras
        own = dict(state.get("own_stage") or {})
        if own:  # the method's own training stage (a search, gate learning): recorded with its cost
            record = StageRecord.from_dict({k: v for k, v in own.items() if k != "name"})
            if record.train_macs is None and record.samples is not None and record.macs_per_sample is not None:
                record.train_macs = float(record.samples) * float(record.macs_per_sample)
            self.metrics.stages[str(own.get("name", "method"))] = record
        self.save()
        return pruned, masks

    def _evaluate_pruned(self, pruned: torch.nn.Module) -> dict:
        """The pruned network on the test set (on images: with a progress bar and ETA, as a whole
        test set on a CPU takes minutes)."""
        batch, data = pretrain_schedule(self.cfg).test_batch_size, self.data
        if getattr(data, "task", "") != "classification":
            return evaluate(pruned, data, batch, dist=self.rt.dist, device=data.device)
        from pruning.progress import counted_evaluation

        quiet, say = self.rt.quiet or not self.rt.dist.is_main, lambda message: self.rt.say(escape(message))
        with counted_evaluation(
            "evaluation (pruned)", data, batch, quiet=quiet, say=say, world_size=self.rt.dist.world_size
        ) as counted:
            return evaluate(pruned, counted, batch, dist=self.rt.dist, device=data.device)

    def _latency_inputs(self) -> torch.Tensor | None:
        """Real test images for the latency measurement (a dynamic network decides per sample):
        up to 640, the first test batches."""
        lat = self.cfg.get("latency") or {}
        need = max([int(b) for b in lat.get("cpu_batch_sizes", [1, 64])] + [1]) * int(lat.get("repeats", 10))
        images, count = [], 0
        for batch, _ in self.data.test_batches(256):
            images.append(batch.cpu())
            count += len(batch)
            if count >= min(need, 640):
                break
        return torch.cat(images)[: min(need, 640)] if images else None

    def second_stage(self, dense: torch.nn.Module, pruned: torch.nn.Module, masks: dict | None) -> None:
        """finetune keeps the pruned weights; scratch_e / scratch_b re-initialise the pruned spec
        (the method's scratch_init) and train the baseline's / the FLOPs-scaled epochs."""
        m, policy = self.metrics, self.cfg["finetune"]["name"]
        schedule = policy_schedule(self.cfg, m.flops_dense, m.flops_pruned)
        m.budget.update(stage_epochs=schedule.epochs, stage_lr=schedule.lr)
        if self.planned["stage"] is None:
            self.rt.say(f"[bold]plan:[/] {policy} {schedule.epochs} epochs")
        if policy == "none":  # the pruned network is final
            prune = m.stages["prune"]
            m.final = {"top1": prune.top1, "top1_best": prune.top1, "top5": prune.top5}
            self.final_model = pruned
            return
        # every policy starts its random stream (dropout, ...) from the seed, never from whatever the
        # earlier stages of this process drew (a cached or a freshly trained baseline, a resumed run)
        rng.seed_all(self.seed + 1)
        if policy == "finetune":
            model = pruned
        else:
            model = build(m.spec_pruned).to(self.rt.device)
            self.method.scratch_init(model, masks)
        kd = self.method.distillation()  # train against the frozen dense net (not checkpointed)
        m.budget["distillation"] = kd
        trained_dense_here = self.method.needs_pretrained and not self.base_info["cached"]
        eta = None if trained_dense_here else Eta(self.rt, 0.0).hook(lambda e: schedule.epochs - e)
        stage = run_stage(
            policy,
            model,
            self.data,
            schedule,
            self.run_dir / f"ckpt_{policy}.pt",
            self.run_dir / "history.jsonl",
            self.seed + 7,
            masks=masks,
            quiet=self.rt.quiet,
            engine=self.rt.engine,
            dist=self.rt.dist,
            on_epoch=eta,
            teacher=copy.deepcopy(dense).eval() if kd else None,
            kd=kd,
            device=self.data.device,
            adversary=adversarial_training(self.cfg, "second_stage"),
            on_row=self.tracker.log_row,
        )
        self.final_model = model
        record = StageRecord.from_dict(stage)
        _add_cost(record, m.flops_pruned, len(self.data.train), _passes(self.cfg, "second_stage"))
        m.stages[policy] = record
        m.final = {k: stage[k] for k in ("top1", "top1_best", "top5")}

    def finish(self) -> dict:
        """Save the final network (``final.pt``: what robustness evaluations of a finished run
        load), run the robustness evaluations asked for, mark the run done. A language model's
        final bits per character are measured here with the official protocol (``final_lm_eval``)."""
        if getattr(self.data, "task", "") == "language_model" and "bpc" not in self.metrics.final:
            self.metrics.final.update(final_lm_eval(self.final_model, self.data, self.rt))
        if self.rt.dist.is_main:
            save_checkpoint(
                self.run_dir / "final.pt",
                {"model": self.final_model.state_dict(), "spec": getattr(self.final_model, "spec", None)},
            )
        self.robustness(self.final_model)
        self.metrics.status = "done"
        self.metrics.finished = now()
        self.save()
        self.tracker.log_final(trackers.final_metrics(self.metrics.to_dict()))
        return self.metrics.to_dict()

    # ------------------------------------------------------------------------- robustness
    def robustness(self, model: torch.nn.Module) -> None:
        """White-box PGD / FGSM and black-box (transfer) PGD robust accuracy of the final network,
        each with the vulnerability of its latent features (``pruning.attacks``); each one is
        saved as soon as it is measured, and one already recorded with the same settings is kept."""
        rob = robustness_settings(self.cfg)
        if rob is None or not self.rt.dist.is_main:
            return
        from pruning.attacks import robust_evaluate

        source = None
        for name, setting in evaluation_plan(rob).items():
            if (self.metrics.evaluations.get(name) or {}).get("settings") == setting:
                continue
            attack = rob["fgsm"] if name == "fgsm" else rob["pgd"]
            if setting["box"] == "black" and source is None:
                source = self.black_box_source(rob)
            t0 = time.perf_counter()
            self.rt.say(f"[cyan]robustness:[/] {name} ({setting['box']}-box, eps {attack.eps:g})")
            result = robust_evaluate(
                model,
                self.data,
                attack,
                batch_size=rob["batch_size"],
                source=source if setting["box"] == "black" else None,
                limit=rob["test_subset"],
                seed=rob["seed"],
                quiet=self.rt.quiet,
                say=lambda message: self.rt.say(escape(message)),
            )
            result.update(settings=setting, wall_s=round(time.perf_counter() - t0, 2))
            self.metrics.evaluations[name] = result
            self.rt.say(
                f"[green]robustness:[/] {name} top-1 {result['top1']:.2f}% "
                f"(clean {result['clean_top1']:.2f}%), vulnerability {result['vulnerability']:.4f}"
            )
            self.save()

    def black_box_source(self, rob: dict) -> torch.nn.Module:
        """The network black-box attacks are crafted on: a standard (non-adversarial) dense net
        of this run's architecture trained with seed + offset (the baseline cache), or a file."""
        if rob["source"] != "standard":
            state = load_checkpoint(Path(rob["source"]), map_location=self.rt.device)
            if not isinstance(state, dict) or "model" not in state or not state.get("spec"):
                raise PruneLabError(f"robustness.source={rob['source']}: not a prune-lab final.pt (no model/spec)")
            source = build(state["spec"]).to(self.rt.device)
            source.load_state_dict(state["model"])
            return source.eval()
        from pruning.methods.none import NoPruning

        cfg = copy.deepcopy(self.cfg)
        cfg["seed"] = int(self.cfg["seed"]) + rob["source_seed_offset"]
        cfg["adv_train"] = {"name": "none"}
        cfg["model"] = {**cfg["model"], "init_from": None}
        self.rt.say(f"[cyan]black-box source:[/] standard dense net, seed {cfg['seed']}")
        source, info = pretrain(cfg, self.data, self.spec, NoPruning(), self.rt, Eta(self.rt, 0.0))
        self.metrics.budget["black_box_source"] = {
            "seed": cfg["seed"],
            "baseline_id": info.get("baseline_id"),
            "baseline_sha256": info.get("baseline_sha256"),
        }
        return source.eval()

    def evaluate_finished(self, finished: dict) -> dict:
        """A finished run asked for robustness evaluations it lacks: load ``final.pt``, evaluate,
        keep everything else recorded (no retraining)."""
        path = self.run_dir / "final.pt"
        if not path.exists():
            raise PruneLabError(
                f"{self.run_dir} finished before final networks were saved (no final.pt); "
                "re-run it with rerun=true to evaluate its robustness"
            )
        self.metrics = RunMetrics.from_dict(finished)
        self.data = load_data(self.cfg, self.rt.device)
        state = load_checkpoint(path, map_location=self.rt.device)
        model = build(state["spec"]).to(self.rt.device)
        model.load_state_dict(state["model"])
        self.robustness(model)
        self.save()
        self.tracker.log_final(trackers.robustness_metrics(self.metrics.to_dict()))
        return self.metrics.to_dict()

    def dry_run(self) -> dict:
        """Architectures and counts only: dense and pruned specs, params, FLOPs; no data, no
        training (weights are random, so no accuracy is recorded)."""
        cfg, m = self.cfg, self.metrics
        input_shape = data_input_shape(cfg["data"])
        torch.manual_seed(self.seed)
        dense = build(self.spec)
        m.params_dense, m.flops_dense, m.spec_dense = count_params(dense), count_macs(dense, input_shape), self.spec
        known = known_architecture(self.method, self.spec, input_shape, self.seed, dense)
        if self.method.prunes and known is None:
            m.note = f"{self.method.name}'s pruned architecture depends on the trained weights: only dense counts"
        elif known is not None:
            pruned_model, masks = known
            _record_sizes(m, pruned_model, masks, input_shape)
            m.budget = {
                "pretrain_epochs": int(cfg["schedule"]["epochs"]),
                "stage_epochs": policy_schedule(cfg, m.flops_dense, m.flops_pruned).epochs,
            }
        m.status = "dry_run"
        self.save()
        self.tracker.log_final(trackers.final_metrics(m.to_dict()))  # the counts
        return m.to_dict()


# ----------------------------------------------------------------------------- helpers of the stages
def load_data(cfg: dict, device: str):
    """The run's data on its device. A text corpus takes its BPTT windows from the schedule when
    the recipe sets them (``schedule.bptt`` / ``schedule.eval_bptt``: SRU's unroll 256,
    Transformer-XL's tgt_len 512 / eval_tgt_len 128), else from the data config."""
    data = datasets.load(cfg["data"])
    if getattr(data, "task", "") == "language_model":
        s = cfg["schedule"]
        bptt = int(s.get("bptt") or data.bptt)
        data = data._replace(bptt=bptt, eval_bptt=int(s.get("eval_bptt") or (s.get("bptt") and bptt) or data.eval_bptt))
        data.info.update(bptt=data.bptt, eval_bptt=data.eval_bptt, final_eval_batch_size=data.final_eval_batch_size)
    return data.to(device)


def baseline_id(cfg: dict, data, spec: dict, method: Method) -> str:
    """The dense baseline's cache id: a hash of exactly what determines it."""
    identity = {
        "data": {
            "kind": cfg["data"].get("kind", cfg["data"]["name"]),
            "fingerprint": data.info["fingerprint"],
            "train_subset": data.info.get("train_subset"),
            "augment": data.augment,
        },
        "spec": spec,
        "schedule": pretrain_schedule(cfg).identity(),  # new fields only when not default
        "seed": int(cfg["seed"]),
        "method_pretrain": method.pretrain_extras(),
    }
    if data.info.get("test_subset") is not None:  # only when set: its recorded accuracy is a subset's
        identity["data"]["test_subset"] = data.info["test_subset"]
    if getattr(data, "task", "") == "language_model":  # the windows train and evaluate the model too
        identity["data"].update(
            bptt=data.bptt, eval_bptt=data.eval_bptt, final_eval_batch_size=data.final_eval_batch_size
        )
    adversary = adversarial_training(cfg, "pretrain")
    if adversary is not None:  # only then: standard baselines keep their ids
        identity["adv_train"] = {
            **adversary["attack"].describe(),
            "clean_weight": adversary["clean_weight"],
            **({"beta": adversary["beta"]} if "beta" in adversary else {}),
        }
    if cfg["model"].get("init_from"):  # only when set: existing cache ids stay valid
        from pruning.models.torchvision_compat import file_digest

        identity["init_from"] = file_digest(cfg["model"]["init_from"])
    return f"{cfg['model']['name']}-{cfg['data']['name']}-{digest(identity)}"


def pretrain(
    cfg: dict, data, spec: dict, method: Method, rt: Runtime, eta: Eta, on_row: Callable[[dict], None] | None = None
) -> tuple[torch.nn.Module, dict]:
    """Train (or load) the cached dense baseline (``pruning.cache.cached``: concurrent jobs wait
    for one trainer; a corrupt entry is moved aside and trained again). ``on_row``: each trained
    epoch's history row (the run's tracker; a cached baseline trains nothing, so logs nothing).

    A cache id names one trained net: ``info.json`` records the sha256 of the weights
    (``baseline_sha256``, ``pruning.rng.state_sha256``) and every load checks it; weights that do
    not match it are a corrupt entry (moved aside, trained again), never a second net under the
    same id. An entry written before checksums were recorded gets its checksum on its next load."""
    directory = Path(cfg["paths"]["cache_dir"]) / "baselines" / baseline_id(cfg, data, spec, method)

    def load(entry: Path) -> tuple[torch.nn.Module, dict]:
        state = load_checkpoint(entry / "baseline.pt", map_location="cpu")
        info = read_json(entry / "info.json")
        if not isinstance(info, dict) or not isinstance(info.get("top1"), (int, float)):
            raise CorruptFileError(entry / "info.json", f"{entry / 'info.json'} has no top-1 accuracy")
        model = build(state["spec"])
        model.load_state_dict(state["model"])
        checksum, recorded = rng.state_sha256(model.state_dict()), info.get("baseline_sha256")
        if recorded is None:  # an entry from before checksums: pin the net it holds now
            info["baseline_sha256"] = checksum
            if rt.dist.is_main:
                write_json(entry / "info.json", info)
        elif recorded != checksum:
            raise CorruptFileError(
                entry / "baseline.pt",
                f"{entry / 'baseline.pt'} does not hold the net its cache id names: weights sha256 "
                f"{checksum[:12]}, info.json records {str(recorded)[:12]}",
            )
        return model, info

    def train(entry: Path) -> tuple[torch.nn.Module, dict]:
        rt.say(f"[cyan]dense baseline: training[/] ({entry.name})")
        rng.seed_all(int(cfg["seed"]))
        model = build(spec).to(rt.device)
        if cfg["model"].get("init_from"):
            from pruning.models.torchvision_compat import load_torchvision_file

            load_torchvision_file(model, cfg["model"]["init_from"])
        schedule = pretrain_schedule(cfg)
        stage = run_stage(
            "pretrain",
            model,
            data,
            schedule,
            entry / "ckpt.pt",
            entry / "history.jsonl",
            int(cfg["seed"]),
            grad_hook=method.pretrain_grad_hook(),
            quiet=rt.quiet,
            engine=rt.engine,
            dist=rt.dist,
            on_epoch=eta.hook(lambda e: schedule.epochs - e),
            device=data.device,
            adversary=adversarial_training(cfg, "pretrain"),
            on_row=on_row,
        )
        info = {**stage, "baseline_id": entry.name, "baseline_sha256": rng.state_sha256(model.state_dict())}
        if getattr(data, "task", "") == "language_model":  # the dense model's bpc, official protocol
            info.update(final_lm_eval(model, data, rt))
        if rt.dist.is_main:
            save_checkpoint(entry / "baseline.pt", {"model": model.state_dict(), "spec": spec})
            write_json(entry / "info.json", info)
            (entry / "ckpt.pt").unlink(missing_ok=True)
        return model, info

    (model, info), hit = cached(
        directory,
        load=load,
        build=train,
        files=("baseline.pt", "info.json"),
        say=rt.say,
        what="cached dense baseline",
        dist=rt.dist,
    )
    if hit:
        rt.say(f"[green]dense baseline: cached[/] ({directory.name}, top-1 {info['top1']:.2f}%)")
    return model.to(rt.device), {**info, "cached": hit}


def final_lm_eval(model: torch.nn.Module, data, rt: Runtime) -> dict:
    """Bits per character of a language model on the validation and test splits as the official
    code reports them at the end (FLOP's train_enwik8.py: ``create_batches(dev_, 1)``: one lane,
    ``data.final_eval_batch_size``), and the next-character top-1 on test. The number of walking
    each split's lanes in ``eval_bptt`` windows (``evaluate``), computed batched
    (``text_data.evaluate_streams``: both splits side by side, a Transformer-XL's stream cut into
    exactly equivalent lanes, an SRU's walked in long windows), with a progress bar and ETA."""
    from contextlib import ExitStack

    from pruning.progress import StageProgress
    from pruning.text_data import evaluate_streams

    batch, quiet = int(data.final_eval_batch_size), rt.quiet or not rt.dist.is_main
    with ExitStack() as stack:
        bar: list[StageProgress] = []

        def on_window(done: int, total: int) -> None:  # every few windows: the bar opens with a pace to show
            if not bar:
                progress = StageProgress(
                    "final evaluation", steps_per_epoch=total, quiet=quiet, say=rt.say, unit="windows"
                )
                bar.append(stack.enter_context(progress))
            bar[0].step(done - bar[0].steps)

        splits = {"valid": data.valid, "test": data.test}
        result = evaluate_streams(model, splits, batch, data.eval_bptt, dist=rt.dist, on_window=on_window)
    valid, test = result["valid"], result["test"]
    rt.say(f"[green]bits per character:[/] valid {valid['bpc']:.4f}, test {test['bpc']:.4f} (eval batch {batch})")
    return {"bpc": test["bpc"], "bpc_valid": valid["bpc"], "top1": test["top1"], "top5": test["top5"]}


def known_architecture(
    method: Method, spec: dict, input_shape: tuple[int, ...], seed: int, dense: torch.nn.Module | None = None
) -> tuple[torch.nn.Module, dict | None] | None:
    """The pruned network when its architecture is known before any training: a data-free method
    (L1-norm's widths do not depend on the weights) pruned on random weights, or the fixed widths
    of a data-driven one (ThiNet / LASSO at a ratio or variant). None when pruning decides it."""
    if not method.prunes:
        return None
    if method.data_free_architecture:
        result = method.prune(
            dense if dense is not None else build(spec), PruneContext(device="cpu", input_shape=input_shape, seed=seed)
        )
        return result.model, result.masks
    fixed = method.architecture(spec)
    return (build(fixed), None) if fixed is not None else None


def plan(cfg: dict, method: Method, spec: dict, input_shape: tuple[int, ...]) -> dict:
    """Planned epochs per stage, before training: the second stage's epochs (and its FLOPs
    ratio, for the ETA) where the architecture is known; None where pruning decides it.
    ``later_dense_epochs``: the second stage's compute in dense-epoch equivalents (the ETA)."""
    out = {"pretrain": pretrain_schedule(cfg).epochs, "stage": None, "flops_ratio": None, "later_dense_epochs": 0.0}
    known = known_architecture(method, spec, input_shape, int(cfg["seed"]))
    if known is not None:
        f_dense, f_pruned = (
            count_macs(build(spec), input_shape),
            count_macs(known[0], input_shape, nonzero=bool(known[1])),
        )
        out["stage"] = policy_schedule(cfg, f_dense, f_pruned).epochs
        out["flops_ratio"] = f_pruned / f_dense
        out["later_dense_epochs"] = out["stage"] * out["flops_ratio"]
    elif method.prunes and cfg["finetune"]["name"] != "scratch_b":
        out["stage"] = policy_schedule(cfg, 1, 1).epochs
        out["later_dense_epochs"] = float(out["stage"])  # pruned FLOPs unknown yet: an upper bound
    elif method.prunes:  # scratch-B spends the dense net's compute, whatever the pruned FLOPs turn out to be
        out["later_dense_epochs"] = float(pretrain_schedule(cfg).epochs)
    return out


def source_id(base_info: dict) -> str | None:
    """What a method's cached stage (a TAS search, SANP, ANP, FLOP, ...) names its dense source by:
    the baseline's cache id and the first 12 hex digits of its weights' sha256, so that a baseline
    trained again under the same id (another torch build) never reuses a stage learnt on the other
    net. None for a method that starts from random weights."""
    baseline, checksum = base_info.get("baseline_id"), base_info.get("baseline_sha256")
    return f"{baseline}-{checksum[:12]}" if baseline and checksum else baseline


def _record_sizes(
    metrics: RunMetrics, pruned: torch.nn.Module, masks: dict | None, input_shape, cost: dict | None = None
) -> None:
    """Params and MACs of the pruned net; a dynamic net's MACs are its measured mean per test
    sample (``cost``, recorded as ``cost_per_sample``), not the static count of every channel."""
    metrics.spec_pruned = pruned.spec
    metrics.params_pruned = count_params(pruned, masks)
    metrics.flops_pruned = count_macs(pruned, input_shape, nonzero=bool(masks))
    if cost is not None:
        metrics.cost_per_sample = cost
        metrics.flops_pruned = int(round(float(cost["mean"])))
    metrics.params_reduction = reduction(metrics.params_dense, metrics.params_pruned)
    metrics.flops_reduction = reduction(metrics.flops_dense, metrics.flops_pruned)
    metrics.flops_speedup = metrics.flops_dense / metrics.flops_pruned


def _passes(cfg: dict, stage: str) -> int:
    """Forward(+backward) passes per training sample: 1, or under PGD adversarial training
    1 + the attack's steps (each step is a forward and a backward, like a training step), + 1
    more when the clean batch is also trained on."""
    adversary = adversarial_training(cfg, stage)
    if adversary is None:
        return 1
    clean_pass = adversary["clean_weight"] > 0 or adversary.get("loss") == "trades"
    return 1 + int(adversary["attack"].steps) + (1 if clean_pass else 0)


def _add_cost(record: StageRecord, macs_per_sample: int | None, train_size: int, passes: int = 1) -> None:
    """Training cost of a stage: samples processed x forward MACs per sample x passes per sample
    (adversarial training: ``_passes``; a cached stage keeps the cost it had when it was trained)."""
    if record.epochs is None or macs_per_sample is None:
        return
    record.samples = int(record.epochs) * train_size
    record.macs_per_sample = int(macs_per_sample) * int(passes)
    record.train_macs = float(record.samples) * float(record.macs_per_sample)
