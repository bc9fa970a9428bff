"""The per-run pictures of TAS, PFS, SANP and ANP (pruning/run_plots.py and each method's plot
function): a PNG for a small synthetic record, the layer names as tick labels, legends outside the
axes, no failure of a run when drawing fails, and scripts/replot_run_figures.py on a temp tree."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pruning.methods.anp import plot_masks
from pruning.methods.pfs import plot_gates
from pruning.methods.sanp import plot_keep_rates
from pruning.methods.tas import plot_distributions
from pruning.run_plots import draw_safely, new_figure, set_layer_ticks

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _labels(axes, axis: str = "x") -> list[str]:
    ticks = axes.get_xticklabels() if axis == "x" else axes.get_yticklabels()
    return [t.get_text() for t in ticks]


def _legends_outside(figure) -> None:
    """Every legend of the figure lies outside its axes (no overlap with the data area)."""
    renderer = figure.canvas.get_renderer()
    found = 0
    for axes in figure.axes:
        legend = axes.get_legend()
        if legend is None:
            continue
        found += 1
        box, area = legend.get_window_extent(renderer), axes.get_window_extent(renderer)
        assert box.x0 >= area.x1 - 1 or box.y0 >= area.y1 - 1, f"legend inside the axes of {axes.get_title()!r}"
    assert found


def _is_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]  # no temp file left


def tas_record() -> dict:
    layers = [("stem", 16), ("stages.0.0.conv0", 16), ("stages.0.1.conv0", 16), ("stages.1.0.conv0", 32)]
    out = []
    for i, (name, dense) in enumerate(layers):
        choices = [max(1, int(dense * r)) for r in (0.25, 0.5, 0.75, 1.0)]
        probs = [0.25 + 0.01 * ((i + j) % 3 - 1) for j in range(4)]
        probs[-1] = 1 - sum(probs[:-1])
        out.append({"name": name, "dense": dense, "choices": choices, "probs": probs, "chosen": choices[1]})
    depth = [
        {"stage": 0, "choices": [1, 2], "probs": [0.6, 0.4], "chosen": 1},
        {"stage": 1, "choices": [1, 2], "probs": [0.3, 0.7], "chosen": 2},
    ]
    return {"layers": out, "depth": depth}


def pfs_layers() -> list[dict]:
    return [
        {"name": f"stages.{s}.0.mid", "size": 8, "kept": 3 + s, "dense": 4, "values": [0.1 * k for k in range(8)]}
        for s in range(3)
    ]


def sanp_record() -> dict:
    return {
        "layers": ["stages.0.0.conv1", "stages.1.0.conv1", "stages.2.0.conv1"],
        "channels": [16, 32, 64],
        "overall": [0.8, 0.5, 0.3],
        "per_class": [[0.9, 0.6, 0.2], None, [0.7, 0.4, 0.4]],  # class 1 absent from the test split
        "per_sample_std": [0.1, 0.1, 0.1],
    }


def anp_record() -> dict:
    return {
        "variant": "anp_vs",
        "threshold": 1e-3,
        "sites": [["conv1", "output", 4], ["fc1", "input", 6]],
        "expected_pi": [[0.5, 0.4, 0.0005, 0.3], [0.2, 0.0001, 0.0002, 0.1, 0.002, 0.3]],
        "history": [
            {"epoch": 1, "units_active": [4, 6], "masked_top1": 50.0},
            {"epoch": 2, "units_active": [3, 3], "masked_top1": 60.0},
        ],
    }


def test_tas_picture_names_the_layers_and_marks_removed_blocks(tmp_path: Path):
    figure = plot_distributions(tas_record(), tmp_path / "tas_widths.png", "TAS test")
    _is_png(tmp_path / "tas_widths.png")
    heat, bars, depth = figure.axes[:3]
    names = ["stem", "0.0.conv0", "0.1.conv0", "1.0.conv0"]
    assert _labels(heat) == names and _labels(bars) == names
    assert _labels(heat, "y") == ["0", "1", "2", "3"]  # not TAS's 8 ratios: candidate indices
    assert _labels(depth) == ["stage 0", "stage 1"]
    assert figure.get_suptitle() == "TAS test"
    # stage 0 keeps 1 block: block 0.1 is drawn as removed (hatched), not as searched width
    hatched = [p for p in bars.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_x() == pytest.approx(2 - hatched[0].get_width() / 2)
    # the colour scale is centred on the uniform probability, not 0..1
    norm = heat.images[0].norm
    assert norm.vcenter == pytest.approx(0.25) and norm.vmax < 0.5
    _legends_outside(figure)


def tas_trained_spec() -> dict:
    """The net trained from ``tas_record``'s search after a budget fit: wider than the argmax
    (which keeps half of each layer) and with stage 0's second block back."""
    return {
        "arch": "resnet_tas",
        "stem": 12,
        "stages": [{"stride": 1, "blocks": [[12], [8]]}, {"stride": 2, "blocks": [[24]]}],
    }


def test_tas_picture_draws_the_trained_net_with_the_search_argmax_behind_it(tmp_path: Path):
    """A short search's argmax removed 85.5% of the FLOPs, the trained net (after the budget fit)
    49.9%: the bars are the trained net's widths; the argmax is a lighter, labelled bar behind
    them; blocks the trained net keeps are not hatched as removed."""
    record = tas_record()
    figure = plot_distributions(record, tmp_path / "tas_widths.png", "TAS test", tas_trained_spec())
    _is_png(tmp_path / "tas_widths.png")
    bars = figure.axes[1]
    by_label: dict[str, list] = {}
    for container in bars.containers:
        by_label[container.get_label()] = [patch.get_height() for patch in container.patches]
    assert by_label["trained net"] == [12, 12, 8, 24]
    argmax = next(v for k, v in by_label.items() if k.startswith("search argmax"))
    assert argmax == [8, 8, 0, 16]  # half of each dense width; block 0.1 is beyond stage 0's argmax depth
    assert not [p for p in bars.patches if p.get_hatch()]  # the trained net keeps every drawn block
    assert "trained net" in bars.get_title()
    _legends_outside(figure)


def test_tas_widths_title_names_the_trained_reduction():
    from pruning.methods.tas import widths_title

    title = widths_title(4, 0.45, 0.145, 49.9)
    assert "search argmax removes 85.5%" in title and "the trained net removes 49.9%" in title


def test_pfs_picture_names_the_layers(tmp_path: Path):
    figure = plot_gates(pfs_layers(), tmp_path / "pfs_gates.png", "PFS test")
    _is_png(tmp_path / "pfs_gates.png")
    for axes in figure.axes[:2]:
        assert _labels(axes) == ["0.0.mid", "1.0.mid", "2.0.mid"]
    assert [t.get_fontsize() for t in figure.axes[1].get_xticklabels()] == [9, 9, 9]
    _legends_outside(figure)


def test_sanp_picture_names_the_layers_and_the_present_classes(tmp_path: Path):
    figure = plot_keep_rates(sanp_record(), tmp_path / "sanp_keep_rates.png", "SANP test")
    _is_png(tmp_path / "sanp_keep_rates.png")
    bars, heat = figure.axes[:2]
    assert _labels(bars) == _labels(heat) == ["0.0.conv1", "1.0.conv1", "2.0.conv1"]
    assert _labels(heat, "y") == ["0", "2"]
    _legends_outside(figure)


def test_anp_picture_counts_kept_units_per_named_site(tmp_path: Path):
    figure = plot_masks(anp_record(), tmp_path / "anp_masks.png", "ANP test")
    _is_png(tmp_path / "anp_masks.png")
    kept, pis = figure.axes[:2]
    assert _labels(kept) == _labels(pis) == ["conv1 (output)", "fc1 (input)"]
    assert "7/10 in all (30.0% of the units pruned)" in kept.get_title()
    texts = [t.get_text() for t in kept.texts]
    assert texts == ["3/4\n(25.0% pruned)", "4/6\n(33.3% pruned)"]
    assert pis.get_yscale() == "log"
    _legends_outside(figure)


def test_many_layers_are_thinned_not_shrunk_to_nothing():
    figure = new_figure(8, 4)
    axes = figure.subplots()
    names = [f"stages.{i // 40}.{i % 40}.conv0" for i in range(130)]
    set_layer_ticks(axes, names)
    labels = axes.get_xticklabels()
    assert 32 <= len(labels) <= 64 and labels[0].get_text() == names[0]
    assert min(t.get_fontsize() for t in labels) >= 7 and labels[0].get_rotation() == 90


def test_a_failing_picture_does_not_fail_the_run():
    said: list[str] = []

    def draw(_record):
        raise ImportError("No module named 'matplotlib'")

    assert draw_safely(draw, {}, say=said.append, what="x.png") is None
    assert len(said) == 1 and "x.png" in said[0] and "matplotlib" in said[0]


def _replot_module():
    spec = importlib.util.spec_from_file_location("replot_run_figures", REPO / "scripts" / "replot_run_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replot_script_redraws_every_kind_from_its_record(tmp_path: Path):
    def run(name: str, record_name: str, record: dict, metrics: dict) -> Path:
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / record_name).write_text(json.dumps(record))
        (folder / "metrics.json").write_text(json.dumps({"status": "done", **metrics}))
        return folder

    tas = tas_record()
    tas_epochs = [{**tas, "flops_ratio_argmax": 0.55}]
    tas_metrics = {"spec_pruned": tas_trained_spec(), "flops_reduction": 49.9}
    run("tas", "tas_search.json", {"target_flops_ratio": 0.55, "ratio": 0.45, "epochs": tas_epochs}, tas_metrics)
    pfs = {
        "ratio": 0.5,
        "achieved": 0.49,
        "expansion": 32,
        "sparsity_level": 0.2,
        "saved_epoch": "last",
        "history": [{"epoch": 1}],
        "layers": pfs_layers(),
    }
    spec = {"arch": "resnet_pfs", "depth": 20}
    run("pfs", "pfs_gates.json", pfs, {"spec_dense": spec, "method_settings": {"gate_epochs": 1}})
    sanp_metrics = {
        "spec_dense": {"arch": "resnet_cifar"},
        "key": {"ratio": 0.5},
        "flops_reduction": 48.0,
        "final": {"top1": 50.0},
    }
    run("sanp", "sanp_keep_rates.json", sanp_record(), sanp_metrics)
    anp_metrics = {
        "spec_dense": {"arch": "lenet"},
        "key": {"data": "mnist", "variant": "anp_vs"},
        "extras": {"masked_top1": 90.0, "removed_top1": 90.0},
    }
    old_anp = {k: v for k, v in anp_record().items() if k not in ("threshold", "variant")}  # records before both
    run("anp", "anp_masks.json", old_anp, {**anp_metrics, "method_settings": {"threshold": 1e-3}})
    unfinished = run("anp_running", "anp_masks.json", anp_record(), anp_metrics)
    (unfinished / "metrics.json").write_text(json.dumps({"status": "running"}))

    said: list[str] = []
    written = _replot_module().replot([tmp_path / "runs"], say=said.append)
    expected = ["tas/tas_widths.png", "pfs/pfs_gates.png", "sanp/sanp_keep_rates.png", "anp/anp_masks.png"]
    assert sorted(written) == sorted(tmp_path / "runs" / p for p in expected)
    for path in written:
        assert path.read_bytes()[:8] == PNG
    assert not (unfinished / "anp_masks.png").exists() and any("running" in s for s in said)


def test_a_tas_run_draws_the_net_it_trains_not_the_raw_search_result(tmp_path: Path, monkeypatch):
    """``tas_widths.png`` in a run directory is drawn after the budget fit, from the spec that is
    trained, with its FLOPs reduction in the title (the search cache keeps the argmax picture)."""
    import pruning.methods.tas as tas
    from pruning.data import load_digits_data
    from pruning.methods.base import PruneContext
    from tests.test_tas import tiny_resnet

    calls = []
    real = tas.plot_distributions
    monkeypatch.setattr(tas, "plot_distributions", lambda *a: calls.append(a) or real(*a))
    method = tas.TAS(ratio=0.5, search_epochs=1, batch_size=256, init_from_dense=True)
    ctx = PruneContext(data=load_digits_data(), device="cpu", input_shape=(1, 8, 8), seed=0, work_dir=tmp_path)
    result = method.prune(tiny_resnet(14), ctx)
    record, path, title, trained = calls[-1]
    assert path == tmp_path / "tas_widths.png" and path.stat().st_size > 1000
    assert trained == result.spec
    assert f"the trained net removes {result.extras['achieved_flops_reduction']:.1f}%" in title
    widths, _ = tas.trained_widths(trained)
    assert set(widths) <= {layer["name"] for layer in record["layers"]}
