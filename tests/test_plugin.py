"""A method from outside prune-lab is a plug-in (pruning.plugins): tests/plugin_example holds a
package, ``prunelab_first_k``, that edits no prune-lab file; its two entry points (the
``*.dist-info`` beside it, as ``pip install`` would write) declare its Method class and its config
package. With that folder on the path, ``prune-exp`` composes and runs ``method=first_k`` (single
run and sweep), ``prune-report`` renders its own table, and a config still cannot name a class
no entry point declares. This is the README's "add a method" recipe, run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruning import PruneLabError
from pruning.config import make_method

EXAMPLE = Path(__file__).parent / "plugin_example"


def test_a_declared_plugin_method_is_made_and_an_undeclared_one_refused(monkeypatch) -> None:
    with pytest.raises(PruneLabError, match="entry point group prune_lab.methods"):
        make_method({"_target_": "prunelab_first_k.FirstK", "name": "first_k", "ratio": 0.5})
    monkeypatch.syspath_prepend(str(EXAMPLE))
    method = make_method({"_target_": "prunelab_first_k.FirstK", "name": "first_k", "ratio": 0.5})
    assert method.name == "first_k" and method.key() == {"ratio": 0.5}
    with pytest.raises(PruneLabError, match="is not a prune-lab method"):  # importable, but declared by nobody
        make_method({"_target_": "os.system", "name": "x"})


def test_plugin_report_specs_are_loaded_beside_ours(monkeypatch) -> None:
    from pruning.report import load_specs

    assert "first_k_demo" not in load_specs()
    monkeypatch.syspath_prepend(str(EXAMPLE))
    specs = load_specs()
    assert "first_k_demo" in specs and "rethinking_l1_cifar10" in specs


@pytest.mark.integration  # make test-integration: prune-exp and prune-report in subprocesses
def test_plugin_method_runs_through_prune_exp_and_prune_report(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE), "PRUNE_LAB_RESULTS": str(tmp_path), "COLUMNS": "160"}
    run = [sys.executable, "-m", "pruning.cli.exp", "-m", "method=first_k", "method.ratio=0.3,0.6"]
    run += ["schedule.epochs=2", "schedule.finetune_epochs=1", "quiet=true", "latency.repeats=2"]
    out = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("metrics.json"))]
    assert sorted(m["key"]["ratio"] for m in runs) == [0.3, 0.6]
    assert all(m["status"] == "done" and m["key"]["method"] == "first_k" for m in runs)
    report = [sys.executable, "-m", "pruning.cli.report", "first_k_demo", "--results-root", str(tmp_path)]
    out = subprocess.run(report, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (table_file,) = (tmp_path / "tables").glob("first_k_demo*.md")  # one budget group: the digits runs
    table = table_file.read_text()
    assert "first_k" in table and "0.3" in table and "0.6" in table
    # without the plug-in on the path, the method is not an option (nothing was registered in prune-lab)
    env.pop("PYTHONPATH")
    out = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 2 and "first_k" in out.stderr and "Traceback" not in out.stderr
