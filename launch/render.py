#!/usr/bin/env python3
"""Prints the exact command lines a cluster launcher runs, without a cluster (a dry run).

  python launch/render.py slurm --job train -c paper --nodes 4 --gpus-per-node 8
  python launch/render.py tpu --job predict -c paper --tpu somojax-v4-32 --zone us-central2-b --project my-project

For SLURM: the `sbatch` line that submits the job with that many nodes and GPUs, then the lines
the batch script runs inside the job. For a TPU slice: the `gcloud` line that runs the command
on every worker. The lines come from running the script itself with SOMOJAX_DRY_RUN=1 (its
`run` helper prints instead of running), so what is shown is what the script would do.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
JOBS = {"slurm": ("train", "predict", "prepare"), "tpu": ("train", "predict")}


def fail(msg: str) -> None:
    """A one-line error and exit code 2 (bad input), as every somojax command does."""
    print(f"render: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _script(kind: str, job: str) -> Path:
    return HERE / kind / (f"{job}.sbatch" if kind == "slurm" else f"{job}.sh")


def _dry_run(script: Path, args: list[str], env: dict[str, str]) -> list[str]:
    full = {**os.environ, **env, "SOMOJAX_DRY_RUN": "1"}
    out = subprocess.run(["bash", str(script), *args], env=full, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        fail(f"{script.relative_to(REPO)} failed in its dry run (exit {out.returncode}): {out.stderr.strip()[:500]}")
    return [l for l in out.stdout.splitlines() if l.strip()]


def render_slurm(job: str, config: str, nodes: int, gpus_per_node: int) -> list[str]:
    """The sbatch line and the lines the batch script runs, for `nodes` x `gpus_per_node`."""
    script = _script("slurm", job)
    rel = str(script.relative_to(REPO))
    if job == "prepare":  # CPU nodes, one dask-worker launcher per node
        submit = ["sbatch", f"--nodes={nodes}", rel, config]
        env = {"SLURM_NNODES": str(nodes)}
    else:
        submit = [
            "sbatch",
            f"--nodes={nodes}",
            f"--ntasks-per-node={gpus_per_node}",
            f"--gpus-per-node={gpus_per_node}",
            rel,
            config,
        ]
        env = {"SLURM_NNODES": str(nodes), "SLURM_NTASKS": str(nodes * gpus_per_node)}
    env.update(SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_ID="JOBID")
    inside = _dry_run(script, [config], env)
    return [shlex.join(submit)] + [l.replace(str(REPO) + "/", "") for l in inside]


def render_tpu(job: str, config: str, tpu: str, zone: str, project: str) -> list[str]:
    env = {"TPU_NAME": tpu, "ZONE": zone, "PROJECT": project}
    return _dry_run(_script("tpu", job), [config], env)


def _check_config(config: str) -> None:
    """Fails early on a config that `somojax` would refuse (when somojax is importable here)."""
    sys.path.insert(0, str(REPO))
    try:
        from somojax.config import load_config
        from somojax.errors import SomojaxError
    except ImportError:
        return
    try:
        load_config(config, [])
    except SomojaxError as e:
        fail(f"config {config!r}: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="launch/render.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("slurm", help="launch/slurm/<job>.sbatch")
    s.add_argument("--job", choices=JOBS["slurm"], required=True)
    s.add_argument("--nodes", type=int, default=2)
    s.add_argument("--gpus-per-node", type=int, default=4)
    t = sub.add_parser("tpu", help="launch/tpu/<job>.sh")
    t.add_argument("--job", choices=JOBS["tpu"], required=True)
    t.add_argument("--tpu", default="somojax-v4-32", help="TPU VM name")
    t.add_argument("--zone", default="us-central2-b")
    t.add_argument("--project", default="my-project")
    for q in (s, t):
        q.add_argument("-c", "--config", default="configs/paper.yaml", help="config name or YAML path")
    a = p.parse_args(argv)
    for name in ("nodes", "gpus_per_node"):
        if getattr(a, name, 1) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    _check_config(a.config)
    if a.kind == "slurm":
        lines = render_slurm(a.job, a.config, a.nodes, a.gpus_per_node)
        print(
            f"# submit ({a.nodes} nodes{'' if a.job == 'prepare' else f' x {a.gpus_per_node} GPUs, one process per GPU'}):"
        )
        print(lines[0])
        print("# inside the job, the batch script runs:")
        print("\n".join(lines[1:]))
    else:
        print(f"# on every worker of TPU VM {a.tpu}:")
        print("\n".join(render_tpu(a.job, a.config, a.tpu, a.zone, a.project)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
