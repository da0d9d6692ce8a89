"""Every library the package imports is installed with it, or asked for by name.

A plain ``pip install pretrain`` then ``pretrain export`` ended in "No module named
'tokenizers'": the library came only with the ``hf-export`` extra (through transformers)
and nothing named it. The rule checked here: a third-party import is a base dependency
(or one of theirs), or sits under an ``except ImportError`` (where the extra is named), or
is of a library the same file imports under such a guard, or one that library brings
(``BROUGHT``: fastwarc comes with resiliparse).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a module of an extra's library, imported after that library's guarded import succeeded
BROUGHT = {"fastwarc": "resiliparse"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _with_requirements(names: set[str]) -> set[str]:
    """``names`` and the distributions they require unconditionally (one level down)."""
    out = set(names)
    for name in names:
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        out |= {_name(r) for r in reqs if "extra ==" not in r}
    return out


def _guarded(tree: ast.AST) -> set[int]:
    """ids of the nodes inside a ``try`` whose handlers catch ImportError."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is not None and any(isinstance(n, ast.Name) and n.id in
                                           ("ImportError", "ModuleNotFoundError")
                                           for n in ast.walk(h.type)) for h in node.handlers):
            inside |= {id(n) for b in node.body for n in ast.walk(b)}
    return inside


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node, node.module.split(".")[0]))
    return [(n, top) for n, top in found
            if top not in sys.stdlib_module_names and top not in ("pretrain", "__future__")]


def test_every_import_is_a_dependency_or_under_an_import_error_guard():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = _with_requirements({_name(r) for r in project["dependencies"]})
    dists = packages_distributions()

    def of(module: str) -> set[str]:
        return {d.lower().replace("_", "-") for d in dists.get(module, [module])}

    missing = []
    for path in sorted((ROOT / "src" / "pretrain").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = _guarded(tree)
        imports = _imports(tree)
        optional = {top for node, top in imports if id(node) in guarded}
        for node, top in imports:
            if id(node) not in guarded and not of(top) & base and top not in optional \
                    and BROUGHT.get(top) not in optional:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {top}")
    assert not missing, missing
