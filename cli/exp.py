"""``prune-exp``: compose a config with Hydra and run the pruning pipeline.

    prune-exp                                                     # embedded default (digits, offline)
    prune-exp method=l1_norm model=resnet56 data=cifar10 method.variant=B finetune=scratch_b seed=1
    prune-exp -m method=l1_norm model=resnet20 data=cifar10 method.ratio=0.2,0.4,0.6 seed=0,1
    prune-exp -m experiment=rethinking_l1_cifar10
    prune-exp model=resnet110 data=cifar10 method.variant=B dry_run=true      # params/FLOPs only
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from pruning import PruneLabError


def _run_subdir(data, model, method, finetune, schedule, seed) -> str:
    from pruning.pipeline import run_subdir

    parts = {"data": data, "model": model, "method": method, "finetune": finetune, "schedule": schedule}
    cfg = {k: OmegaConf.to_container(v, resolve=True) for k, v in parts.items()}
    cfg["seed"] = seed
    try:
        return run_subdir(cfg)
    except PruneLabError:
        return "_invalid"  # the task function reports the error and removes this directory


if not OmegaConf.has_resolver("prune_run_subdir"):
    OmegaConf.register_new_resolver("prune_run_subdir", _run_subdir)


def _remove_if_empty_run(run_dir: Path) -> None:
    """Leave no half-made run directory behind when the config is rejected."""
    if run_dir.is_dir() and all(p.name in (".hydra", "exp.log") or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


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
        _remove_if_empty_run(run_dir)
        console.print(f"[bold red]prune-exp: error:[/] {escape(str(e))}")
        sys.exit(2)
    Console().print(summary_table(metrics))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
