"""``prune-exp``: compose a config with Hydra and run the pruning pipeline.

    prune-exp                                                     # embedded default (digits, offline)
    prune-exp method=l1_norm model=resnet56 data=cifar10 method.variant=B finetune=scratch_b seed=1
    prune-exp -m method=l1_norm model=resnet20 data=cifar10 method.ratio=0.2,0.4,0.6 seed=0,1
    prune-exp -m experiment=rethinking_l1_cifar10
    prune-exp model=resnet110 data=cifar10 method.variant=B dry_run=true      # params/FLOPs only

Exit status: 0 done (or skipped as already finished); 2 any user error (bad override, unknown
group option, bad value, missing data, unwritable results root), printed without a traceback;
130 Ctrl-C and 143 SIGTERM (the run is marked ``interrupted``; the same command resumes it).
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from pruning import PruneLabError, Terminated

USER_ERROR, CTRL_C, SIGTERM_EXIT = 2, 130, 143


def _run_subdir(data, model, method, finetune, schedule, seed, adv_train=None) -> str:
    from pruning.pipeline import run_subdir

    parts = {"data": data, "model": model, "method": method, "finetune": finetune, "schedule": schedule}
    if adv_train is not None:
        parts["adv_train"] = adv_train
    try:
        cfg = {k: OmegaConf.to_container(v, resolve=True) for k, v in parts.items()}
        cfg["seed"] = seed
        return run_subdir(cfg)
    except Exception:  # noqa: BLE001  a bad value: the task function reports it (exit 2) and removes this directory
        return "_invalid"


if not OmegaConf.has_resolver("prune_run_subdir"):
    OmegaConf.register_new_resolver("prune_run_subdir", _run_subdir)


def _remove_if_empty_run(run_dir: Path, results_root: Path | None = None) -> None:
    """Leave no half-made run directory behind when the config is rejected (and no empty
    parents up to the results root)."""
    if run_dir.is_dir() and all(p.name in (".hydra", "exp.log") or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        parent = run_dir.parent
        stop = results_root.resolve() if results_root else None
        while stop is not None and parent.resolve() != stop and stop in parent.resolve().parents:
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break
            parent = parent.parent


def error(message: str, code: int = USER_ERROR) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]prune-exp: error:[/] {escape(message)}")
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> None:
    from pruning.pipeline import run
    from pruning.summary import summary_table

    console = Console(stderr=True, soft_wrap=True)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        metrics = run(plain, run_dir, console=console)
    except PruneLabError as e:
        _remove_if_empty_run(run_dir, Path(str(cfg.paths.results_root)))
        error(str(e))
    except Terminated:
        console.print(
            f"[yellow]prune-exp: terminated (SIGTERM)[/]; checkpoints kept in {escape(str(run_dir))}: "
            "re-run the same command to resume"
        )
        sys.exit(SIGTERM_EXIT)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]prune-exp: interrupted (Ctrl-C)[/]; checkpoints kept in {escape(str(run_dir))}: "
            "re-run the same command to resume"
        )
        sys.exit(CTRL_C)
    Console().print(summary_table(metrics))


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main() -> None:
    from pruning.cli.precheck import precheck

    signal.signal(signal.SIGTERM, _raise_terminated)  # SLURM time-out / pre-emption: stop like Ctrl-C
    try:
        message = precheck(sys.argv[1:])
        if message:
            error(message)
        app()
    except Terminated:  # outside a run (while composing): nothing to save
        sys.exit(SIGTERM_EXIT)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]prune-exp: interrupted (Ctrl-C)[/]")
        sys.exit(CTRL_C)


if __name__ == "__main__":
    main()
