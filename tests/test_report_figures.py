"""The report's figures (paper-table panels and the sweep plot): one colour and marker per method in
every figure, markers that cannot hide each other, an x axis that separates the rows, and the
table's headline metric on the y axis. Drawn from the committed short-budget runs under
``results/runs`` (the figures the README shows); skipped where a checkout has none."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pruning.figure_style import METHOD_STYLES, dodge_offsets, method_style, style_key
from pruning.report import build_sweep_figure, build_tables, figure_series, load_runs, load_specs

REPO = Path(__file__).resolve().parents[1]
SPEC_DIR = REPO / "conf" / "report"


@pytest.fixture(scope="module")
def committed_runs() -> pd.DataFrame:
    runs = load_runs(REPO / "results")
    if runs.empty:
        pytest.skip("no committed runs under results/runs")
    return runs


@pytest.fixture(scope="module")
def specs() -> dict:
    return load_specs(SPEC_DIR)


def _figures(spec: dict, runs: pd.DataFrame) -> dict[str, object]:
    """Each budget group's figure by its file stem."""
    return {t.file_stem: t.figure for t in build_tables(spec, runs) if t.figure is not None}


def _markers(figure) -> list[tuple[object, float, float, float, str]]:
    """Every data marker drawn (not error-bar caps, not legend entries): (axes, x, y in display
    pixels, marker size in pixels, colour)."""
    figure.canvas.draw()
    out = []
    for axes in figure.axes:
        for line in axes.get_lines():
            marker = line.get_marker()
            if marker in (None, "None", "", " ", "_", "|") or not len(line.get_xdata()):
                continue
            size = line.get_markersize() * figure.dpi / 72
            for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True):
                px, py = axes.transData.transform((float(x), float(y)))
                out.append((axes, px, py, size, str(line.get_color())))
    return out


def _assert_no_marker_hides_another(figure, name: str) -> None:
    markers = _markers(figure)
    for (a1, x1, y1, s1, _), (a2, x2, y2, s2, _) in itertools.combinations(markers, 2):
        if a1 is a2:
            assert np.hypot(x1 - x2, y1 - y2) >= 0.6 * min(s1, s2), (name, (x1, y1), (x2, y2))


def test_the_sweep_and_tas_figures_hide_no_marker_under_another(committed_runs, specs) -> None:
    """``sweep_pre8`` drew channel pruning under ThiNet and L1 and ``tas_cifar`` the KD ablation
    under TAS (KD): every two markers of a figure are now at least 0.6 marker apart."""
    figures = {**_figures(specs["sweep"], committed_runs), **_figures(specs["tas_cifar"], committed_runs)}
    assert any("pre8" in name for name in figures) and any(name.startswith("tas_cifar") for name in figures)
    for name, figure in figures.items():
        _assert_no_marker_hides_another(figure, name)


def test_anp_figures_separate_the_rows_that_share_one_flops_value(committed_runs, specs) -> None:
    """Every ANP-VS short run is at FLOPs× 1.00: the panel puts the columns (clean / WB / BB) on
    x and the rows side by side, with each value written beside its point."""
    figures = _figures(specs["anp_evidence_cpu"], committed_runs)
    assert len(figures) == 2
    for name, figure in figures.items():
        axes = figure.axes[0]
        xs = {round(x, 3) for _, x, _, _, _ in _markers(figure)}
        assert len(xs) >= 12, (name, xs)  # 4 rows x 3 columns, none stacked
        assert [t.get_text() for t in axes.get_xticklabels()] == ["Clean", "WB PGD-40", "BB PGD-40"]
        assert "1.00" in axes.get_xlabel()
        values = [t.get_text() for t in axes.texts]
        assert len(values) == 12 and all(v.replace(".", "").isdigit() for v in values)
        _assert_no_marker_hides_another(figure, name)


def test_a_method_has_one_colour_in_every_figure(committed_runs, specs) -> None:
    """``pfs_evidence`` and ``sweep_pre4`` draw the same three methods (PFS, L1-norm, Network
    Slimming) from the same runs: the same FLOPs reduction has the same colour in both."""
    pfs = next(iter(_figures(specs["pfs_evidence_cpu"], committed_runs).values()))
    sweep = next(f for name, f in _figures(specs["sweep"], committed_runs).items() if "pre4" in name)

    def colour_by_x(figure) -> dict[float, str]:
        axes = figure.axes[0]
        out = {}
        for line in axes.get_lines():
            if line.get_marker() in (None, "None", "", "_", "|") or not len(line.get_xdata()):
                continue
            out[round(float(line.get_xdata()[0]), 2)] = str(line.get_color())
        return out

    in_pfs, in_sweep = colour_by_x(pfs), colour_by_x(sweep)
    assert len(set(in_pfs.values())) == 3
    for x, colour in in_pfs.items():
        assert in_sweep.get(x) == colour, (x, in_pfs, in_sweep)
    assert method_style("pfs").color in in_pfs.values() and method_style("l1_norm").color in in_sweep.values()


def test_a_paper_figure_plots_the_column_its_table_leads_with(specs) -> None:
    """``pfs_evidence`` leads with final-epoch accuracy (the PFS paper's convention) and has a
    best-epoch column further right: its figure plots the final epoch; the Rethinking tables
    still plot all three policies."""
    assert [c["metric"] for c in figure_series(specs["pfs_evidence_cpu"])] == ["final_top1_last"]
    assert [c["key"] for c in figure_series(specs["rethinking_l1_cifar10"])] == ["finetune", "scratch_e", "scratch_b"]


def test_style_keys_tell_the_anp_baselines_apart_and_every_known_method_differs() -> None:
    assert style_key("none", None, "pgd") == "at" and style_key("none", None, "none") == "dense"
    assert style_key("anp", "bp") == "bp" and style_key("anp", "anp_vs") == "anp_vs"
    assert style_key("tas", "nokd") == "tas" and style_key("l1_norm", "A") == "l1_norm"
    colours = [s.color for s in METHOD_STYLES.values()]
    assert len(set(colours)) == len(colours)
    assert method_style("someone_elses_method") == method_style("someone_elses_method")


def test_dodge_spreads_only_points_that_would_coincide() -> None:
    offsets = dodge_offsets([(10.0, 50.0), (10.0, 50.2), (30.0, 50.0)], (0.0, 40.0), (0.0, 100.0))
    assert offsets[2] == 0.0
    assert offsets[0] < 0 < offsets[1] and offsets[1] - offsets[0] == pytest.approx(0.022 * 40)
    log = dodge_offsets([(1e5, 3.0), (1e5, 3.0)], (1e4, 1e6), (2.0, 4.0), log_x=True)
    assert log[0] < 1 < log[1]


def test_sweep_figure_tells_two_labels_of_one_method_apart() -> None:
    """TAS with and without KD (one method, one policy): the second label is drawn hollow."""
    runs = pd.DataFrame(
        [
            {
                "data": "cifar10",
                "model": "resnet20",
                "method": "tas",
                "variant": variant,
                "settings": "",
                "finetune": "scratch_e",
                "adv_train": "none",
                "ratio": 0.45,
                "seed": 0,
                "flops_reduction": 48.5,
                "final_top1": top1,
                "unpruned_top1": 58.0,
                "run_dir": f"runs/{variant}",
            }
            for variant, top1 in (("kd", 57.0), ("nokd", 56.8))
        ]
    )
    figure = build_sweep_figure(runs, "t")
    lines = [line for line in figure.axes[0].get_lines() if line.get_marker() == "^"]
    assert sorted(line.get_fillstyle() for line in lines) == ["left", "none"]
    _assert_no_marker_hides_another(figure, "tas kd / nokd")
