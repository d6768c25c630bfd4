"""Lint over the whole code base: pyflakes-level checks (undefined and unused names, syntax
errors) and the layout `ruff format` writes (pyproject's [tool.ruff])."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the `test` extra: pip install -e '.[test]')")
    return subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing():
    out = _ruff("check", "--output-format", "concise", "somojax", "tests", "benchmarks")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_leaves_the_layout_alone():
    out = _ruff("format", "--check", "somojax", "tests", "benchmarks", "launch")
    assert out.returncode == 0, "run `ruff format somojax tests benchmarks launch`:\n" + out.stdout + out.stderr
