"""The package's import graph has no cycle, and every module imports on its own.

The graph is read from the source (`ast`): every `import` and `from ... import`, also those inside
functions, since a lazy import that closes a cycle still ties the two modules together
(docs/architecture.md). Every module is then imported in a fresh interpreter (and, marked slow, each one alone in its own,
so that a module that works only because another was imported first is found too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "somojax"


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the package (a package by its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """{module: modules of the package it imports}."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from a.b import c` imports the module a.b.c when there is one, else names of a.b
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                hit = _resolve(t, known)
                if hit and hit != name:
                    edges.add(hit)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_the_imports():
    graph = import_graph(modules())
    assert "somojax.models.ealstm" in graph["somojax.models.ensemble"]  # `from somojax.models import ealstm`
    assert "somojax.infer.engine" in graph["somojax.train.cascade"]  # an import inside a function
    importers_of_cli = {n for n, edges in graph.items() if "somojax.cli" in edges}
    assert importers_of_cli == {"somojax.__main__"}  # nothing below the CLI imports it


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph(modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + " (move what both need into a module of its own)"


def test_models_import_no_later_stage():
    graph = import_graph(modules())
    later = ("somojax.data", "somojax.train", "somojax.infer", "somojax.evaluate", "somojax.cli", "somojax.pipeline")
    for name, edges in graph.items():
        if name.startswith("somojax.models"):
            bad = sorted(e for e in edges if e.startswith(later))
            assert not bad, (
                f"{name} imports {bad}: models are pure functions of parameters (docs/design.md#architecture)"
            )


def _importable() -> list[str]:
    return sorted(n for n in modules() if n != "somojax.__main__")  # __main__ runs the CLI


def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    out = subprocess.run(
        [sys.executable, "-c", code, *_importable()], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.ondemand  # one interpreter per module: about two minutes on 2 cores
def test_every_module_imports_alone():
    code = (
        "import subprocess, sys\n"
        "bad = []\n"
        "for n in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-c', 'import ' + n], capture_output=True, text=True)\n"
        "    if r.returncode:\n"
        "        bad.append(n + ': ' + (r.stderr.strip().splitlines() or ['?'])[-1])\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *_importable()], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, "modules that fail to import alone:\n" + out.stdout + out.stderr
