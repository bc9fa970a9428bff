"""Security and fault edges of prune-exp (issue 22): nothing is written outside the results root.

* A config value that becomes a folder (``data.name``, ``model.name``, ``method.name``, the
  finetune / adv_train names, the method's variant tag; the dense baseline's cache id is built
  from model and data names) must be one safe path component.
* A symbolic link planted in a run directory, on the way down to it, or in a cache entry never
  makes a run write through it: the run is refused (exit 2, the link named) before anything is
  written, and every write replaces a link rather than following it.
* Files of the wrong shape (metrics.json a list or nested too deeply, a cached info.json holding
  a string) are moved aside and rebuilt; a bad ``device``, ``model.init_from`` or abstract
  ``method._target_`` is a user error (exit 2) that names the value.
* A user error leaves nothing behind: no run directory with a ``failed`` metrics.json, no empty
  results root.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pruning.cli.precheck import precheck

from pruning import CorruptFileError, PruneLabError
from tests.conftest import REPO, plain_cfg

DRY = ["dry_run=true", "latency.enabled=false", "quiet=true"]
SAFE_RULE = "letters, digits"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")


def snapshot(root: Path) -> dict | None:
    """Every path under ``root`` with its link target or bytes: equal snapshots = nothing written."""
    if not root.exists() and not root.is_symlink():
        return None
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(root))] = ("file", p.read_bytes())
        else:
            out[str(p.relative_to(root))] = ("dir", None)
    return out


def planned_run_dir(root: Path, overrides: list[str]) -> Path:
    from pruning.config import run_subdir

    return root / "runs" / run_subdir(plain_cfg(overrides, root))


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside the results root that a planted link points at."""
    victim = tmp_path / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    return victim


# ----------------------------------------------------------------------------- 6. the bad-input matrix
def _bad_init_files(folder: Path) -> dict[str, Path]:
    files = {"text": folder / "notes.pth", "tensor": folder / "tensor.pth", "foreign": folder / "foreign.pth"}
    files["text"].write_text("not a checkpoint\n")
    torch.save(torch.zeros(3), files["tensor"])
    torch.save({"conv1.weight": torch.zeros(2)}, files["foreign"])  # a state dict of some other net
    return files


BAD_INPUTS = [
    # (overrides, the text the message must hold); {init} is replaced by a file made in tmp_path
    (["data.name=../../../../x"], "data.name='../../../../x'"),
    (["model.name=../../../x"], "model.name='../../../x'"),
    (["method.name=../../y"], "method.name='../../y'"),
    (["method.name=a/b"], "method.name='a/b'"),
    (["data.name=.hidden"], "data.name='.hidden'"),
    (["adv_train=pgd", "adv_train.name=../../z"], "adv_train.name='../../z'"),
    (["device=tpu"], "device='tpu' is not a device prune-exp can use; valid values: auto | cpu | cuda | cuda:N"),
    pytest.param(["device=cuda"], "device=cuda requested but CUDA is not available", marks=NO_CUDA),
    pytest.param(["device=cuda:1"], "device=cuda:1 requested but CUDA is not available", marks=NO_CUDA),
    (["method._target_=pruning.methods.base.Method"], "'pruning.methods.base.Method' is the abstract base"),
    (["model=resnet18", "data=imagenet", "model.init_from={init}/notes.pth"], "notes.pth cannot be loaded"),
    (["model=resnet18", "data=imagenet", "model.init_from={init}/tensor.pth"], "tensor.pth holds no state dict"),
    (["model=resnet18", "data=imagenet", "model.init_from={init}/foreign.pth"], "foreign.pth does not fit"),
    (["model=resnet18", "data=imagenet", "model.init_from={init}/absent.pth"], "absent.pth is not a file"),
]


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS)
def test_bad_input_matrix_is_refused_before_anything_is_written(tmp_path, monkeypatch, overrides, expected) -> None:
    root = tmp_path / "results"
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(root))
    _bad_init_files(tmp_path)
    args = [o.replace("{init}", str(tmp_path)) for o in overrides]
    if "data=imagenet" in args:
        args.append("dry_run=true")  # no ImageNet here: the checks of the file come first anyway
    message = precheck(args)
    assert message is not None and expected in message, message
    assert not root.exists()
    assert not (tmp_path.parent / "x").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.name=../../../../x", "data.name"),
        ("model.name=../../../x", "model.name"),
        ("method.name=../../y", "method.name"),
        ("adv_train.name=../z", "adv_train.name"),
    ],
)
def test_unsafe_names_are_refused_by_the_pipeline_and_name_the_key(tmp_path, override, key) -> None:
    from pruning.config import run_subdir
    from pruning.pipeline import run

    cfg = plain_cfg([*DRY, *(["adv_train=pgd"] if key == "adv_train.name" else []), override], tmp_path / "results")
    with pytest.raises(PruneLabError, match=key) as info:
        run(cfg, tmp_path / "results" / "runs" / "r")
    assert SAFE_RULE in str(info.value)
    with pytest.raises(PruneLabError, match="cannot name a folder"):
        run_subdir(cfg)
    assert not (tmp_path / "results").exists()


def test_safe_names_of_every_shipped_option_still_pass() -> None:
    from pruning.io import check_name

    for group in ("data", "model", "method", "finetune", "adv_train"):
        for option in (REPO / "conf" / group).glob("*.yaml"):
            check_name(option.stem, group)
    for tag in ("A", "B", "r0.5", "dense", "resnet50_2x", "finetune+pgd", "seed0-52ed08c4", "_invalid"):
        check_name(tag, "tag")


def test_a_cache_entry_outside_its_cache_is_refused(tmp_path) -> None:
    from pruning.cache import cached

    cache = tmp_path / "a" / "b" / "results" / "cache"
    entry = cache / "baselines" / "../../../x-digits-0123456789ab"
    with pytest.raises(PruneLabError, match="would not be a folder of its cache"):
        cached(entry, load=lambda d: 1, build=lambda d: 2, files=("x",), say=print)
    assert not (tmp_path / "a" / "b" / "x-digits-0123456789ab").exists() and not cache.exists()


# ----------------------------------------------------------------------------- 2. symbolic links
RUN_FILES = [".hydra/config.yaml", "pfs_gates_history.json", "metrics.json", "history.jsonl", "ckpt_finetune.pt"]


@pytest.mark.parametrize("name", [*RUN_FILES, ".lock", "exp.log"])
def test_a_link_planted_in_the_run_dir_is_refused_before_hydra_writes(tmp_path, monkeypatch, outside, name) -> None:
    root = tmp_path / "results"
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(root))
    link = planned_run_dir(root, DRY) / name
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    before = snapshot(root)
    message = precheck(DRY)
    assert message is not None and str(link) in message and "symbolic link" in message, message
    assert outside.read_text() == "precious\n" and snapshot(root) == before


@pytest.mark.parametrize("linked", ["runs", "runs/digits", "runs/digits/vgg_small/l1_norm-r0.5"])
def test_a_linked_folder_on_the_way_to_the_run_dir_is_refused(tmp_path, monkeypatch, linked) -> None:
    root = tmp_path / "results"
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(root))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / linked).parent.mkdir(parents=True, exist_ok=True)
    (root / linked).symlink_to(elsewhere, target_is_directory=True)
    message = precheck(DRY)
    assert message is not None and f"{root / linked} is a symbolic link" in message, message
    assert not any(elsewhere.iterdir())


def test_a_linked_cache_folder_is_refused_and_a_results_root_link_is_allowed(tmp_path, monkeypatch) -> None:
    real = tmp_path / "scratch"
    real.mkdir()
    root = tmp_path / "results"
    root.symlink_to(real, target_is_directory=True)  # the user's own choice: allowed
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(root))
    assert precheck(DRY) is None
    (real / "cache").symlink_to(tmp_path, target_is_directory=True)
    message = precheck(DRY)
    assert message is not None and f"{root / 'cache'} is a symbolic link" in message, message


def test_links_that_stay_inside_the_run_dir_are_allowed(tmp_path, monkeypatch) -> None:
    root = tmp_path / "results"
    monkeypatch.setenv("PRUNE_LAB_RESULTS", str(root))
    run_dir = planned_run_dir(root, DRY)
    (run_dir / "wandb" / "offline-run-1").mkdir(parents=True)
    (run_dir / "wandb" / "latest-run").symlink_to("offline-run-1", target_is_directory=True)  # as wandb makes it
    assert precheck(DRY) is None


def test_the_pipeline_never_truncates_a_file_through_a_planted_lock_link(tmp_path, outside) -> None:
    from pruning.pipeline import run

    root = tmp_path / "results"
    cfg = plain_cfg(DRY, root)
    run_dir = planned_run_dir(root, DRY)
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").symlink_to(outside)  # FileLock opens it with O_TRUNC
    with pytest.raises(PruneLabError, match=r"\.lock is a symbolic link"):
        run(cfg, run_dir)
    assert outside.read_text() == "precious\n"


def test_a_link_planted_in_a_cache_entry_is_refused(tmp_path, outside) -> None:
    from pruning.cache import cached

    entry = tmp_path / "cache" / "baselines" / "vgg_small-digits-0123456789ab"
    entry.mkdir(parents=True)
    (entry / ".lock").symlink_to(outside)
    with pytest.raises(PruneLabError, match=r"\.lock is a symbolic link"):
        cached(entry, load=lambda d: 1, build=lambda d: 2, files=("x",), say=print)
    assert outside.read_text() == "precious\n"
    (entry / ".lock").unlink()
    (entry / "info.json").symlink_to(outside)
    with pytest.raises(PruneLabError, match=r"info\.json is a symbolic link"):
        cached(entry, load=lambda d: 1, build=lambda d: 2, files=("x",), say=print)


def test_copies_and_the_job_log_replace_a_link_instead_of_following_it(tmp_path, outside) -> None:
    from pruning.io import LinkReplacingFileHandler, atomic_copy

    source = tmp_path / "gates_history.json"
    source.write_text("[1, 2]\n")
    target = tmp_path / "pfs_gates_history.json"
    target.symlink_to(outside)
    atomic_copy(source, target)
    assert not target.is_symlink() and target.read_text() == "[1, 2]\n" and outside.read_text() == "precious\n"

    log = tmp_path / "exp.log"
    log.symlink_to(outside)
    handler = LinkReplacingFileHandler(str(log))
    handler.emit(logging.makeLogRecord({"msg": "hello"}))
    handler.close()
    assert not log.is_symlink() and "hello" in log.read_text() and outside.read_text() == "precious\n"


def test_hydra_writes_nothing_itself_and_the_job_log_handler_is_ours() -> None:
    from omegaconf import OmegaConf

    conf = OmegaConf.load(REPO / "conf" / "config.yaml")
    assert conf.hydra.output_subdir is None  # prune-exp writes .hydra/*.yaml atomically after its checks
    assert conf.hydra.job_logging.handlers.file["class"] == "pruning.io.LinkReplacingFileHandler"


def test_a_sweep_refuses_a_linked_multirun_yaml(tmp_path, outside) -> None:
    from omegaconf import OmegaConf
    from pruning.cli.validate_sweep import check_sweep_dir

    root = tmp_path / "results"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "multirun.yaml").symlink_to(outside)
    config = OmegaConf.create({"paths": {"results_root": str(root)}, "hydra": {"sweep": {"dir": str(root / "runs")}}})
    with pytest.raises(PruneLabError, match=r"multirun\.yaml is a symbolic link"):
        check_sweep_dir(config)


# ----------------------------------------------------------------------------- 4. files of the wrong shape
@pytest.mark.parametrize("content", ["[1, 2, 3]", '"done"', "[" * 100_000 + "]" * 100_000])
def test_metrics_json_of_the_wrong_shape_is_moved_aside_and_the_run_goes_on(tmp_path, capsys, content) -> None:
    from pruning.pipeline import run

    root = tmp_path / "results"
    cfg = plain_cfg(DRY, root)
    run_dir = planned_run_dir(root, DRY)
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(content)
    assert run(cfg, run_dir)["status"] == "dry_run"
    (moved,) = run_dir.glob("metrics.json.corrupt-*")
    assert moved.read_text() == content and "is corrupt" in capsys.readouterr().err
    assert run(cfg, run_dir)["status"] == "dry_run"  # and the next run does not fail the same way


def test_read_json_names_a_file_nested_too_deeply(tmp_path) -> None:
    from pruning.io import read_json, read_json_object

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFileError, match="nested too deeply"):
        read_json(deep)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(CorruptFileError, match="holds a JSON list, not an object"):
        read_json_object(listed)


def test_a_cached_info_json_holding_a_string_is_moved_aside_and_rebuilt(tmp_path) -> None:
    from pruning.cache import cached
    from pruning.io import read_json, write_json

    entry = tmp_path / "cache" / "baselines" / "vgg_small-digits-0123456789ab"
    entry.mkdir(parents=True)
    (entry / "info.json").write_text('"a string"')

    def load(d: Path) -> dict:  # as the pipeline's baseline loader reads it
        info = read_json(d / "info.json")
        if not isinstance(info.get("top1"), (int, float)):
            raise CorruptFileError(d / "info.json", "no top-1")
        return info

    def build(d: Path) -> dict:
        write_json(d / "info.json", {"top1": 50.0})
        return {"top1": 50.0}

    said = []
    value, hit = cached(entry, load=load, build=build, files=("info.json",), say=said.append)
    assert value == {"top1": 50.0} and not hit and "moved aside" in said[0]
    assert list(entry.glob("info.json.corrupt-*"))
    assert cached(entry, load=load, build=build, files=("info.json",), say=said.append) == ({"top1": 50.0}, True)


def test_quarantine_keeps_two_pieces_of_evidence_from_one_second(tmp_path) -> None:
    from pruning.io import quarantine

    path = tmp_path / "metrics.json"
    path.write_text("1")
    first = quarantine(path)
    path.write_text("2")
    second = quarantine(path)
    assert first != second and first.read_text() == "1" and second.read_text() == "2"


def test_devices_resolve_or_name_the_valid_values() -> None:
    from pruning.config import resolve_device

    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
    for bad in ("tpu", "cuda:x", "cuda0", "CPU", ""):
        with pytest.raises(PruneLabError, match="valid values: auto | cpu | cuda | cuda:N"):
            resolve_device(bad)


def test_the_abstract_method_base_is_a_user_error() -> None:
    from pruning.config import make_method

    with pytest.raises(PruneLabError, match="abstract base"):
        make_method({"_target_": "pruning.methods.base.Method", "name": "x"})


def test_a_torchvision_state_dict_passes_the_init_from_check(tmp_path) -> None:
    torchvision = pytest.importorskip("torchvision")
    from pruning.config import check_init_from

    good = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), good)
    cfg = plain_cfg(["model=resnet18", "data=imagenet", f"model.init_from={good}"], tmp_path)
    check_init_from(cfg)


# ----------------------------------------------------------------------------- 5. nothing left behind
def _failed_run_dir(run_dir: Path, stages: dict) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / "exp.log").write_text("")
    (run_dir / ".lock").write_text("")
    (run_dir / "metrics.json").write_text(json.dumps({"status": "failed", "error": "PruneLabError", "stages": stages}))
    return run_dir


def test_a_user_error_before_any_stage_finished_leaves_no_run_dir(tmp_path) -> None:
    from pruning.cli.exp import _remove_if_empty_run

    root = tmp_path / "results"
    run_dir = _failed_run_dir(root / "runs" / "digits" / "vgg_small" / "l1_norm-r0.5" / "finetune" / "seed0-x", {})
    _remove_if_empty_run(run_dir, root)
    assert root.is_dir() and not (root / "runs").exists()


def test_a_run_dir_with_a_finished_stage_or_a_checkpoint_is_kept(tmp_path) -> None:
    from pruning.cli.exp import _remove_if_empty_run

    done = _failed_run_dir(tmp_path / "results" / "runs" / "a", {"pretrain": {"top1": 50.0}})
    _remove_if_empty_run(done, tmp_path / "results")
    assert (done / "metrics.json").exists()
    resumable = _failed_run_dir(tmp_path / "results" / "runs" / "b", {})
    (resumable / "ckpt_finetune.pt").write_bytes(b"x")
    _remove_if_empty_run(resumable, tmp_path / "results")
    assert (resumable / "ckpt_finetune.pt").exists()


def test_a_results_root_made_by_a_failed_command_is_removed_when_empty(tmp_path) -> None:
    from pruning.cli.exp import _first_missing, _remove_created_folders

    created = _first_missing(tmp_path / "new" / "results")
    assert created == tmp_path / "new"
    (tmp_path / "new" / "results" / "runs" / "digits").mkdir(parents=True)
    _remove_created_folders(created)
    assert not (tmp_path / "new").exists()
    (tmp_path / "new" / "results").mkdir(parents=True)
    (tmp_path / "new" / "results" / "keep.txt").write_text("x")
    _remove_created_folders(created)
    assert (tmp_path / "new" / "results" / "keep.txt").exists()


# ----------------------------------------------------------------------------- 3. packaging
def test_pyproject_requires_a_torch_whose_weights_only_is_safe_and_lists_every_conf_folder() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = project["project"]["dependencies"]
    assert "torch>=2.6" in deps and "torchvision>=0.21" in deps  # CVE-2025-32434: torch <= 2.5.1
    assert isinstance(project["project"]["license"], str)  # a TOML table is deprecated (setuptools warns)
    packages = set(project["tool"]["setuptools"]["packages"])
    folders = {
        "pruning.conf." + ".".join(p.relative_to(REPO / "conf").parts)
        for p in (REPO / "conf").rglob("*")
        if p.is_dir() and "__pycache__" not in p.parts
    }
    assert folders <= packages, f"add to [tool.setuptools] packages: {sorted(folders - packages)}"


# ----------------------------------------------------------------------------- end to end (subprocess)
def _prune_exp(args: list[str], cwd: Path, env_root: Path, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRUNE_LAB_RESULTS": str(env_root), "COLUMNS": "160", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pruning.cli.exp", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.integration
def test_prune_exp_end_to_end_bad_inputs_exit_2_and_leave_nothing(tmp_path, outside) -> None:
    root = tmp_path / "results"
    for args in (["data.name=../../../../x"], ["model.name=../../../x"], ["device=tpu"], ["device=cuda"], DRY):
        if args == ["device=cuda"] and torch.cuda.is_available():
            continue
        if args == DRY:  # a planted link in the run dir
            link = planned_run_dir(root, DRY) / ".hydra" / "config.yaml"
            link.parent.mkdir(parents=True)
            link.symlink_to(outside)
        before = snapshot(root)
        out = _prune_exp(args, tmp_path, root)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and "prune-exp: error" in out.stderr, out.stderr
        assert snapshot(root) == before, args
    assert outside.read_text() == "precious\n"
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    link.unlink()
    elsewhere = tmp_path / "elsewhere"  # the run dir moved out of the root by Hydra's own key
    out = _prune_exp([*DRY, f"hydra.run.dir={elsewhere}"], tmp_path, root)
    assert out.returncode == 2 and "outside paths.results_root" in out.stderr, out.stderr
    assert not elsewhere.exists()


@pytest.mark.integration
def test_prune_exp_writes_the_hydra_files_itself_and_a_late_user_error_leaves_no_root(tmp_path) -> None:
    root = tmp_path / "results"
    out = _prune_exp(DRY, tmp_path, root)
    assert out.returncode == 0, out.stderr
    (config,) = root.glob("runs/**/.hydra/config.yaml")
    assert "dry_run: true" in config.read_text() and not config.is_symlink()
    assert "dry_run=true" in (config.parent / "overrides.yaml").read_text()
    assert "output_subdir: null" in (config.parent / "hydra.yaml").read_text()

    late = tmp_path / "late"  # a user error raised inside the run, after Hydra made the run dir and the root
    code = (
        "import sys, pruning.pipeline as p\nfrom pruning import PruneLabError\n"
        "def boom(*a, **k):\n    raise PruneLabError('a data file is broken')\n"
        "p.run = boom\nsys.argv[0] = 'prune-exp'\nfrom pruning.cli.exp import main\nmain()\n"
    )
    out = _prune_exp(DRY, tmp_path, late, code=code)
    assert out.returncode == 2 and "a data file is broken" in out.stderr, out.stderr
    assert not late.exists()
