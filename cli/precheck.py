"""Checks ``prune-exp`` makes on its command line before Hydra runs anything or creates any
directory, so that every user error ends the same way (a message naming the bad value and the
fix, exit 2, nothing written):

* an override that does not parse;
* an unknown option of any config group, sweep values included (``experiment=<typo>``, which
  Hydra would silently skip for an ``optional`` default, ``table_row=``, ``model=`` ...),
  answered with the list of valid options;
* a config that does not compose (a key that does not exist, a bad interpolation);
* a single run's values (the pipeline's ``validate``: types and ranges, model vs data size,
  data present); a multirun's jobs are validated one by one by the ``ValidateSweep`` callback;
* a results root that cannot be written (read-only, permission denied, a file in the way).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Hydra's own flags: these leave prune-exp's checks to Hydra (help, config printing, completion)
PASSTHROUGH = {
    "--help",
    "-h",
    "--hydra-help",
    "--version",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--resolve",
}
FLAGS_WITH_VALUE = {
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--package",
    "-p",
    "--experimental-rerun",
}


def split_argv(argv: Sequence[str]) -> tuple[list[str], bool] | None:
    """(overrides, multirun), or None when Hydra should handle the command line alone."""
    overrides, multirun, skip = [], False, False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in PASSTHROUGH or arg.split("=", 1)[0] in PASSTHROUGH:
            return None
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in FLAGS_WITH_VALUE:
            return None  # a different config source: Hydra's checks only
        elif arg.startswith("-") and "=" not in arg:
            return None
        else:
            overrides.append(arg)
    return overrides, multirun


def _values(override) -> list:
    from hydra.core.override_parser.types import ValueType

    if not override.is_sweep_override():
        return [override.value()]
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return []  # a glob expands to existing options only
    return list(override.sweep_string_iterator())


def _first_value_overrides(parsed) -> list[str]:
    """The overrides with every sweep replaced by its first value: one representative job."""
    out = []
    for o in parsed:
        if o.is_sweep_override():
            values = _values(o)
            if not values:
                continue
            out.append(f"{o.get_key_element()}={values[0]}")
        else:
            out.append(o.input_line)
    return out


def precheck(argv: Sequence[str]) -> str | None:
    """The error message for the first problem found, or None when Hydra may go ahead."""
    split = split_argv(argv)
    if split is None:
        return None
    overrides, multirun = split

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from pruning import PruneLabError

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        return f"cannot parse the command line: {str(e).strip().splitlines()[0]}"

    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        return f"{sweeps[0]} is a sweep (several values): add -m (--multirun) to run one job per value"

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="pruning.conf", version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for o in parsed:
                group = o.key_or_group
                if o.is_delete() or not loader.repository.group_exists(group):
                    continue
                options = loader.get_group_options(group)
                for value in _values(o):
                    if value is None or str(value) == "null":
                        continue
                    if str(value) not in options:
                        return (
                            f"{group}={value!r} is not an option of the '{group}' group; valid options: "
                            f"{', '.join(options)}"
                        )
            try:
                cfg = compose(config_name="config", overrides=_first_value_overrides(parsed))
                plain = OmegaConf.to_container(cfg, resolve=True)
            except (HydraException, OmegaConfBaseException) as e:
                return _hydra_message(e)
    except (HydraException, OmegaConfBaseException) as e:
        return _hydra_message(e)
    finally:
        GlobalHydra.instance().clear()

    from pruning.io import check_writable
    from pruning.pipeline import validate

    try:
        check_writable(Path(str(plain["paths"]["results_root"])))
        if not multirun:  # a sweep's jobs are validated one by one (ValidateSweep callback)
            validate(plain)
    except PruneLabError as e:
        return str(e)
    return None


def _hydra_message(e: Exception) -> str:
    text = str(e).strip()
    cause = e.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f"\n{str(cause).strip()}"
    return "\n".join(line for line in text.splitlines() if "HYDRA_FULL_ERROR" not in line).strip()
