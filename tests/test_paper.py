"""Paper definitions in conf/ (pruning/paper.py): method variants read from conf/paper/, report
rows read from conf/table_row/ through the experiments' sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pruning import PruneLabError
from pruning.methods.channel_pruning import ChannelPruning
from pruning.methods.l1_norm import L1Norm
from pruning.methods.thinet import ThiNet
from pruning.models import default_spec
from pruning.paper import expand_rows, experiment_rows, method_variants, row_filter, table_row

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_methods_built_without_variants_use_the_shipped_paper_constants() -> None:
    spec = default_spec("resnet_cifar", depth=56, num_classes=10, in_channels=3)
    shipped = L1Norm(variant="B")
    assert shipped.variants == method_variants("l1_norm")
    widths = shipped.target_widths(spec)
    assert sorted(set(widths.values())) == [6, 22, 57]  # stages pruned 60% / 30% / 10%
    assert list(ThiNet(variant="thinet_30").variants) == [
        "thinet_30",
        "thinet_50",
        "thinet_70",
        "thinet_conv",
        "thinet_gap",
        "thinet_tiny",
    ]
    assert list(ChannelPruning(variant="vgg16_5x").variants) == ["vgg16_5x", "resnet50_2x"]


def test_methods_take_their_variants_as_an_argument() -> None:
    spec = default_spec("resnet_cifar", depth=56, num_classes=10, in_channels=3)
    mine = {"resnet_cifar": {56: {"C": {"stage_ratio": [0.5, 0.5, 0.5], "skip": []}}}}
    method = L1Norm(variant="C", variants=mine)
    method.validate("resnet56", spec)
    assert set(method.target_widths(spec).values()) == {8, 16, 32}
    with pytest.raises(PruneLabError, match="paper variants for it: C"):
        L1Norm(variant="A", variants=mine).validate("resnet56", spec)

    vgg = default_spec("vgg_imagenet", depth=16, num_classes=1000, in_channels=3)
    half = {
        "half": {
            "arch": "vgg_imagenet",
            "depth": 16,
            "conv_widths": [w // 2 for w in [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]],
            "head": "gap",
        }
    }
    widths, pruned = ThiNet(variant="half", variants=half).target(vgg)
    assert max(widths.values()) == 256 and pruned["head"] == "gap"
    with pytest.raises(PruneLabError, match="use one of half"):
        ThiNet(variant="thinet_30", variants=half)
    assert ChannelPruning(variant="half", variants=half).target(vgg)[0] == widths


def test_a_rows_filter_is_derived_from_its_overrides() -> None:
    row = yaml.safe_load((CONF / "table_row" / "slim_vgg19_cifar100_0.5.yaml").read_text())
    assert row_filter(row) == {
        "method": "network_slimming",
        "model": "vgg19",
        "data": "cifar100",
        "adv_train": "none",  # no adversarial training selected: a standard-training row
        "ratio": 0.5,
        "sparsity": 1e-4,
    }
    row["paper_row"]["filter"] = {"mode": "layerwise"}  # a row may add what it cannot override
    assert row_filter(row)["mode"] == "layerwise"
    assert table_row("l1_resnet56_B", CONF)["filter"] == {"model": "resnet56", "adv_train": "none", "variant": "B"}
    assert table_row("l1_resnet56_B", CONF)["name"] == "ResNet-56-B"


def test_report_rows_follow_the_experiments_sweep_order(tmp_path: Path) -> None:
    assert experiment_rows("rethinking_l1_cifar10", CONF)[:2] == ["l1_vgg16_A", "l1_resnet56_A"]
    assert experiment_rows("rethinking_slimming_imagenet", CONF) == ["slim_vgg11_bn_imagenet_imagenet_0.5"]
    assert experiment_rows("l1_ratio_sweep", CONF) == []
    spec = expand_rows({"experiments": ["rethinking_slimming_vgg19", "rethinking_slimming"]}, CONF)
    names = [row["table_row"] for row in spec["rows"]]
    assert names[:3] == ["slim_vgg19_cifar10_0.7", "slim_vgg19_cifar100_0.5", "slim_preresnet164_cifar10_0.4"]
    assert len(names) == len(set(names)) == 10
    assert expand_rows({"rows": [{"name": "inline"}]}, CONF)["rows"] == [{"name": "inline"}]


def test_row_lists_the_report_cannot_read_are_named(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "table_row").mkdir()
    (tmp_path / "experiment" / "globbed.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      table_row: glob(l1_*)\n"
    )
    with pytest.raises(PruneLabError, match="globs and ranges are not read"):
        experiment_rows("globbed", tmp_path)
    (tmp_path / "experiment" / "one.yaml").write_text("defaults:\n  - override /table_row: bare\n")
    (tmp_path / "table_row" / "bare.yaml").write_text("method:\n  ratio: 0.5\n")
    with pytest.raises(PruneLabError, match="no 'paper_row:' block"):
        expand_rows({"experiments": ["one"]}, tmp_path)
    with pytest.raises(PruneLabError, match="either experiments"):
        expand_rows({"experiments": ["one"], "rows": [{"name": "x"}]}, tmp_path)
