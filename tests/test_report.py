"""prune-report: tables from synthetic metrics.json files (no training).

The golden test compares the Rethinking table of a fixed set of runs with
tests/golden/rethinking_l1_cifar10.md; regenerate it with ``UPDATE_GOLDEN=1 pytest ...`` and
read the diff before committing it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pruning.report import (
    BudgetGroup,
    build_tables,
    format_mean_std,
    generate_reports,
    load_runs,
    load_specs,
    mean_std,
    render_markdown,
    split_by_budget,
)
from pruning.results import LatencyRecord, RunKey, RunMetrics, StageRecord

REPO = Path(__file__).resolve().parents[1]
SPEC_DIR = REPO / "conf" / "report"
GOLDEN = Path(__file__).resolve().parent / "golden" / "rethinking_l1_cifar10.md"

JPEG_LABEL = "CIFAR-10 (JPEG q75 copy)"
JPEG_SLUG = "cifar-10-jpeg-q75-copy_pre3_sub10000"
OFFICIAL_SLUG = "cifar-10_pre160_full"
REDUCTIONS = {  # (model, variant): (flops_reduction, params_reduction)
    ("vgg16", "A"): (34.21, 64.02),
    ("resnet56", "A"): (10.40, 9.34),
    ("resnet56", "B"): (27.63, 13.68),
}
SWEEP_REDUCTIONS = {0.2: (36.04, 35.91), 0.4: (64.12, 63.87), 0.7: (51.0, 88.5)}  # uniform ratio


def metrics_dict(
    model: str,
    *,
    method: str = "l1_norm",
    variant: str | None = "A",
    ratio: float | None = None,
    finetune: str = "finetune",
    seed: int = 0,
    final_top1: float = 92.0,
    unpruned_top1: float = 93.0,
    status: str = "done",
    data_label: str = JPEG_LABEL,
    pretrain_epochs: int = 3,
    train_subset: int | None = 10000,
    method_settings: dict[str, Any] | None = None,
    baseline_id: str | None = None,
    spec_dense: dict[str, Any] | None = None,
    finished: str | None = None,
) -> dict[str, Any]:
    """A metrics.json as prune-exp writes it, built from the results schema."""
    flops_reduction, params_reduction = (
        SWEEP_REDUCTIONS[ratio] if ratio is not None else REDUCTIONS.get((model, variant), (0.0, 0.0))
    )
    pretrain = StageRecord(
        top1=unpruned_top1 - 0.1,
        top1_best=unpruned_top1,
        top5=99.5,
        epochs=pretrain_epochs,
        wall_s=10.0,
        cached=True,
        baseline_id=baseline_id or f"{model}-{seed}",
    )
    metrics = RunMetrics(
        key=RunKey(
            data="cifar10", model=model, method=method, variant=variant, ratio=ratio, finetune=finetune, seed=seed
        ),
        status=status,
        data={
            "name": "cifar10",
            "label": data_label,
            "official_md5": False,
            "fingerprint": "ab12",
            "train_size": train_subset or 50000,
            "test_size": 10000,
            "train_subset": train_subset,
        },
        budget={"pretrain_epochs": pretrain_epochs, "batch_size": 64, "train_subset": train_subset},
        params_dense=1_000_000,
        params_pruned=int(1_000_000 * (1 - params_reduction / 100)),
        flops_dense=100_000_000,
        flops_pruned=int(100_000_000 * (1 - flops_reduction / 100)),
        params_reduction=params_reduction,
        flops_reduction=flops_reduction,
        flops_speedup=100 / (100 - flops_reduction),
        stages={"pretrain": pretrain},
        git_commit="0" * 40,
        command="prune-exp ...",
        run_dir="elsewhere",
        method_settings=method_settings or {},
        spec_dense=spec_dense,
        finished=finished,
    )
    if method == "none":
        metrics.final = {"top1": pretrain.top1, "top1_best": pretrain.top1_best, "top5": pretrain.top5}
    else:
        metrics.budget.update(stage_epochs=2, stage_lr=0.001)
        metrics.stages["prune"] = StageRecord(top1=50.0, top5=90.0, wall_s=0.1)
        metrics.stages[finetune] = StageRecord(
            top1=final_top1 - 0.2, top1_best=final_top1, top5=99.0, epochs=2, wall_s=5.0
        )
        metrics.final = {"top1": final_top1 - 0.2, "top1_best": final_top1, "top5": 99.0}
        # measured speedups smaller than the FLOPs speedup, as they usually are
        b1, b64 = 1 + flops_reduction / 400, 1 + flops_reduction / 200
        metrics.latency = {
            "cpu_b1": LatencyRecord(dense_ms=2.0 * b1, pruned_ms=2.0, speedup=b1, batch=1),
            "cpu_b64": LatencyRecord(dense_ms=40.0 * b64, pruned_ms=40.0, speedup=b64, batch=64),
        }
    return metrics.to_dict()


def write_run(root: Path, subdir: str, **fields: Any) -> Path:
    path = root / subdir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics_dict(**fields)))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Runs of two budget groups, plus runs that must be ignored."""
    root = tmp_path / "results"
    # budget group 1: JPEG copy, 3 pretrain epochs, 10000 training images
    write_run(root, "a/r56A-ft-s0", model="resnet56", seed=0, final_top1=92.10, unpruned_top1=92.80)
    write_run(root, "a/r56A-ft-s1", model="resnet56", seed=1, final_top1=92.50, unpruned_top1=93.00)
    write_run(
        root,
        "b/deeper/r56A-se-s0",
        model="resnet56",
        finetune="scratch_e",
        seed=0,
        final_top1=91.90,
        unpruned_top1=92.80,
    )
    write_run(root, "r56B-ft-s0", model="resnet56", variant="B", seed=0, final_top1=91.75, unpruned_top1=92.80)
    write_run(root, "vgg-sb-s0", model="vgg16", finetune="scratch_b", seed=0, final_top1=93.00, unpruned_top1=93.20)
    write_run(
        root,
        "dense/r110-s0",
        model="resnet110",
        method="none",
        variant=None,
        finetune="none",
        seed=0,
        unpruned_top1=93.30,
    )
    for ratio, finetune, seed, top1 in [
        (0.2, "finetune", 0, 91.0),
        (0.2, "finetune", 1, 91.4),
        (0.4, "finetune", 0, 90.2),
        (0.4, "scratch_b", 0, 90.6),
    ]:
        write_run(
            root,
            f"sweep/r{ratio}-{finetune}-s{seed}",
            model="resnet20",
            variant=None,
            ratio=ratio,
            finetune=finetune,
            seed=seed,
            final_top1=top1,
            unpruned_top1=91.9,
        )
    # ignored: not done, corrupt
    write_run(root, "r56A-sb-s0-running", model="resnet56", finetune="scratch_b", status="running", final_top1=10.0)
    (root / "broken").mkdir()
    (root / "broken" / "metrics.json").write_text('{"schema": 1, "status": "do')
    # budget group 2: official copy, paper budget
    write_run(
        root,
        "official/r56A-ft-s0",
        model="resnet56",
        seed=0,
        final_top1=93.05,
        unpruned_top1=93.25,
        data_label="CIFAR-10",
        pretrain_epochs=160,
        train_subset=None,
    )
    return root


@pytest.fixture
def specs() -> dict[str, dict[str, Any]]:
    return load_specs(SPEC_DIR)


def tables_by_stem(spec: dict[str, Any], runs: pd.DataFrame) -> dict[str, Any]:
    return {table.file_stem: table for table in build_tables(spec, runs)}


def test_load_runs_keeps_done_runs_and_skips_corrupt_files(results: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pruning.report"):
        runs = load_runs(results)
    assert len(runs) == 11
    assert not runs["run_dir"].str.endswith("running").any()
    assert any("broken" in record.getMessage() for record in caplog.records)
    dense = runs[runs["method"] == "none"].iloc[0]
    assert dense["unpruned_top1"] == 93.30 and dense["final_top1"] == 93.30


def test_mean_std_uses_sample_std_and_shows_it_from_two_seeds() -> None:
    assert format_mean_std(mean_std([92.10, 92.50])) == "92.30±0.28 (n=2)"
    assert format_mean_std(mean_std([93.41, None, float("nan")])) == "93.41 (n=1)"
    assert format_mean_std(mean_std([])) == ""


def test_budget_groups_are_never_averaged_together(results: Path, specs) -> None:
    runs = load_runs(results)
    groups = [group for group, _ in split_by_budget(runs)]
    assert groups == [BudgetGroup("CIFAR-10", 160, None), BudgetGroup(JPEG_LABEL, 3, 10000)]
    tables = tables_by_stem(specs["rethinking_l1_cifar10"], runs)
    # the paper-budget table is <spec>.md (never removed); other budgets get a suffix
    assert set(tables) == {f"rethinking_l1_cifar10__{JPEG_SLUG}", "rethinking_l1_cifar10"}
    official = render_markdown(tables["rethinking_l1_cifar10"])
    assert "93.05 (92.97±0.17†, +0.08)" in official and "92.30±0.28" not in official  # the paper's std too
    assert "schedule.epochs" not in official  # the paper's budget needs no overrides


def test_rethinking_markdown_matches_golden(results: Path, specs) -> None:
    tables = tables_by_stem(specs["rethinking_l1_cifar10"], load_runs(results))
    markdown = render_markdown(tables[f"rethinking_l1_cifar10__{JPEG_SLUG}"])
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(markdown, encoding="utf-8")
    assert markdown == GOLDEN.read_text(encoding="utf-8")


def test_empty_cell_shows_the_command_with_the_groups_budget(results: Path, specs) -> None:
    tables = tables_by_stem(specs["rethinking_l1_cifar10"], load_runs(results))
    markdown = render_markdown(tables[f"rethinking_l1_cifar10__{JPEG_SLUG}"])
    assert (
        "`prune-exp -m method=l1_norm model=resnet56 data=cifar10 method.variant=A "
        "finetune=scratch_b seed=0,1,2,3,4 schedule.epochs=3 data.train_subset=10000`" in markdown
    )
    assert "prune-exp -m experiment=rethinking_l1_cifar10" in " ".join(markdown.split())  # the caption is wrapped


def test_csv_has_numeric_paper_ours_and_delta_columns(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    generate_reports(results, out, names=["rethinking_l1_cifar10"], spec_dir=SPEC_DIR)
    table = pd.read_csv(out / f"rethinking_l1_cifar10__{JPEG_SLUG}.csv")
    row = table.set_index("pruned_model").loc["ResNet-56-A"]
    for column in (
        "finetune_paper_mean",
        "finetune_ours_mean",
        "finetune_ours_std",
        "finetune_ours_n",
        "finetune_delta",
    ):
        assert pd.api.types.is_numeric_dtype(table[column]), column
    assert row["finetune_paper_mean"] == 92.97 and row["finetune_paper_std"] == 0.17
    assert row["finetune_ours_mean"] == pytest.approx(92.30)
    assert row["finetune_ours_std"] == pytest.approx(0.2828, abs=1e-4)
    assert row["finetune_ours_n"] == 2
    assert pd.isna(row["finetune_delta"]) and row["finetune_delta_note"] == "short budget"  # 3 epochs: no Δ
    official = pd.read_csv(out / "rethinking_l1_cifar10.csv").set_index("pruned_model").loc["ResNet-56-A"]
    assert official["finetune_delta"] == pytest.approx(93.05 - 92.97)  # the paper's budget: Δ
    assert row["unpruned_ours_n"] == 2  # one baseline per seed, not per run
    assert row["scratch_b_ours_n"] == 0 and "finetune=scratch_b" in row["scratch_b_command"]


def test_latex_and_placeholder_files(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    empty_root = tmp_path / "no_runs"
    empty_root.mkdir()
    names = ["rethinking_l1_cifar10"]
    generate_reports(empty_root, out, names=names, spec_dir=SPEC_DIR)
    assert (out / "rethinking_l1_cifar10.md").is_file()  # empty table while no group has runs
    assert "prune-exp -m method=none model=vgg16" in (out / "rethinking_l1_cifar10.md").read_text()

    generate_reports(results, out, names=names, spec_dir=SPEC_DIR)
    latex = (out / f"rethinking_l1_cifar10__{JPEG_SLUG}.tex").read_text()
    assert r"\toprule" in latex and r"92.30$\pm$0.28 (92.97$\pm$0.17$^\dagger$)" in latex  # short budget: no Δ
    assert latex.count(r"\begin{table}") == 1 and r"\footnotesize" in latex
    assert "93.05 (92.97±0.17†, +0.08)" in (out / "rethinking_l1_cifar10.md").read_text()  # filled at the paper budget


def test_measured_speedup_prefers_gpu_then_cpu_batch64() -> None:
    from pruning.report import measured_speedups

    def run(latency: dict) -> RunMetrics:
        return RunMetrics.from_dict(
            {
                "schema": 2,
                "key": {"data": "d", "model": "m", "method": "x"},
                "latency": {k: {"dense_ms": v, "pruned_ms": 1.0, "speedup": v} for k, v in latency.items()},
            }
        )

    both = run({"cpu_b1": 1.1, "cpu_b64": 1.3, "cuda_b256": 1.5})
    assert measured_speedups(both)["measured_speedup"] == 1.5
    assert measured_speedups(run({"cpu_b1": 1.1, "cpu_b64": 1.3}))["measured_setting"] == "CPU b64"
    assert measured_speedups(run({}))["measured_speedup"] is None
    # the batch sizes are configurable: the columns follow what the run measured
    other = measured_speedups(run({"cpu_b8": 1.2, "cpu_b32": 1.4}))
    assert other["measured_speedup_cpu_b8"] == 1.2 and other["measured_setting"] == "CPU b32"


def test_schema_1_records_are_read_and_migrated_never_dropped(tmp_path: Path) -> None:
    """metrics.json files written before the typed schema still load, with every field kept."""
    old = metrics_dict("resnet56")
    old["schema"] = 1
    for name in ("evaluations", "cost_per_sample", "sparsity"):
        old.pop(name, None)
    old["some_field_of_that_time"] = {"x": 1}
    write = tmp_path / "runs" / "a" / "metrics.json"
    write.parent.mkdir(parents=True)
    write.write_text(json.dumps(old))
    runs = load_runs(tmp_path)
    assert len(runs) == 1 and runs.iloc[0]["final_top1"] == 92.0
    migrated = RunMetrics.from_dict(old)
    assert migrated.schema == 2 and migrated.other == {"some_field_of_that_time": {"x": 1}}
    assert migrated.to_dict()["some_field_of_that_time"] == {"x": 1}
    assert RunMetrics.from_dict(migrated.to_dict()).to_dict() == migrated.to_dict()  # round trip


def test_sweep_table_and_plot(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    written = generate_reports(results, out, names=["sweep"], spec_dir=SPEC_DIR)
    png = out / f"sweep__{JPEG_SLUG}.png"
    assert png in written and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / f"sweep__{JPEG_SLUG}.md").read_text()
    assert JPEG_LABEL in markdown and "pretrain 3 ep" in markdown
    assert "36.0%" in markdown and "91.20±0.28" in markdown
    sweep = pd.read_csv(out / f"sweep__{JPEG_SLUG}.csv")
    first = sweep.iloc[0]
    assert (first["ratio"], first["final_n"]) == (0.2, 2)
    assert first["final_mean"] == pytest.approx(91.2)
    assert not (out / f"sweep__{OFFICIAL_SLUG}.md").exists()  # no uniform-ratio runs there


def load_cli_main():
    path = REPO / "cli" / "report.py"
    spec = importlib.util.spec_from_file_location("prune_report_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_exit_codes(results: Path, tmp_path: Path, capsys) -> None:
    main = load_cli_main()
    out = tmp_path / "tables"
    assert main(["no_such_table", "--results-root", str(results), "--out", str(out)]) == 2
    assert "no_such_table" in capsys.readouterr().err
    assert main(["--results-root", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main(["rethinking_l1_cifar10", "--results-root", str(results), "--out", str(out), "--format", "md"]) == 0
    assert {p.name for p in out.iterdir()} == {  # the markdown and the figures it links to
        "rethinking_l1_cifar10.md",  # the paper-budget table
        f"rethinking_l1_cifar10__{JPEG_SLUG}.md",
        "rethinking_l1_cifar10.png",
        f"rethinking_l1_cifar10__{JPEG_SLUG}.png",
    }


def test_dry_runs_fill_architecture_cells_only(tmp_path: Path, specs) -> None:
    root = tmp_path / "results"
    dry = metrics_dict("resnet56", variant="B", status="dry_run")
    for key in ("stages", "final", "data", "latency"):
        dry.pop(key, None)
    path = root / "dry" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(dry))
    (table,) = build_tables(specs["rethinking_l1_cifar10"], load_runs(root))
    record = table.records.set_index("pruned_model").loc["ResNet-56-B"]
    assert record["flops_reduction_ours_mean"] == pytest.approx(27.63)
    assert record["flops_speedup_ours_mean"] == pytest.approx(100 / 72.37, rel=1e-3)
    assert record["finetune_ours_n"] == 0 and "prune-exp" in record["finetune_command"]
    assert table.group is None  # a dry run opens no budget group of its own


def test_runs_with_different_method_settings_are_never_averaged(tmp_path: Path, specs) -> None:
    """Slimming at one ratio with two sparsities: two sweep rows, and the paper row (s = 1e-4
    for VGG-19) takes only its own runs."""
    root = tmp_path / "results"
    for s, top1 in ((1e-4, 90.0), (1e-5, 80.0)):
        write_run(
            root,
            f"slim-{s}",
            model="vgg19",
            method="network_slimming",
            variant=None,
            ratio=0.7,
            final_top1=top1,
            method_settings={"sparsity": s},
            pretrain_epochs=160,
            train_subset=None,
        )
    for variant, top1 in (("kd", 70.0), ("nokd", 60.0)):  # TAS: the KD ablation is the variant
        write_run(
            root,
            f"tas-{variant}",
            model="vgg19",
            method="tas",
            variant=variant,
            ratio=0.7,
            final_top1=top1,
            pretrain_epochs=160,
            train_subset=None,
        )
    runs = load_runs(root)
    assert sorted(runs["settings"]) == ["", "", "sparsity=0.0001", "sparsity=1e-05"]
    out = tmp_path / "tables"
    generate_reports(root, out, names=["sweep", "rethinking_slimming"], spec_dir=SPEC_DIR)
    sweep = pd.read_csv(next(out.glob("sweep__*.csv")))
    assert sorted(sweep["final_mean"]) == [60.0, 70.0, 80.0, 90.0] and set(sweep["final_n"]) == {1}
    markdown = next(out.glob("sweep__*.md")).read_text()
    assert "network_slimming (sparsity=0.0001)" in markdown and "tas nokd" in markdown
    slimming = pd.read_csv(next(out.glob("rethinking_slimming*.csv")))
    vgg = slimming[slimming["pruned_model"] == "VGG-19 (C10, 70%)"].iloc[0]
    assert (vgg["finetune_ours_mean"], vgg["finetune_ours_n"]) == (pytest.approx(90.0), 1)


def test_a_paper_cell_mixing_method_settings_is_warned_about(tmp_path: Path, caplog) -> None:
    root = tmp_path / "results"
    for seed, settings in ((0, {}), (1, {"mode": "layerwise"})):
        write_run(
            root,
            f"r56a-{seed}",
            model="resnet56",
            variant="A",
            seed=seed,
            method_settings=settings,
            pretrain_epochs=160,
            train_subset=None,
        )
    with caplog.at_level(logging.WARNING):
        generate_reports(root, tmp_path / "tables", names=["rethinking_l1_cifar10"], spec_dir=SPEC_DIR)
    assert "different method settings (none recorded vs mode=layerwise)" in caplog.text


def test_migration_script_adds_method_settings_from_the_runs_config(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from tests.conftest import plain_cfg

    run_dir = tmp_path / "runs" / "slim"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = plain_cfg(["method=network_slimming", "method.sparsity=1e-5"], tmp_path)
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    old = metrics_dict("vgg19", method="network_slimming")
    del old["method_settings"]  # written before prune-exp recorded it
    (run_dir / "metrics.json").write_text(json.dumps(old))
    spec = importlib.util.spec_from_file_location(
        "migrate", Path(__file__).parents[1] / "scripts" / "migrate_method_settings.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path / "runs")]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["method_settings"] == {"sparsity": 1e-5}
    assert script.main([str(tmp_path / "nowhere")]) == 2


def test_column_parts_repeat_the_key_columns_and_fit_the_budget() -> None:
    from pruning.report import column_parts

    widths = [10, 30, 30, 30, 30]  # key column + four metric columns
    parts = column_parts(widths, 1, 80, 3)
    assert parts == [[0, 1, 2], [0, 3, 4]]
    assert all(sum(widths[i] + 3 for i in part) <= 80 for part in parts)
    assert column_parts([10, 200], 1, 80, 3) == [[0, 1]]  # a column wider than the budget stands alone


def test_every_committed_spec_fits_120_columns_and_its_latex_is_ascii(results: Path, tmp_path: Path) -> None:
    """The layout for every spec (with runs and empty): markdown table lines at most 120
    columns, the terminal rendering at 120 columns too, LaTeX pure ASCII with one table float."""
    from rich.cells import cell_len
    from rich.console import Console

    from pruning.report import render_latex, render_rich

    runs = load_runs(results)
    for spec in load_specs(SPEC_DIR).values():
        for table in build_tables(spec, runs, figures=False) + build_tables(spec, runs.iloc[0:0], figures=False):
            markdown = render_markdown(table)
            widest = max(cell_len(line) for line in markdown.splitlines() if line.startswith("|"))
            assert widest <= 120, (table.file_stem, widest)
            latex = render_latex(table)
            assert all(line.isascii() for line in latex.splitlines() if not line.startswith("%")), table.file_stem
            floated = latex.count(r"\begin{table}") == 1 and latex.count(r"\begin{tabular}") >= 1
            broken = r"\begin{table}" not in latex and latex.count(r"\begin{longtable}") >= 1  # taller than a page
            assert floated or broken, table.file_stem
            console = Console(width=120, record=True, file=io.StringIO())
            console.print(render_rich(table, width=120))
            assert max(cell_len(line) for line in console.export_text().splitlines()) <= 120, table.file_stem


@pytest.mark.integration
def test_latex_tables_compile_without_overfull_boxes_in_a_papers_text_width(results: Path, tmp_path: Path) -> None:
    """Each generated table, \\input into a 5.5 in x 9 in text-area article, compiles with pdflatex
    and overflows nothing: no overfull line, no float taller than the page (skips where pdflatex is
    not installed: Debian's texlive-latex-recommended)."""
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-recommended)")
    out = tmp_path / "tables"
    generate_reports(results, out, spec_dir=SPEC_DIR, formats=["latex"])
    for tex in sorted(out.glob("*.tex")):
        doc = tmp_path / f"doc_{tex.stem}.tex"
        doc.write_text(
            "\\documentclass[10pt]{article}\n\\usepackage[textwidth=5.5in,textheight=9in]{geometry}\n"
            "\\usepackage[T1]{fontenc}\n"
            f"\\usepackage{{booktabs,longtable}}\n\\begin{{document}}\n\\input{{{tex}}}\n\\end{{document}}\n"
        )
        done = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        log_text = (tmp_path / f"doc_{tex.stem}.log").read_text(errors="replace")
        assert done.returncode == 0, (tex.name, done.stdout[-2000:])
        assert "Overfull \\hbox" not in log_text, tex.name
        assert "Float too large" not in log_text, tex.name  # taller than a page: a longtable breaks it instead


# --------------------------------------------------------------------------- faults: bad metrics.json


def _bad_files() -> dict[str, str | bytes]:
    """Malformed metrics.json files, each with the words its warning must say."""

    def changed(edit) -> str:
        record = metrics_dict("resnet56", seed=7)
        edit(record)
        return json.dumps(record)

    return {
        "deeply_nested": "[" * 100_000 + "]" * 100_000,
        "deeply_nested_object": '{"schema": 2, "key": {"data": "c", "model": "m", "method": "x"}, "extras": '
        + "[" * 100_000
        + "]" * 100_000
        + "}",
        "json_list": "[1, 2, 3]",
        "json_string": '"done"',
        "empty": "",
        "truncated": '{"schema": 2, "status": "do',
        "binary": b"\xff\xfe\x00\x01garbage",
        "stages_list": changed(lambda r: r.update(stages=[1, 2])),
        "stages_string": changed(lambda r: r.update(stages="pretrain")),
        "stage_string": changed(lambda r: r["stages"].update(pretrain="x")),
        "latency_list": changed(lambda r: r.update(latency=[1])),
        "latency_string": changed(lambda r: r.update(latency="fast")),
        "latency_speedup_string": changed(lambda r: r["latency"]["cpu_b1"].update(speedup="x")),
        "top1_string": changed(lambda r: r["final"].update(top1_best="ninety")),
        "pretrain_top1_string": changed(lambda r: r["stages"]["pretrain"].update(top1_best="x")),
        "flops_string": changed(lambda r: r.update(flops_reduction="x")),
        "epochs_string": changed(lambda r: r["budget"].update(pretrain_epochs="three")),
        "ratio_string": changed(lambda r: r["key"].update(ratio="half")),
        "seed_string": changed(lambda r: r["key"].update(seed="zero")),
        "model_object": changed(lambda r: r["key"].update(model={"a": 1})),
        "label_object": changed(lambda r: r["data"].update(label={"a": 1})),
        "evaluation_string": changed(lambda r: r.update(evaluations={"pgd": "x"})),
        "top1_bool": changed(lambda r: r["final"].update(top1_best=True)),
        "huge_integer": changed(lambda r: r.update(flops_reduction=10**400)),
        "nan": changed(lambda r: r["final"].update(top1_best=float("nan"))),
        "infinity": changed(lambda r: r.update(flops_reduction=float("inf"))),
        "minus_infinity": changed(lambda r: r["final"].update(top1_best=float("-inf"))),
        "status_list": changed(lambda r: r.update(status=["done"])),
    }


def test_each_malformed_metrics_file_is_skipped_with_one_warning_and_every_table_is_written(
    tmp_path: Path, caplog
) -> None:
    from pruning.report import scan_runs

    root = tmp_path / "results"
    write_run(root, "good", model="resnet56", seed=0, final_top1=92.10, unpruned_top1=92.80)
    bad = _bad_files()
    for name, content in bad.items():
        path = root / "bad" / name / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with caplog.at_level(logging.WARNING, logger="pruning.report"):
        scan = scan_runs(root)
    assert list(scan.runs["run_dir"]) == [str(root / "good")]
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    for name in bad:  # one line per file, naming it and why
        (line,) = [w for w in warnings if f"/bad/{name}/metrics.json" in w]
        assert line.split("metrics.json: ", 1)[1], line
    assert len(warnings) == len(bad)
    assert "nested too deeply" in " ".join(w for w in warnings if "deeply_nested/" in w)
    assert "NaN" in next(w for w in warnings if "/nan/" in w)
    assert "stages is a JSON list, not an object" in next(w for w in warnings if "stages_list" in w)
    assert "final.top1_best is 'ninety', not a number" in next(w for w in warnings if "/top1_string/" in w)
    assert {n.status for n in scan.unreadable} == {"unreadable"} and len(scan.unreadable) == len(bad)

    table, _ = build_tables(load_specs(SPEC_DIR)["rethinking_l1_cifar10"], scan.runs, figures=False)
    assert table.by_row()["ResNet-56-A"]["Fine-tuned"].startswith("92.10 (")  # the good run's table

    main = load_cli_main()  # the command: exit 0, its tables written (one without a figure: fast)
    out = tmp_path / "tables"
    assert main(["rethinking_l1_imagenet", "--results-root", str(root), "--out", str(out), "--format", "csv"]) == 0
    assert (out / "rethinking_l1_imagenet.csv").is_file()


def test_running_failed_and_interrupted_runs_are_listed_in_the_terminal_and_the_html_page(tmp_path: Path) -> None:
    from rich.console import Console

    root = tmp_path / "results"
    write_run(root, "ok", model="resnet56")
    for status, error in (("running", None), ("failed", "CUDA out of memory"), ("interrupted", "SIGTERM (143)")):
        record = metrics_dict("resnet56", seed=3, status=status)
        record.update(error=error, updated="2026-12-01T10:00:00+00:00")
        path = root / "runs" / status / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    (root / "runs" / "garbled").mkdir()
    (root / "runs" / "garbled" / "metrics.json").write_text("[]")
    console = Console(width=120, record=True, file=io.StringIO())
    out = tmp_path / "tables"
    generate_reports(root, out, names=["rethinking_l1_imagenet"], formats=["html"], spec_dir=SPEC_DIR, console=console)
    text = console.export_text()
    assert "Runs not in any table (3: still running, failed or interrupted)" in text
    assert "failed      results/runs/failed (updated 2026-12-01T10:00:00+00:00): CUDA out of memory" in text
    assert "interrupted results/runs/interrupted" in text and "SIGTERM (143)" in text
    assert "running     results/runs/running" in text
    assert "Skipped 1 metrics.json" in text and "results/runs/garbled" in text
    page = (out / "report.html").read_text()
    section = page[page.index('id="runs-not-in-tables"') : page.index("<main>")]
    for words in ("results/runs/failed", "CUDA out of memory", "interrupted", "results/runs/garbled", "JSON object"):
        assert words in section, words


def test_a_baseline_cell_takes_only_the_dense_net_the_rows_own_method_trains_from(tmp_path: Path, specs) -> None:
    """A TAS ResNet-56 run (TAS shortcuts: another dense net) is not the L1-norm table's
    ResNet-56 "Unpruned", with or without L1-norm runs in the row; a dense-only run is."""
    root = tmp_path / "results"
    paper = {"pretrain_epochs": 160, "train_subset": None}
    tas_spec = {"name": "resnet56", "shortcut": "tas"}
    write_run(
        root, "tas", model="resnet56", method="tas", variant="kd", ratio=0.7, unpruned_top1=9.95,
        baseline_id="resnet56-tas", spec_dense=tas_spec, **paper,
    )  # fmt: skip
    (table,) = build_tables(specs["rethinking_l1_cifar10"], load_runs(root), figures=False)
    assert "9.95" not in table.by_row()["ResNet-56-A"]["Unpruned"]  # no L1-norm run yet: only the command
    assert table.by_row()["ResNet-56-A"]["Unpruned"].startswith("[c")

    l1_spec = {"name": "resnet56", "shortcut": "A"}
    write_run(root, "l1", model="resnet56", unpruned_top1=93.10, spec_dense=l1_spec, **paper)
    write_run(
        root, "dense", model="resnet56", method="none", variant=None, finetune="none", seed=1, unpruned_top1=93.30,
        spec_dense=l1_spec, **paper,
    )  # fmt: skip
    (table,) = build_tables(specs["rethinking_l1_cifar10"], load_runs(root), figures=False)
    cell = table.by_row()["ResNet-56-A"]["Unpruned"]
    assert cell.startswith("93.20±0.14 ") and "9.95" not in cell  # seed 0 of the L1 run, seed 1 dense-only
    assert table.records.set_index("pruned_model").loc["ResNet-56-A", "unpruned_ours_n"] == 2


def test_the_paper_budget_table_keeps_its_file_beside_short_budget_tables(
    results: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("pruning.report.build_row_figure", lambda *args, **kwargs: None)  # tables only: fast
    out = tmp_path / "tables"
    short = tmp_path / "short"
    write_run(short, "r56A", model="resnet56", seed=0, final_top1=92.10)  # a short budget only
    generate_reports(short, out, names=["rethinking_l1_cifar10"], formats=["md"], spec_dir=SPEC_DIR)
    paper_table = (out / "rethinking_l1_cifar10.md").read_text()
    assert "no done runs yet" in paper_table and "seed=0,1,2,3,4`" in paper_table  # the fill commands
    assert (out / f"rethinking_l1_cifar10__{JPEG_SLUG}.md").is_file()
    generate_reports(short, out, names=["rethinking_l1_cifar10"], formats=["md"], spec_dir=SPEC_DIR)
    assert (out / "rethinking_l1_cifar10.md").read_text() == paper_table  # never removed by a second run

    tables = build_tables(load_specs(SPEC_DIR)["rethinking_l1_cifar10"], load_runs(results), figures=False)
    stems = {table.file_stem: table for table in tables}  # runs at the paper's budget: they fill <spec>.md
    assert set(stems) == {"rethinking_l1_cifar10", f"rethinking_l1_cifar10__{JPEG_SLUG}"}
    assert stems["rethinking_l1_cifar10"].group == BudgetGroup("CIFAR-10", 160, None)


def test_runs_from_different_dense_nets_under_one_baseline_id_are_never_averaged(tmp_path: Path, specs) -> None:
    """The seed-0 ResNet-20 baseline retrained under one cache id (pretrain top-1 58.09, then
    57.25): the sweep keeps the runs of the net most runs descend from and names the others."""
    root = tmp_path / "results"
    common = {"model": "resnet20", "variant": None, "baseline_id": "resnet20-cifar10-61eb", "seed": 0}
    for ratio, finetune, top1 in ((0.2, "finetune", 58.09), (0.4, "finetune", 58.09), (0.4, "scratch_b", 58.09)):
        write_run(root, f"old/{ratio}-{finetune}", ratio=ratio, finetune=finetune, unpruned_top1=top1, **common)
    write_run(root, "new/0.2-ft", ratio=0.2, finetune="finetune", unpruned_top1=57.25, final_top1=80.0, **common)
    runs = load_runs(root)
    (table,) = build_tables(specs["sweep"], runs, figures=False)
    assert set(table.records["unpruned_mean"]) == {58.09}  # one dense net in the whole table
    assert list(table.records["final_n"]) == [1, 1, 1] and 80.0 not in set(table.records["final_mean"])
    note = next(note for note in table.footnotes if note.startswith("Baseline resnet20-cifar10-61eb"))
    assert "kept the 3 runs from pretrain top-1 58.09" in note and "pretrain top-1 57.25" in note
    assert "new/0.2-ft" in note and "Left out: 1 run that descends" in table.caption

    checked = runs.assign(baseline_sha256=["b" * 64, "a" * 64, "a" * 64, "a" * 64])  # the checksum decides
    checked["unpruned_top1"] = 58.09  # even where the recorded top-1 agree
    (table,) = build_tables(specs["sweep"], checked, figures=False)
    assert "weights sha256 bbbbbbbbbbbb" in " ".join(table.footnotes)


def test_captions_say_what_was_achieved_and_mark_missed_targets_and_unverified_values(tmp_path: Path, specs) -> None:
    """SANP asked 50% / 70%: the caption says what each row achieved; a run that missed its target
    (extras.target met false, or, for older runs, more than 10% of the asked amount away) is marked
    ‡ in its cells; std is the sample std; Li et al.'s FLOPs reductions are marked unverified."""
    spec = specs["sanp_evidence_cpu"]
    assert "same mean MACs" not in spec["title"] and "asked" in spec["title"]
    root = tmp_path / "results"
    budget = {"pretrain_epochs": 8, "train_subset": 10000, "model": "resnet20", "method": "sanp", "finetune": "none"}
    for seed, achieved in ((0, 0.479), (1, 0.032)):  # the second removed 3.2% of the 50% asked
        record = metrics_dict(variant=None, ratio=0.2, seed=seed, **budget)
        record["key"]["ratio"] = 0.5
        record["extras"] = {
            "target": {"quantity": "mean_macs_reduction", "asked": 0.5, "achieved": achieved, "met": achieved > 0.45,
                       "rule": "|achieved - asked| <= 10% of asked"},
        }  # fmt: skip
        path = root / f"sanp50-{seed}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    old = metrics_dict(variant=None, ratio=0.2, seed=0, **budget)  # recorded before extras.target
    old["key"]["ratio"] = 0.7
    old["extras"] = {"requested_flops_reduction": 70.0}
    old["flops_reduction"] = 75.8
    old["cost_per_sample"] = {"mean": 24.2e6, "p5": 20e6, "p95": 30e6}  # a dynamic net: mean MACs per image
    (root / "sanp70").mkdir()
    (root / "sanp70" / "metrics.json").write_text(json.dumps(old))
    (table,) = build_tables(spec, load_runs(root), figures=False)
    caption = " ".join(table.caption.split())
    assert "SANP, 50% of mean MACs asked: asked 50.0%, achieved 25.6±31.6% mean MACs removed" in caption
    assert "(‡ missed by 1 of 2 runs: |achieved - asked| <= 10% of asked)" in caption
    assert "SANP, 70% of mean MACs asked: asked 70.0%, achieved 75.8% mean MACs removed" in caption  # 8.3% off: met
    rows = table.by_row()
    assert rows["SANP, 50% of mean MACs asked"]["Top-1"].endswith("‡")
    assert "‡" not in rows["SANP, 70% of mean MACs asked"]["Top-1"]
    assert "‡ a run of this cell missed its target" in table.legend and "sample std (n−1)" in table.legend

    pfs = build_tables(specs["pfs_evidence_cpu"], load_runs(root).iloc[0:0], figures=False)[0]
    assert "paper" not in pfs.legend  # a table without paper values does not promise them
    l1 = build_tables(specs["rethinking_l1_cifar10"], load_runs(root).iloc[0:0], figures=False)[0].by_row()
    for row, flops in (("VGG-16-A", "34.2%†"), ("ResNet-56-B", "27.6%†"), ("ResNet-110-B", "38.6%†")):
        assert l1[row]["FLOPs↓"].endswith(f"({flops})"), (row, l1[row]["FLOPs↓"])


def test_an_anp_run_that_pruned_no_unit_is_marked_as_a_missed_target(tmp_path: Path, specs) -> None:
    """ANP-VS asked to remove some units and removed none (runs recorded before extras.target):
    its cells carry ‡ and the caption says so."""
    root = tmp_path / "results"
    record = metrics_dict("lenet5_caffe", method="anp", variant="anp_vs", finetune="none", pretrain_epochs=6)
    record["train_subset"] = 4000
    record["budget"]["train_subset"] = 4000
    record["extras"] = {"paper_unit_sparsity": 0.0, "paper_memory_pct": 100.0}
    (root / "anp").mkdir(parents=True)
    (root / "anp" / "metrics.json").write_text(json.dumps(record))
    (table,) = build_tables(specs["anp_evidence_cpu"], load_runs(root), figures=False)
    assert table.by_row()["ANP-VS"]["Clean"].endswith("‡")
    caption = " ".join(table.caption.split())
    assert "ANP-VS: asked more than 0%, achieved 0.0% of the units removed (‡ missed by 1 of 1 runs" in caption


def test_the_baseline_checksum_recorded_in_metrics_json_names_the_dense_net(tmp_path: Path, specs) -> None:
    """metrics.json's baseline_sha256 (the weights' checksum, since issue 22) decides which runs
    share a dense net, even where two nets happen to reach the same pretrain top-1."""
    root = tmp_path / "results"
    for name, ratio, checksum in (("a", 0.2, "a" * 64), ("b", 0.4, "a" * 64), ("c", 0.4, "c" * 64)):
        record = metrics_dict("resnet20", variant=None, ratio=ratio, finetune="finetune", baseline_id="r20-0")
        record["baseline_sha256"] = record["stages"]["pretrain"]["baseline_sha256"] = checksum
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text(json.dumps(record))
    runs = load_runs(root)
    assert sorted(runs["baseline_sha256"]) == ["a" * 64, "a" * 64, "c" * 64]
    (table,) = build_tables(specs["sweep"], runs, figures=False)
    assert list(table.records["final_n"]) == [1, 1]  # the run from net c is left out
    assert "weights sha256 cccccccccccc" in " ".join(table.footnotes)
