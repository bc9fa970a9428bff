"""Config keys and values at the door (issue 22): a misspelt key is refused with close matches
(never Hydra's "use +key=..." advice, which then runs with the key ignored), a quoted number is
the number, absurd sizes are refused, and a black-box source file is checked before training.
In-process through prune-exp's precheck / prepare, which run before Hydra creates anything."""

from __future__ import annotations

import pytest

from tests.conftest import plain_cfg

UNKNOWN_KEYS = [
    (["schedule.epoch=1"], "schedule.epoch is not a key of schedule=digits; did you mean schedule.epochs?"),
    (["+schedule.epoch=1"], "schedule.epoch is not a key of schedule=digits; did you mean schedule.epochs?"),
    (["++schedule.epoch=1"], "schedule.epoch is not a key of schedule=digits; did you mean schedule.epochs?"),
    (["data=cifar10", "schedule.epoch=1"], "schedule.epoch is not a key of schedule=cifar10; did you mean"),
    (["method=flop", "model=sru_small", "data=enwik8", "method.ratio=0.5"], "method.ratio is not a key of method=flop"),
    (["method=flop", "+method.ratio=0.5"], "method.ratio is not a key of method=flop; its keys: "),
    (["seeds=1"], "seeds is not a key of the config; did you mean seed?"),
    (["schedul.epochs=1"], "schedul is not a key of the config; did you mean schedule?"),
    (["latency.warmpu=1"], "latency.warmpu is not a key of latency; did you mean latency.warmup?"),
    (["data.adversarial.epz=0.1"], "data.adversarial.epz is not a key of data.adversarial (data=digits)"),
    (["~method.varant"], "method.varant is not a key of method=l1_norm; did you mean method.variant?"),
    (["report=sweep"], "report is not a config group of a run"),
    (["+schedule.epochs=3"], "schedule.epochs is already a key of schedule=digits: set it without the +"),
    # every job of a sweep: method.ratio exists for l1_norm, not for flop
    (["-m", "method=l1_norm,flop", "method.ratio=0.5"], "method.ratio is not a key of method=flop"),
]


@pytest.mark.parametrize("args,expected", UNKNOWN_KEYS, ids=[" ".join(a) for a, _ in UNKNOWN_KEYS])
def test_an_unknown_key_is_refused_with_close_matches_never_with_plus(tmp_path, monkeypatch, args, expected) -> None:
    from pruning.cli.precheck import precheck

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message = precheck(args)
    assert message is not None and expected in message, message
    assert "+" not in message.replace("+, ", "")  # never the advice to add a key with +
    assert "Could not override" not in message and "not in struct" not in message
    assert not (tmp_path / "results").exists()


LEGIT_PLUS = [
    # +group=option for a group of the defaults list (Hydra alone: "Multiple values for experiment")
    (["-m", "+experiment=l1_ratio_sweep"], ["-m", "experiment=l1_ratio_sweep"]),
    (
        ["+table_row=l1_vgg16_A", "data=cifar10", "dry_run=true"],
        ["table_row=l1_vgg16_A", "data=cifar10", "dry_run=true"],
    ),
    # an argument the method's class takes (README, PFS on ImageNet: +method.val_per_class=50)
    (["method=pfs", "+method.val_per_class=50"], ["method=pfs", "+method.val_per_class=50"]),
    (["-m", "hydra.job.chdir=false", "seed=0"], ["-m", "hydra.job.chdir=false", "seed=0"]),  # Hydra's own keys
]


@pytest.mark.parametrize("args,runs", LEGIT_PLUS, ids=[" ".join(a) for a, _ in LEGIT_PLUS])
def test_legit_plus_overrides_keep_working(tmp_path, monkeypatch, args, runs) -> None:
    from pruning.cli.precheck import prepare

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    assert prepare(args) == (None, runs)


def test_a_sweep_job_from_an_experiment_is_checked_too(tmp_path, monkeypatch) -> None:
    """The jobs an experiment's sweeper params make (not on the command line) are checked by the
    ValidateSweep callback with the same function."""
    from hydra import initialize_config_module
    from pruning.cli.precheck import KeyChecker, check_job_keys

    from pruning import PruneLabError

    with initialize_config_module(config_module="pruning.conf", version_base="1.3"):
        checker = KeyChecker()
        check_job_keys(["experiment=l1_ratio_sweep", "method.ratio=0.2", "seed=0"], checker=checker)
        with pytest.raises(PruneLabError, match="method.ratio is not a key of method=flop"):
            check_job_keys(["experiment=l1_ratio_sweep", "method=flop", "method.ratio=0.2"], checker=checker)


def test_a_quoted_number_is_the_number_same_run_directory(tmp_path, monkeypatch) -> None:
    from pruning.cli.precheck import prepare

    from pruning.config import run_subdir

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message, argv = prepare(["method.ratio='0.5'", "schedule.epochs='3'", "dry_run='true'", "data.train_subset='500'"])
    assert message is None
    assert argv == ["method.ratio=0.5", "schedule.epochs=3", "dry_run=true", "data.train_subset=500"]
    quoted = plain_cfg(argv, tmp_path)
    plain = plain_cfg(["method.ratio=0.5", "schedule.epochs=3", "dry_run=true", "data.train_subset=500"], tmp_path)
    assert quoted == plain and run_subdir(quoted) == run_subdir(plain)


def test_quoted_numbers_in_a_sweep_and_for_a_method_argument_with_a_null_default(tmp_path, monkeypatch) -> None:
    from pruning.cli.precheck import prepare

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    assert prepare(["-m", "method.ratio='0.2','0.6'"])[1] == ["-m", "method.ratio=0.2,0.6"]
    lm = ["method=flop", "model=sru_small", "data=text_corpus", "data.path=pyproject.toml"]
    assert prepare([*lm, "method.lr='0.001'"]) == (None, [*lm, "method.lr=0.001"])


@pytest.mark.parametrize(
    "args,expected",
    [
        (["schedule.epochs='ten'"], "schedule.epochs='ten' is not an integer; schedule.epochs takes an integer"),
        (["method.ratio='half'"], "method.ratio='half' is not a number"),
        (["dry_run=yes"], "dry_run='yes' is not true or false"),
        (["-m", "seed=0,abc"], "seed='abc' is not an integer"),
    ],
)
def test_a_string_for_a_number_names_the_key(tmp_path, monkeypatch, args, expected) -> None:
    from pruning.cli.precheck import precheck

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message = precheck(args)
    assert message is not None and expected in message, message
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["schedule.epochs=1e23"], "schedule.epochs=1e+23 is beyond any sane value: it must be <= 100,000"),
        (["schedule.finetune_epochs=1000000"], "schedule.finetune_epochs=1000000 is beyond any sane value"),
        (["schedule.batch_size=1e9"], "schedule.batch_size=1e+09 is beyond any sane value"),
        (["data.train_subset=1e23"], "data.train_subset=1e+23 is beyond any sane value"),
        (["seed=1e12"], "seed=1e+12 is beyond any sane value"),
        (["latency.repeats=1e9"], "latency.repeats=1e+09 is beyond any sane value"),
        (["schedule.lr=1e5"], "schedule.lr=100000.0 must be <= 100"),
    ],
)
def test_absurd_sizes_are_refused(tmp_path, monkeypatch, args, expected) -> None:
    from pruning.cli.precheck import precheck

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    message = precheck(args)
    assert message is not None and expected in message, message


def test_the_maximum_itself_is_allowed(tmp_path, monkeypatch) -> None:
    from pruning.cli.precheck import precheck

    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(tmp_path / "results"))
    assert precheck(["schedule.epochs=100000", "schedule.batch_size=1000000", "dry_run=true"]) is None


def _robustness_cfg(tmp_path, source) -> dict:
    return plain_cfg(["robustness=pgd", f"robustness.source={source}"], tmp_path)


def test_a_robustness_source_that_is_no_checkpoint_is_refused_before_training(tmp_path) -> None:
    import torch

    from pruning import PruneLabError
    from pruning.pipeline import validate

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PruneLabError, match=r"robustness.source=.*junk.pt.*robustness.source=standard"):
        validate(_robustness_cfg(tmp_path, junk))
    no_spec = tmp_path / "no_spec.pt"
    torch.save({"model": {}}, no_spec)
    with pytest.raises(PruneLabError, match=r"no_spec.pt is not a prune-lab final.pt: it has no spec"):
        validate(_robustness_cfg(tmp_path, no_spec))
    cfg = _robustness_cfg(tmp_path, junk)
    cfg["robustness"]["black_box"] = False  # no black-box attack: the source is not used
    validate(cfg)


def test_a_robustness_source_checkpoint_must_load_into_its_spec(tmp_path) -> None:
    from pruning import PruneLabError
    from pruning.config import model_spec
    from pruning.io import save_checkpoint
    from pruning.models import build
    from pruning.pipeline import validate

    cfg = _robustness_cfg(tmp_path, "standard")
    spec = model_spec(cfg["model"], cfg["data"])
    net = build(spec)
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, {"model": dict(list(net.state_dict().items())[1:]), "spec": spec})  # a tensor short
    with pytest.raises(PruneLabError, match="its weights do not fit its spec"):
        validate(_robustness_cfg(tmp_path, wrong))
    good = tmp_path / "final.pt"
    save_checkpoint(good, {"model": net.state_dict(), "spec": spec})
    validate(_robustness_cfg(tmp_path, good))


# ----------------------------------------------------------------------------- the same by subprocess
@pytest.mark.integration  # make test-integration
def test_unknown_keys_exit_2_with_our_message_and_leave_nothing(tmp_path) -> None:
    from tests.conftest import prune_exp

    out = prune_exp(["schedule.epoch=1"], tmp_path)
    assert out.returncode == 2 and "did you mean schedule.epochs?" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "+schedule" not in out.stderr
    # a job that only the experiment's sweeper params make: checked by ValidateSweep, same words
    out = prune_exp(["-m", "experiment=l1_ratio_sweep", "method=flop", "model=sru_small", "data=enwik8"], tmp_path)
    assert out.returncode == 2 and "method.ratio is not a key of method=flop" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "Could not override" not in out.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.integration
def test_a_quoted_number_runs_in_the_same_directory_by_subprocess(tmp_path) -> None:
    from tests.conftest import metrics_files, prune_exp

    for ratio in ("'0.5'", "0.5"):
        out = prune_exp(["dry_run=true", f"method.ratio={ratio}"], tmp_path)
        assert out.returncode == 0, out.stderr
    (m,) = metrics_files(tmp_path)
    assert m["key"]["ratio"] == 0.5
