"""Same-run A/B of two source trees' `somojax bench` figures, pair by pair.

A refactor must not slow the training step or the rollout. This runs `somojax bench --only
train rollout` (the PyTorch peers left out: they do not change between trees) from tree A and
from tree B in turn, A B B A A B ..., `--pairs` times each, and compares every row that both
report: the ratio A/B of each pair's medians, then the median and the range of those ratios.
Pairing keeps the ratio meaningful while the machine's speed drifts (±10% here).

    git archive <old commit> | tar -x -C /tmp/old     # the baseline as a clean tree
    python benchmarks/ab_trees.py --a . --b /tmp/old --pairs 3 --label "kernel options"

Writes benchmarks/results/ab_trees-<label>-cpu-2c.json with the machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# In the child: the bench of the tree on sys.path, peers off (they are the same code in A and B).
CHILD = """
import sys
out, *only = sys.argv[1:]
import somojax.bench.suite as suite
suite._peers_available = lambda: {"torch": False, "neuralhydrology": False}
from somojax.cli import main
sys.exit(main(["bench", "-c", "demo", "--only", *only, f"bench.output_dir={out}"]))
"""

TIMES = {"train_step": "ms", "rollout": "s"}  # benchmark -> the row field holding its median


def run_tree(tree: Path, only: list[str], out: Path, log: Path) -> dict[str, float]:
    """One `somojax bench` run of `tree`: {"<benchmark>: <variant>": median time}."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("XLA_FLAGS", None)  # the bench picks its own CPU devices, as a user's run does
    with open(log, "a") as f:
        rc = subprocess.run(
            [sys.executable, "-c", CHILD, str(out), *only], cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT
        ).returncode
    if rc:
        raise SystemExit(f"`somojax bench` of {tree} failed (exit {rc}); see {log}")
    rows = {}
    for name, field in TIMES.items():
        for path in out.glob(f"{name}-*.json"):
            for r in json.loads(path.read_text())["rows"]:
                if r.get(field) is not None:
                    rows[f"{name}: {r['variant']}"] = float(r[field])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", type=Path, default=REPO, help="tree A (the change)")
    p.add_argument("--b", type=Path, required=True, help="tree B (the baseline)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--only", nargs="+", default=["train", "rollout"])
    p.add_argument("--label", default="ab")
    a = p.parse_args()
    trees = {"A": a.a.resolve(), "B": a.b.resolve()}
    work = Path(tempfile.mkdtemp(prefix="ab_trees-"))
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for i in range(a.pairs):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")  # alternate who goes first
        for k in order:
            out = work / f"{k}{i}"
            t0 = time.perf_counter()
            runs[k].append(run_tree(trees[k], a.only, out, work / "bench.log"))
            print(f"pair {i + 1}/{a.pairs} {k}: {time.perf_counter() - t0:.0f} s", flush=True)
    common = sorted(set(runs["A"][0]) & set(runs["B"][0]))
    table = {}
    for row in common:
        ratios = [ra[row] / rb[row] for ra, rb in zip(runs["A"], runs["B"])]
        table[row] = {
            "a": [r[row] for r in runs["A"]],
            "b": [r[row] for r in runs["B"]],
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
        print(f"{row:60s} A/B {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    sys.path.insert(0, str(REPO))
    from somojax.bench.harness import device_tag, machine

    result = {
        "benchmark": "ab_trees",
        "label": a.label,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "trees": {k: str(v) for k, v in trees.items()},
        "pairs": a.pairs,
        "only": a.only,
        "rows": table,
        "worst_ratio_median": max((v["ratio_median"] for v in table.values()), default=None),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", a.label.lower()).strip("-")
    out = REPO / "benchmarks" / "results" / f"ab_trees-{slug}-{device_tag()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
