"""prune-report's library: paper tables and sweep plots generated from run directories.

Results are data, tables are generated. The steps, each a small public function:

1. ``load_runs(results_root)``: every ``metrics.json`` found recursively under the root (directory
   names do not matter) whose ``status`` is ``"done"`` becomes one DataFrame row. Unreadable or
   corrupt files, and files of an unknown schema, are skipped with a logged warning.
2. ``split_by_budget(runs)``: runs are split into *budget groups* (data label, pretrain epochs,
   train subset). Runs of different groups are never averaged together; each group gets its own
   table, titled with its data label and budget.
3. ``build_tables(spec, runs)``: a spec from ``conf/report/*.yaml`` (``load_specs``) becomes one
   ``ReportTable`` per budget group in which at least one cell has a run. A ``paper_table`` spec
   shows "paper" / "ours" / "Δ" per accuracy column; a ``ratio_sweep`` spec tabulates uniform-ratio
   runs and plots top-1 against FLOPs reduction. A paper table's rows are not in its spec: it names
   its experiments, whose ``table_row`` sweep lists the rows, each defined once in
   ``conf/table_row/<row>.yaml`` (overrides + ``paper_row``; ``pruning.paper.expand_rows``).
4. ``render_markdown`` / ``render_latex`` / ``render_csv`` / ``render_rich`` (terminal), and
   ``write_tables`` to write them atomically (temp file + ``os.replace``). ``generate_reports``
   runs all of it for the ``prune-report`` command (cli/report.py).

Conventions. Accuracy is the best top-1 test accuracy over epochs (``top1_best``), as the
Rethinking paper reports it; every caption says so. Seeds are averaged as mean ± sample std
(ddof=1) with their count, e.g. ``93.41±0.12 (n=5)``; with one seed ``93.41 (n=1)``. The unpruned
baseline takes one value per seed (runs of one seed share the dense baseline). A cell without a
run shows the ``prune-exp`` command that fills it (with the group's budget overrides).

Output files in ``out_dir`` (default ``results/tables``), for a spec named ``<spec>`` (the YAML
file's stem):

* ``<spec>__<budget slug>.{md,csv,tex}``: one set per budget group with runs, e.g.
  ``rethinking_l1_cifar10__cifar-10-jpeg-q75-copy_pre3_sub10000.md``; the slug is
  ``<data label slug>_pre<pretrain epochs>_<sub<N> | full>``. Sweep specs add ``.png`` (written
  whatever the formats chosen).
* ``<spec>.{md,csv,tex}``: only while no budget group has a run for the spec: the empty table
  (paper values, and the command for every cell). Writing group tables removes it.

This module does not import Hydra.
"""

from __future__ import annotations

import io
import json
import logging
import re
import statistics
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from pruning import PruneLabError
from pruning.io import atomic_write, os_error_message
from pruning.paper import expand_rows
from pruning.results import KEY_FIELDS, RunMetrics, StageRecord

log = logging.getLogger(__name__)

# from metrics.json evaluations (robustness=pgd): white-box / black-box PGD, FGSM, vulnerabilities
ROBUSTNESS_COLUMNS = ("robust_top1_wb", "robust_top1_bb", "fgsm_top1", "vulnerability_wb", "vulnerability_bb")
RUN_COLUMNS = (
    *KEY_FIELDS,
    "data_label",
    "pretrain_epochs",
    "stage_epochs",
    "train_subset",
    "flops_reduction",
    "params_reduction",
    "flops_speedup",
    "flops_dense",
    "flops_pruned",
    "params_dense",
    "params_pruned",
    "unpruned_top1",
    "final_top1",
    "final_top1_last",
    "final_top5",
    "run_dir",
    "measured_speedup",
    "measured_setting",
    "measured_speedup_cpu_b1",
    "measured_speedup_cpu_b64",
    "measured_speedup_gpu",
    "status",
    "accuracy_drop",
    "requested_flops_reduction",
    "settings",
    "sparsity",
    "mode",
    "train_macs_total",
    *ROBUSTNESS_COLUMNS,
    "paper_memory_pct",
    "paper_flops_speedup",
    "paper_unit_sparsity",
    "masked_top1",
    "cost_mean",
    "cost_p5",
    "cost_p95",
    "final_bpc",
    "final_bpc_valid",
    "unpruned_bpc",
    "sparsity_target",
    "sparsity_achieved",
)  # sparsity / mode: settings some table rows filter on (every method setting becomes a column)
ARCHITECTURE_METRICS = ("flops_reduction", "params_reduction", "flops_speedup")  # dry runs fill these
SPEEDUP_COLUMNS = ("flops_speedup", "measured_speedup_cpu_b1", "measured_speedup_cpu_b64", "measured_speedup_gpu")
FORMATS = ("md", "csv", "latex")
FILE_SUFFIXES = {"md": ".md", "csv": ".csv", "latex": ".tex"}
SPEC_KINDS = ("paper_table", "ratio_sweep")
# count: e.g. FLOPs as 2.24E7; percent: like accuracy (paper / ours / Δ) for other percentages;
# value: a small quantity (3 decimals, e.g. vulnerability .129); times: a ratio such as FLOPs 10.57×
# (paper / ours); robust: ours only, mean±std (the robustness columns appended to any table)
COLUMN_KINDS = ("accuracy", "reduction", "speedup", "count", "percent", "value", "times", "robust")
DELTA_KINDS = ("accuracy", "percent", "value")

ACCURACY_NOTE = "Top-1 test accuracy (%) is the best over epochs (top1_best), as the paper reports it"
UNVERIFIED_MARK = "†"
UNVERIFIED_FOOTNOTE = "† recalled value, not yet checked against the paper (shared/reference/papers.md)"
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "↓": r"$\downarrow$", "†": r"$^\dagger$", "·": r"$\cdot$", "−": "-"}
FINETUNE_STYLES = {"finetune": ("o", "-"), "scratch_e": ("s", ":"), "scratch_b": ("^", "-.")}


class CommandText(str):
    """A cell that holds the command filling it (markdown renders it as code)."""


# --------------------------------------------------------------------------- loading runs


def find_metrics_files(results_root: str | Path) -> list[Path]:
    """Every metrics.json under ``results_root``, recursively, in sorted order."""
    return sorted(Path(results_root).rglob("metrics.json"))


def _read_metrics(path: Path) -> RunMetrics | None:
    """A run record in the current schema (older schemas are migrated on read); None, with a
    warning naming the file, when it is unreadable or not a prune-lab run record."""
    try:
        with open(path, encoding="utf-8") as f:
            return RunMetrics.from_dict(json.load(f))
    except (OSError, ValueError) as e:  # SchemaError is a ValueError
        log.warning("prune-report: skipping unreadable %s (%s)", path, e)
        return None
    except TypeError as e:
        log.warning("prune-report: skipping %s (not a prune-lab run record: %s)", path, e)
        return None


def _run_record(metrics: RunMetrics, path: Path) -> dict[str, Any]:
    """One DataFrame row from a done run's metrics."""
    key, data, budget, final = metrics.key, metrics.data, metrics.budget, metrics.final
    pretrain = metrics.stages.get("pretrain") or StageRecord()
    record = {name: getattr(key, name) for name in KEY_FIELDS}
    record.update(
        data_label=data.get("label") or data.get("name") or key.data,
        pretrain_epochs=budget.get("pretrain_epochs"),
        stage_epochs=budget.get("stage_epochs"),
        train_subset=budget.get("train_subset", data.get("train_subset")),
        unpruned_top1=pretrain.top1_best,
        final_top1=final.get("top1_best"),
        final_top1_last=final.get("top1"),
        final_top5=final.get("top5"),
        final_bpc=final.get("bpc"),  # language models: bits per character (test; valid), dense baseline's
        final_bpc_valid=final.get("bpc_valid"),
        unpruned_bpc=pretrain.bpc,
        run_dir=str(path.parent),
    )
    for name in (
        "flops_reduction",
        "params_reduction",
        "flops_speedup",
        "flops_dense",
        "flops_pruned",
        "params_dense",
        "params_pruned",
    ):
        record[name] = getattr(metrics, name)
    record.update(measured_speedups(metrics))
    # accuracy drop vs the run's own dense baseline (TAS's "drop" column), and the FLOPs
    # reduction a budget-targeting method was asked for (extras, e.g. TAS) next to the achieved one
    unpruned, pruned_top1 = record["unpruned_top1"], record["final_top1"]
    record["accuracy_drop"] = None if unpruned is None or pruned_top1 is None else unpruned - pruned_top1
    record["requested_flops_reduction"] = metrics.extras.get("requested_flops_reduction")
    # method settings besides the key (metrics.json ``method_settings``): runs that differ in
    # them are different cells; ``settings`` is their text ("" when none), and every setting is
    # also a column of its own name, so table rows can filter on it (e.g. sparsity, mode)
    record["settings"] = settings_text(metrics.method_settings)
    for name, value in metrics.method_settings.items():
        record.setdefault(name, value)
    record["train_macs_total"] = metrics.training_macs()  # every stage's samples x forward MACs
    record.update(robustness_fields(metrics))
    sparsity = metrics.sparsity or {}  # a method with a sparsity target (FLOP, AGP): target / achieved, in %
    if sparsity.get("target") is not None:  # the row filter's sparsity (runs whose settings predate it)
        record.setdefault("sparsity", sparsity["target"])
        if key.method == "agp":
            record.setdefault("mode", key.variant)
    record.update(
        sparsity_target=None if sparsity.get("target") is None else 100.0 * sparsity["target"],
        sparsity_achieved=None if sparsity.get("achieved") is None else 100.0 * sparsity["achieved"],
    )
    cost = metrics.cost_per_sample or {}  # dynamic networks: MACs per test sample
    record.update(cost_mean=cost.get("mean"), cost_p5=cost.get("p5"), cost_p95=cost.get("p95"))
    for name in ("paper_memory_pct", "paper_flops_speedup", "paper_unit_sparsity", "masked_top1"):
        record[name] = metrics.extras.get(name)
    if key.method == "none" and metrics.params_dense is not None:  # nothing pruned: the paper's trivial values
        record.update(paper_memory_pct=100.0, paper_flops_speedup=1.0, paper_unit_sparsity=0.0)
    record["status"] = metrics.status
    return record


def robustness_fields(metrics: RunMetrics) -> dict[str, Any]:
    """The robustness columns from ``metrics.evaluations``: white-box PGD (the most steps when
    several were run), black-box (transfer) PGD, FGSM, and the vulnerability of each PGD."""
    out: dict[str, Any] = dict.fromkeys((*ROBUSTNESS_COLUMNS, "robust_attack"))
    best: dict[str, int] = {}
    for ev in metrics.evaluations.values():
        attack = ev.get("attack") or {}
        if not isinstance(ev.get("top1"), (int, float)):
            continue
        if attack.get("kind") == "fgsm":
            out["fgsm_top1"] = ev["top1"]
            continue
        box = "bb" if ev.get("box") == "black" else "wb"
        steps = int(attack.get("steps") or 0)
        if steps >= best.get(box, -1):
            best[box] = steps
            out[f"robust_top1_{box}"], out[f"vulnerability_{box}"] = ev["top1"], ev.get("vulnerability")
            if box == "wb":
                n = f", first {ev['n']} test images" if (ev.get("settings") or {}).get("test_subset") else ""
                out["robust_attack"] = f"L∞ PGD-{steps} eps {attack.get('eps'):g} step {attack.get('step'):g}{n}"
    return out


def robustness_columns(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """The robustness columns any paper table gains when its runs were evaluated with
    ``robustness=pgd`` (and the table does not show them already): ours only."""
    present = [
        c for c in ("robust_top1_wb", "robust_top1_bb", "vulnerability_wb") if c in runs and runs[c].notna().any()
    ]
    labels = {"robust_top1_wb": "WB PGD", "robust_top1_bb": "BB PGD", "vulnerability_wb": "WB vuln"}
    return [
        {
            "key": f"auto_{c}",
            "label": labels[c],
            "kind": "robust",
            "metric": c,
            "command": "",
            "auto": True,
            "decimals": 3 if c.startswith("vulnerability") else 2,
        }
        for c in present
    ]


def settings_text(settings: Mapping[str, Any]) -> str:
    """``{"sparsity": 1e-4}`` -> ``"sparsity=0.0001"`` (sorted; "" for none)."""
    return ", ".join(
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in sorted(settings.items())
    )


def measured_speedups(metrics: RunMetrics) -> dict[str, Any]:
    """Measured dense/pruned latency ratios of a run: one ``measured_speedup_<setting>`` column
    per CPU setting it measured (``cpu_b1``, ``cpu_b64``, ... as configured), the GPU figure as
    ``measured_speedup_gpu``, and the headline ``measured_speedup`` (GPU when the run had one,
    else the largest CPU batch; ``measured_setting`` says which)."""
    out: dict[str, Any] = {name: None for name in SPEEDUP_COLUMNS if name != "flops_speedup"}
    for name, rec in sorted(metrics.latency.items()):
        column = "measured_speedup_gpu" if not rec.device.startswith("cpu") else f"measured_speedup_{name}"
        out.setdefault(column, rec.speedup)
        out[column] = out[column] if out[column] is not None else rec.speedup
    headline, setting = metrics.measured_speedup()
    return {**out, "measured_speedup": headline, "measured_setting": setting}


def load_runs(results_root: str | Path) -> pd.DataFrame:
    """One row per done run under ``results_root`` (columns: ``RUN_COLUMNS``), plus dry runs
    (``status == "dry_run"``), which only architecture columns (FLOPs/params) may use."""
    records = []
    for path in find_metrics_files(results_root):
        metrics = _read_metrics(path)
        if metrics is None or metrics.status not in ("done", "dry_run"):
            continue
        try:
            records.append(_run_record(metrics, path))
        except (KeyError, TypeError, AttributeError) as e:
            log.warning("prune-report: skipping malformed %s (%r)", path, e)
    frame = pd.DataFrame.from_records(records)
    return frame.reindex(columns=[*RUN_COLUMNS, *(c for c in frame.columns if c not in RUN_COLUMNS)])


def select_runs(runs: pd.DataFrame, key_filter: Mapping[str, Any]) -> pd.DataFrame:
    """Runs whose fields equal the filter's values (None: missing; a list: any of its values)."""
    mask = pd.Series(True, index=runs.index)
    for name, wanted in key_filter.items():
        if name not in runs.columns:
            raise PruneLabError(f"unknown filter field {name!r}; known: {', '.join(RUN_COLUMNS)}")
        column = runs[name]
        if wanted is None:
            mask &= column.isna()
        elif isinstance(wanted, list | tuple):
            mask &= column.isin(list(wanted))
        else:
            mask &= column == wanted
    return runs[mask]


def one_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """The first run (by run directory) of each seed: runs of one seed share their baseline."""
    return runs.sort_values("run_dir").drop_duplicates(subset="seed", keep="first")


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class MeanStd:
    """Mean, sample std (None below two values) and count of one cell's values."""

    mean: float | None
    std: float | None
    n: int


def mean_std(values: Iterable[Any]) -> MeanStd:
    """Mean and sample standard deviation (ddof=1) of the non-missing values."""
    clean = [float(v) for v in values if v is not None and not pd.isna(v)]
    if not clean:
        return MeanStd(None, None, 0)
    std = statistics.stdev(clean) if len(clean) >= 2 else None
    return MeanStd(statistics.fmean(clean), std, len(clean))


def format_mean_std(value: MeanStd, decimals: int = 2, with_n: bool = True) -> str:
    """``93.41±0.12 (n=5)``; ``93.41 (n=1)`` for one value; ``""`` for none."""
    if value.n == 0 or value.mean is None:
        return ""
    text = f"{value.mean:.{decimals}f}"
    if value.std is not None:
        text += f"±{value.std:.{decimals}f}"
    return f"{text} (n={value.n})" if with_n else text


def _rounded(number: float | None, decimals: int = 4) -> float | None:
    return None if number is None else round(number, decimals)


# --------------------------------------------------------------------------- budget groups


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "data"


@dataclass(frozen=True)
class BudgetGroup:
    """Runs comparable with each other: same data label, pretrain epochs and train subset."""

    data_label: str
    pretrain_epochs: int | None
    train_subset: int | None

    @classmethod
    def of(cls, run: Mapping[str, Any]) -> BudgetGroup:
        return cls(str(run["data_label"]), _optional_int(run["pretrain_epochs"]), _optional_int(run["train_subset"]))

    @property
    def slug(self) -> str:
        epochs = "na" if self.pretrain_epochs is None else self.pretrain_epochs
        subset = "full" if self.train_subset is None else f"sub{self.train_subset}"
        return f"{_slugify(self.data_label)}_pre{epochs}_{subset}"

    def describe(self) -> str:
        epochs = "?" if self.pretrain_epochs is None else self.pretrain_epochs
        subset = "full" if self.train_subset is None else self.train_subset
        return (
            f"data: {self.data_label} · budget: pretrain {epochs} ep, second stage as recorded, train subset {subset}"
        )

    def sort_key(self) -> tuple:
        return (self.data_label, self.pretrain_epochs or 0, self.train_subset is not None, self.train_subset or 0)


def split_by_budget(runs: pd.DataFrame) -> list[tuple[BudgetGroup, pd.DataFrame]]:
    """The runs of each budget group, groups in a stable order."""
    positions: dict[BudgetGroup, list[int]] = {}
    for position, run in enumerate(runs.to_dict("records")):
        positions.setdefault(BudgetGroup.of(run), []).append(position)
    ordered = sorted(positions.items(), key=lambda item: item[0].sort_key())
    return [(group, runs.iloc[rows]) for group, rows in ordered]


# --------------------------------------------------------------------------- specs


def default_spec_dir() -> Path:
    """``conf/report`` of the installed ``pruning.conf`` package, else next to this checkout."""
    try:
        installed = Path(str(resources.files("pruning.conf") / "report"))
        if installed.is_dir():
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "conf" / "report"


def _check_spec(name: str, spec: Any, path: Path) -> dict[str, Any]:
    def fail(problem: str) -> PruneLabError:
        return PruneLabError(f"report spec {path}: {problem}")

    if not isinstance(spec, dict):
        raise fail("expected a mapping")
    kind = spec.get("kind", "paper_table")
    if kind not in SPEC_KINDS:
        raise fail(f"kind {kind!r} is not one of {', '.join(SPEC_KINDS)}")
    for required in ("title", "command"):
        if required not in spec:
            raise fail(f"missing {required!r}")
    if kind == "paper_table":
        for required in ("rows", "columns"):
            if not spec.get(required):
                raise fail(f"missing {required!r}")
        for column in spec["columns"]:
            if column.get("kind") not in COLUMN_KINDS or column.get("metric") not in RUN_COLUMNS:
                raise fail(
                    f"column {column.get('key')!r} needs kind in {COLUMN_KINDS} and a metric that is a run column"
                )
            for required in ("key", "label", "command"):
                if required not in column:
                    raise fail(f"column {column.get('key')!r} lacks {required!r}")
        for row in spec["rows"]:
            for required in ("name", "unpruned_name", "filter"):
                if required not in row:
                    raise fail(f"row {row.get('name')!r} lacks {required!r}")
        plot = spec.get("plot")
        if plot is not None and (
            not isinstance(plot, dict) or plot.get("x") not in RUN_COLUMNS or plot.get("y") not in RUN_COLUMNS
        ):
            raise fail("plot needs x and y that are run columns, e.g. {x: params_pruned, y: final_bpc}")
    return {**spec, "name": name, "kind": kind}


def load_specs(spec_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The report specs (``*.yaml``) of ``spec_dir`` (default: ``default_spec_dir()``) by name."""
    directory = Path(spec_dir) if spec_dir is not None else default_spec_dir()
    if not directory.is_dir():
        raise PruneLabError(f"report spec directory {directory} does not exist")
    # the conf/ whose experiments and table rows the specs name: the spec directory's parent
    # (conf/report -> conf), else the installed one
    conf = directory.parent if (directory.parent / "table_row").is_dir() else None
    specs = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            with open(path, encoding="utf-8") as f:
                spec = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise PruneLabError(f"report spec {path}: cannot read ({e})") from e
        if isinstance(spec, dict):  # rows named by the spec's experiments, read from conf/table_row
            try:
                spec = expand_rows(spec, conf)
            except PruneLabError as e:
                raise PruneLabError(f"report spec {path}: {e}") from None
        specs[path.stem] = _check_spec(path.stem, spec, path)
    return specs


# --------------------------------------------------------------------------- tables


@dataclass
class ReportTable:
    """One table: text cells for markdown/LaTeX/terminal and numeric ``records`` for CSV.

    ``header_groups`` lists (label, sub-labels); a group without sub-labels is one column, one
    with sub-labels (``paper``/``ours``/``Δ``) is one column per sub-label.
    """

    spec_name: str
    group: BudgetGroup | None
    title: str
    subtitle: str
    caption: str
    header_groups: list[tuple[str, list[str]]]
    rows: list[list[str]]
    records: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)
    figure: Any = None  # a matplotlib Figure (sweeps), written as <file_stem>.png

    @property
    def file_stem(self) -> str:
        return self.spec_name if self.group is None else f"{self.spec_name}__{self.group.slug}"

    @property
    def headers(self) -> list[str]:
        flat: list[str] = []
        for label, sub_labels in self.header_groups:
            flat.extend([f"{label} {sub}" for sub in sub_labels] if sub_labels else [label])
        return flat


@dataclass(frozen=True)
class PaperValue:
    """A published number with its provenance."""

    mean: float
    std: float | None
    verified: bool
    source: str

    def format(self, kind: str) -> str:
        mark = "" if self.verified else UNVERIFIED_MARK
        if kind == "reduction":
            return f"{self.mean:.1f}%{mark}"
        if kind == "count":
            return f"{format_count(self.mean)}{mark}"
        if kind == "value":
            return f"{self.mean:.3f}{mark}"
        if kind == "times":
            return f"{self.mean:.2f}×{mark}"
        std = "" if self.std is None else f"±{self.std:.2f}"
        return f"{self.mean:.2f}{std}{mark}"


def format_count(value: float) -> str:
    """A large count in the papers' style: 22400000 -> ``2.24E7``."""
    mantissa, exponent = f"{value:.2E}".split("E")
    return f"{mantissa}E{int(exponent)}"


def _paper_value(row: Mapping[str, Any], column: Mapping[str, Any]) -> PaperValue | None:
    entry = (row.get("paper") or {}).get(column["key"])
    if entry is None:
        return None
    std = entry.get("std")
    return PaperValue(
        float(entry.get("mean", entry.get("value"))),
        None if std is None else float(std),
        bool(entry.get("verified", False)),
        str(entry.get("source", "")),
    )


def budget_overrides(spec: Mapping[str, Any], group: BudgetGroup | None) -> list[str]:
    """prune-exp overrides that reproduce a group's budget where it differs from the spec's
    ``default_budget`` (none for a spec without one)."""
    default = spec.get("default_budget")
    if group is None or not default:
        return []
    overrides = []
    if group.pretrain_epochs is not None and group.pretrain_epochs != default.get("pretrain_epochs"):
        overrides.append(f"schedule.epochs={group.pretrain_epochs}")
    if group.train_subset is not None and group.train_subset != default.get("train_subset"):
        overrides.append(f"data.train_subset={group.train_subset}")
    return overrides


def cell_command(
    spec: Mapping[str, Any], row: Mapping[str, Any], column: Mapping[str, Any], group: BudgetGroup | None = None
) -> str:
    """The prune-exp command that fills one cell: the column's template, formatted with the
    spec + row + column filter fields, ``seeds`` and ``table_row`` (the row's name), plus the
    group's budget overrides."""
    fields = {
        "table_row": row.get("table_row", ""),
        **(spec.get("filter") or {}),
        **row["filter"],
        **(column.get("filter") or {}),
    }
    fields["seeds"] = ",".join(str(seed) for seed in spec.get("seeds", [0]))
    try:
        command = str(column["command"]).format_map(fields)
    except KeyError as e:
        raise PruneLabError(
            f"report spec {spec['name']}: column {column['key']!r} command uses {e} which the row filter does not set"
        ) from e
    return " ".join([command, *budget_overrides(spec, group)])


def _cell_runs(
    spec: Mapping[str, Any], row: Mapping[str, Any], column: Mapping[str, Any], runs: pd.DataFrame
) -> pd.DataFrame:
    ignored = set(column.get("ignore_filter") or [])
    key_filter = {k: v for k, v in {**(spec.get("filter") or {}), **row["filter"]}.items() if k not in ignored}
    selected = select_runs(runs, {**key_filter, **(column.get("filter") or {})})
    return one_per_seed(selected) if column.get("one_per_seed") else selected


def _table_runs(spec: Mapping[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a spec uses (the union over its cells)."""
    if spec["kind"] == "ratio_sweep":
        swept = runs[runs["ratio"].notna()]
        return select_runs(swept, spec.get("filter") or {})
    used = pd.Series(False, index=runs.index)
    for row in spec["rows"]:
        for column in spec["columns"]:
            used |= runs.index.isin(_cell_runs(spec, row, column, runs).index)
    return runs[used]


def _reduction_text(value: MeanStd) -> str:
    if value.std is not None and value.std >= 0.05:  # one architecture should give one number
        return f"{value.mean:.1f}±{value.std:.1f}%"
    return f"{value.mean:.1f}%"


def _group_record(group: BudgetGroup | None) -> dict[str, Any]:
    if group is None:
        return {"data_label": None, "pretrain_epochs": None, "train_subset": None}
    return {
        "data_label": group.data_label,
        "pretrain_epochs": group.pretrain_epochs,
        "train_subset": group.train_subset,
    }


def _budget_caption(spec: Mapping[str, Any], group: BudgetGroup | None) -> str:
    default = spec.get("default_budget")
    if group is None or not default:
        return ""
    if group.pretrain_epochs == default.get("pretrain_epochs") and group.train_subset == default.get("train_subset"):
        return ""
    subset = default.get("train_subset") or "full"
    return (
        f" This budget differs from the paper's (pretrain {default.get('pretrain_epochs')} ep, "
        f"train subset {subset}): compare trends, not absolute numbers."
    )


def _source_footnote(sources: dict[str, list[str]]) -> str:
    lines = ["Sources of the paper values:"]
    lines += [f"- {source}: {', '.join(cells)}" for source, cells in sources.items()]
    return "\n".join(lines)


def _paper_cell(
    spec: Mapping[str, Any],
    row: Mapping[str, Any],
    column: Mapping[str, Any],
    runs: pd.DataFrame,
    group: BudgetGroup | None,
) -> tuple[list[str], dict[str, Any], PaperValue | None]:
    """One column of one row: its text cells (paper, ours[, Δ]) and its CSV fields."""
    key, kind = column["key"], column["kind"]
    paper = _paper_value(row, column)
    cell_runs = _cell_runs(spec, row, column, runs)
    if kind in DELTA_KINDS and cell_runs["seed"].duplicated().any():
        log.warning("prune-report: %s / %s has several runs of one seed; averaging all", row["name"], column["label"])
    mixed = sorted(set(cell_runs["settings"].fillna("")))
    if len(mixed) > 1:
        log.warning(
            "prune-report: %s, row %r, column %r averages runs made with different method "
            "settings (%s); add the setting (sparsity / mode) to the row's filter in the spec",
            spec.get("name"),
            row.get("name"),
            column.get("key"),
            "; ".join(m or "none recorded" for m in mixed),
        )
    ours = mean_std(cell_runs[column["metric"]])
    done = cell_runs[cell_runs["status"] == "done"] if "status" in cell_runs else cell_runs
    ran = len(done) > 0  # the row's runs finished without this metric (a dense row has no speed-up): "—"
    command = (
        ""
        if ours.n or ran or column.get("auto") or row.get("not_implemented")
        else cell_command(spec, row, column, group)
    )
    if ours.n == 0 and row.get("not_implemented"):
        ours_text = "n/i"  # the reason is a footnote
    elif ours.n == 0 and ran:
        ours_text = "—"
    elif ours.n == 0:
        ours_text: str = CommandText(command)
    else:
        ours_text = (
            format_mean_std(ours, decimals=int(column.get("decimals", 2)))
            if kind in ("accuracy", "percent", "robust")
            else format_mean_std(ours, decimals=3)
            if kind == "value"
            else f"{ours.mean:.2f}×"
            if kind == "times" and ours.n == 1
            else f"{format_mean_std(ours, with_n=False)}×"
            if kind == "times"
            else f"{ours.mean:.2f}×"
            if kind == "speedup"
            else format_count(ours.mean)
            if kind == "count"
            else _reduction_text(ours)
        )
    delta = None if paper is None or ours.mean is None else ours.mean - paper.mean

    ours_only = kind in ("speedup", "robust") or spec.get("paper_values") is False
    texts = [ours_text] if ours_only else [paper.format(kind) if paper else "", ours_text]
    record: dict[str, Any] = {
        f"{key}_paper_mean": paper.mean if paper else None,
        f"{key}_paper_std": paper.std if paper else None,
        f"{key}_paper_verified": paper.verified if paper else None,
        f"{key}_ours_mean": _rounded(ours.mean),
        f"{key}_ours_std": _rounded(ours.std),
        f"{key}_ours_n": ours.n,
    }
    if kind in DELTA_KINDS and not ours_only:
        texts.append("" if delta is None else f"{delta:+.3f}" if kind == "value" else f"{delta:+.2f}")
        record[f"{key}_delta"] = _rounded(delta)
    record[f"{key}_command"] = command
    record[f"{key}_paper_source"] = paper.source if paper else ""
    return texts, record, paper


def build_paper_table(
    spec: Mapping[str, Any], runs: pd.DataFrame, group: BudgetGroup | None, arch_runs: pd.DataFrame | None = None
) -> ReportTable:
    """A paper-vs-ours table of one budget group (``group=None``: the table without runs).
    ``arch_runs`` (done and dry runs of any budget) fill the architecture-only columns."""
    robust_note = ""
    if runs is not None and len(runs):
        used = _table_runs(spec, runs)
        shown = {c["metric"] for c in spec["columns"]}
        extra = [c for c in robustness_columns(used) if c["metric"] not in shown]
        if extra:  # any table shows robustness when its runs were evaluated (robustness=pgd)
            spec = {**spec, "columns": [*spec["columns"], *extra]}
        attacks = sorted({a for a in used.get("robust_attack", pd.Series(dtype=object)).dropna()})
        if attacks:
            robust_note = (
                " Robust accuracy: top-1 (%) on adversarial test images, white-box (WB: crafted on the network "
                "itself) and black-box (BB: transferred from a separately trained standard network); vulnerability: "
                f"mean |clean - adversarial| latent feature (ANP-VS); attack: {'; '.join(attacks)}."
            )
    header_groups: list[tuple[str, list[str]]] = [("Model", []), ("Pruned model", [])]
    for column in spec["columns"]:
        sub_labels = {"speedup": ["ours"], "robust": ["ours"]}.get(
            column["kind"], ["paper", "ours", "Δ"] if column["kind"] in DELTA_KINDS else ["paper", "ours"]
        )
        if spec.get("paper_values") is False:  # a table without paper values: ours only
            sub_labels = ["ours"]
        header_groups.append((column["label"], sub_labels))

    rows, records = [], []
    sources: dict[str, list[str]] = {}  # source -> the cells it supplies
    any_unverified = False
    for row in spec["rows"]:
        cells: list[str] = [row["unpruned_name"], row["name"]]
        record: dict[str, Any] = {"model": row["unpruned_name"], "pruned_model": row["name"], **_group_record(group)}
        for column in spec["columns"]:
            source = arch_runs if arch_runs is not None and column["metric"] in ARCHITECTURE_METRICS else runs
            texts, fields, paper = _paper_cell(spec, row, column, source, group)
            cells += texts
            record.update(fields)
            if paper is not None:
                any_unverified |= not paper.verified
                sources.setdefault(paper.source, []).append(f"{row['name']} {column['label']}")
        rows.append(cells)
        records.append(record)

    table_command = " ".join([spec["command"], *budget_overrides(spec, group)])
    paper_note = spec.get("paper_note", "paper: the published values")
    delta_note = "" if spec.get("paper_values") is False else " Δ = ours mean − paper mean."
    caption = (
        f"{spec.get('accuracy_note', ACCURACY_NOTE)}. {paper_note}; ours: mean±std over seeds "
        f"(n = number of seeds).{delta_note} FLOPs↓ / Params↓: reduction "
        f"of the pruned vs the dense model; Speedup: dense/pruned MACs and measured "
        f"latency (median; on the run's GPU at a large batch, else CPU at batch 64). "
        f"An empty 'ours' cell shows the command that "
        f"fills it; the whole table: `{table_command}`.{robust_note}{_budget_caption(spec, group)}"
    )
    footnotes = [UNVERIFIED_FOOTNOTE] if any_unverified else []
    footnotes += [
        f"n/i ({row['name']}): {row['not_implemented']}" for row in spec["rows"] if row.get("not_implemented")
    ]
    footnotes += [f"Paper: {' '.join(str(spec.get('citation', '')).split())}"]
    footnotes += [_source_footnote(sources)] if sources else []
    subtitle = group.describe() if group is not None else "no done runs yet · commands use the paper's budget"
    table = ReportTable(
        spec["name"],
        group,
        spec["title"],
        subtitle,
        caption,
        header_groups,
        rows,
        pd.DataFrame.from_records(records),
        footnotes,
    )
    if spec.get("plot") and runs is not None and len(runs):
        table.figure = build_row_figure(spec, runs, f"{spec['title']}\n{subtitle}")
    return table


def build_row_figure(spec: Mapping[str, Any], runs: pd.DataFrame, title: str) -> Any:
    """A paper table's rows as points, ``spec["plot"]``: {x, y: run columns, xlabel, ylabel,
    xscale}: one marker per row (mean over seeds, std error bars on y), one colour per model,
    the legend below the axes (never over the points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plot = spec["plot"]
    figure = Figure(figsize=(7.0, 4.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    models = sorted({row["unpruned_name"] for row in spec["rows"]})
    markers = "osD^vP*X"
    drawn = 0
    for i, row in enumerate(spec["rows"]):
        cell = _cell_runs(spec, row, {"metric": plot["y"]}, runs)
        x, y = mean_std(cell[plot["x"]]), mean_std(cell[plot["y"]])
        if not (x.n and y.n):
            continue
        color = f"C{models.index(row['unpruned_name']) % 10}"
        axes.errorbar(
            [x.mean],
            [y.mean],
            yerr=[y.std or 0.0],
            color=color,
            marker=markers[i % len(markers)],
            capsize=3,
            linestyle="none",
            label=f"{row['name']} (n={y.n})",
        )
        drawn += 1
    if plot.get("xscale"):
        axes.set_xscale(plot["xscale"])
    axes.set_xlabel(plot.get("xlabel", plot["x"]))
    axes.set_ylabel(plot.get("ylabel", plot["y"]))
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    labels = ["\n".join(textwrap.wrap(label, 95)) for label in labels]
    figure.set_size_inches(8.0, 4.6 + 0.16 * sum(label.count("\n") + 1 for label in labels))
    if drawn:
        axes.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False)
    return figure


def build_sweep_table(spec: Mapping[str, Any], runs: pd.DataFrame, group: BudgetGroup | None) -> ReportTable:
    """Uniform-ratio runs of one budget group: ratio → reductions, unpruned and final top-1."""
    header_groups: list[tuple[str, list[str]]] = [
        (label, [])
        for label in (
            "Model",
            "Method",
            "Fine-tune",
            "Ratio",
            "FLOPs↓",
            "Params↓",
            "FLOPs×",
            "Measured× CPU b1",
            "Measured× CPU b64",
            "Measured× GPU",
            "2nd-stage epochs",
            "Unpruned top-1",
            "Final top-1",
        )
    ]
    robust = [c for c in ("robust_top1_wb", "robust_top1_bb") if c in runs and runs[c].notna().any()]
    header_groups += [({"robust_top1_wb": "WB PGD top-1", "robust_top1_bb": "BB PGD top-1"}[c], []) for c in robust]
    rows, records = [], []
    if not runs.empty:
        runs = runs.assign(method_label=method_labels(runs))
        keys = ["data", "model", "method_label", "finetune", "ratio"]
        for (_, model, label, finetune, ratio), cell_runs in runs.groupby(keys, sort=True):
            first = cell_runs.iloc[0]
            method, variant, settings = first["method"], first["variant"], first["settings"]
            flops = mean_std(cell_runs["flops_reduction"])
            params = mean_std(cell_runs["params_reduction"])
            unpruned = mean_std(one_per_seed(cell_runs)["unpruned_top1"])
            final = mean_std(cell_runs["final_top1"])
            stage_epochs = "/".join(str(e) for e in sorted(set(cell_runs["stage_epochs"].dropna().astype(int))))
            speedups = {name: mean_std(cell_runs[name]) for name in SPEEDUP_COLUMNS}
            rows.append(
                [
                    model,
                    label,
                    finetune,
                    f"{ratio:g}",
                    _reduction_text(flops) if flops.n else "",
                    _reduction_text(params) if params.n else "",
                    *(f"{v.mean:.2f}×" if v.n else "—" for v in speedups.values()),
                    stage_epochs,
                    format_mean_std(unpruned),
                    format_mean_std(final),
                    *(format_mean_std(mean_std(cell_runs[c])) or "—" for c in robust),  # robustness=pgd runs only
                ]
            )
            records.append(
                {
                    "model": model,
                    "method": method,
                    "variant": None if pd.isna(variant) else variant,
                    "settings": settings,
                    "finetune": finetune,
                    "ratio": ratio,
                    "flops_reduction": _rounded(flops.mean),
                    "params_reduction": _rounded(params.mean),
                    **{name: _rounded(v.mean) for name, v in speedups.items()},
                    "stage_epochs": stage_epochs,
                    "unpruned_mean": _rounded(unpruned.mean),
                    "unpruned_std": _rounded(unpruned.std),
                    "unpruned_n": unpruned.n,
                    "final_mean": _rounded(final.mean),
                    "final_std": _rounded(final.std),
                    "final_n": final.n,
                    **{f"{c}_mean": _rounded(mean_std(cell_runs[c]).mean) for c in robust},
                    **_group_record(group),
                }
            )
    table_command = " ".join([spec["command"], *budget_overrides(spec, group)])
    caption = (
        f"{ACCURACY_NOTE}; mean±std over seeds (n = number of seeds). Runs with a "
        f"uniform pruning ratio (key.ratio set). Example sweep: `{table_command}`."
    )
    attacks = sorted({a for a in runs.get("robust_attack", pd.Series(dtype=object)).dropna()}) if robust else []
    if attacks:
        caption += (
            " WB / BB PGD top-1: robust accuracy (%) under white-box / black-box (transferred from a separately "
            "trained standard net) attack, for the runs evaluated with robustness=pgd (— otherwise): "
            f"{'; '.join(attacks)}."
        )
    subtitle = group.describe() if group is not None else "no done uniform-ratio runs yet"
    table = ReportTable(
        spec["name"], group, spec["title"], subtitle, caption, header_groups, rows, pd.DataFrame.from_records(records)
    )
    if group is not None and not runs.empty:
        budget_lines = group.describe().replace(" · ", "\n")
        table.figure = build_sweep_figure(runs, f"{spec['title']}\n{budget_lines}")
        table.footnotes.append(f"![top-1 vs FLOPs reduction]({table.file_stem}.png)")
    return table


def method_labels(runs: pd.DataFrame) -> list[str]:
    """Per run: the method, its variant when set (TAS: kd / nokd) and its settings, e.g.
    ``network_slimming (sparsity=0.0001)``, ``tas nokd``: runs with different labels are never
    averaged together."""
    labels = []
    for method, variant, settings in zip(runs["method"], runs["variant"], runs["settings"], strict=True):
        label = method if variant is None or pd.isna(variant) else f"{method} {variant}"
        labels.append(f"{label} ({settings})" if isinstance(settings, str) and settings else label)
    return labels


def build_sweep_figure(runs: pd.DataFrame, title: str) -> Any:
    """Top-1 (mean, std error bars) vs FLOPs reduction, one line per (model, method, finetune
    policy), each model's unpruned baseline as a dashed horizontal line. Uses the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # runs that differ in variant or method settings (e.g. slimming's sparsity) are separate lines
    runs = runs.assign(method=method_labels(runs))
    figure = Figure(figsize=(7.0, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    palette = [f"C{i}" for i in range(10)]
    lines = sorted({(m, meth) for m, meth in zip(runs["model"], runs["method"], strict=True)})
    color_of = {line: palette[i % len(palette)] for i, line in enumerate(lines)}  # (model, method)
    several_methods = runs["method"].nunique() > 1
    for (model, method, finetune), line_runs in runs.groupby(["model", "method", "finetune"], sort=True):
        points = []
        for _, ratio_runs in line_runs.groupby("ratio", sort=True):
            flops, final = mean_std(ratio_runs["flops_reduction"]), mean_std(ratio_runs["final_top1"])
            if flops.n and final.n:
                points.append((flops.mean, final.mean, final.std or 0.0))
        if not points:
            continue
        label = f"{model} · {method} · {finetune}" if several_methods else f"{model} · {finetune}"
        xs, ys, errors = zip(*sorted(points), strict=True)
        marker, linestyle = FINETUNE_STYLES.get(finetune, ("D", "-"))
        axes.errorbar(
            xs,
            ys,
            yerr=errors,
            color=color_of[(model, method)],
            capsize=3,
            label=label,
            marker=marker,
            linestyle=linestyle,
        )
    # unpruned baselines: one dashed line per distinct baseline (methods that share one, e.g.
    # L1-norm and magnitude, share the line; sparsity-trained baselines get their own)
    baselines: dict[tuple[str, str], list[str]] = {}
    for model, method in lines:
        subset = runs[(runs["model"] == model) & (runs["method"] == method)]
        baseline = mean_std(one_per_seed(subset)["unpruned_top1"])
        if baseline.n:
            baselines.setdefault((model, format_mean_std(baseline)), []).append(method)
            first = baselines[(model, format_mean_std(baseline))][0]
            if first == method:
                axes.axhline(baseline.mean, color=color_of[(model, method)], linestyle="--", linewidth=1)
    for (model, text), methods in baselines.items():
        color = color_of[(model, methods[0])]
        axes.plot(
            [],
            [],
            color=color,
            linestyle="--",
            linewidth=1,
            label=f"{model} unpruned{' (' + ', '.join(methods) + ')' if several_methods else ''}: {text}",
        )
    axes.set_xlabel("FLOPs reduction (%)")
    axes.set_ylabel("top-1 test accuracy (%), best over epochs")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    # the legend goes below the axes (never over the points), long labels wrapped, the figure
    # grown to hold it; write_tables saves with a tight bounding box, so nothing is clipped
    handles, labels = axes.get_legend_handles_labels()
    labels = ["\n".join(textwrap.wrap(label, 95)) for label in labels]
    legend_lines = sum(label.count("\n") + 1 for label in labels)
    figure.set_size_inches(8.0, 4.8 + 0.16 * legend_lines)
    axes.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False)
    return figure


def build_tables(spec: Mapping[str, Any], runs: pd.DataFrame) -> list[ReportTable]:
    """One table per budget group with runs for ``spec``; the empty table when there are none."""
    done = runs[runs["status"] == "done"] if "status" in runs else runs
    sweep = spec["kind"] == "ratio_sweep"
    if sweep and "final_bpc" in done:  # the sweep plots top-1: language-model runs have their own tables
        done = done[done["final_bpc"].isna()]

    def build(used: pd.DataFrame, group: BudgetGroup | None) -> ReportTable:
        # architecture-only cells may come from dry runs too (counts do not depend on training)
        return build_sweep_table(spec, used, group) if sweep else build_paper_table(spec, used, group, runs)

    tables = []
    for group, group_runs in split_by_budget(done):
        used = _table_runs(spec, group_runs)
        if not used.empty:
            tables.append(build(used, group))
    if not tables:
        tables.append(build(done.iloc[0:0], None))
    return tables


# --------------------------------------------------------------------------- rendering


def _markdown_cell(cell: str) -> str:
    text = str(cell).replace("|", r"\|")
    return f"`{text}`" if isinstance(cell, CommandText) and text else text


def render_markdown(table: ReportTable) -> str:
    """Title, data/budget line, caption, the table (GitHub markdown) and its footnotes."""
    body = tabulate(
        [[_markdown_cell(c) for c in row] for row in table.rows],
        headers=table.headers,
        tablefmt="github",
        disable_numparse=True,
    )
    parts = [f"# {table.title}", table.subtitle, table.caption, body, *table.footnotes]
    return "\n\n".join(parts) + "\n"


def render_latex(table: ReportTable) -> str:
    """A booktabs tabular; title, budget, caption and footnotes as leading/trailing comments."""
    body = tabulate(table.rows, headers=table.headers, tablefmt="latex_booktabs", disable_numparse=True)
    for symbol, latex in LATEX_SYMBOLS.items():
        body = body.replace(symbol, latex)

    def comment(lines: Iterable[str]) -> list[str]:
        return [f"% {line}" for text in lines for line in str(text).splitlines()]

    head = [
        "% generated by prune-report; needs \\usepackage{booktabs}",
        *comment([table.title, table.subtitle, table.caption]),
    ]
    return "\n".join([*head, body, *comment(table.footnotes)]) + "\n"


def render_csv(table: ReportTable) -> str:
    """One CSV row per table row, numeric columns separate."""
    return table.records.to_csv(index=False)


def render_rich(table: ReportTable) -> Table:
    """A rich table for the terminal; paper/ours/Δ share one cell per column group."""
    notes = [note for note in table.footnotes if note.startswith(UNVERIFIED_MARK)]
    rich_table = Table(
        title=Text(f"{table.title}\n{table.subtitle}"),
        show_lines=True,
        caption=Text("\n".join([table.caption, *notes])),
    )
    for label, _ in table.header_groups:
        rich_table.add_column(label, overflow="fold")
    for row in table.rows:
        cells, position = [], 0
        for _, sub_labels in table.header_groups:
            if not sub_labels:
                cells.append(Text(str(row[position])))
                position += 1
                continue
            values = row[position : position + len(sub_labels)]
            position += len(sub_labels)
            cells.append(
                Text("\n".join(f"{sub}: {value}" for sub, value in zip(sub_labels, values, strict=True) if value))
            )
        rich_table.add_row(*cells)
    return rich_table


# --------------------------------------------------------------------------- writing


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temp file in the same directory, then rename over ``path`` (pruning.io)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    atomic_write(Path(path), lambda f: f.write(data))


RENDERERS = {"md": render_markdown, "csv": render_csv, "latex": render_latex}


def write_tables(tables: Sequence[ReportTable], out_dir: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write each table in ``formats`` (plus its sweep plot) under ``out_dir``; returns paths.
    Group tables replace the spec's empty placeholder table of the same formats."""
    out_dir = Path(out_dir)
    written = []
    for table in tables:
        for fmt in formats:
            path = out_dir / f"{table.file_stem}{FILE_SUFFIXES[fmt]}"
            write_atomic(path, RENDERERS[fmt](table))
            written.append(path)
            if table.group is not None:
                placeholder = out_dir / f"{table.spec_name}{FILE_SUFFIXES[fmt]}"
                try:
                    placeholder.unlink(missing_ok=True)
                except OSError as e:
                    raise PruneLabError(os_error_message(e, placeholder, "remove")) from None
        if table.figure is not None:
            buffer = io.BytesIO()
            table.figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
            path = out_dir / f"{table.file_stem}.png"
            write_atomic(path, buffer.getvalue())
            written.append(path)
    return written


def generate_reports(
    results_root: str | Path,
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    formats: Sequence[str] = FORMATS,
    spec_dir: str | Path | None = None,
    console: Console | None = None,
) -> list[Path]:
    """Render the named specs (default: all) from the runs under ``results_root`` into
    ``out_dir``; print each table to ``console`` when given. Returns the written paths."""
    specs = load_specs(spec_dir)
    unknown = [name for name in names or [] if name not in specs]
    if unknown:
        raise PruneLabError(f"unknown table {', '.join(unknown)}; available: {', '.join(specs)}")
    runs = load_runs(results_root)
    written: list[Path] = []
    for name in names or list(specs):
        tables = build_tables(specs[name], runs)
        if console is not None:
            for table in tables:
                console.print(render_rich(table))
        written += write_tables(tables, out_dir, formats)
    return written
