"""Methods from outside prune-lab: found through Python entry points, never named by a config alone.

A package adds a pruning method without editing prune-lab by declaring, in its own pyproject.toml:

    [project.entry-points."prune_lab.methods"]
    first_k = "my_pkg.methods:FirstK"          # a pruning.methods.base.Method subclass

    [project.entry-points."prune_lab.conf"]
    my_pkg = "my_pkg.conf"                      # a package holding method/<name>.yaml, report/<spec>.yaml, ...

``pip install`` of that package is the user's deliberate act. After it, ``prune-exp
method=first_k`` composes ``my_pkg/conf/method/first_k.yaml`` (its folder is put on Hydra's search
path), ``make_method`` accepts its ``_target_`` because an installed entry point declares exactly
that class (a config still cannot name arbitrary code), and ``prune-report`` reads the package's
``report/*.yaml`` beside prune-lab's own. tests/test_plugin.py is the recipe, run end to end.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

from pruning import PruneLabError

METHODS_GROUP = "prune_lab.methods"
CONF_GROUP = "prune_lab.conf"


def method_targets() -> dict[str, str]:
    """``module.Class`` -> entry-point name, for every installed ``prune_lab.methods`` entry point."""
    out = {}
    for ep in entry_points(group=METHODS_GROUP):
        module, _, attr = ep.value.partition(":")
        if not attr:
            raise PruneLabError(
                f"entry point {ep.name} = {ep.value!r} in group {METHODS_GROUP}: write it as 'package.module:Class'"
            )
        out[f"{module.strip()}.{attr.strip()}"] = ep.name
    return out


def conf_packages() -> list[str]:
    """The config packages installed plug-ins declare (``prune_lab.conf`` entry points), sorted."""
    return sorted({ep.value.strip() for ep in entry_points(group=CONF_GROUP)})


def conf_dirs() -> list[Path]:
    """The folders of those packages (a package that cannot be found is an error naming it)."""
    dirs = []
    for package in conf_packages():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise PruneLabError(
                f"entry point group {CONF_GROUP} names the package {package!r}, which is not importable as a package "
                "(a folder with __init__.py); reinstall the plug-in that declares it"
            )
        dirs.append(Path(list(spec.submodule_search_locations)[0]))
    return dirs


def searchpath_override(argv: list[str]) -> list[str]:
    """``hydra.searchpath=[pkg://...]`` for the plug-ins' config packages, unless the command line
    sets the search path itself or no plug-in is installed: the overrides to add."""
    packages = conf_packages()
    if not packages or any(a.lstrip("+~").startswith("hydra.searchpath") for a in argv):
        return []
    return ["hydra.searchpath=[" + ",".join(f"pkg://{p}" for p in packages) + "]"]
