"""Checks ``prune-exp`` makes on its command line before Hydra runs anything or creates any
directory, so that every user error ends the same way (a message naming the bad value and the
fix, exit 2, nothing written):

* an override that does not parse;
* an unknown option of any config group, sweep values included (``experiment=<typo>``, which
  Hydra would silently skip for an ``optional`` default, ``table_row=``, ``model=`` ...),
  answered with the list of valid options;
* a key that the composed config lacks, ``+key`` included (Hydra would advise ``+key=...``, which
  then runs with the key ignored): "schedule.epoch is not a key of schedule=cifar10; did you mean
  schedule.epochs?", for every job of a sweep (``check_job_keys``, also called by ValidateSweep);
  ``+method.NAME`` may add an argument the method's class takes;
* a string where the key's default is a number or a bool; a quoted number (``'0.5'``) is rewritten
  as the number (``prepare``), so it runs, hashes and is recorded exactly like ``0.5``;
* a config that does not compose (a bad interpolation);
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
    return prepare(argv)[0]


def prepare(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(message, argv): the error message for the first problem found (None when Hydra may go
    ahead), and the command line Hydra is to run: quoted numbers written as numbers where the
    key takes one (``method.ratio='0.5'`` -> ``method.ratio=0.5``: the same run directory and
    record), ``+group=option`` as ``group=option`` for a group of the defaults list."""
    argv = list(argv)
    split = split_argv(argv)
    if split is None:
        return None, argv
    overrides, multirun = split
    final = list(overrides)  # _precheck rewrites these in place
    message = _precheck(overrides, multirun, final)
    if message is None and final != overrides:
        replace = iter(final)
        argv = [next(replace) if a in overrides else a for a in argv]
    return message, argv


def _plugin_options(group: str) -> list[str]:
    """The options installed plug-ins add to a config group (their config folders are on Hydra's
    search path through ``hydra.searchpath``, pruning.plugins)."""
    from pruning.plugins import conf_dirs

    return sorted(p.stem for conf in conf_dirs() for p in (conf / group).glob("*.yaml"))


def _precheck(overrides: list[str], multirun: bool, final: list[str]) -> str | None:
    """``precheck`` of the overrides; ``final`` receives them as Hydra is to run them."""
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
                options = loader.get_group_options(group) + _plugin_options(group)
                for value in _values(o):
                    if value is None or str(value) == "null":
                        continue
                    if str(value) not in options:
                        return (
                            f"{group}={value!r} is not an option of the '{group}' group; valid options: "
                            f"{', '.join(options)}"
                        )
            try:
                final[:], message = _check_keys(parsed, multirun)
                if message:
                    return message
                parsed = OverridesParser.create().parse_overrides(final)
                cfg = compose(config_name="config", overrides=_first_value_overrides(parsed))
                plain = OmegaConf.to_container(cfg, resolve=True)
            except (HydraException, OmegaConfBaseException) as e:
                return _check_keys(parsed, multirun, always=True)[1] or _hydra_message(e)
    except (HydraException, OmegaConfBaseException) as e:
        return _hydra_message(e)
    finally:
        GlobalHydra.instance().clear()

    from pruning.config import check_run_safety
    from pruning.io import check_writable
    from pruning.pipeline import validate

    try:
        check_writable(Path(str(plain["paths"]["results_root"])))
        if not multirun:  # a sweep's jobs are validated one by one (ValidateSweep callback)
            validate(plain)
            check_run_safety(plain)  # names, links, device, init_from: before Hydra writes anything
    except PruneLabError as e:
        return str(e)
    return None


def _check_keys(parsed: list, multirun: bool, always: bool = False) -> tuple[list[str], str | None]:
    """(overrides, message): every job's keys exist in the config it composes (else the message
    for the first unknown key); the overrides as Hydra is to run them, one per given override,
    with quoted numbers written as numbers and ``+group=`` as ``group=``. Without ``always``, a
    single run of plain ``key=number`` overrides is left to the full composition (no extra one):
    a key it lacks makes that fail, and the caller asks again with ``always``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pruning import PruneLabError

    if not (always or multirun or any(_needs_base(o) for o in parsed)):
        return [o.input_line for o in parsed], None
    parser, checker = OverridesParser.create(), KeyChecker()
    lines = [checker.plus_group(o) or o.input_line for o in parsed]
    parsed = parser.parse_overrides(lines)
    jobs = [parsed]
    if multirun:
        jobs = [parser.parse_overrides(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    for job in jobs:
        message = checker.check_job(job)
        if message:
            return lines, message
    base = checker.job_base(jobs[0])
    try:
        lines = [checker.coerce(o, base) or line for o, line in zip(parsed, lines, strict=True)]
    except PruneLabError as e:
        return lines, str(e)
    return lines, None


def _needs_base(override) -> bool:
    """Whether the override needs the config composed without it: a `+`, `++` or `~` (Hydra's
    composition would accept an unknown key there), or a string, which may be a quoted number."""
    from hydra.core.override_parser.types import OverrideType, QuotedString

    if override.type != OverrideType.CHANGE:
        return True
    if KeyChecker.is_group(override) or _is_hydra_key(override.key_or_group):
        return False
    return override.is_sweep_override() or isinstance(override.value(), str | QuotedString)


def _hydra_message(e: Exception) -> str:
    text = str(e).strip()
    cause = e.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f"\n{str(cause).strip()}"
    return "\n".join(line for line in text.splitlines() if "HYDRA_FULL_ERROR" not in line).strip()


# ----------------------------------------------------------------------------- keys and quoted numbers
# Hydra answers a misspelt key with "To append to your config use +schedule.epoch=1", and the `+`
# form then runs with the key ignored (the method ignores unknown arguments, the schedule never
# reads it). So every key of an override must exist at its level of the composed config; a `+key`
# may add only an argument the method's class takes (`+method.val_per_class=50` for PFS on
# ImageNet). `+group=option` for a group of the defaults list means `group=option`.

# keys whose default is null but that take a number when set (quoted values become numbers)
NUMERIC_WHEN_SET = {
    "data.train_subset": int,
    "data.test_bytes": int,
    "data.valid_bytes": int,
    "data.eval_bptt": int,
    "robustness.test_subset": int,
}
TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number"}


class KeyChecker:
    """Within an initialised Hydra: checks the keys of one job's overrides against the config that
    job composes (its group choices only), and turns quoted numbers into numbers."""

    def __init__(self, config_name: str = "config") -> None:
        self.config_name = config_name
        self._bases: dict[tuple[str, ...], object] = {}

    def base(self, group_overrides: Sequence[str]):
        """The config composed from the group choices alone (with ``hydra.runtime.choices``)."""
        from hydra import compose

        key = tuple(group_overrides)
        if key not in self._bases:
            self._bases[key] = compose(config_name=self.config_name, overrides=list(key), return_hydra_config=True)
        return self._bases[key]

    def defaults_groups(self) -> set[str]:
        return set(self.base(()).hydra.runtime.choices)

    @staticmethod
    def is_group(override) -> bool:
        from hydra.core.global_hydra import GlobalHydra

        return GlobalHydra.instance().config_loader().repository.group_exists(override.key_or_group)

    def plus_group(self, override) -> str | None:
        """``+group=option`` rewritten as ``group=option`` where the group is in the defaults list
        (Hydra refuses the `+` there with 'Multiple values for ...'), else None."""
        if override.is_add() and override.package is None and self.is_group(override):
            if override.key_or_group in self.defaults_groups():
                return override.input_line.lstrip("+")
        return None

    def job_base(self, parsed: Sequence) -> object:
        """The job's config from its group choices (and the search path, where plug-ins add options)."""
        keep = [o for o in parsed if (self.is_group(o) and not o.is_delete()) or o.key_or_group == "hydra.searchpath"]
        return self.base(tuple(o.input_line for o in keep))

    def check_job(self, parsed: Sequence) -> str | None:
        """The message for the first key of this job that its config lacks, or None."""
        groups = sorted(g for g in self.defaults_groups() if not _is_hydra_key(g))
        for o in parsed:  # Hydra: "No match in the defaults list. To append ... use +report=sweep"
            if self.is_group(o) and not _is_hydra_key(o.key_or_group) and o.key_or_group not in groups:
                if o.package is None and not o.is_delete():
                    return (
                        f"{o.key_or_group} is not a config group of a run (its files are read by prune-report or "
                        f"by other groups); the groups: {', '.join(groups)}"
                    )
        base = self.job_base(parsed)
        for o in parsed:
            if _is_hydra_key(o.key_or_group) or self.is_group(o):
                continue
            path = o.key_or_group.split(".")
            found, depth = _walk(base, path)
            if found:
                if o.is_add():  # Hydra: "Could not append to config. An item is already at ..."
                    value = o.input_line.split("=", 1)[1]
                    return (
                        f"{o.key_or_group} is already a key of {_where(base, path[:-1])}: set it without "
                        f"the +, {o.key_or_group}={value}"
                    )
                continue
            if (o.is_add() or o.is_force_add()) and depth == len(path) - 1 and _method_argument(base, path):
                continue
            return _unknown_key_message(base, path, depth)
        return None

    def coerce(self, override, base) -> str | None:
        """The override with its quoted numbers (``method.ratio='0.5'``) written as numbers where
        the key takes a number, so the run is hashed and recorded exactly like ``0.5``; None when
        nothing changes. A value that is not of the key's type raises ``PruneLabError``."""
        from hydra.core.override_parser.types import ChoiceSweep, QuotedString, ValueType

        from pruning import PruneLabError

        if override.is_delete() or self.is_group(override) or _is_hydra_key(override.key_or_group):
            return None
        path = override.key_or_group.split(".")
        expected, default = _expected_type(base, path)
        if expected is None:
            return None
        key = override.key_or_group
        if override.value_type == ValueType.ELEMENT:
            values, sweep = [override.value()], False
        elif override.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
            sweep_value = override.value()
            if not isinstance(sweep_value, ChoiceSweep) or sweep_value.tags or sweep_value.shuffle:
                return None
            values, sweep = list(sweep_value.list), True
        else:
            return None
        changed, out = False, []
        for value in values:
            if isinstance(value, QuotedString):
                value = value.text
            if isinstance(value, str):
                number = _parse_as(value, expected)
                if number is None:
                    raise PruneLabError(
                        f"{key}={value!r} is not {TYPE_WORDS[expected]}; {key} takes {TYPE_WORDS[expected]}"
                        + (f" ({_where(base, path[:-1])} sets {_format(default)})" if default is not None else "")
                    )
                value, changed = number, True
            elif not (value is None or isinstance(value, (bool, int, float))):
                return None  # a list or dict: left to the checks of the values
            out.append(value)
        if not changed:
            return None
        text = ",".join(_format(v) for v in out)
        if not sweep and len(out) == 1:
            text = _format(out[0])
        return f"{override.get_key_element()}={text}"


def _is_hydra_key(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _walk(cfg, path: Sequence[str]) -> tuple[bool, int]:
    """(found, depth): whether ``path`` exists in ``cfg``; else the index of its first missing part."""
    from omegaconf import DictConfig, ListConfig

    node = cfg
    for i, part in enumerate(path):
        if isinstance(node, DictConfig) and part in node.keys():
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False, i
    return True, len(path)


def _node(cfg, path: Sequence[str]):
    from omegaconf import DictConfig, ListConfig

    node = cfg
    for part in path:
        if isinstance(node, DictConfig) and part in node.keys():
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return None
    return node


def _where(cfg, parent: Sequence[str]) -> str:
    """``schedule=cifar10`` for a group's node, ``the config`` for the top, else the dotted path."""
    choices = cfg.hydra.runtime.choices
    if not parent:
        return "the config"
    choice = choices.get(parent[0]) if parent[0] in choices else None
    if len(parent) == 1 and choice is not None:
        return f"{parent[0]}={choice}"
    dotted = ".".join(parent)
    return f"{dotted} ({parent[0]}={choice})" if choice is not None else dotted


def _keys_at(cfg, parent: Sequence[str]) -> list[str]:
    from omegaconf import DictConfig

    node = _node(cfg, parent)
    if not isinstance(node, DictConfig):
        return []
    return [str(k) for k in node.keys() if str(k) not in ("hydra", "_target_")]


def _unknown_key_message(cfg, path: Sequence[str], depth: int) -> str:
    import difflib

    parent, missing = list(path[:depth]), path[depth]
    dotted = ".".join(path)
    keys = _keys_at(cfg, parent)
    where = _where(cfg, parent)
    prefix = ".".join(parent) + "." if parent else ""
    if not keys:
        return f"{dotted} is not a key: {'.'.join(path[:depth])} is not a section with keys ({where})"
    close = difflib.get_close_matches(missing, keys, n=3, cutoff=0.6)
    head = f"{prefix}{missing} is not a key of {where}"
    if depth < len(path) - 1:
        head = f"{dotted} is not a key: {prefix}{missing} is not a key of {where}"
    if close:
        return f"{head}; did you mean {' or '.join(prefix + c for c in close)}?"
    shown = ", ".join(sorted(keys)[:40]) + (", ..." if len(keys) > 40 else "")
    return f"{head}; its keys: {shown}"


def _method_class(cfg):
    import importlib

    target = str((cfg.get("method") or {}).get("_target_") or "")
    module_name, _, cls_name = target.rpartition(".")
    if not module_name.startswith("pruning.methods."):
        return None
    try:
        return getattr(importlib.import_module(module_name), cls_name, None)
    except ImportError:
        return None


def _method_argument(cfg, path: Sequence[str]) -> bool:
    """Whether ``method.NAME`` is an argument the method's class takes by name (not ``**_``)."""
    import inspect

    if len(path) != 2 or path[0] != "method":
        return False
    cls = _method_class(cfg)
    if cls is None:
        return False
    params = inspect.signature(cls.__init__).parameters
    p = params.get(path[1])
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and path[1] != "self"


def _expected_type(cfg, path: Sequence[str]) -> tuple[type | None, object]:
    """(type, default) of a key that takes a number or a bool: its composed default's type, or
    for a null default the method argument's annotation / ``NUMERIC_WHEN_SET``; (None, None) else."""
    import typing

    from omegaconf import DictConfig, ListConfig, OmegaConf

    node = _node(cfg, path)
    default = None
    if node is not None and not isinstance(node, (DictConfig, ListConfig)):
        default = node._value()
        if node._is_interpolation():  # finetune.epochs: ${schedule.finetune_epochs}
            try:
                default = OmegaConf.select(cfg, ".".join(path))
            except Exception:  # noqa: BLE001  an interpolation that does not resolve here: no coercion
                return None, None
        if isinstance(default, bool):
            return bool, default
        if isinstance(default, (int, float)):
            return type(default), default
        if default is not None:
            return None, None
    dotted = ".".join(path)
    if dotted in NUMERIC_WHEN_SET:
        return NUMERIC_WHEN_SET[dotted], None
    if len(path) == 2 and path[0] == "method" and _method_argument(cfg, path):
        try:
            hint = typing.get_type_hints(_method_class(cfg).__init__).get(path[1])
        except Exception:  # noqa: BLE001  an annotation that does not resolve: no coercion
            return None, None
        kinds = {a for a in typing.get_args(hint) if a is not type(None)} or {hint}
        if kinds == {bool}:
            return bool, None
        if kinds and kinds <= {int, float}:
            return (float if float in kinds else int), None
    return None, None


def _parse_as(text: str, expected: type):
    """``text`` as Hydra parses it unquoted, when that is of the expected kind; else None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(f"k={text.strip()}")
    except HydraException:
        return None
    if parsed.is_sweep_override():
        return None
    value = parsed.value()
    if expected is bool:
        return value if isinstance(value, bool) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _format(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def check_job_keys(job: Sequence[str], config_name: str = "config", checker: KeyChecker | None = None) -> None:
    """For a sweep's job (``ValidateSweep``), within an initialised Hydra: raises ``PruneLabError``
    naming a key of the job that its composed config lacks, with the close matches."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pruning import PruneLabError

    parsed = OverridesParser.create().parse_overrides(list(job))
    message = (checker or KeyChecker(config_name)).check_job(parsed)
    if message:
        raise PruneLabError(message)
