"""Paper definitions kept in ``conf/`` as plain YAML, read without Hydra.

A paper table is defined once:

* each **row** is one ``conf/table_row/<row>.yaml``: the Hydra overrides that make its runs
  (model, data, method, variant / ratio / settings) and, under ``paper_row:``, what the report
  shows for it (its labels and the paper's values with their sources). The pipeline never reads
  ``paper_row`` (the run directory hashes only data/model/method/finetune/schedule/seed), and the
  row's report filter is derived from the overrides (``row_filter``), not typed again;
* the **list of rows**, in the paper's order, is the ``table_row`` sweep of the table's experiment
  (``conf/experiment/<table>.yaml``, ``hydra.sweeper.params.table_row: a,b,c``; an experiment
  without that sweep contributes the one row its defaults select);
* the **table** (title, citation, columns, the spec-wide filter) is ``conf/report/<table>.yaml``,
  which names its experiments (``experiments: [...]``) instead of listing rows.

``expand_rows`` turns such a report spec into one with ``rows`` (what pruning.report renders).

Paper constants of the methods (the variants' per-layer widths, skip lists, ratios) live in
``conf/paper/<method>.yaml``; ``method_variants(name)`` reads them for a method constructed
without an explicit ``variants`` argument.

This module does not import Hydra.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pruning import PruneLabError

# the mark of a paper value not yet verified against the paper (every table, every format)
UNVERIFIED_MARK = "†"

ROW_KEY = "paper_row"
# defaults-list groups and method keys of a table_row file that become its report filter
FILTER_GROUPS = ("data", "model", "method", "adv_train")
FILTER_METHOD_KEYS = ("variant", "ratio", "sparsity", "mode")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader where built (~10x faster)


def conf_dir() -> Path:
    """``conf/`` as installed (the ``pruning.conf`` package), else next to this checkout."""
    try:
        installed = Path(str(resources.files("pruning.conf")))
        if (installed / "table_row").is_dir():
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "conf"


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=SAFE_LOADER)
    except (OSError, yaml.YAMLError) as e:
        raise PruneLabError(f"cannot read {path} ({e})") from e


@functools.cache
def _paper_constants(path: str) -> Any:
    return _read_yaml(Path(path))


def method_variants(method: str, conf: Path | None = None) -> dict[str, Any]:
    """The ``variants`` mapping of ``conf/paper/<method>.yaml`` (a fresh copy)."""
    path = (conf or conf_dir()) / "paper" / f"{method}.yaml"
    if not path.is_file():
        raise PruneLabError(f"{method}: no paper constants at {path}")
    constants = _paper_constants(str(path))
    if not isinstance(constants, dict) or not isinstance(constants.get("variants"), dict):
        raise PruneLabError(f"{path}: expected a mapping with a 'variants' mapping")
    return copy.deepcopy(constants["variants"])


# --------------------------------------------------------------------------- table rows


def experiment_rows(experiment: str, conf: Path | None = None) -> list[str]:
    """The table rows an experiment runs, in order: its ``table_row`` sweep, else the one row
    its defaults select (none: [])."""
    conf = conf or conf_dir()
    path = conf / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        raise PruneLabError(f"experiment {experiment!r}: no file {path}")
    config = _read_yaml(path) or {}
    params = ((config.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    if "table_row" in params:
        rows = [name.strip() for name in str(params["table_row"]).split(",")]
    else:
        rows = [
            value
            for entry in config.get("defaults") or []
            if isinstance(entry, dict)
            for key, value in entry.items()
            if _group_of(key) == "table_row"
        ]
    for name in rows:
        if not _NAME.match(name):
            raise PruneLabError(
                f"{path}: table_row sweep value {name!r} is not a row name "
                "(list the rows explicitly: a,b,c; globs and ranges are not read)"
            )
    return rows


def _group_of(defaults_key: str) -> str:
    """``override /model`` -> ``model``."""
    return defaults_key.removeprefix("override").strip().lstrip("/")


def row_filter(row_config: Mapping[str, Any]) -> dict[str, Any]:
    """The run-key fields a table_row file sets: the data / model / method / adv_train it selects
    in its defaults (adv_train: none unless it selects one) and the method's variant / ratio /
    sparsity / mode, then ``paper_row.filter``."""
    fields: dict[str, Any] = {}
    for entry in row_config.get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if _group_of(key) in FILTER_GROUPS:
                    fields[_group_of(key)] = value
    fields.setdefault("adv_train", "none")  # a row without adversarial training is a standard-training row
    method = row_config.get("method") or {}
    fields.update({key: method[key] for key in FILTER_METHOD_KEYS if key in method})
    fields.update((row_config.get(ROW_KEY) or {}).get("filter") or {})
    return fields


def table_row(name: str, conf: Path | None = None) -> dict[str, Any]:
    """A report row from ``conf/table_row/<name>.yaml``: its ``paper_row`` block (name,
    unpruned_name, paper) with ``filter`` derived from its overrides and ``table_row`` = name."""
    path = (conf or conf_dir()) / "table_row" / f"{name}.yaml"
    if not path.is_file():
        raise PruneLabError(f"table row {name!r}: no file {path}")
    config = _read_yaml(path) or {}
    block = config.get(ROW_KEY)
    if not isinstance(block, dict):
        raise PruneLabError(f"{path}: no '{ROW_KEY}:' block (the row's labels and paper values)")
    row = {k: v for k, v in block.items() if k != "filter"}
    return {**row, "filter": row_filter(config), "table_row": name}


def expand_rows(spec: Mapping[str, Any], conf: Path | None = None) -> dict[str, Any]:
    """A report spec with ``experiments: [...]`` gets ``rows``: the rows of those experiments,
    in order, each read from its table_row file. Other specs are returned unchanged."""
    experiments = spec.get("experiments")
    if not experiments:
        return dict(spec)
    if spec.get("rows"):
        raise PruneLabError("a report spec lists either experiments (whose table rows it shows) or rows, not both")
    names: list[str] = []
    for experiment in experiments:
        names += [n for n in experiment_rows(experiment, conf) if n not in names]
    # extra_rows: a paper's rows prune-lab does not implement (paper values and the reason only)
    extra = [
        {**row, "filter": row.get("filter") or {"method": "not_implemented"}} for row in spec.get("extra_rows") or []
    ]
    for row in extra:
        if not row.get("not_implemented"):
            raise PruneLabError(f"extra row {row.get('name')!r}: extra_rows need a not_implemented reason")
    return {**spec, "rows": [*(table_row(name, conf) for name in names), *extra]}
