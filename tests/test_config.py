"""Every config option composes, and every composed config passes the pipeline's checks."""

from __future__ import annotations

import pytest

from tests.conftest import CONF_DIR, compose, plain_cfg


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUP_CASES = [
    (group, option)
    for group in (
        "data",
        "model",
        "method",
        "finetune",
        "schedule",
        "table_row",
        "experiment",
        "paths",
        "adv_train",
        "robustness",
    )
    for option in _options(group)
]


def _valid_overrides(group: str, option: str) -> list[str]:
    """A combination in which the option makes sense (models need matching data)."""
    if group == "model" and option.startswith("sru"):
        return [f"model={option}", "data=enwik8", "method=magnitude"]
    if group == "model" and option.startswith("transformer_xl"):
        return [f"model={option}", "data=enwik8", "method=magnitude", f"schedule={option}"]
    if group == "model" and option.startswith("densenet"):  # channel selections only: slimming prunes them
        return [f"model={option}", "data=cifar10", "method=network_slimming", "method.ratio=0.3"]
    if group == "model" and option != "vgg_small":
        return [f"model={option}", "data=cifar10", "method.ratio=0.3"]
    if group == "data" and option == "enwik8":  # text: a language model
        return ["data=enwik8", "model=sru_small", "method=magnitude"]
    if group == "data" and option == "text_corpus":
        return ["data=text_corpus", "model=sru_small", "method=magnitude", "data.path=pyproject.toml"]
    if group == "data" and option != "digits":
        return [f"data={option}", "model=resnet20"]
    if group == "schedule" and option in ("enwik8", "text_corpus"):
        return [f"schedule={option}", "data=enwik8", "model=sru_small", "method=magnitude"]
    if group == "schedule" and option.startswith("transformer_xl"):
        return [f"schedule={option}", "data=enwik8", f"model={option}", "method=magnitude"]
    if group == "method" and option == "tas":  # TAS searches ResNets only
        return ["method=tas", "model=resnet20", "data=cifar10"]
    if group == "method" and option in ("flop", "agp"):  # language-model methods
        return [f"method={option}", "model=sru_small", "data=enwik8"]
    if group == "method" and option == "anp":  # ANP-VS: its own models (mask sites)
        return ["method=anp", "model=lenet5_caffe", "data=mnist"]
    if group == "finetune" and option == "none":
        return ["finetune=none"]
    text = ["data=text_corpus", "data.path=pyproject.toml"]  # any file: validation checks it exists
    if group == "table_row" and option.startswith(("lm_cpu", "flop_cpu", "agp_cpu")):
        return [f"table_row={option}", *text]
    if group == "table_row" and option.startswith(("flop_", "agp_")):  # enwik8 rows: the row picks the data
        return [f"table_row={option}"]
    if group == "table_row":
        return [f"table_row={option}", "data=cifar10"]
    if group == "experiment" and option.startswith(("lm_", "flop_evidence")):
        return [f"experiment={option}", "data.path=pyproject.toml"]
    if group == "experiment":
        return [f"experiment={option}"]
    return [f"{group}={option}"]


@pytest.mark.parametrize("group,option", GROUP_CASES, ids=[f"{g}={o}" for g, o in GROUP_CASES])
def test_every_config_option_composes_and_validates(group: str, option: str, tmp_path) -> None:
    from pruning.pipeline import validate

    overrides, corpus = _valid_overrides(group, option), None
    if "data.path=pyproject.toml" in overrides and option.endswith("_cpu"):  # a corpus the splits fit in
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog. " * 5000)  # 225,000 bytes of text
        overrides = [f"data.path={corpus}" if o == "data.path=pyproject.toml" else o for o in overrides]
    cfg = plain_cfg(overrides, tmp_path)
    if corpus is not None and cfg["data"].get("vocab") == "unique":  # the symbols this corpus has
        cfg["data"]["num_classes"] = len(set(corpus.read_bytes()))
    cfg["data"]["download"] = True  # no CIFAR files here: checks other than data presence
    if cfg["data"].get("kind") == "imagenet":
        cfg["dry_run"] = True  # no ImageNet here either: a dry run skips the data-presence check
    validate(cfg)
    assert cfg["schedule"]["epochs"] > 0


def test_schedule_follows_the_data() -> None:
    assert compose(["data=cifar10", "model=resnet20"]).schedule.name == "rethinking_cifar"
    assert compose([]).schedule.name == "digits_quick"


def test_cifar_recipe_matches_rethinking() -> None:
    cfg = compose(["data=cifar10", "model=resnet56"])
    s = cfg.schedule
    assert (s.epochs, s.batch_size, s.lr, s.momentum, s.weight_decay, list(s.milestones)) == (
        160,
        64,
        0.1,
        0.9,
        1e-4,
        [0.5, 0.75],
    )
    assert (cfg.finetune.epochs, cfg.finetune.lr) == (40, 0.001)
    assert compose(["data=cifar10", "finetune=scratch_e"]).finetune.epochs == 160


def test_every_number_is_overridable() -> None:
    cfg = compose(["data=cifar10", "schedule.epochs=7", "schedule.lr=0.3", "finetune.epochs=3", "method.ratio=0.25"])
    assert (cfg.schedule.epochs, cfg.schedule.lr, cfg.finetune.epochs, cfg.method.ratio) == (7, 0.3, 3, 0.25)


def test_scratch_b_epochs_scale_with_flops_ratio(tmp_path) -> None:
    from pruning.pipeline import policy_schedule

    cfg = plain_cfg(["data=cifar10", "model=resnet56", "finetune=scratch_b"], tmp_path)
    assert policy_schedule(cfg, 125_485_696, 90_907_264).epochs == int(160 * 125_485_696 / 90_907_264)  # 220
    cfg["finetune"]["max_epochs"] = 180
    assert policy_schedule(cfg, 4, 1).epochs == 180


def test_table1_experiment_sweeps_the_paper_rows() -> None:
    from omegaconf import OmegaConf

    text = (CONF_DIR / "experiment" / "rethinking_l1_cifar10.yaml").read_text()
    params = OmegaConf.create(text).hydra.sweeper.params
    rows = params.table_row.split(",")
    assert rows == ["l1_vgg16_A", "l1_resnet56_A", "l1_resnet56_B", "l1_resnet110_A", "l1_resnet110_B"]
    assert params.finetune == "finetune,scratch_e,scratch_b"
    for row in rows:
        cfg = compose(["experiment=rethinking_l1_cifar10", f"table_row={row}"])
        assert cfg.method.variant in ("A", "B") and cfg.method.ratio is None
        assert cfg.model.name == row.split("_")[1] and cfg.data.name == "cifar10"


# ---------------------------------------------------------------- paper tables: each row defined once


def _report_specs() -> dict:
    from pruning.report import load_specs

    return {name: spec for name, spec in load_specs(CONF_DIR / "report").items() if spec["kind"] == "paper_table"}


def _hydra_rows(experiment: str) -> list[str]:
    """The table rows Hydra itself runs for ``prune-exp -m experiment=<experiment>``: the
    table_row values of the sweep's jobs as the basic sweeper expands them (ValidateSweep's
    expansion), else the row the experiment's defaults select."""
    import pruning.cli.exp  # noqa: F401  (registers the run-directory resolver)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from pruning.cli.validate_sweep import sweep_jobs

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    rows = [o.split("=", 1)[1] for job in sweep_jobs(cfg) for o in job if o.startswith("table_row=")]
    return list(dict.fromkeys(rows)) or [cfg.hydra.runtime.choices["table_row"]]


def _run_rows(spec: dict) -> list[dict]:
    """A table's rows that runs fill (not its extra_rows: paper rows prune-lab does not implement)."""
    rows = [row for row in spec["rows"] if not row.get("not_implemented")]
    assert all("table_row" in row for row in rows)
    return rows


def test_every_table_row_is_one_report_row_and_no_spec_lists_rows() -> None:
    import yaml

    owners: dict[str, list[str]] = {}
    for name, spec in _report_specs().items():
        raw = yaml.safe_load((CONF_DIR / "report" / f"{name}.yaml").read_text())
        assert "rows" not in raw and raw["experiments"], f"{name}: rows come from its experiments"
        for row in _run_rows(spec):
            owners.setdefault(row["table_row"], []).append(name)
    assert sorted(owners) == _options("table_row")  # every row file is a report row ...
    assert {row: tables for row, tables in owners.items() if len(tables) != 1} == {}  # ... of one table


@pytest.mark.parametrize("table", sorted(_report_specs()))
def test_each_table_shows_exactly_the_rows_its_experiments_run(table: str) -> None:
    spec = _report_specs()[table]
    hydra_rows = [row for experiment in spec["experiments"] for row in _hydra_rows(experiment)]
    assert [row["table_row"] for row in _run_rows(spec)] == list(dict.fromkeys(hydra_rows))


def test_every_swept_table_row_is_in_a_report_table() -> None:
    reported = {row["table_row"] for spec in _report_specs().values() for row in _run_rows(spec)}
    for experiment in _options("experiment"):
        rows = [] if experiment == "l1_ratio_sweep" else _hydra_rows(experiment)
        assert set(rows) <= reported, experiment  # e.g. rethinking_slimming_vgg19: a subset


@pytest.mark.parametrize("table", sorted(_report_specs()))
def test_a_rows_report_filter_selects_the_runs_its_experiment_makes(table: str, tmp_path) -> None:
    """The filter derived from a table_row file equals the run key (and method settings) of
    the run prune-exp makes for that row, so the report cell finds exactly those runs."""
    from pruning.pipeline import make_method, run_key

    spec = _report_specs()[table]
    experiment_of = {row: e for e in spec["experiments"] for row in _hydra_rows(e)}
    for row in _run_rows(spec):
        cfg = plain_cfg([f"experiment={experiment_of[row['table_row']]}", f"table_row={row['table_row']}"], tmp_path)
        method = make_method(cfg["method"])
        made = {**run_key(cfg, method), **method.settings()}
        wanted = {**(spec.get("filter") or {}), **row["filter"]}
        assert {k: made.get(k) for k in wanted} == wanted, row["name"]
        assert cfg["paper_row"]["name"] == row["name"]  # the block rides along, unused by the run


def test_every_committed_run_maps_to_its_own_directory_from_its_saved_config():
    """A key added to a YAML later (ThiNet's mode and variant, data.newlines, schedule keys) must
    not move an existing run: re-running its command (rerun=true, scripts/rerun_runs.sh) has to
    land in the same directory, or the stale run stays beside the new one."""
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf

    from pruning.config import run_subdir

    runs = Path(__file__).resolve().parents[1] / "results" / "runs"
    configs = sorted(runs.rglob(".hydra/config.yaml"))
    if not configs:
        pytest.skip("no committed runs in this checkout")
    moved = []
    for path in configs:
        run_dir = path.parent.parent
        cfg = OmegaConf.to_container(OmegaConf.create(yaml.safe_load(path.read_text())), resolve=True)
        if not run_dir.as_posix().endswith(run_subdir(cfg)):
            moved.append(str(run_dir.relative_to(runs)))
    assert not moved, f"committed runs whose saved config maps elsewhere: {moved}"
