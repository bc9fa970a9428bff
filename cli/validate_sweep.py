"""A Hydra callback: before a multirun launches its first job, compose every job's config and
run the pipeline's checks on it (method, ratio, variant, data present), so a bad value in a
sweep fails fast with a clear message instead of after the good jobs have trained."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.markup import escape

from pruning import PruneLabError


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of every job, expanded as the basic sweeper expands them."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def check_sweep_dir(config: DictConfig) -> None:
    """Hydra writes ``multirun.yaml`` into the sweep folder (``<results_root>/runs``) with a plain
    ``open``, which follows a link: no link on the way down from the results root, none there."""
    from pruning.io import refuse_symlinks

    sweep = Path(str(config.hydra.sweep.dir))
    refuse_symlinks(sweep / "multirun.yaml", Path(str(config.paths.results_root)), contents=False)


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pruning.cli.precheck import KeyChecker, check_job_keys

        from pruning.config import check_run_safety
        from pruning.pipeline import validate

        try:
            check_sweep_dir(config)
        except PruneLabError as e:
            Console(stderr=True, soft_wrap=True).print(f"[bold red]prune-exp: error:[/] {escape(str(e))}")
            sys.exit(2)

        checker = KeyChecker(config.hydra.job.config_name)
        # the plug-ins' config folders (pruning.plugins): compose here does not see the app's search path
        searchpath = [o for o in config.hydra.overrides.hydra if str(o).startswith("hydra.searchpath=")]
        for job in sweep_jobs(config):
            try:
                check_job_keys([*job, *searchpath], checker=checker)  # an unknown key: our message
                cfg = compose(config_name=config.hydra.job.config_name, overrides=[*job, *searchpath])
                plain = {
                    k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                    for k in cfg
                    if k != "hydra"
                }
                validate(plain)
                check_run_safety(plain)  # safe names, no links, device, init_from: before any job writes
            except (PruneLabError, HydraException, OmegaConfBaseException) as e:
                Console(stderr=True, soft_wrap=True).print(
                    f"[bold red]prune-exp: error[/] in sweep job {escape(' '.join(job))}: {escape(str(e))}"
                )
                sys.exit(2)
