"""The core names no plugin: ``suite/`` never imports a built-in plugin or benchmark module, and no string in
its code (docstrings aside) is the name of a registered plugin, merge space, benchmark, adapter, optimizer,
merge method or experiment. What a plugin contributes reaches the core through the hooks and the classes of
``evosuite.api``, so a third-party plugin can contribute the same.
"""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

from evosuite.plugin_manager import get_host

SUITE = Path(__file__).resolve().parents[1] / "suite"

#: (file under suite/, name): the few places the core may name a registered thing, each for a reason.
ALLOWED = {
    # The documented defaults of the run configuration format (README: "space: ps", "optimizer: cmaes"),
    # named once, as DEFAULT_SPACE and DEFAULT_OPTIMIZER.
    ("config.py", "ps"),
    ("config.py", "cmaes"),
}
#: The plugin authors' testing kit assembles example runs from the built-in plugins on purpose.
SKIPPED_FOLDERS = ("testing",)


def _registered_names() -> set[str]:
    host = get_host()
    names = {name for registry in host.all_registries().values() for name in registry.names()}
    # Entry-point names are what users type (--plugin vlm); a name equal to a registry kind is not a plugin's.
    names |= {ep.name for ep in entry_points(group="evosuite")} - set(host.all_registries())
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}


def _plugin_references(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    where = path.relative_to(SUITE).as_posix()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            if (text in names and (where, text) not in ALLOWED) or "evosuite.plugins" in text \
                    or "evosuite.benchmarks" in text:
                found.append(f"{where}:{node.lineno} names {text[:60]!r}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(m.startswith(("evosuite.plugins", "evosuite.benchmarks")) for m in modules):
                found.append(f"{where}:{node.lineno} imports {modules[0]}")
    return found


def test_the_core_names_no_registered_plugin():
    names = _registered_names()
    assert {"ps", "dfs", "vlm", "llm", "zoo-ja-vqa", "cmaes", "ties"} <= names  # the scan knows what to look for
    files = [p for p in sorted(SUITE.rglob("*.py"))
             if p.relative_to(SUITE).parts[0] not in SKIPPED_FOLDERS]
    found = [line for path in files for line in _plugin_references(path, names)]
    assert not found, "the core names plugins:\n" + "\n".join(found)


def test_the_scan_sees_a_branch_on_a_space_name(tmp_path, monkeypatch):
    # The same scan on a small module that branches on the dfs space and imports a plugin: both are reported.
    monkeypatch.setattr("tests.test_core_names_no_plugin.SUITE", tmp_path)
    module = tmp_path / "render.py"
    module.write_text('"""Docstrings may say ps or dfs."""\nfrom evosuite.plugins.dfs_space import load_dfs_model\n'
                      'def f(recipe):\n    return recipe["space"] == "dfs"\n', encoding="utf-8")
    found = _plugin_references(module, {"dfs", "ps"})
    assert found == ["render.py:2 imports evosuite.plugins.dfs_space", "render.py:4 names 'dfs'"]
