"""prune-report's library: paper tables and sweep plots generated from run directories.

Results are data, tables are generated. The steps, each a small public function:

1. ``scan_runs(results_root)`` (``load_runs``: its DataFrame): every ``metrics.json`` found
   recursively under the root (directory names do not matter) whose ``status`` is ``"done"``
   becomes one DataFrame row; running, failed and interrupted runs are listed (terminal, HTML
   page); a file that cannot be a run record (not JSON, NaN/Infinity, nested too deeply, a field
   of the wrong type, an unknown schema) is skipped with one warning naming it and why.
2. ``split_by_budget(runs)``: runs are split into *budget groups* (data label, pretrain epochs,
   train subset). Runs of different groups are never averaged together; each group gets its own
   table, titled with its data label and budget. Within a table, runs that descend from different
   dense nets under one baseline cache id are never averaged or compared (``one_net_per_baseline``),
   and a baseline cell takes only the dense net its row's method trains from (``own_baselines``).
3. ``build_tables(spec, runs)``: a spec from ``conf/report/*.yaml`` (``load_specs``) becomes one
   ``ReportTable`` per budget group in which at least one cell has a run. A ``paper_table`` spec
   shows "paper" / "ours" / "Δ" per accuracy column; a ``ratio_sweep`` spec tabulates uniform-ratio
   runs and plots top-1 against FLOPs reduction. A paper table's rows are not in its spec: it names
   its experiments, whose ``table_row`` sweep lists the rows, each defined once in
   ``conf/table_row/<row>.yaml`` (overrides + ``paper_row``; ``pruning.paper.expand_rows``).
4. ``render_markdown`` / ``render_latex`` / ``render_csv`` / ``render_rich`` (terminal), and
   ``write_tables`` to write them atomically (temp file + ``os.replace``); ``pruning.report_html``
   puts every table on one page. ``generate_reports`` runs all of it for the ``prune-report``
   command (cli/report.py).

Conventions. Accuracy is the best top-1 test accuracy over epochs (``top1_best``), as the
Rethinking paper reports it; every caption says so. Seeds are averaged as mean ± sample std
(ddof=1); a row's seed count is its ``n`` column (a cell with fewer says ``n=k``). One cell per
column: ``ours (paper, Δ)``, e.g. ``93.41±0.12 (93.14±0.12, +0.27)`` (the paper's std where it
gives one); a table at a shorter budget than the spec's default shows no Δ (its legend says
"short budget"). A run that missed its target (``target_fields``) marks its cells ``‡`` and the
caption says what each row was asked and achieved. The unpruned baseline takes one
value per seed (runs of one seed share the dense baseline). A cell without a run shows ``[cN]``:
command N, listed once below the table, fills it (with the group's budget overrides). A measured
speed-up within the timing noise is marked ``≈``. Wide tables are split into parts of at most
120 columns (markdown, terminal) or a 5.5 in text width (LaTeX), each repeating the row's name.

Output files in ``out_dir`` (default ``results/tables``), for a spec named ``<spec>`` (the YAML
file's stem):

* ``<spec>.{md,csv,tex}``: the table at the spec's ``default_budget`` (the paper's recipe; an
  evidence table's own budget): with its runs, or, while no run has that budget, empty with the
  command for every cell. A report run never removes it.
* ``<spec>__<budget slug>.{md,csv,tex}``: one set per other budget group with runs, e.g.
  ``rethinking_l1_cifar10__cifar-10-jpeg-q75-copy_pre3_sub10000.md``; the slug is
  ``<data label slug>_pre<pretrain epochs>_<sub<N> | full>``, plus ``.png``: the table's figure
  (paper tables: accuracy or bpc vs FLOPs per model; sweeps: top-1 vs FLOPs reduction).
* ``report.html`` (``--format html``, part of ``all``): every table and figure on one page.
* a spec without a ``default_budget`` (the sweep) has ``<spec>.{md,csv,tex}`` only while no
  budget group has a run for it; writing group tables removes that empty table.

This module does not import Hydra.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import statistics
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from pruning import PruneLabError
from pruning.figure_style import (
    DODGE_NOTE,
    FILL_WORDS,
    FILLS,
    MARKER_SIZE,
    POLICY_FILLS,
    POLICY_LINESTYLES,
    dodge_offsets,
    marker_kwargs,
    method_style,
    run_style_key,
    shifted,
)
from pruning.io import atomic_write, os_error_message
from pruning.paper import SAFE_LOADER, UNVERIFIED_MARK, expand_rows  # the mark: shared with report_html
from pruning.results import KEY_FIELDS, STATUSES, RunMetrics, StageRecord

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
    # which dense net a run descends from (one_net_per_baseline) and the spec of that net
    "baseline_id",
    "baseline_sha256",
    "unpruned_top1_last",
    "dense_spec",
    "finished",
    "run_path",
    # what a method with a target was asked and reached (extras.target; older runs: sparsity or
    # requested_flops_reduction), in %, and whether it met its rule (target_fields)
    "target_quantity",
    "target_asked",
    "target_achieved",
    "target_met",
    "target_rule",
)  # sparsity / mode: settings some table rows filter on (every method setting becomes a column)
ARCHITECTURE_METRICS = ("flops_reduction", "params_reduction", "flops_speedup")  # dry runs fill these
SPEEDUP_COLUMNS = ("flops_speedup", "measured_speedup_cpu_b1", "measured_speedup_cpu_b64", "measured_speedup_gpu")
FORMATS = ("md", "csv", "latex")  # one file per table; "html" (REPORT_FORMATS) is one page for all
REPORT_FORMATS = ("html",)
HTML_NAME = "report.html"
FILE_SUFFIXES = {"md": ".md", "csv": ".csv", "latex": ".tex"}
SPEC_KINDS = ("paper_table", "ratio_sweep")
# count: e.g. FLOPs as 2.24E7; percent: like accuracy (paper / ours / Δ) for other percentages;
# value: a small quantity (3 decimals, e.g. vulnerability .129); times: a ratio such as FLOPs 10.57×
# (paper / ours); robust: ours only, mean±std (the robustness columns appended to any table)
COLUMN_KINDS = ("accuracy", "reduction", "speedup", "count", "percent", "value", "times", "robust")
DELTA_KINDS = ("accuracy", "percent", "value")
SEEDED_KINDS = ("accuracy", "percent", "value", "robust", "times")  # averaged over seeds: the row's n

ACCURACY_NOTE = "Top-1 test accuracy (%) is the best over epochs (top1_best), as the paper reports it"
UNVERIFIED_FOOTNOTE = "† recalled value, not yet checked against the paper (shared/reference/papers.md)"
MISSED_MARK = "‡"  # a cell with a run that missed its target (asked vs achieved in the caption)
LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "↓": r"$\downarrow$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "·": r"$\cdot$",
    "−": "-",
}


# --------------------------------------------------------------------------- loading runs


def find_metrics_files(results_root: str | Path) -> list[Path]:
    """Every metrics.json under ``results_root``, recursively, in sorted order."""
    return sorted(Path(results_root).rglob("metrics.json"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number (JSON has no NaN or Infinity)")


def _is_number(value: Any) -> bool:
    """A finite real number (not a bool; an integer too large for a float is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_OBJECT_FIELDS = (
    "method_settings",
    "versions",
    "engine",
    "data",
    "budget",
    "final",
    "evaluations",
    "extras",
    "cost_per_sample",
    "sparsity",
    "stages",
    "latency",
)


def record_problem(data: Any) -> str | None:
    """Why a parsed metrics.json cannot be a run record the report can use (None: it can):
    the shape every reader below relies on (objects where objects belong, numbers where numbers
    belong). Checked before any field is used, so that one bad file never stops the report."""
    if not isinstance(data, dict):
        return f"a run record is a JSON object, not a JSON {type(data).__name__}"
    key = data.get("key")
    if not isinstance(key, dict):
        return "no run key (a 'key' object)"
    for name in ("data", "model", "method"):
        if not isinstance(key.get(name), str):
            return f"key.{name} is {_brief(key.get(name))}, not a name"
    if isinstance(key.get("seed"), bool) or not isinstance(key.get("seed", 0), int):
        return f"key.seed is {_brief(key.get('seed'))}, not an integer"
    if key.get("ratio") is not None and not _is_number(key["ratio"]):
        return f"key.ratio is {_brief(key['ratio'])}, not a number"
    if key.get("variant") is not None and not isinstance(key["variant"], str) and not _is_number(key["variant"]):
        return f"key.variant is {_brief(key['variant'])}, not a name"
    for name in ("finetune", "adv_train"):
        if key.get(name) is not None and not isinstance(key[name], str):
            return f"key.{name} is {_brief(key[name])}, not a name"
    if not isinstance(data.get("status", "running"), str):
        return f"status is {_brief(data.get('status'))}, not a word"
    for name in _OBJECT_FIELDS:
        if data.get(name) is not None and not isinstance(data[name], dict):
            return f"{name} is a JSON {type(data[name]).__name__}, not an object"
    for name in ("stages", "evaluations"):
        for entry, value in (data.get(name) or {}).items():
            if value is not None and not isinstance(value, dict):
                return f"{name}.{entry} is a JSON {type(value).__name__}, not an object"
    for entry, value in (data.get("latency") or {}).items():
        if not isinstance(value, dict):
            return f"latency.{entry} is a JSON {type(value).__name__}, not an object"
    numbers = [(f"latency.{e}.{n}", v.get(n)) for e, v in (data.get("latency") or {}).items() for n in _LATENCY_NUMBERS]
    numbers += [
        (f"stages.{e}.{n}", (v or {}).get(n)) for e, v in (data.get("stages") or {}).items() for n in _STAGE_NUMBERS
    ]
    numbers += [(f"final.{n}", (data.get("final") or {}).get(n)) for n in _FINAL_NUMBERS]
    numbers += [(f"budget.{n}", (data.get("budget") or {}).get(n)) for n in _BUDGET_NUMBERS]
    numbers += [(f"sparsity.{n}", (data.get("sparsity") or {}).get(n)) for n in ("target", "achieved")]
    numbers += [(f"cost_per_sample.{n}", (data.get("cost_per_sample") or {}).get(n)) for n in ("mean", "p5", "p95")]
    numbers += [(n, data.get(n)) for n in _TOP_NUMBERS]
    for where, value in numbers:
        if value is not None and not _is_number(value):
            return f"{where} is {_brief(value)}, not a number"
    return None


_LATENCY_NUMBERS = ("dense_ms", "pruned_ms", "speedup")
_STAGE_NUMBERS = ("top1", "top1_best", "top5", "bpc", "bpc_valid", "epochs", "samples", "macs_per_sample", "train_macs")
_FINAL_NUMBERS = ("top1", "top1_best", "top5", "bpc", "bpc_valid")
_BUDGET_NUMBERS = ("pretrain_epochs", "stage_epochs", "train_subset", "test_subset")
_TOP_NUMBERS = (
    "params_dense",
    "params_pruned",
    "flops_dense",
    "flops_pruned",
    "params_reduction",
    "flops_reduction",
    "flops_speedup",
)


def _brief(value: Any, width: int = 40) -> str:
    """A value as a warning quotes it: its repr, shortened to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 3]}..."


def read_run_record(path: Path) -> tuple[RunMetrics | None, str]:
    """A run record in the current schema (older schemas are migrated on read), or None and why
    the file cannot be one: unreadable, not JSON, NaN or Infinity, nested too deeply, of an
    unknown schema or of the wrong shape (``record_problem``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as e:
        return None, os_error_message(e, path, "read")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return None, "nested too deeply to be a run record"
    except ValueError as e:
        return None, f"not valid JSON: {e}"
    problem = record_problem(data)
    if problem is not None:
        return None, problem
    try:
        return RunMetrics.from_dict(data), ""
    except (ValueError, TypeError) as e:  # SchemaError is a ValueError
        return None, f"not a prune-lab run record ({e})"


def _read_metrics(path: Path) -> RunMetrics | None:
    """``read_run_record`` that logs one warning naming the file and why it is skipped."""
    metrics, problem = read_run_record(path)
    if metrics is None:
        log.warning("prune-report: skipping %s: %s", path, problem)
    return metrics


def evaluated_test_subset(metrics: RunMetrics) -> int | None:
    """The number of test images a run evaluated on when it used ``data.test_subset`` (None:
    the whole test set)."""
    value = metrics.budget.get("test_subset", metrics.data.get("test_subset"))
    return int(value) if _is_number(value) else None


def subset_label(label: str, test_subset: int | None) -> str:
    """A data label that says when the accuracies come from a test subset: such a run's numbers
    never look like (nor are averaged with) whole-test-set ones, as the label groups the runs."""
    if test_subset is None:
        return label
    return f"{label} (test subset: {test_subset:,} images, not the full test set)"


def _run_record(metrics: RunMetrics, path: Path) -> dict[str, Any]:
    """One DataFrame row from a done run's metrics."""
    key, data, budget, final = metrics.key, metrics.data, metrics.budget, metrics.final
    pretrain = metrics.stages.get("pretrain") or StageRecord()
    record = {name: getattr(key, name) for name in KEY_FIELDS}
    record.update(
        data_label=subset_label(data.get("label") or data.get("name") or key.data, evaluated_test_subset(metrics)),
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
    record.update(
        baseline_id=pretrain.baseline_id,
        baseline_sha256=baseline_checksum(metrics),
        unpruned_top1_last=pretrain.top1,
        dense_spec=json.dumps(metrics.spec_dense, sort_keys=True) if metrics.spec_dense else None,
        finished=metrics.finished or metrics.updated,
    )
    record.update(target_fields(metrics))
    return record


TARGET_WORDS = {  # extras.target quantities (pruning.methods.targets) as a caption says them
    "flops_reduction": "FLOPs removed",
    "mean_macs_reduction": "mean MACs removed",
    "param_sparsity": "of the prunable parameters removed",
    "pruned_units": "of the units removed",
}
FALLBACK_TARGET_TOLERANCE = 0.10  # runs recorded before extras.target: met when |achieved - asked| <= 10% of asked


def target_fields(metrics: RunMetrics) -> dict[str, Any]:
    """What a run was asked to reach and what it reached, in % (``target_*`` columns): the
    method's ``extras.target`` (quantity, asked, achieved as fractions, met, rule), else, for
    runs recorded before it, a sparsity target (FLOP, AGP) or a requested FLOPs reduction (TAS,
    PFS, SANP) judged by ``FALLBACK_TARGET_TOLERANCE``, or ANP's unit sparsity (met when some
    unit was removed). All None for a run without a target."""
    out: dict[str, Any] = dict.fromkeys(("target_quantity", "target_asked", "target_achieved", "target_met"))
    out["target_rule"] = None
    target = metrics.extras.get("target")
    if isinstance(target, dict) and _is_number(target.get("achieved")):
        asked = target.get("asked")
        met = target.get("met")
        out.update(
            target_quantity=str(target.get("quantity") or "target"),
            target_asked=100.0 * asked if _is_number(asked) else None,
            target_achieved=100.0 * target["achieved"],
            target_met=met if isinstance(met, bool) else None,
            target_rule=str(target.get("rule") or ""),
        )
        return out
    sparsity = metrics.sparsity or {}
    requested = metrics.extras.get("requested_flops_reduction")
    if _is_number(sparsity.get("target")) and _is_number(sparsity.get("achieved")):
        quantity, asked, achieved = "param_sparsity", 100.0 * sparsity["target"], 100.0 * sparsity["achieved"]
    elif _is_number(requested) and _is_number(metrics.flops_reduction):
        quantity = "mean_macs_reduction" if metrics.cost_per_sample else "flops_reduction"
        asked, achieved = float(requested), float(metrics.flops_reduction)
    elif metrics.key.method == "anp" and _is_number(metrics.extras.get("paper_unit_sparsity")):
        achieved = float(metrics.extras["paper_unit_sparsity"])  # ANP-VS / BP: asked to remove some units
        out.update(
            target_quantity="pruned_units",
            target_achieved=achieved,
            target_met=achieved > 0,
            target_rule="achieved > 0 (some unit removed)",
        )
        return out
    else:
        return out
    out.update(
        target_quantity=quantity,
        target_asked=asked,
        target_achieved=achieved,
        target_met=abs(achieved - asked) <= FALLBACK_TARGET_TOLERANCE * asked + 1e-9,
        target_rule=f"|achieved - asked| <= {100 * FALLBACK_TARGET_TOLERANCE:g}% of asked",
    )
    return out


def baseline_checksum(metrics: RunMetrics) -> str | None:
    """The sha256 of the dense net's weights a run descends from (``baseline_sha256``, recorded
    since issue 22 at the top level and in the pretrain stage); None for older runs."""
    pretrain = metrics.stages.get("pretrain") or StageRecord()
    for value in (
        getattr(metrics, "baseline_sha256", None),
        metrics.other.get("baseline_sha256"),
        getattr(pretrain, "baseline_sha256", None),
        pretrain.extra.get("baseline_sha256"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


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
    noise: dict[str, tuple[float, float] | None] = {}
    for name, rec in sorted(metrics.latency.items()):
        column = "measured_speedup_gpu" if not rec.device.startswith("cpu") else f"measured_speedup_{name}"
        if out.get(column) is None:
            out[column], noise[column] = rec.speedup, speedup_noise(rec)
    headline, setting = metrics.measured_speedup()
    out.update(measured_speedup=headline, measured_setting=setting)
    headline_column = next((c for c, v in out.items() if c.startswith("measured_speedup_") and v == headline), None)
    noise["measured_speedup"] = noise.get(headline_column) if headline is not None else None
    for column, band in noise.items():  # <column>_lo / _hi: the timing-noise band of the speed-up
        out[f"{column}_lo"], out[f"{column}_hi"] = band if band is not None else (None, None)
    return out


def speedup_noise(record: Any) -> tuple[float, float] | None:
    """The timing-noise band of one measured speed-up: the interquartile range of the per-round
    dense/pruned ratios (``speedup_p25`` / ``speedup_p75``, recorded since the timings are paired);
    for older records the ratio of the minima against the ratio of the medians. None when neither
    is recorded."""
    extra = record.extra or {}
    if extra.get("speedup_p25") is not None and extra.get("speedup_p75") is not None:
        return float(extra["speedup_p25"]), float(extra["speedup_p75"])
    dense_min, pruned_min = extra.get("dense_min_ms"), extra.get("pruned_min_ms")
    if dense_min and pruned_min:
        by_minima = dense_min / pruned_min
        return min(by_minima, record.speedup), max(by_minima, record.speedup)
    return None


def within_noise(speedups: pd.Series, lows: pd.Series | None, highs: pd.Series | None) -> bool:
    """A measured speed-up is within the timing noise when its noise band (mean over the runs of
    each run's band) holds 1.0, or when 1.0 is within one std of the mean over seeds."""
    value = mean_std(speedups)
    if value.mean is None:
        return False
    if value.std is not None and abs(value.mean - 1.0) <= value.std:
        return True
    low = mean_std(lows if lows is not None else []).mean
    high = mean_std(highs if highs is not None else []).mean
    return low is not None and high is not None and low <= 1.0 <= high


# record columns that hold names; every other RUN_COLUMNS column holds a number (or nothing)
TEXT_COLUMNS = frozenset(
    (
        "data",
        "model",
        "method",
        "variant",
        "finetune",
        "adv_train",
        "data_label",
        "run_dir",
        "measured_setting",
        "status",
        "settings",
        "mode",
        "robust_attack",
        "baseline_id",
        "baseline_sha256",
        "dense_spec",
        "finished",
        "run_path",
        "target_quantity",
        "target_rule",
    )
)
BOOL_COLUMNS = frozenset(("target_met",))


def record_value_problem(record: Mapping[str, Any]) -> str | None:
    """Why a built DataFrame row cannot be averaged or laid out (None: it can): a name column
    that is not text, or a number column that is not a finite number."""
    for name in RUN_COLUMNS:
        value = record.get(name)
        if value is None:
            continue
        if name in BOOL_COLUMNS:
            if not isinstance(value, bool):
                return f"{name} is {_brief(value)}, not true or false"
        elif name in TEXT_COLUMNS:
            if not isinstance(value, str) and not (name == "variant" and _is_number(value)):
                return f"{name} is {_brief(value)}, not text"
        elif not _is_number(value):
            return f"{name} is {_brief(value)}, not a finite number"
    return None


@dataclass(frozen=True)
class RunNotice:
    """A run directory no table uses, and why: still running, failed, interrupted (``status``
    and the run's ``error``), or a metrics.json the report cannot read (``status`` unreadable)."""

    path: str  # the run directory as a page names it (results_label + the path below the root)
    status: str
    error: str = ""
    updated: str = ""  # when the run last wrote its metrics.json (a "running" run that stopped long ago died)


@dataclass
class RunScan:
    """What ``scan_runs`` found under a results root: the usable runs, and every run or file
    the tables leave out, with the reason."""

    runs: pd.DataFrame
    unfinished: list[RunNotice] = field(default_factory=list)  # running / failed / interrupted
    unreadable: list[RunNotice] = field(default_factory=list)  # skipped files (one warning each)


def _shown_path(path: Path, results_root: Path) -> str:
    try:
        below = path.relative_to(results_root).as_posix()
    except ValueError:
        return path.as_posix()
    return f"{results_label(results_root)}/{below}"


def scan_runs(results_root: str | Path) -> RunScan:
    """Every metrics.json under ``results_root``: done runs and dry runs (``status ==
    "dry_run"``, which only architecture columns may use) become DataFrame rows (columns:
    ``RUN_COLUMNS``); runs that are still running, failed or were interrupted are listed with
    their error; a file that cannot be a run record (unreadable, not JSON, NaN/Infinity, nested
    too deeply, fields of the wrong type) is skipped with one warning naming it and why."""
    root = Path(results_root)
    records = []
    scan = RunScan(pd.DataFrame())
    for path in find_metrics_files(root):
        shown = _shown_path(path.parent, root)
        metrics, problem = read_run_record(path)
        if metrics is not None and metrics.status in ("done", "dry_run"):
            try:
                record = _run_record(metrics, path)
                problem = record_value_problem(record) or ""
            except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as e:
                problem = f"a field of the wrong type ({type(e).__name__}: {e})"
            if not problem:
                records.append({**record, "run_path": shown})
                continue
        elif metrics is not None:
            error = " ".join(str(metrics.error or "").split())
            status = metrics.status if metrics.status in STATUSES else f"unknown status {metrics.status!r}"
            scan.unfinished.append(RunNotice(shown, status, error, str(metrics.updated or "")))
            continue
        log.warning("prune-report: skipping %s: %s", path, problem)
        scan.unreadable.append(RunNotice(shown, "unreadable", problem))
    frame = pd.DataFrame.from_records(records)
    scan.runs = frame.reindex(columns=[*RUN_COLUMNS, *(c for c in frame.columns if c not in RUN_COLUMNS)])
    return scan


def load_runs(results_root: str | Path) -> pd.DataFrame:
    """The runs ``scan_runs`` finds usable: one row per done or dry run."""
    return scan_runs(results_root).runs


def select_runs(runs: pd.DataFrame, key_filter: Mapping[str, Any]) -> pd.DataFrame:
    """Runs whose fields equal the filter's values (None: missing; a list: any of its values).
    Compared value by value in Python: a report selects thousands of cells from a few hundred
    runs, and pandas' per-operation overhead made this the report's hot path."""
    keep = [True] * len(runs)
    for name, wanted in key_filter.items():
        if name not in runs.columns:
            raise PruneLabError(f"unknown filter field {name!r}; known: {', '.join(RUN_COLUMNS)}")
        values = runs[name].tolist()
        if wanted is None:
            keep = [k and _missing(v) for k, v in zip(keep, values, strict=True)]
        else:
            options = list(wanted) if isinstance(wanted, list | tuple) else [wanted]
            keep = [k and not _missing(v) and any(v == o for o in options) for k, v in zip(keep, values, strict=True)]
    return runs.iloc[[i for i, k in enumerate(keep) if k]]


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (how a DataFrame holds a field a run did not record)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


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
        keys = {c["key"] for c in spec["columns"]}
        if plot is not None and (
            not isinstance(plot, dict)
            or plot.get("x", "flops_reduction") not in RUN_COLUMNS
            or plot.get("y", "final_bpc") not in RUN_COLUMNS
            or not set(plot.get("series") or []) <= keys
        ):
            raise fail(
                "plot needs x (and y) that are run columns, e.g. {x: params_pruned, y: final_bpc}, "
                f"and series that are column keys ({', '.join(sorted(keys))})"
            )
    return {**spec, "name": name, "kind": kind}


def load_specs(spec_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The report specs (``*.yaml``) of ``spec_dir`` (default: ``default_spec_dir()``, plus the
    ``report/`` folder of every installed plug-in's config package, ``pruning.plugins``) by name."""
    directory = Path(spec_dir) if spec_dir is not None else default_spec_dir()
    specs = _load_spec_dir(directory)
    if spec_dir is None:
        from pruning.plugins import conf_dirs

        for conf in conf_dirs():
            if (conf / "report").is_dir():
                for name, spec in _load_spec_dir(conf / "report").items():
                    if name in specs:
                        raise PruneLabError(
                            f"report spec {name!r} of the plug-in config {conf} has the name of one already "
                            "loaded; rename the plug-in's spec file"
                        )
                    specs[name] = spec
    return specs


def _load_spec_dir(directory: Path) -> dict[str, dict[str, Any]]:
    if not directory.is_dir():
        raise PruneLabError(f"report spec directory {directory} does not exist")
    # the conf/ whose experiments and table rows the specs name: the spec directory's parent
    # (conf/report -> conf), else the installed one
    conf = directory.parent if (directory.parent / "table_row").is_dir() else None
    specs = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            with open(path, encoding="utf-8") as f:
                spec = yaml.load(f, Loader=SAFE_LOADER)
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
    commands: list[str] = field(default_factory=list)  # c1, c2, ...: the commands that fill empty cells
    key_columns: int = 1  # leading columns (the row's name) repeated in every part of a split table
    paper_budget: bool = False  # the table at the spec's default (paper) budget: written as <spec>.{md,csv,tex}
    replaces_placeholder: bool = False  # writing it removes the spec's empty table (specs without a paper budget)
    legend: str = ""  # the cell notation (the caption's first sentence): what the terminal shows of the caption
    command: str = ""  # the command that fills the whole table

    @property
    def file_stem(self) -> str:
        """``<spec>`` for the paper-budget table (with runs or without: it is never removed),
        ``<spec>__<budget slug>`` for a table of another budget."""
        return self.spec_name if self.group is None or self.paper_budget else f"{self.spec_name}__{self.group.slug}"

    def by_row(self) -> dict[str, dict[str, str]]:
        """The cells by row name (the last key column) and header, e.g.
        ``table.by_row()["ResNet-56-A"]["Fine-tuned"]``."""
        name = self.key_columns - 1
        return {row[name]: dict(zip(self.headers, row, strict=True)) for row in self.rows}

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

    def format(self, kind: str, with_std: bool = True) -> str:
        mark = "" if self.verified else UNVERIFIED_MARK
        if kind == "reduction":
            return f"{self.mean:.1f}%{mark}"
        if kind == "count":
            return f"{format_count(self.mean)}{mark}"
        if kind == "value":
            return f"{self.mean:.3f}{mark}"
        if kind == "times":
            return f"{self.mean:.2f}×{mark}"
        std = "" if self.std is None or not with_std else f"±{self.std:.2f}"
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
    row_filter = {**(spec.get("filter") or {}), **row["filter"]}
    key_filter = {k: v for k, v in row_filter.items() if k not in ignored}
    selected = select_runs(runs, {**key_filter, **(column.get("filter") or {})})
    if ignored and column["metric"] in BASELINE_METRICS:
        selected = own_baselines(selected, select_runs(runs, row_filter), row_filter.get("method"))
    return one_per_seed(selected) if column.get("one_per_seed") else selected


BASELINE_METRICS = ("unpruned_top1", "unpruned_bpc")  # the dense net's: a baseline cell


def own_baselines(candidates: pd.DataFrame, own: pd.DataFrame, method: Any) -> pd.DataFrame:
    """The runs of a baseline cell (a column that ignores part of the row's filter) that carry
    the dense net the row's own method trains from, never another method's: a run of the row's
    own method, or a dense-only run (method ``none``), with the dense spec of the row's own runs
    (when it has any); a run of another method only when it descends from the very baseline of
    one of the row's runs (same ``baseline_id``). A TAS full-width net (its own shortcuts) is
    not the L1-norm ResNet-56's "Unpruned"."""
    if candidates.empty or "dense_spec" not in candidates:
        return candidates
    own_ids = set(own["baseline_id"].dropna()) if "baseline_id" in own else set()
    own_specs = set(own["dense_spec"].dropna())
    methods = list(method) if isinstance(method, list | tuple) else [method]
    same_kind = candidates["method"].isin([m for m in (*methods, "none") if m is not None])
    if own_specs:
        same_kind &= candidates["dense_spec"].isin(own_specs) | candidates["dense_spec"].isna()
    same_net = candidates["baseline_id"].isin(own_ids) if own_ids else pd.Series(False, index=candidates.index)
    return candidates[same_kind | same_net]


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


@dataclass
class Cell:
    """One paper-table cell before layout: our value, the paper's, the delta, the seed count, the
    command that fills it while it has no run, and whether a measured speed-up is within noise."""

    ours: str = ""
    paper: str = ""
    delta: str = ""
    n: int = 0
    command: str = ""
    noisy: bool = False
    missed: bool = False  # a run of this cell missed its target

    def text(self, row_n: int | None, command_ref: str = "") -> str:
        """``ours (paper, Δ)`` in one cell, e.g. ``93.41±0.12 (93.14, +0.27)``; ``[c3] (93.14)``
        while not run (c3: the command listed below the table); ``n=k`` when this cell's seed
        count differs from the row's; ``≈`` before a speed-up within the timing noise."""
        ours = f"[{command_ref}]" if command_ref else self.ours
        if self.noisy and ours:
            ours = f"≈{ours}"
        if self.missed and ours:
            ours += MISSED_MARK
        if self.n and row_n is not None and self.n != row_n:
            ours += f" n={self.n}"
        extra = ", ".join(part for part in (self.paper, self.delta) if part)
        return f"{ours} ({extra})" if extra and ours else extra or ours


def _ours_text(ours: MeanStd, kind: str, decimals: int) -> str:
    if kind in ("accuracy", "percent", "robust"):
        return format_mean_std(ours, decimals=decimals, with_n=False)
    if kind == "value":
        return format_mean_std(ours, decimals=3, with_n=False)
    if kind == "times":
        return f"{format_mean_std(ours, with_n=False)}×"
    if kind == "speedup":
        return f"{ours.mean:.2f}×"
    if kind == "count":
        return format_count(ours.mean)
    return _reduction_text(ours)


def _paper_cell(
    spec: Mapping[str, Any],
    row: Mapping[str, Any],
    column: Mapping[str, Any],
    runs: pd.DataFrame,
    group: BudgetGroup | None,
) -> tuple[Cell, dict[str, Any], PaperValue | None]:
    """One column of one row: its cell (ours, paper, Δ) and its CSV fields."""
    key, kind = column["key"], column["kind"]
    paper = _paper_value(row, column)
    cell_runs = _cell_runs(spec, row, column, runs)
    if kind in DELTA_KINDS and cell_runs["seed"].duplicated().any():
        log.warning("prune-report: %s / %s has several runs of one seed; averaging all", row["name"], column["label"])
    mixed = sorted(set(cell_runs["settings"].fillna("")))
    if len(mixed) > 1:
        sets = [set(_parse_settings(m)) for m in mixed]
        common = set.intersection(*sets)
        log.warning(
            "prune-report: %s, row %r, column %r averages runs made with different method "
            "settings (%s); add the setting (sparsity / mode) to the row's filter in the spec",
            spec.get("name"),
            row.get("name"),
            column.get("key"),
            " vs ".join(", ".join(sorted(items - common)) or "none recorded" for items in sets),
        )
    metric = column["metric"]
    ours = mean_std(cell_runs[metric])
    done = cell_runs[cell_runs["status"] == "done"] if "status" in cell_runs else cell_runs
    ran = len(done) > 0  # the row's runs finished without this metric (a dense row has no speed-up): "—"
    command = (
        ""
        if ours.n or ran or column.get("auto") or row.get("not_implemented")
        else cell_command(spec, row, column, group)
    )
    cell = Cell(command=command, n=ours.n if kind in SEEDED_KINDS else 0)
    if ours.n == 0 and row.get("not_implemented"):
        cell.ours = "n/i"  # the reason is a footnote
    elif ours.n == 0 and ran:
        cell.ours = "—"
    elif ours.n:
        cell.ours = _ours_text(ours, kind, int(column.get("decimals", 2)))
    if ours.n and metric.startswith("measured_speedup"):
        cell.noisy = within_noise(cell_runs[metric], cell_runs.get(f"{metric}_lo"), cell_runs.get(f"{metric}_hi"))
    if ours.n and metric not in BASELINE_METRICS and kind in MISSED_KINDS and "target_met" in cell_runs:
        cell.missed = bool((cell_runs["target_met"] == False).any())  # noqa: E712 (None: no target)
    other_budget = budget_difference(spec, group)  # a short run is no test of the paper's number: no Δ
    delta = None if paper is None or ours.mean is None or other_budget else ours.mean - paper.mean

    ours_only = kind in ("speedup", "robust") or spec.get("paper_values") is False
    if not ours_only and paper is not None:
        cell.paper = paper.format(kind, with_std=True)  # the paper's std where it gives one
        if kind in DELTA_KINDS and delta is not None:
            cell.delta = f"{delta:+.3f}" if kind == "value" else f"{delta:+.2f}"
    record: dict[str, Any] = {
        f"{key}_paper_mean": paper.mean if paper else None,
        f"{key}_paper_std": paper.std if paper else None,
        f"{key}_paper_verified": paper.verified if paper else None,
        f"{key}_ours_mean": _rounded(ours.mean),
        f"{key}_ours_std": _rounded(ours.std),
        f"{key}_ours_n": ours.n,
    }
    if kind in DELTA_KINDS and not ours_only:
        record[f"{key}_delta"] = _rounded(delta)
        if other_budget:
            record[f"{key}_delta_note"] = other_budget
    if cell.missed:
        record[f"{key}_target_missed"] = True
    if metric.startswith("measured_speedup"):
        record[f"{key}_within_noise"] = cell.noisy if ours.n else None
    record[f"{key}_command"] = command
    record[f"{key}_paper_source"] = paper.source if paper else ""
    return cell, record, paper


def _row_n(cells: Sequence[Cell]) -> int | None:
    """A row's seed count: the most any of its cells has (a cell with fewer says so); None
    without runs."""
    return max((cell.n for cell in cells if cell.n), default=None)


class CommandList:
    """The commands that fill a table's empty cells, numbered once each (c1, c2, ...)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def ref(self, command: str) -> str:
        if not command:
            return ""
        if command not in self.commands:
            self.commands.append(command)
        return f"c{self.commands.index(command) + 1}"


def cell_legend(rows: Sequence[Sequence[str]], with_paper: bool, with_n: bool, no_delta: str = "") -> str:
    """The caption line that explains the cell notation, naming only the marks the table uses.
    ``no_delta``: why the cells show no Δ against the paper (e.g. "short budget")."""
    text = "\n".join(" | ".join(row) for row in rows)
    ours = "Cells: ours mean±sample std (n−1) over the row's n seeds"
    paper = f"paper mean±std where published; no Δ: {no_delta}" if no_delta else "paper mean±std, Δ = ours − paper"
    parts = [f"{ours} ({paper})" if with_paper else ours if with_n else "Cells: ours"]
    if UNVERIFIED_MARK in text:
        parts.append(f"{UNVERIFIED_MARK} paper value not yet checked against the paper")
    if re.search(r"\[c\d+\]", text):
        parts.append("[cN] not run yet: command cN below fills it")
    if "—" in text:
        parts.append("— the runs did not record this metric")
    if "≈" in text:
        parts.append("≈ measured speed-up within the timing noise (its IQR band or the seeds' std holds 1.0×)")
    if " n=" in text:
        parts.append("n=k: this cell's seed count where it differs from the row's")
    if "n/i" in text:
        parts.append("n/i: not implemented (footnote)")
    if MISSED_MARK in text:
        parts.append(f"{MISSED_MARK} a run of this cell missed its target (asked vs achieved below the legend)")
    return "; ".join(parts) + "."


MISSED_KINDS = ("accuracy", "percent", "robust", "reduction", "value")  # cells that carry a missed target's mark


def budget_difference(spec: Mapping[str, Any], group: BudgetGroup | None) -> str:
    """ "short budget" (fewer pretraining epochs or training images than the spec's default
    budget, the paper's) or "other budget" for a group whose budget is not the spec's; "" for
    the paper's budget, the table without runs, or a spec without a default budget."""
    default = spec.get("default_budget")
    if group is None or not default or is_paper_budget(spec, group):
        return ""
    epochs, subset = default.get("pretrain_epochs"), default.get("train_subset")
    fewer_epochs = epochs is not None and group.pretrain_epochs is not None and group.pretrain_epochs < epochs
    fewer_images = group.train_subset is not None and (subset is None or group.train_subset < subset)
    return "short budget" if fewer_epochs or fewer_images else "other budget"


def target_caption(spec: Mapping[str, Any], runs: pd.DataFrame | None) -> str:
    """One caption sentence per table: each row whose runs had a target, asked vs achieved
    (mean±std over its runs), and how many missed it (under which rule)."""
    if runs is None or runs.empty or "target_quantity" not in runs or runs["target_quantity"].isna().all():
        return ""
    parts = []
    for row in spec["rows"]:
        row_runs = select_runs(runs, {**(spec.get("filter") or {}), **row["filter"]})
        row_runs = row_runs[row_runs["target_quantity"].notna()]
        if row_runs.empty:
            continue
        words = TARGET_WORDS.get(str(row_runs["target_quantity"].iloc[0]), str(row_runs["target_quantity"].iloc[0]))
        asked = mean_std(row_runs["target_asked"])
        achieved = mean_std(row_runs["target_achieved"])
        if asked.n:
            text = f"{row['name']}: asked {asked.mean:.1f}%, achieved {_reduction_text(achieved)} {words}"
        else:  # no amount asked (ANP-VS): any
            text = f"{row['name']}: asked more than 0%, achieved {_reduction_text(achieved)} {words}"
        missed = row_runs[row_runs["target_met"] == False]  # noqa: E712 (None: not judged)
        if len(missed):
            rules = "; ".join(sorted(set(missed["target_rule"].dropna().astype(str)) - {""}))
            text += f" ({MISSED_MARK} missed by {len(missed)} of {len(row_runs)} runs{': ' + rules if rules else ''})"
        parts.append(text)
    return f" Targets, asked vs achieved (mean±std over the row's runs): {'; '.join(parts)}." if parts else ""


def build_paper_table(
    spec: Mapping[str, Any],
    runs: pd.DataFrame,
    group: BudgetGroup | None,
    arch_runs: pd.DataFrame | None = None,
    figures: bool = True,
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

    cell_rows: list[list[Cell]] = []
    records = []
    sources: dict[str, list[str]] = {}  # source -> the cells it supplies
    any_unverified = False
    for row in spec["rows"]:
        record: dict[str, Any] = {"model": row["unpruned_name"], "pruned_model": row["name"], **_group_record(group)}
        cells = []
        for column in spec["columns"]:
            source = arch_runs if arch_runs is not None and column["metric"] in ARCHITECTURE_METRICS else runs
            cell, fields, paper = _paper_cell(spec, row, column, source, group)
            cells.append(cell)
            record.update(fields)
            if paper is not None:
                any_unverified |= not paper.verified
                sources.setdefault(paper.source, []).append(f"{row['name']} {column['label']}")
        cell_rows.append(cells)
        records.append(record)

    # one "Model" column only where it tells something the row name does not
    models = [row["unpruned_name"] for row in spec["rows"]]
    one_model = len(set(models)) == 1
    show_model = (
        not one_model
        and not all(row["name"].startswith(row["unpruned_name"]) for row in spec["rows"])
        and max(display_width(model) for model in models) <= MAX_MODEL_COLUMN  # else the row's name says enough
    )
    commands = CommandList()
    rows = []
    with_n = any(_row_n(cells) is not None for cells in cell_rows)  # no run at all: no "n" column
    for row, cells in zip(spec["rows"], cell_rows, strict=True):
        row_n = _row_n(cells)
        texts = [row["unpruned_name"]] if show_model else []
        texts += [row["name"], *(["" if row_n is None else str(row_n)] if with_n else [])]
        texts += [cell.text(row_n, commands.ref(cell.command)) for cell in cells]
        rows.append(texts)
    key_labels = ["Model", "Pruned model"] if show_model else ["Pruned model"]
    header_groups = [(label, []) for label in [*key_labels, *(["n"] if with_n else [])]]
    header_groups += [(column["label"], []) for column in spec["columns"]]

    table_command = " ".join([spec["command"], *budget_overrides(spec, group)])
    paper_note = spec.get("paper_note", "paper: the published values")
    with_paper = spec.get("paper_values") is not False and any(row.get("paper") for row in spec["rows"])
    legend = cell_legend(rows, with_paper, True, budget_difference(spec, group))
    caption = (
        f"{legend}{target_caption(spec, runs)} {spec.get('accuracy_note', ACCURACY_NOTE)}. {paper_note}. "
        "FLOPs↓ / Params↓: reduction of the pruned vs the dense model; speed-ups: dense/pruned MACs and measured "
        "latency (median; on the run's GPU at a large batch, else CPU at batch 64). "
        f"The whole table: `{table_command}`.{robust_note}{_budget_caption(spec, group)}"
    )
    footnotes = [UNVERIFIED_FOOTNOTE] if any_unverified else []
    footnotes += [
        f"n/i ({row['name']}): {row['not_implemented']}" for row in spec["rows"] if row.get("not_implemented")
    ]
    footnotes += [f"Paper: {' '.join(str(spec.get('citation', '')).split())}"]
    footnotes += [_source_footnote(sources)] if sources else []
    subtitle = group.describe() if group is not None else "no done runs yet · commands use the paper's budget"
    if one_model and not all(row["name"].startswith(models[0]) for row in spec["rows"]):
        subtitle += f" · model: {models[0]}"
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
        commands=commands.commands,
        key_columns=len(key_labels),
        legend=legend,
        command=table_command,
    )
    if figures and runs is not None and len(runs):
        table.figure = build_row_figure(spec, runs, f"{spec['title']}\n{subtitle}")
        if table.figure is not None:
            table.footnotes.append(f"![{spec['title']}]({table.file_stem}.png)")
    return table


FIGURE_Y_METRICS = ("final_top1", "final_top1_last")  # a paper table's figure plots its headline accuracy columns


def figure_series(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The columns a paper table's figure plots: ``plot.y`` (a run column, e.g. test bpc), or
    ``plot.series`` (column keys), else the table's headline: the columns of the final-accuracy
    metric (best epoch ``final_top1`` or last epoch ``final_top1_last``) its first such column
    uses, e.g. fine-tuned, scratch-E, scratch-B (a table that leads with last-epoch accuracy is
    plotted at the last epoch, not at its best-epoch columns further right)."""
    plot = spec.get("plot") or {}
    if plot.get("y"):
        label = next((c["label"] for c in spec["columns"] if c["metric"] == plot["y"]), plot["y"])
        return [{"key": "plot", "label": label, "metric": plot["y"]}]
    if plot.get("series"):
        return [c for key in plot["series"] for c in spec["columns"] if c["key"] == key]
    headline = next((c["metric"] for c in spec["columns"] if c.get("metric") in FIGURE_Y_METRICS), None)
    return [c for c in spec["columns"] if c.get("metric") == headline] if headline else []


X_LABELS = {"flops_reduction": "FLOPs reduction (%)", "params_pruned": "parameters"}


def _series_fills(points: Sequence[Mapping[str, Any]], series_used: Sequence[int]) -> dict[int, str]:
    """A paper figure's series (columns) as marker fills: the second-stage policies' fills when
    each column holds one policy of its own (Rethinking: fine-tuned / scratch-E / scratch-B, as
    in the sweep figure), else by column order (TAS: KD, no-KD, fine-tuned)."""
    policies = {i: {p["policy"] for p in points if p["series"] == i} for i in series_used}
    distinct = [next(iter(v)) for v in policies.values() if len(v) == 1]
    if len(distinct) == len(series_used) == len(set(distinct)) and all(d in POLICY_FILLS for d in distinct):
        fills = {i: POLICY_FILLS[next(iter(policies[i]))] for i in series_used}
        if len(set(fills.values())) == len(fills):
            return fills
    return {i: FILLS[n % len(FILLS)] for n, i in enumerate(series_used)}


def _display_span(values: Sequence[float], margin: float = 0.2, log: bool = False) -> tuple[float, float]:
    """The axis span matplotlib shows for ``values`` with ``margin`` (for the dodge's scale)."""
    if log:
        logs = [math.log10(v) for v in values if v > 0] or [0.0]
        low, high = _display_span(logs, margin)
        return 10**low, 10**high
    low, high = min(values), max(values)
    if high - low < 0.05 * max(abs(low), abs(high), 1.0):  # (nearly) one value: a span around it
        middle, half = (low + high) / 2, 0.1 * max(abs(low), abs(high), 1.0)
        return middle - half, middle + half
    return low - margin * (high - low), high + margin * (high - low)


def _one_x(points: Sequence[Mapping[str, Any]]) -> bool:
    """Every row of a panel at (nearly) the same x (ANP-VS's short runs: all at FLOPs× 1.00):
    an x axis that cannot separate them."""
    xs = [p["x"] for p in points]
    rows = {p["row"] for p in points}
    return len(rows) > 1 and max(xs) - min(xs) <= 1e-3 * max(abs(max(xs)), abs(min(xs)), 1.0)


def build_row_figure(spec: Mapping[str, Any], runs: pd.DataFrame, title: str) -> Any:
    """A paper table as a figure: y (the table's headline accuracy, ``plot.series`` columns, or
    ``plot.y`` such as test bpc) against x (``plot.x``; default the FLOPs reduction), one panel
    per model (the runs' model). Each row's method has its colour and marker shape everywhere
    (``pruning.figure_style``); the column (fine-tuned / scratch-E / ...) is the marker's fill.
    Ours with std error bars; the paper's value hollow, at the paper's x where the table has
    it; the unpruned baseline (ours) dashed; points that would coincide are offset sideways (the
    x label says so). A panel whose rows all share one x (nothing pruned) puts the columns on
    the x axis instead, the rows side by side in each, every value written next to its point.
    The legend sits below the panels. None when no row has both coordinates."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    plot = spec.get("plot") or {}
    x_metric = plot.get("x", "flops_reduction")
    x_column = next((c for c in spec["columns"] if c["metric"] == x_metric), None)
    series = figure_series(spec)
    baseline_column = next((c for c in spec["columns"] if c["metric"] == "unpruned_top1"), None)
    points: dict[str, list[dict[str, Any]]] = {}  # panel (the runs' model) -> its points
    names: dict[str, set[str]] = {}  # panel -> the rows' unpruned names
    baselines: dict[str, float] = {}
    for row_index, row in enumerate(spec["rows"]):
        paper_x = _paper_value(row, x_column) if x_column else None
        for index, column in enumerate(series):
            cell = _cell_runs(spec, row, column, runs)
            x, y = mean_std(cell[x_metric]), mean_std(cell[column["metric"]])
            if not (x.n and y.n):
                continue
            panel = str(cell["model"].iloc[0])
            names.setdefault(panel, set()).add(row["unpruned_name"])
            paper_y = _paper_value(row, column) if column["key"] != "plot" else None
            first = cell.iloc[0]
            points.setdefault(panel, []).append(
                {
                    "row": row_index,
                    "series": index,
                    "key": run_style_key(first),
                    "policy": first.get("finetune"),
                    "x": x.mean,
                    "y": y.mean,
                    "error": y.std or 0.0,
                    "paper_x": paper_x.mean if paper_x else x.mean,
                    "paper_y": paper_y.mean if paper_y else None,
                }
            )
            if baseline_column is not None and panel not in baselines:
                base = mean_std(one_per_seed(_cell_runs(spec, row, baseline_column, runs))["unpruned_top1"])
                if base.n:
                    baselines[panel] = base.mean
    if not points:
        return None
    # a panel's title: its rows' model name (or the model key when they name it differently);
    # models of one title share a panel (a dense model of matched size next to the pruned ones)
    title_of = {panel: next(iter(names[panel])) if len(names[panel]) == 1 else panel for panel in points}
    titled: dict[str, list[dict[str, Any]]] = {}
    for panel, panel_points in points.items():
        titled.setdefault(title_of[panel], []).extend(panel_points)
    baselines = {title_of[panel]: value for panel, value in baselines.items()}
    points = titled
    panels = list(points)
    every = [p for panel in panels for p in points[panel]]
    rows_used = sorted({p["row"] for p in every})
    series_used = sorted({p["series"] for p in every})
    key_of_row = {p["row"]: p["key"] for p in every}
    policy_of_row = {p["row"]: p["policy"] for p in every}
    fills = _series_fills(every, series_used) if len(series_used) > 1 else {}
    categorical = {panel: _one_x(points[panel]) for panel in panels}

    def fill_of(p: Mapping[str, Any]) -> str:
        if categorical[p["panel"]]:
            return "full"  # the column is the x position
        if fills:
            return fills[p["series"]]
        return POLICY_FILLS.get(str(p["policy"]), "full")

    for panel in panels:
        for p in points[panel]:
            p["panel"] = panel
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    width = max(6.4, 4.0 * ncols + 0.8)
    if any(categorical.values()):
        width = max(width, min(12.0, 1.6 + 0.55 * len(rows_used) * len(series_used) * ncols))
    figure = Figure(figsize=(width, 3.4 * nrows + 2.0), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(nrows, ncols, squeeze=False)
    for axes in grid.flat[len(panels) :]:
        axes.set_visible(False)
    ylabel = plot.get("ylabel") or (
        "test top-1 (%), best epoch"
        if all(c["metric"] == "final_top1" for c in series)
        else "test top-1 (%), last epoch"
        if all(c["metric"] == "final_top1_last" for c in series)
        else "test top-1 (%)"
    )
    xlabel = plot.get("xlabel") or X_LABELS.get(x_metric) or (x_column["label"] if x_column else x_metric)
    log_x = plot.get("xscale") == "log"
    # a row's legend marker; rows of one method that would share it get a letter, written beside
    # each of their points too (two dense nets, two FLOP targets, ResNet-56-A and -B)
    row_fill = {
        i: "full" if fills or all(categorical.values()) else POLICY_FILLS.get(str(policy_of_row[i]), "full")
        for i in rows_used
    }
    handle_of = {i: (key_of_row[i], row_fill[i]) for i in rows_used}
    shared = [i for i in rows_used if sum(handle_of[j] == handle_of[i] for j in rows_used) > 1]
    tag_of = {i: "abcdefghijklmnopqrstuvwxyz"[n % 26] for n, i in enumerate(shared)}
    dodged = False
    for axes, panel in zip(grid.flat, panels, strict=False):
        panel_points = points[panel]
        if categorical[panel]:
            _draw_categories(axes, panel_points, series, xlabel, tag_of)
        else:
            # ours and the paper's values: one list, spread where they would coincide
            drawn = [(p["x"], p["y"], p, False) for p in panel_points]
            drawn += [(p["paper_x"], p["paper_y"], p, True) for p in panel_points if p["paper_y"] is not None]
            x_span = _display_span([d[0] for d in drawn], log=log_x)
            ys = [v for p in panel_points for v in (p["y"] - p["error"], p["y"] + p["error"])]
            ys += [d[1] for d in drawn]
            y_span = _display_span(ys, margin=0.15)
            offsets = dodge_offsets([(d[0], d[1]) for d in drawn], x_span, y_span, log_x=log_x, near=0.03, step=0.032)
            dodged |= any(o != (1.0 if log_x else 0.0) for o in offsets)
            for (x, y, p, paper), offset in zip(drawn, offsets, strict=True):
                style = marker_kwargs(p["key"], fill_of(p), hollow=paper)
                if paper:
                    axes.plot([shifted(x, offset, log_x)], [y], linestyle="none", **style)
                else:
                    axes.errorbar(
                        [shifted(x, offset, log_x)], [y], yerr=[p["error"]], capsize=3, linestyle="none", **style
                    )
                    if p["row"] in tag_of:
                        axes.annotate(
                            tag_of[p["row"]],
                            (shifted(x, offset, log_x), y),
                            xytext=(6, 4),
                            textcoords="offset points",
                            fontsize=8,
                            fontweight="bold",
                            color=style["color"],
                        )
            if log_x:
                axes.set_xscale("log")
            elif not plot.get("xscale"):
                low, high = min(d[0] for d in drawn), max(d[0] for d in drawn)
                if high - low < 0.05 * max(abs(low), abs(high), 1.0):  # a readable span, not 34.198 ... 34.212
                    axes.set_xlim(*x_span)
            axes.set_xlabel(xlabel, fontsize=8)
            axes.margins(x=0.2, y=0.15)
        if panel in baselines:
            axes.axhline(baselines[panel], color="0.4", linestyle="--", linewidth=1)
        axes.set_title(panel, fontsize=9)
        axes.set_ylabel(ylabel, fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3, axis="y" if categorical[panel] else "both")
    if dodged:
        for axes, panel in zip(grid.flat, panels, strict=False):
            if not categorical[panel]:
                axes.set_xlabel(f"{xlabel}\n({DODGE_NOTE})", fontsize=8)

    def row_label(i: int) -> str:
        label = (f"{tag_of[i]}: " if i in tag_of else "") + spec["rows"][i]["name"]
        in_categories = [p for p in every if p["row"] == i and categorical[p["panel"]]]
        paper_xs = {round(p["paper_x"], 3) for p in in_categories if p["paper_y"] is not None}
        if in_categories and paper_xs and paper_xs != {round(in_categories[0]["x"], 3)}:
            x_name = x_column["label"] if x_column else x_metric
            label += f" (paper at {x_name} {', '.join(f'{v:g}' for v in sorted(paper_xs))})"
        return "\n".join(textwrap.wrap(label, 60))

    handles: list[Any] = []
    for i in rows_used:
        handles.append(Line2D([], [], linestyle="none", **marker_kwargs(key_of_row[i], row_fill[i])))
    labels = [row_label(i) for i in rows_used]
    if fills and not all(categorical.values()):
        for i in series_used:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    **{**marker_kwargs("dense", fills[i]), "color": "0.3", "markeredgecolor": "0.3", "marker": "o"},
                )
            )
            labels.append(f"{series[i]['label']} ({FILL_WORDS[fills[i]]})")
    if any(p["paper_y"] is not None for p in every):
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                **{**marker_kwargs("dense", hollow=True), "color": "0.3", "markeredgecolor": "0.3", "marker": "o"},
            )
        )
        labels.append("paper (hollow)")
    if baselines:
        handles.append(Line2D([], [], color="0.4", linestyle="--"))
        labels.append("unpruned (ours)")
    figure.suptitle(title, fontsize=9)
    ncol = 1 if max(len(label) for label in labels) > 40 or len(labels) <= 3 else min(3, len(labels))
    figure.legend(handles, labels, loc="outside lower left", ncol=ncol, fontsize=8, frameon=False)
    return figure


def _draw_categories(
    axes: Any,
    panel_points: Sequence[Mapping[str, Any]],
    series: Sequence[Mapping[str, Any]],
    xlabel: str,
    tag_of: Mapping[int, str],
) -> None:
    """A panel whose rows share one x: the columns (clean / white-box / ...) on the x axis, the
    rows side by side within each (method colour and marker), each value written beside its
    point; the paper's value hollow in the row's slot; the shared x named in the axis label."""
    columns = sorted({p["series"] for p in panel_points})
    rows = sorted({p["row"] for p in panel_points})
    slot = 0.8 / len(rows)
    for p in panel_points:
        x = columns.index(p["series"]) + (rows.index(p["row"]) - (len(rows) - 1) / 2) * slot
        style = marker_kwargs(p["key"])
        axes.errorbar([x], [p["y"]], yerr=[p["error"]], capsize=3, linestyle="none", **style)
        if p["paper_y"] is not None:
            axes.plot(
                [x], [p["paper_y"]], linestyle="none", **marker_kwargs(p["key"], hollow=True, size=MARKER_SIZE + 3)
            )
        axes.annotate(
            (f"{tag_of[p['row']]} " if p["row"] in tag_of else "") + f"{p['y']:.1f}",
            (x, p["y"]),
            xytext=(7, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=6.5,
            color=method_style(p["key"]).color,
        )
    axes.set_xticks(range(len(columns)), [series[i]["label"] for i in columns], fontsize=8)
    axes.set_xlim(-0.6, len(columns) - 0.4)
    for boundary in range(1, len(columns)):
        axes.axvline(boundary - 0.5, color="0.85", linewidth=0.8)
    shared_x = panel_points[0]["x"]
    axes.set_xlabel(f"every row at {xlabel} = {shared_x:.2f} (ours): the columns side by side", fontsize=8)
    axes.margins(y=0.12)


def build_sweep_table(
    spec: Mapping[str, Any], runs: pd.DataFrame, group: BudgetGroup | None, figures: bool = True
) -> ReportTable:
    """Uniform-ratio runs of one budget group: ratio → reductions, unpruned and final top-1."""
    labels = [
        "Model",
        "Method",
        "Fine-tune",
        "Ratio",
        "n",
        "FLOPs↓",
        "Params↓",
        "FLOPs×",
        "Measured× CPU b1",
        "Measured× CPU b64",
        "Measured× GPU",
        "2nd-stage ep",
        "Unpruned top-1",
        "Final top-1",
    ]
    robust = [c for c in ("robust_top1_wb", "robust_top1_bb") if c in runs and runs[c].notna().any()]
    labels += [{"robust_top1_wb": "WB PGD top-1", "robust_top1_bb": "BB PGD top-1"}[c] for c in robust]
    rows, records = [], []
    missed_notes: list[str] = []  # rows with runs that missed their target
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
            noisy = {
                name: within_noise(cell_runs[name], cell_runs.get(f"{name}_lo"), cell_runs.get(f"{name}_hi"))
                for name in SPEEDUP_COLUMNS
                if name != "flops_speedup"
            }
            unpruned_text = format_mean_std(unpruned, with_n=False)
            if unpruned.n and unpruned.n != final.n:
                unpruned_text += f" n={unpruned.n}"
            missed_runs = cell_runs[cell_runs["target_met"] == False] if "target_met" in cell_runs else []  # noqa: E712
            mark = MISSED_MARK if len(missed_runs) else ""
            if mark:
                asked, achieved = mean_std(missed_runs["target_asked"]), mean_std(missed_runs["target_achieved"])
                missed_notes.append(
                    f"{model} {label} {finetune} {ratio:g}: {len(missed_runs)} of {len(cell_runs)} runs asked "
                    f"{asked.mean:.1f}%, achieved {_reduction_text(achieved)} "
                    f"{TARGET_WORDS.get(str(missed_runs['target_quantity'].iloc[0]), 'of the target')}"
                )
            rows.append(
                [
                    model,
                    label,
                    finetune,
                    f"{ratio:g}",
                    str(final.n),
                    _reduction_text(flops) + mark if flops.n else "",
                    _reduction_text(params) if params.n else "",
                    *(f"{'≈' if noisy.get(name) else ''}{v.mean:.2f}×" if v.n else "—" for name, v in speedups.items()),
                    stage_epochs,
                    unpruned_text,
                    format_mean_std(final, with_n=False) + mark,
                    *(format_mean_std(mean_std(cell_runs[c]), with_n=False) or "—" for c in robust),
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
                    **{f"{name}_within_noise": noisy[name] if speedups[name].n else None for name in noisy},
                    "stage_epochs": stage_epochs,
                    "unpruned_mean": _rounded(unpruned.mean),
                    "unpruned_std": _rounded(unpruned.std),
                    "unpruned_n": unpruned.n,
                    "final_mean": _rounded(final.mean),
                    "final_std": _rounded(final.std),
                    "final_n": final.n,
                    "target_missed_n": len(missed_runs),
                    **{f"{c}_mean": _rounded(mean_std(cell_runs[c]).mean) for c in robust},
                    **_group_record(group),
                }
            )
    # a measured column no run has is left out (GPU on a CPU-only machine)
    keep = [i for i, label in enumerate(labels) if not label.startswith("Measured") or any(r[i] != "—" for r in rows)]
    if not rows:
        keep = [i for i, label in enumerate(labels) if not label.startswith("Measured")]
    header_groups = [(labels[i], []) for i in keep]
    rows = [[row[i] for i in keep] for row in rows]
    table_command = " ".join([spec["command"], *budget_overrides(spec, group)])
    legend = cell_legend(rows, False, True).replace("Cells: ours", "Cells: ours (top-1 %)")
    caption = (
        f"{legend} {ACCURACY_NOTE}. "
        f"Runs with a uniform pruning ratio (key.ratio set). Example sweep: `{table_command}`."
    )
    if missed_notes:
        caption += f" Targets missed ({MISSED_MARK}): {'; '.join(missed_notes)}."
    attacks = sorted({a for a in runs.get("robust_attack", pd.Series(dtype=object)).dropna()}) if robust else []
    if attacks:
        caption += (
            " WB / BB PGD top-1: robust accuracy (%) under white-box / black-box (transferred from a separately "
            "trained standard net) attack, for the runs evaluated with robustness=pgd (— otherwise): "
            f"{'; '.join(attacks)}."
        )
    subtitle = group.describe() if group is not None else "no done uniform-ratio runs yet"
    table = ReportTable(
        spec["name"],
        group,
        spec["title"],
        subtitle,
        caption,
        header_groups,
        rows,
        pd.DataFrame.from_records(records),
        key_columns=4,
        legend=legend,
        command=table_command,
    )
    shared = shared_settings(runs) if not runs.empty else {}
    long_shared = {
        m: text for m, text in shared.items() if len(_parse_settings(text)) > 2 or m in varying_methods(runs)
    }
    if long_shared:
        table.footnotes.append(
            "Settings every run of a method shares: " + "; ".join(f"{m}: {t}" for m, t in long_shared.items())
        )
    if figures and group is not None and not runs.empty:
        budget_lines = group.describe().replace(" · ", "\n")
        models = ", ".join(sorted(set(runs["model"])))
        table.figure = build_sweep_figure(runs, f"{spec['title']} — {models}\n{budget_lines}")
        table.footnotes.append(f"![top-1 vs FLOPs reduction]({table.file_stem}.png)")
    return table


def _parse_settings(text: Any) -> list[str]:
    """``settings_text``'s ``"a=1, b=x"`` back into its ``name=value`` items."""
    return re.split(r", (?=[A-Za-z_][A-Za-z0-9_]*=)", text) if isinstance(text, str) and text else []


def varying_methods(runs: pd.DataFrame) -> set[str]:
    """Methods whose runs differ in their settings."""
    return {method for method, settings in runs.groupby("method")["settings"] if len(set(settings)) > 1}


def shared_settings(runs: pd.DataFrame) -> dict[str, str]:
    """Per method: the settings every one of its runs in ``runs`` has alike (listed once below a
    table instead of in every label)."""
    out = {}
    for method, settings in runs.groupby("method", sort=True)["settings"]:
        sets = [set(_parse_settings(text)) for text in settings]
        common = set.intersection(*sets) if sets else set()
        if common:
            out[method] = ", ".join(sorted(common))
    return out


def method_labels(runs: pd.DataFrame) -> list[str]:
    """Per run: the method, its variant when set (TAS: kd / nokd) and the settings in which its
    runs differ, e.g. ``network_slimming (sparsity=0.0001)``, ``tas nokd``: runs with different
    labels are never averaged together. Settings all runs of a method share are left out of the
    label (``shared_settings``)."""
    shared = {method: set(_parse_settings(text)) for method, text in shared_settings(runs).items()}
    varying = varying_methods(runs)
    labels = []
    for method, variant, settings in zip(runs["method"], runs["variant"], runs["settings"], strict=True):
        label = method if variant is None or pd.isna(variant) else f"{method} {variant}"
        items = _parse_settings(settings)
        if method in varying:
            items = [item for item in items if item not in shared.get(method, set())]
        elif len(items) > 2:  # many settings, all alike: listed once below the table
            items = []
        labels.append(f"{label} ({', '.join(items)})" if items else label)
    return labels


def build_sweep_figure(runs: pd.DataFrame, title: str) -> Any:
    """Top-1 (mean, std error bars) vs FLOPs reduction, one line per (model, method, finetune
    policy), each distinct unpruned baseline as a dashed horizontal line. A method has its
    colour and marker shape of every figure (``pruning.figure_style``), the policy is the line
    style and the marker's fill (fine-tuned full, scratch-E left half, scratch-B right half); a
    second label of the same method (TAS without KD, another model or setting) is drawn hollow
    and a third and later smaller. Points that would coincide are offset sideways (the x label
    says so). Uses the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # runs that differ in variant or method settings (e.g. slimming's sparsity) are separate lines
    runs = runs.assign(method=method_labels(runs), style_key=[run_style_key(r) for _, r in runs.iterrows()])
    figure = Figure(figsize=(7.0, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    lines = sorted({(m, meth) for m, meth in zip(runs["model"], runs["method"], strict=True)})
    key_of = {
        line: runs[(runs["model"] == line[0]) & (runs["method"] == line[1])]["style_key"].iloc[0] for line in lines
    }
    rank_of: dict[tuple[str, str], int] = {}  # the n-th (model, label) of one method: hollow, then smaller
    for line in lines:
        rank_of[line] = sum(key_of[other] == key_of[line] for other in rank_of)
    several_methods = runs["method"].nunique() > 1
    several_models = runs["model"].nunique() > 1  # one model: named in the title, not in every label
    drawn = []  # (model, label, policy, points)
    for (model, method, finetune), line_runs in runs.groupby(["model", "method", "finetune"], sort=True):
        points = []
        for _, ratio_runs in line_runs.groupby("ratio", sort=True):
            flops, final = mean_std(ratio_runs["flops_reduction"]), mean_std(ratio_runs["final_top1"])
            if flops.n and final.n:
                points.append((flops.mean, final.mean, final.std or 0.0))
        if points:
            drawn.append((model, method, finetune, sorted(points)))
    every = [(x, y) for *_, points in drawn for x, y, _ in points]
    errors = [v for *_, points in drawn for _, y, e in points for v in (y - e, y + e)]
    offsets = iter(
        dodge_offsets(
            every,
            _display_span([x for x, _ in every], margin=0.05),
            _display_span(errors, margin=0.05),
            near=0.022,
            step=0.02,
        )
        if every
        else []
    )
    dodged = False
    for model, method, finetune, points in drawn:
        label = " · ".join([*([model] if several_models else []), *([method] if several_methods else []), finetune])
        xs, ys, errs = zip(*points, strict=True)
        shifts = [next(offsets) for _ in xs]
        dodged |= any(shifts)
        rank = rank_of[(model, method)]
        style = marker_kwargs(
            key_of[(model, method)],
            "none" if rank == 1 else POLICY_FILLS.get(finetune, "full"),
            size=MARKER_SIZE if rank < 2 else MARKER_SIZE - 2.5,
        )
        axes.errorbar(
            [x + s for x, s in zip(xs, shifts, strict=True)],
            ys,
            yerr=errs,
            capsize=3,
            label=label,
            linestyle=POLICY_LINESTYLES.get(finetune, "-"),
            linewidth=1.2 if rank == 1 else 1.5,
            **style,
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
                color = method_style(key_of[(model, method)]).color
                axes.axhline(baseline.mean, color=color, linestyle="--", linewidth=1)
    for (model, text), methods in baselines.items():
        color = method_style(key_of[(model, methods[0])]).color
        axes.plot(
            [],
            [],
            color=color,
            linestyle="--",
            linewidth=1,
            label=f"{model + ' ' if several_models else ''}unpruned"
            f"{' (' + ', '.join(methods) + ')' if several_methods else ''}: {text}",
        )
    axes.set_xlabel("FLOPs reduction (%)" + (f"\n({DODGE_NOTE})" if dodged else ""))
    axes.set_ylabel("top-1 test accuracy (%), best over epochs")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    # the legend goes below the axes (never over the points), long labels wrapped, the figure
    # grown to hold it; write_tables saves with a tight bounding box, so nothing is clipped
    handles, labels = axes.get_legend_handles_labels()
    labels = ["\n".join(textwrap.wrap(label, 95)) for label in labels]
    legend_lines = sum(label.count("\n") + 1 for label in labels)
    figure.set_size_inches(8.0, 4.8 + 0.16 * legend_lines)
    axes.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    return figure


def build_tables(spec: Mapping[str, Any], runs: pd.DataFrame, figures: bool = True) -> list[ReportTable]:
    """One table per budget group with runs for ``spec``; the empty table when there are none.
    ``figures=False``: the tables alone (no matplotlib work)."""
    done = runs[runs["status"] == "done"] if "status" in runs else runs
    sweep = spec["kind"] == "ratio_sweep"
    if sweep and "final_bpc" in done:  # the sweep plots top-1: language-model runs have their own tables
        done = done[done["final_bpc"].isna()]

    dry = runs[runs["status"] == "dry_run"] if "status" in runs else runs.iloc[0:0]

    def build(used: pd.DataFrame, group: BudgetGroup | None) -> ReportTable:
        # architecture-only cells may come from dry runs too (counts do not depend on training);
        # done runs count only in their own budget group (a trained method's counts may differ)
        arch = pd.concat([used, dry]) if len(dry) else used
        if sweep:
            return build_sweep_table(spec, used, group, figures)
        return build_paper_table(spec, used, group, arch, figures)

    tables = []
    paper_budget = False  # a table at the spec's default (the paper's) budget: file <spec>.{md,csv,tex}
    for group, group_runs in split_by_budget(done):
        used = _table_runs(spec, group_runs)
        if used.empty:
            continue
        before = len(used)
        used, left_out = one_net_per_baseline(used)
        table = build(used, group)
        if is_paper_budget(spec, group) and not paper_budget:
            stem = table.file_stem
            table.paper_budget = paper_budget = True  # its files (and the figure it links) are <spec>.*
            table.footnotes = [note.replace(f"({stem}.png)", f"({table.file_stem}.png)") for note in table.footnotes]
        table.replaces_placeholder = not spec.get("default_budget")
        if left_out:
            log.warning("prune-report: %s (%s): %s", spec["name"], group.describe(), " ".join(left_out))
            count = before - len(used)
            table.caption += (
                f" Left out: {count} {'runs that descend' if count > 1 else 'run that descends'} from another dense "
                "net under the same baseline cache id (never averaged or compared; listed below)."
            )
            table.footnotes += left_out
        tables.append(table)
    if not tables or (spec.get("default_budget") and not paper_budget):
        # the paper's table keeps its file while no run has the paper's budget: its empty cells
        # name the commands that fill them (short-budget runs have tables of their own)
        tables.append(build(done.iloc[0:0], None))
    return tables


def is_paper_budget(spec: Mapping[str, Any], group: BudgetGroup | None) -> bool:
    """Whether a budget group has the spec's ``default_budget`` (the paper's recipe; an
    evidence table's own short budget); False for a spec without one."""
    default = spec.get("default_budget")
    if group is None or not default:
        return False
    return group.pretrain_epochs == default.get("pretrain_epochs") and group.train_subset == default.get("train_subset")


RUN_SEPARATOR = ", "  # between the run directories a left-out note lists


def _net_text(runs: pd.DataFrame, with_checksum: bool) -> str:
    first = runs.iloc[0]
    top1 = first["unpruned_top1"]
    text = "pretrain top-1 ?" if top1 is None or pd.isna(top1) else f"pretrain top-1 {top1:.2f}"
    return text + (f", weights sha256 {str(first['baseline_sha256'])[:12]}" if with_checksum else "")


def one_net_per_baseline(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs of one table with one dense net per baseline cache id, and a note per id that
    named more than one net (a baseline retrained under another build, e.g. pretrain top-1 58.09
    and 57.25 under one id): runs descending from different nets are never averaged or compared.
    Two runs of one ``baseline_id`` descend from different nets when their ``baseline_sha256``
    differ (where every run of the id recorded one), else when their recorded pretrain top-1
    (best and last epoch) differ. Kept: the net most of the table's runs descend from (a tie: the
    one of the most recently finished run); the note names the runs left out."""
    if runs.empty or "baseline_id" not in runs or runs["baseline_id"].isna().all():
        return runs, []
    keep = pd.Series(True, index=runs.index)
    notes = []
    for baseline_id, group in runs[runs["baseline_id"].notna()].groupby("baseline_id", sort=True):
        with_checksum = bool(group["baseline_sha256"].notna().all())
        if with_checksum:
            nets = group["baseline_sha256"].astype(str)
        else:
            nets = group["unpruned_top1"].astype(str) + "/" + group["unpruned_top1_last"].astype(str)
        if nets.nunique() < 2:
            continue
        counts = nets.value_counts()
        latest = group["finished"].fillna("").astype(str).groupby(nets).max()
        kept = max(counts.index, key=lambda net: (counts[net], latest.get(net, "")))
        dropped = group[nets != kept]
        keep[dropped.index] = False
        others = "; ".join(
            f"{_net_text(net_runs, with_checksum)}: "
            + RUN_SEPARATOR.join(sorted(net_runs["run_path"].fillna(net_runs["run_dir"]).astype(str)))
            for _, net_runs in dropped.groupby(nets[dropped.index], sort=True)
        )
        notes.append(
            f"Baseline {baseline_id} names more than one dense net: kept the {counts[kept]} runs from "
            f"{_net_text(group[nets == kept], with_checksum)}; left out {len(dropped)} from another net ({others}). "
            "Re-run the left-out runs from one baseline to bring them back."
        )
    return runs[keep], notes


# --------------------------------------------------------------------------- rendering


MAX_MODEL_COLUMN = 24  # a wider "Model" column is left out (the row's name tells the model too)
TERMINAL_WIDTH = 120  # a table part (its raw markdown, its terminal rendering) fits this many columns
LATEX_TEXT_WIDTH_PT = 397.0  # a paper's text width (NeurIPS / ICLR: 5.5 in); each LaTeX part fits it
LATEX_COLUMN_PT = 8.0  # 2 \tabcolsep (4 pt each)
LATEX_TEXT_HEIGHT_PT = 550.0  # a taller float (estimate) becomes a longtable; NeurIPS text height: 650 pt
LATEX_ROW_PT = 10.5  # one tabular row at \footnotesize (9.5 pt baselineskip + the rule's share)


def display_width(text: Any) -> int:
    """Terminal columns a cell takes (±, ×, Δ... take one each)."""
    return cell_len(str(text))


def column_parts(widths: Sequence[float], key_columns: int, budget: float, overhead: float) -> list[list[int]]:
    """Split a table's columns into parts that each fit ``budget``: every part repeats the
    ``key_columns`` leading columns (the row's name) and takes as many of the following columns,
    in order, as fit (at least one). ``overhead``: what each column adds (separators, padding)."""
    keys = list(range(min(key_columns, len(widths))))
    key_width = sum(widths[i] + overhead for i in keys)
    parts: list[list[int]] = []
    current: list[int] = []
    used = key_width
    for i in range(len(keys), len(widths)):
        width = widths[i] + overhead
        if current and used + width > budget:
            parts.append(keys + current)
            current, used = [], key_width
        current.append(i)
        used += width
    parts.append(keys + current)
    return parts


def _column_widths(table: ReportTable) -> list[int]:
    columns = list(zip(table.headers, *table.rows, strict=True)) if table.rows else [(h,) for h in table.headers]
    return [max(display_width(cell) for cell in column) for column in columns]


def markdown_parts(table: ReportTable, width: int = TERMINAL_WIDTH) -> list[list[int]]:
    """Column parts whose GitHub-markdown lines fit ``width`` characters (``| a | b |``;
    tabulate makes a column at least its header + 2 wide)."""
    widths = [max(w, display_width(h) + 2) for w, h in zip(_column_widths(table), table.headers, strict=True)]
    return column_parts(widths, table.key_columns, width - 1, 3)


def latex_width_pt(text: Any) -> float:
    """An upper estimate of a cell's width in \\footnotesize (8 pt) Computer Modern: digits
    4.25 pt, capitals ~6 pt, lower case ~4 pt, spaces and punctuation ~2.5 pt, math symbols
    (±, ×, ≈, ...) ~6.6 pt (checked against pdflatex on every committed table)."""
    width = 0.0
    for char in str(text):
        if char.isdigit():
            width += 4.25
        elif char.isupper() or char in "%—mw":
            width += 6.2
        elif (char.isalpha() and char.isascii()) or char in "_=":
            width += 4.0
        elif char in " .,;:'()[]|-/!":
            width += 2.6
        else:
            width += 6.6
    return width


def latex_parts(table: ReportTable) -> list[list[int]]:
    """Column parts whose LaTeX tabular fits ``LATEX_TEXT_WIDTH_PT`` at \\footnotesize."""
    columns = list(zip(table.headers, *table.rows, strict=True)) if table.rows else [(h,) for h in table.headers]
    widths = [max(latex_width_pt(cell) for cell in column) for column in columns]
    return column_parts(widths, table.key_columns, 0.96 * LATEX_TEXT_WIDTH_PT, LATEX_COLUMN_PT)  # 4% spare


def _wrap(text: str, width: int = TERMINAL_WIDTH) -> str:
    """Prose wrapped to ``width`` (markdown joins the lines of a paragraph again)."""
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) if line else "" for line in text.splitlines())


def _markdown_cell(cell: str) -> str:
    return str(cell).replace("|", r"\|")


def render_markdown(table: ReportTable) -> str:
    """Title, data/budget line, caption, the table (GitHub markdown; split into parts of at most
    120 columns, each repeating the row's name), the numbered commands that fill its empty cells,
    and its footnotes."""
    bodies = []
    parts = markdown_parts(table)
    for number, part in enumerate(parts, start=1):
        body = tabulate(
            [[_markdown_cell(row[i]) for i in part] for row in table.rows],
            headers=[table.headers[i] for i in part],
            tablefmt="github",
            disable_numparse=True,
        )
        bodies.append(body if len(parts) == 1 else f"Part {number} of {len(parts)}\n\n{body}")
    sections = [f"# {table.title}", _wrap(table.subtitle), _wrap(table.caption), *bodies]
    if table.commands:
        lines = [f"- c{i}: `{command}`" for i, command in enumerate(table.commands, start=1)]
        sections.append("Commands that fill the empty cells:\n\n" + "\n".join(lines))
    sections += [note if note.startswith("![") else _wrap(note) for note in table.footnotes]
    return "\n\n".join(sections) + "\n"


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "≈": r"$\approx$",
    "×": r"$\times$",
    "−": "-",
    "–": "--",
    "`": "",
    "→": r"$\rightarrow$",
    "∞": r"$\infty$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "ε": r"$\varepsilon$",
    "λ": r"$\lambda$",
    "α": r"$\alpha$",
    "β": r"$\beta$",
    "σ": r"$\sigma$",
    "π": r"$\pi$",
    "’": "'",
    "“": "``",
    "”": "''",
    **{symbol: latex for symbol, latex in LATEX_SYMBOLS.items() if symbol != "−"},
}
_LATEX_PATTERN = re.compile("|".join(re.escape(symbol) for symbol in LATEX_SPECIALS))


def latex_escape(text: Any) -> str:
    """Plain text as ASCII LaTeX: special characters escaped, ±, ×, Δ, ↓, †, ≈, ∞... as math
    symbols, accented letters as accents (é -> \\'{e}), anything else by its Unicode name."""
    escaped = _LATEX_PATTERN.sub(lambda m: LATEX_SPECIALS[m.group(0)], str(text))
    return "".join(char if char.isascii() else _latex_fallback(char) for char in escaped)


def _latex_fallback(char: str) -> str:
    decomposed = unicodedata.normalize("NFD", char)
    accents = {"\u0301": "'", "\u0300": "`", "\u0308": '"', "\u0302": "^", "\u0303": "~", "\u0327": "c"}
    if len(decomposed) == 2 and decomposed[0].isascii() and decomposed[1] in accents:
        return f"\\{accents[decomposed[1]]}{{{decomposed[0]}}}"
    return f"[{unicodedata.name(char, f'U+{ord(char):04X}').lower()}]"


def latex_height_pt(table: ReportTable, parts: Sequence[Sequence[int]] | None = None) -> float:
    """An upper estimate of the table float's height: the caption's lines (at \\footnotesize,
    ~95 characters a line of the 5.5 in text width) and, per part, its header, rules and rows."""
    parts = latex_parts(table) if parts is None else parts
    caption = len(f"{table.title}. {table.subtitle}. {table.caption}")
    caption_pt = (caption // 95 + 1) * 9.5 + 10.0
    part_pt = (len(table.rows) + 1) * LATEX_ROW_PT + 20.0  # rows + header, three rules, the gap to the next
    return caption_pt + len(parts) * part_pt + (len(parts) - 1) * 6.0  # \medskip between parts


def render_latex(table: ReportTable) -> str:
    """A ``table`` float when it fits a page (``latex_height_pt``), else one ``longtable`` per
    column part, which breaks across pages and repeats its header (``render_latex_float`` /
    ``render_longtable``)."""
    parts = latex_parts(table)
    if latex_height_pt(table, parts) > LATEX_TEXT_HEIGHT_PT:
        return render_longtable(table, parts)
    return render_latex_float(table)


def _latex_comments(table: ReportTable) -> list[str]:
    """The commands and footnotes as LaTeX comments."""

    def comment(lines: Iterable[str]) -> list[str]:
        return [f"% {line}" for text in lines for line in str(text).splitlines()]

    out = []
    if table.commands:
        out += comment(["Commands that fill the empty cells:"])
        out += comment(f"c{i}: {command}" for i, command in enumerate(table.commands, start=1))
    return out + comment(table.footnotes)


def render_longtable(table: ReportTable, parts: Sequence[Sequence[int]] | None = None) -> str:
    """A table taller than a page: each column part a ``longtable`` (package longtable) that
    breaks across pages, its header repeated on every page ("continued"), the caption and label
    on the first; \\footnotesize, booktabs rules, 5.5 in wide as the float."""
    parts = latex_parts(table) if parts is None else parts
    caption = f"{latex_escape(table.title)}. {latex_escape(table.subtitle)}. {latex_escape(table.caption)}"
    out = [
        "% generated by prune-report; needs \\usepackage{booktabs,longtable}; fits a 5.5 in text width at "
        "\\footnotesize; taller than a page, so it breaks across pages",
        "\\begingroup",
        "\\footnotesize",
        "\\setlength{\\tabcolsep}{4pt}",
    ]
    for number, part in enumerate(parts):
        spec = "".join("l" if i < table.key_columns else "r" for i in part)
        header = " & ".join(latex_escape(table.headers[i]) for i in part) + " \\\\"
        which = f" (part {number + 1} of {len(parts)})" if len(parts) > 1 else ""
        out.append(f"\\begin{{longtable}}{{{spec}}}")
        if number == 0:
            out.append(f"\\caption{{{caption}}}\\label{{tab:{table.file_stem}}} \\\\")
        else:
            out.append(f"\\caption*{{Table~\\ref{{tab:{table.file_stem}}}{which}.}} \\\\")
        out += ["\\toprule", header, "\\midrule", "\\endfirsthead"]
        out.append(f"\\multicolumn{{{len(part)}}}{{l}}{{Table~\\ref{{tab:{table.file_stem}}}{which}, continued}} \\\\")
        out += ["\\toprule", header, "\\midrule", "\\endhead", "\\bottomrule", "\\endfoot"]
        out += [" & ".join(latex_escape(row[i]) for i in part) + " \\\\" for row in table.rows]
        out.append("\\end{longtable}")
    out.append("\\endgroup")
    out += _latex_comments(table)
    return "\n".join(out) + "\n"


def render_latex_float(table: ReportTable) -> str:
    """A complete ``table`` float (booktabs, \\footnotesize) that fits a paper's text width
    (5.5 in): a wide table is split into stacked tabulars, each repeating the row's name. The
    caption names the data, the budget and the cell notation; the commands and footnotes follow
    as comments."""

    out = [
        "% generated by prune-report; needs \\usepackage{booktabs}; fits a 5.5 in text width at \\footnotesize",
        "\\begin{table}[htbp]",
        "\\centering",
        "\\footnotesize",
        "\\setlength{\\tabcolsep}{4pt}",
        f"\\caption{{{latex_escape(table.title)}. {latex_escape(table.subtitle)}. {latex_escape(table.caption)}}}",
        f"\\label{{tab:{table.file_stem}}}",
    ]
    for number, part in enumerate(latex_parts(table)):
        if number:
            out.append("\\par\\medskip")
        spec = "".join("l" if i < table.key_columns else "r" for i in part)
        out += [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        out.append(" & ".join(latex_escape(table.headers[i]) for i in part) + " \\\\")
        out.append("\\midrule")
        out += [" & ".join(latex_escape(row[i]) for i in part) + " \\\\" for row in table.rows]
        out += ["\\bottomrule", "\\end{tabular}"]
    out.append("\\end{table}")
    out += _latex_comments(table)
    return "\n".join(out) + "\n"


def render_csv(table: ReportTable) -> str:
    """One CSV row per table row, numeric columns separate."""
    return table.records.to_csv(index=False)


def render_rich(table: ReportTable, width: int = TERMINAL_WIDTH) -> Group:
    """The table for a terminal ``width`` columns wide: title, data/budget, the table (split into
    parts that fit, each repeating the row's name), the cell legend and the numbered commands."""
    widths = _column_widths(table)
    parts = column_parts(widths, table.key_columns, width - 1, 3)
    renderables: list[Any] = [Text(f"{table.title}", style="bold"), Text(table.subtitle, style="dim")]
    for part in parts:
        rich_table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for i in part:
            rich_table.add_column(table.headers[i], justify="left" if i < table.key_columns else "right")
        for row in table.rows:
            rich_table.add_row(*(Text(str(row[i])) for i in part))
        renderables.append(rich_table)
    renderables.append(Text(f"{table.legend} The whole table: {table.command}", style="dim"))
    if table.commands:
        renderables.append(Text("Commands that fill the empty cells:"))
        renderables += [Text(f"  c{i}: {command}") for i, command in enumerate(table.commands, start=1)]
    notes = [note for note in table.footnotes if note.startswith((UNVERIFIED_MARK, "n/i"))]
    renderables += [Text(note, style="dim") for note in notes]
    renderables.append(Text(""))
    return Group(*renderables)


# --------------------------------------------------------------------------- writing


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temp file in the same directory, then rename over ``path`` (pruning.io)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    atomic_write(Path(path), lambda f: f.write(data))


RENDERERS = {"md": render_markdown, "csv": render_csv, "latex": render_latex}


def figure_png(table: ReportTable) -> bytes | None:
    """The table's figure as PNG bytes (None without one)."""
    if table.figure is None:
        return None
    buffer = io.BytesIO()
    table.figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def write_tables(
    tables: Sequence[ReportTable],
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    pngs: dict[str, bytes] | None = None,
) -> list[Path]:
    """Write each table in ``formats`` (plus its figure, when a per-table format is chosen)
    under ``out_dir``; returns paths. Group tables replace the spec's empty placeholder table of
    the same formats. ``pngs`` collects each figure's bytes by file stem (for the HTML page)."""
    out_dir = Path(out_dir)
    written = []
    table_formats = [fmt for fmt in formats if fmt in FORMATS]
    for table in tables:
        for fmt in table_formats:
            path = out_dir / f"{table.file_stem}{FILE_SUFFIXES[fmt]}"
            write_atomic(path, RENDERERS[fmt](table))
            written.append(path)
            if table.group is not None and table.replaces_placeholder:
                placeholder = out_dir / f"{table.spec_name}{FILE_SUFFIXES[fmt]}"
                try:
                    placeholder.unlink(missing_ok=True)
                except OSError as e:
                    raise PruneLabError(os_error_message(e, placeholder, "remove")) from None
        png = figure_png(table) if table_formats or pngs is not None else None  # drawn only when used
        if png is not None and pngs is not None:
            pngs[table.file_stem] = png
        if png is not None and table_formats:
            path = out_dir / f"{table.file_stem}.png"
            write_atomic(path, png)
            written.append(path)
    return written


def results_label(results_root: str | Path) -> str:
    """How a page names the results root: as given when relative, else relative to the working
    directory when below it, else its folder name (never a machine's absolute path)."""
    root = Path(results_root)
    if not root.is_absolute():
        return root.as_posix()
    try:
        return root.resolve().relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return root.name


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
    scan = scan_runs(results_root)
    runs = scan.runs
    written: list[Path] = []
    every_table: list[ReportTable] = []
    pngs: dict[str, bytes] = {}
    for name in names or list(specs):
        tables = build_tables(specs[name], runs)
        every_table += tables
        if console is not None:
            for table in tables:
                if table.group is None:  # no runs yet: one line, the file has the commands
                    console.print(
                        Text(f"{table.title}: no runs yet (fill it: {table.command}; ", style="dim")
                        + Text(f"{table.file_stem}.md lists every cell's command)", style="dim")
                    )
                else:
                    console.print(render_rich(table, width=min(console.width, TERMINAL_WIDTH)))
        written += write_tables(tables, out_dir, formats, pngs)
        for table in tables:
            table.figure = None  # drawn once: free the figure
    if "html" in formats:
        from pruning.report_html import render_html

        done = int((runs["status"] == "done").sum()) if "status" in runs else len(runs)
        path = Path(out_dir) / HTML_NAME
        page = render_html(every_table, pngs, results_label(results_root), done)
        write_atomic(path, with_run_notices_html(page, scan))
        written.append(path)
    if console is not None:
        for line in run_notice_lines(scan):
            console.print(Text(line), overflow="fold", crop=False)
    return written


def run_notice_lines(scan: RunScan) -> list[str]:
    """The terminal's list of the runs no table shows: running, failed or interrupted (path,
    status, last update, error), then the count of skipped files (each was warned about)."""
    lines = []
    if scan.unfinished:
        lines.append(f"Runs not in any table ({len(scan.unfinished)}: still running, failed or interrupted):")
        for notice in scan.unfinished:
            updated = f" (updated {notice.updated})" if notice.updated else ""
            error = f": {notice.error}" if notice.error else ""
            lines.append(f"  {notice.status:<11} {notice.path}{updated}{error}")
    if scan.unreadable:
        lines.append(
            f"Skipped {len(scan.unreadable)} metrics.json that cannot be a run record (warned above): "
            + ", ".join(notice.path for notice in scan.unreadable)
        )
    return lines


def run_notices_html(scan: RunScan) -> str:
    """The HTML page's section listing the runs no table shows (empty when there are none)."""
    import html

    notices = [*scan.unfinished, *scan.unreadable]
    if not notices:
        return ""
    rows = "".join(
        f"<tr><td><code>{html.escape(n.path)}</code></td><td>{html.escape(n.status)}</td>"
        f"<td>{html.escape(n.updated)}</td><td>{html.escape(n.error)}</td></tr>"
        for n in notices
    )
    return (
        '<section id="runs-not-in-tables"><h2>Runs not in any table</h2>'
        f"<p>{len(scan.unfinished)} still running, failed or interrupted; {len(scan.unreadable)} metrics.json "
        "that cannot be a run record (skipped).</p>"
        "<table><thead><tr><th>run</th><th>status</th><th>updated</th><th>error</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>\n"
    )


def with_run_notices_html(page: str, scan: RunScan) -> str:
    """``page`` (pruning.report_html) with the runs-not-in-tables section before its tables."""
    section = run_notices_html(scan)
    if not section:
        return page
    for anchor in ("<main>", "</body>"):
        if anchor in page:
            return page.replace(anchor, section + anchor, 1)
    return page + section
