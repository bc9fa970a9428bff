"""``prune-exp``: compose a config with Hydra and run the pruning pipeline.

    prune-exp                                                     # embedded default (digits, offline)
    prune-exp method=l1_norm model=resnet56 data=cifar10 method.variant=B finetune=scratch_b seed=1
    prune-exp -m method=l1_norm model=resnet20 data=cifar10 method.ratio=0.2,0.4,0.6 seed=0,1
    prune-exp -m experiment=rethinking_l1_cifar10
    prune-exp model=resnet110 data=cifar10 method.variant=B dry_run=true      # params/FLOPs only

Exit status: 0 done (or skipped as already finished); 2 any user error (bad override, unknown
group option, bad value, missing data, unwritable results root), printed without a traceback;
130 Ctrl-C and 143 SIGTERM (the run is marked ``interrupted``; the same command resumes it).

A user error leaves nothing behind: no run directory (unless a stage finished in it) and no
results root that this command created. Nothing is written through a symbolic link: Hydra's own
``.hydra/*.yaml`` writes are off (``hydra.output_subdir: null``) and written here atomically,
after the run directory has been checked (``pruning.config.check_run_safety``).
"""

from __future__ import annotations

import json
import os
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


HOUSEKEEPING = (".hydra", ".lock")  # with *.log and *.tmp: what every run directory holds from its start


def _nothing_finished(metrics_path: Path) -> bool:
    """Whether a run's metrics.json records a failure before any stage finished."""
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(metrics, dict) and metrics.get("status") == "failed" and not metrics.get("stages")


def _remove_if_empty_run(run_dir: Path, results_root: Path | None = None) -> None:
    """Leave no half-made run directory behind when the config is rejected or the run fails on a
    user error before any stage finished (and no empty parents up to the results root)."""
    if run_dir.is_symlink() or not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.is_symlink():
            return
        if p.name in HOUSEKEEPING or p.suffix in (".log", ".tmp"):
            continue
        if p.name == "metrics.json" and p.is_file() and _nothing_finished(p):
            continue
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    stop = results_root.resolve() if results_root else None
    while stop is not None and parent.resolve() != stop and stop in parent.resolve().parents:
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
        parent = parent.parent


def _first_missing(path: Path) -> Path | None:
    """The highest folder of ``path`` (absolute) that does not exist yet; None when it exists."""
    path = path.absolute()
    if path.exists() or path.is_symlink():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _guess_results_root(argv: list[str]) -> Path:
    """The results root a command line asks for, as the config composes it (the last
    ``paths.results_root=`` override, else $PRUNE_LAB_RESULTS, else ``results``)."""
    root = os.environ.get("PRUNE_LAB_RESULTS") or "results"
    for arg in argv:
        if arg.startswith(("paths.results_root=", "++paths.results_root=")):
            root = arg.split("=", 1)[1]
    return Path(root)


def _remove_created_folders(created: Path | None) -> None:
    """After a user error: remove ``created`` (a folder this command made, e.g. the results root
    that Hydra creates before the run's checks) when it holds nothing but empty folders."""
    if created is None or created.is_symlink() or not created.is_dir():
        return
    folders = sorted(created.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    if any(not p.is_dir() or p.is_symlink() for p in folders):
        return  # a file was written: not ours to remove
    for folder in [*folders, created]:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` as Hydra writes them
    (``hydra.output_subdir`` is null), but atomically: a link planted there is replaced."""
    from pruning.io import write_text

    hydra_cfg = HydraConfig.get()
    folder = run_dir / ".hydra"
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))


def error(message: str, code: int = USER_ERROR) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]prune-exp: error:[/] {escape(message)}")
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> None:
    from pruning.io import check_inside, refuse_symlinks
    from pruning.pipeline import run
    from pruning.summary import summary_table

    console = Console(stderr=True, soft_wrap=True)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results_root = Path(str(cfg.paths.results_root))
    try:  # before the first write of ours (the precheck made the same checks before Hydra's mkdir)
        refuse_symlinks(run_dir, results_root)
    except PruneLabError as e:
        error(str(e))
    try:
        check_inside(run_dir, results_root)  # e.g. hydra.run.dir=/elsewhere
    except PruneLabError as e:
        _remove_if_empty_run(run_dir)  # what Hydra made there (the folder, its job log)
        error(str(e))
    try:
        _write_hydra_files(run_dir, cfg)
        plain = OmegaConf.to_container(cfg, resolve=True)
        metrics = run(plain, run_dir, console=console)
    except PruneLabError as e:
        _remove_if_empty_run(run_dir, results_root)
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
    from pruning.cli.precheck import prepare

    from pruning.plugins import searchpath_override

    signal.signal(signal.SIGTERM, _raise_terminated)  # SLURM time-out / pre-emption: stop like Ctrl-C
    created = _first_missing(_guess_results_root(sys.argv[1:]))
    try:
        plugins = searchpath_override(sys.argv[1:])  # installed plug-ins' config folders (pruning.plugins)
        message, argv = prepare([*sys.argv[1:], *plugins])  # argv: quoted numbers as numbers, +group= as group=
        if message:
            error(message)
        sys.argv[1:] = argv
        app()
    except SystemExit as e:
        if e.code == USER_ERROR:  # Hydra makes the root before the run's checks: leave none behind
            _remove_created_folders(created)
        raise
    except Terminated:  # outside a run (while composing): nothing to save
        sys.exit(SIGTERM_EXIT)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]prune-exp: interrupted (Ctrl-C)[/]")
        sys.exit(CTRL_C)


if __name__ == "__main__":
    main()
