"""pyflakes-level checks (undefined and unused names, syntax errors) over the whole code base."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the `test` extra: pip install -e '.[test]')")
    out = subprocess.run(
        [ruff, "check", "--output-format", "concise", "somojax", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_leaves_the_layout_alone():
    """The tree stays as `ruff format` writes it (pyproject's [tool.ruff.format])."""
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the `test` extra: pip install -e '.[test]')")
    out = subprocess.run(
        [ruff, "format", "--check", "somojax", "tests", "benchmarks", "launch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, "run `ruff format somojax tests benchmarks launch`:\n" + out.stdout + out.stderr
