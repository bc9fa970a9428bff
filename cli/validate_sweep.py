"""A Hydra callback: before a multirun launches its first job, compose every job's config and
run the pipeline's checks on it (method, ratio, variant, data present), so a bad value in a
sweep fails fast with a clear message instead of after the good jobs have trained."""

from __future__ import annotations

import sys
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


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pruning.pipeline import validate

        for job in sweep_jobs(config):
            try:
                cfg = compose(config_name=config.hydra.job.config_name, overrides=job)
                plain = {
                    k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                    for k in cfg
                    if k != "hydra"
                }
                validate(plain)
            except (PruneLabError, HydraException, OmegaConfBaseException) as e:
                Console(stderr=True, soft_wrap=True).print(
                    f"[bold red]prune-exp: error[/] in sweep job {escape(' '.join(job))}: {escape(str(e))}"
                )
                sys.exit(2)
