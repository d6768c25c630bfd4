"""Every Markdown document the code or the docs cite is a file of this repository.

A clone must be able to follow each reference: `docs/design.md#model` names a file under the
repository and a heading in it. A citation is any token ending in `.md` (optionally followed by
`#anchor`); it resolves against the citing file's folder, the repository root or `docs/`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("somojax", "tests", "benchmarks", "launch", "configs", "docs")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".cfg"}
# files somojax writes (outputs of a run), not documents of the repository
OUTPUT_NAMES = {"prepare_report.md"}
REF = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.md)(?:#([\w-]+))?")


def _files() -> list[Path]:
    out = [REPO / "README.md", REPO / "pyproject.toml"]
    for top in SCANNED:
        out += [
            p
            for p in sorted((REPO / top).rglob("*"))
            if p.is_file() and p.suffix in SUFFIXES and "results" not in p.parts
        ]
    return [p for p in out if p != Path(__file__).resolve()]  # this file names missing documents on purpose


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", doc.read_text(), re.M)}


def _resolve(name: str, citing: Path) -> Path | None:
    for base in (citing.parent, REPO, REPO / "docs"):
        cand = (base / name).resolve()
        if cand.is_file() and REPO in cand.parents:
            return cand
    return None


def _references() -> list[tuple[Path, int, str, str | None]]:
    refs = []
    for path in _files():
        for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in REF.finditer(line):
                if m.group(1) in OUTPUT_NAMES:
                    continue
                refs.append((path, no, m.group(1), m.group(2)))
    return refs


def test_the_scan_sees_the_references():
    names = {name for _, _, name, _ in _references()}
    assert "docs/design.md" in names and "training.md" in names  # the pattern is not vacuous


@pytest.mark.parametrize("bad", ["DESIGN.md", "../shared/STYLE.md", "docs/nothing.md"])
def test_a_missing_document_is_found(bad, tmp_path):
    citing = REPO / "somojax" / "x.py"
    m = REF.search(f"# see {bad} for why")
    assert m and _resolve(m.group(1), citing) is None


def test_every_cited_document_exists():
    missing = [f"{p.relative_to(REPO)}:{no}: {name}" for p, no, name, _ in _references() if _resolve(name, p) is None]
    assert not missing, "references to documents not in the repository (write them into docs/):\n" + "\n".join(missing)


def test_every_cited_anchor_exists():
    cache: dict[Path, set[str]] = {}
    bad = []
    for p, no, name, anchor in _references():
        doc = _resolve(name, p)
        if doc is None or anchor is None:
            continue
        if anchor not in cache.setdefault(doc, _anchors(doc)):
            bad.append(f"{p.relative_to(REPO)}:{no}: {name}#{anchor}")
    assert not bad, "anchors that no heading of the document has:\n" + "\n".join(bad)
