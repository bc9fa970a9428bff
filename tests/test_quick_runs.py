"""A quick look evaluates less (issue 23): ``data.test_subset=N`` keeps N test images, balanced
over the classes and deterministic; it is checked up front, recorded in metrics.json, part of the
dense baseline's cache id only when set, part of the run directory only when set, and a result
on a test subset is labelled as such in every table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pruning import PruneLabError
from pruning import data as datasets
from pruning.config import run_subdir
from pruning.methods.none import NoPruning
from pruning.pipeline import baseline_id
from pruning.report import load_runs, subset_label
from pruning.validation import check_test_subset
from tests.conftest import plain_cfg, run_pipeline

DIGITS = {"name": "digits", "kind": "digits", "root": None, "train_subset": None, "augment": False}


def test_a_test_subset_keeps_the_first_images_of_every_class_in_order() -> None:
    full = datasets.load({**DIGITS, "test_subset": None})
    sub = datasets.load({**DIGITS, "test_subset": 53})
    labels = full.test.labels.tolist()
    counts = [sub.test.labels.tolist().count(c) for c in range(10)]
    assert len(sub.test) == 53 and counts == [6, 6, 6, 5, 5, 5, 5, 5, 5, 5]  # 53 // 10, one more for 3 classes
    expected = [i for i, y in enumerate(labels) if labels[: i + 1].count(y) <= counts[y]]
    assert sub.test.labels.tolist() == [labels[i] for i in expected]  # the first of each class, file order kept
    assert sub.test.images.equal(full.test.images[expected])
    assert sub.train.images.equal(full.train.images)  # training untouched
    assert (sub.info["test_subset"], sub.info["test_size"], full.info["test_subset"]) == (53, 53, None)
    assert datasets.load({**DIGITS, "test_subset": 53}).test.labels.equal(sub.test.labels)  # deterministic


def test_a_class_short_of_its_share_is_filled_by_the_next_images() -> None:
    labels = [0, 0, 0, 0, 1, 2, 2, 2]  # class 1 has one image, its share is 2
    assert datasets.balanced_indices(labels, 6, 3) == [0, 1, 2, 4, 5, 6]


@pytest.mark.parametrize(
    "data,value,expected",
    [
        ({"name": "cifar10", "kind": "cifar10"}, 0, "data.test_subset=0 must be >= 1"),
        ({"name": "cifar10", "kind": "cifar10"}, "many", "data.test_subset='many' is not an integer"),
        ({"name": "cifar10", "kind": "cifar10"}, 10_001, "data.test_subset=10001 must be in [1, 10,000]"),
        ({"name": "digits", "kind": "digits"}, 361, "data.test_subset=361 must be in [1, 360]"),
        ({"name": "text_corpus", "kind": "text_corpus"}, 100, "data.test_bytes / data.valid_bytes"),
    ],
)
def test_a_bad_test_subset_is_refused_naming_the_key(data: dict, value, expected: str) -> None:
    with pytest.raises(PruneLabError) as info:
        check_test_subset({"data": {**data, "test_subset": value}})
    assert expected in str(info.value)
    check_test_subset({"data": {**data, "test_subset": None}})  # null: the whole test set


def test_a_test_subset_larger_than_the_images_read_is_refused_when_they_load() -> None:
    with pytest.raises(PruneLabError, match=r"data.test_subset=400 must be in \[1, 360\]"):
        datasets.load({**DIGITS, "test_subset": 400})


def test_the_precheck_refuses_a_bad_test_subset_before_anything_runs(tmp_path, monkeypatch) -> None:
    from pruning.cli.precheck import precheck

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message = precheck(["data.test_subset=0"])
    assert message is not None and "data.test_subset=0 must be >= 1" in message, message
    assert not (tmp_path / "results").exists()


def test_test_subset_null_keeps_every_run_directory_and_a_value_moves_it(tmp_path: Path) -> None:
    cfg = plain_cfg([], tmp_path)
    assert cfg["data"]["test_subset"] is None
    before = {**cfg, "data": {k: v for k, v in cfg["data"].items() if k != "test_subset"}}  # a config from before
    assert run_subdir(cfg) == run_subdir(before)
    assert run_subdir(plain_cfg(["data.test_subset=100"], tmp_path)) != run_subdir(cfg)


def test_the_baseline_cache_id_has_the_test_subset_only_when_set(tmp_path: Path) -> None:
    cfg = plain_cfg([], tmp_path)
    spec = {"arch": "vgg_small"}
    full = datasets.load({**DIGITS, "test_subset": None})
    before = datasets.load(DIGITS)  # a data config from before the key
    sub = datasets.load({**DIGITS, "test_subset": 100})
    assert baseline_id(cfg, full, spec, NoPruning()) == baseline_id(cfg, before, spec, NoPruning())
    assert baseline_id(cfg, sub, spec, NoPruning()) != baseline_id(cfg, full, spec, NoPruning())


def test_a_run_on_a_test_subset_records_it_and_never_looks_like_a_full_test_set_number(tmp_path: Path) -> None:
    small = ["method=none", "schedule.epochs=1", "model=vgg_small", "data.train_subset=50", "latency.enabled=false"]
    sub = run_pipeline(plain_cfg([*small, "data.test_subset=40"], tmp_path))
    full = run_pipeline(plain_cfg(small, tmp_path))
    assert (sub["data"]["test_subset"], sub["data"]["test_size"], sub["budget"]["test_subset"]) == (40, 40, 40)
    assert (full["data"]["test_subset"], full["data"]["test_size"]) == (None, 360)
    # the full-test-set run trained its own baseline: the subset's accuracy is never handed to it
    ids = {run["stages"]["pretrain"]["baseline_id"] for run in (sub, full)}
    assert len(ids) == 2 and full["stages"]["pretrain"]["cached"] is False
    labels = sorted(load_runs(tmp_path)["data_label"])
    assert labels == ["sklearn digits 8x8", "sklearn digits 8x8 (test subset: 40 images, not the full test set)"]
    recorded = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert "test_subset" in recorded["data"]


def test_the_label_of_a_full_test_set_is_unchanged() -> None:
    assert subset_label("CIFAR-10", None) == "CIFAR-10"
    assert subset_label("CIFAR-10", 2000) == "CIFAR-10 (test subset: 2,000 images, not the full test set)"
