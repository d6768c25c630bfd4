"""Same-run A/B of two source trees' `somojax bench` figures, pair by pair.

A refactor must not slow the training step or the rollout. Two measures, both recorded:

- the programs: each tree compiles the programs the bench times (the engine's train step with 1
  and 5 members, the three rollouts) and their optimized HLO is compared, without source
  locations and instruction numbers. The same program on the same machine runs at the same
  speed, whatever the timings below say;
- the timings: `somojax bench --only train rollout` (the PyTorch peers left out: they do not
  change between trees) from tree A and from tree B in turn, A B B A A B ..., `--pairs` times
  each, and every row both report: the ratio A/B of each pair's medians, then the median and the
  range of those ratios. Pairing keeps the ratio meaningful while the machine's speed drifts.

    git archive <old commit> | tar -x -C /tmp/old     # the baseline as a clean tree
    python benchmarks/ab_trees.py --a . --b /tmp/old --pairs 3 --label "kernel options"

Writes benchmarks/results/ab_trees-<label>-cpu-2c.json with the machine named.
"""

from __future__ import annotations

import argparse
import hashlib
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

# In the child: the optimized HLO of the programs the bench times (the engine's train step with
# 1 and 5 members, the three rollouts), written to files. Trees from before models/kernel.py
# pass their rollout options as keywords.
HLO_CHILD = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"  # the bench's CPU devices
out = sys.argv[1]
import jax, jax.numpy as jnp
from somojax.config import load_config
from somojax.bench import suite
from somojax.infer import kernels
from somojax.models import ensemble
cfg = load_config("demo")
for members in (1, 5):
    run, _ = suite._engine_step(cfg, members)
    fv = dict(zip(run.__code__.co_freevars, (c.cell_contents for c in run.__closure__)))
    low = fv["step"].lower(fv["holder"]["state"], fv["batch"], fv["lr"])
    open(f"{out}/train_step: {members} member(s)", "w").write(low.compile().as_text())
b = cfg.bench
H, L = b.hidden_size, b.seq_length
params = ensemble.init_ensemble(jax.random.key(0), 1, suite.D, suite.S, H)
try:
    from somojax.models.kernel import KernelOptions
    kw = dict(kernel=KernelOptions())
except ImportError:
    from somojax.infer import engine
    o = engine.KernelOptions()
    kw = dict(rows_per_step=o.resolved_rows(H), hoist=o.resolved_hoist(), member_map=o.resolved_member_map())
cases = {"exact, 1 cell": (1, b.rollout_days, "exact", 1), "chunked (k=30), 1 cell": (1, b.rollout_days, "chunked", 30),
         "exact, tile of 64 cells x 1 year": (64, 365, "exact", 1)}
for name, (cells, n_out, mode, k) in cases.items():
    x = jnp.zeros((cells, n_out + L - 1, suite.D), jnp.float32)
    xs = jnp.zeros((cells, suite.S), jnp.float32)
    low = kernels.predict_normalised.lower(params, x, xs, seq_length=L, mode=mode, last_n=k, **kw)
    open(f"{out}/rollout: {name}", "w").write(low.compile().as_text())
"""


def normalised_hlo(text: str) -> str:
    """Optimized HLO without what names the source (file names, lines, functions) or numbers the
    instructions: two trees that compile to the same program give the same text."""
    text = re.sub(r", metadata=\{[^}]*\}|, stack_frame_id=\d+", "", text)
    keep = [
        l for l in text.splitlines() if not re.match(r"\d+ |(FileNames|FunctionNames|FileLocations|StackFrames)", l)
    ]
    return re.sub(r"([A-Za-z_][\w-]*)\.\d+", r"\1", "\n".join(keep))


def hlo_of_tree(tree: Path, out: Path, log: Path) -> dict[str, str]:
    """{program: sha256 of its normalised optimized HLO} as `tree` compiles the bench's programs."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(log, "a") as f:
        rc = subprocess.run(
            [sys.executable, "-c", HLO_CHILD, str(out)], cwd=tree, env=env, stdout=f, stderr=f
        ).returncode
    if rc:
        raise SystemExit(f"compiling the bench programs of {tree} failed (exit {rc}); see {log}")
    return {p.name: hashlib.sha256(normalised_hlo(p.read_text()).encode()).hexdigest() for p in sorted(out.iterdir())}


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
    p.add_argument("--pairs", type=int, default=3, help="timed pairs (0: compare the programs only)")
    p.add_argument("--only", nargs="+", default=["train", "rollout"])
    p.add_argument("--label", default="ab")
    a = p.parse_args()
    trees = {"A": a.a.resolve(), "B": a.b.resolve()}
    work = Path(tempfile.mkdtemp(prefix="ab_trees-"))
    hlo = {k: hlo_of_tree(t, work / f"hlo-{k}", work / "hlo.log") for k, t in trees.items()}
    same = {name: hlo["A"].get(name) == h for name, h in hlo["B"].items()}
    for name, eq in same.items():
        print(f"{name:60s} {'same program' if eq else 'DIFFERENT program'}")
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for i in range(a.pairs):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")  # alternate who goes first
        for k in order:
            out = work / f"{k}{i}"
            t0 = time.perf_counter()
            runs[k].append(run_tree(trees[k], a.only, out, work / "bench.log"))
            print(f"pair {i + 1}/{a.pairs} {k}: {time.perf_counter() - t0:.0f} s", flush=True)
    common = sorted(set(runs["A"][0]) & set(runs["B"][0])) if a.pairs else []
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
        "same_optimized_hlo": same,
        "rows": table,
        "worst_ratio_median": max((v["ratio_median"] for v in table.values()), default=None),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", a.label.lower()).strip("-")
    out = REPO / "benchmarks" / "results" / f"ab_trees-{slug}-{device_tag()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
