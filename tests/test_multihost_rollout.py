"""Several JAX processes (CPU, gloo, jax.distributed on 127.0.0.1) fill one prediction store.

Each process is a `somojax predict` command started with SOMOJAX_COORDINATOR,
SOMOJAX_NUM_PROCESSES and SOMOJAX_PROCESS_ID (somojax/utils/distributed.py), one CPU device
each, like the single-process reference it is compared with bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from somojax.checkpoint import save_bundle
from somojax.config import load_config
from somojax.infer import store as pstore
from tests.test_infer import _bundle, _stores

pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parent.parent
# 4 x 6 cells (22 on land) in tiles of 2 x 4 (4 tiles), 239 output days in 2 blocks: 8 (tile,
# block) pairs; device passes of at most 4 cells keep the compiled shapes few
INFER = {
    "infer.start": "2000-04-01",
    "infer.end": "2000-11-25",
    "layout.shard_time": 60,
    "layout.time_block_days": 120,
    "layout.shard_lat": 2,
    "layout.shard_lon": 4,
    "layout.chunk_lat": 2,
    "layout.chunk_lon": 2,
    "layout.chunk_time": 30,
    "layout.tile_cells": 4,
}
PAIRS = 8
TIMEOUT = 240


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Stores, an L1 checkpoint (2 members) and the single-process reference store."""
    root = tmp_path_factory.mktemp("multihost")
    cfg = load_config("tiny", [f"workdir={root}/run"])
    _stores(cfg.store_dir)
    save_bundle(_bundle("L1", 10), cfg.checkpoint_dir / "L1")
    ref = root / "ref.zarr"
    outs = launch(root, 1, ref)
    assert outs[0][0] == 0, outs[0][1][-3000:]
    return root, ref


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(root: Path, store: Path, extra=()) -> list[str]:
    over = {"workdir": f"{root}/run", **INFER, "infer.output": str(store), "layout.cpu_devices": 1}
    return [sys.executable, "-m", "somojax", "predict", "-c", "tiny", *(f"{k}={v}" for k, v in over.items()), *extra]


def start(root: Path, n: int, store: Path, extra=(), env_of=lambda pid: {}) -> list[subprocess.Popen]:
    """`n` processes of one `somojax predict` job (n=1: a plain single-process command)."""
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith(("SOMOJAX_", "SLURM_"))}
    base.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    port = _free_port()
    procs = []
    for pid in range(n):
        env = dict(base, **env_of(pid))
        if n > 1:
            env.update(
                SOMOJAX_COORDINATOR=f"127.0.0.1:{port}", SOMOJAX_NUM_PROCESSES=str(n), SOMOJAX_PROCESS_ID=str(pid)
            )
        procs.append(
            subprocess.Popen(
                _args(root, store, extra),
                env=env,
                cwd=REPO,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    try:
        return [(p.wait(timeout=timeout), p.communicate()[0]) for p in procs]
    finally:  # never leave a hung process behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def launch(root: Path, n: int, store: Path, extra=(), env_of=lambda pid: {}) -> list[tuple[int, str]]:
    return wait(start(root, n, store, extra, env_of))


def assert_bitwise_equal(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for v in pstore.VARIABLES:
        x, y = np.asarray(ga[v][...]), np.asarray(gb[v][...])
        assert x.shape == y.shape and np.isfinite(x).any(), v
        np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32), err_msg=v)


def _todo(out: str) -> int:
    """The (tile, block) pairs a process said it would compute ('..., N to do (M done)')."""
    line = next(l for l in out.splitlines() if " to do (" in l)
    return int(line.split(" to do (")[0].rsplit(" ", 1)[1])


def _complete(store: Path) -> bool:
    return bool(zarr.open_group(str(store), mode="r").attrs.get("somojax_complete"))


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_processes_fill_one_store_like_one_process(world, n):
    root, ref = world
    store = root / f"p{n}.zarr"
    outs = launch(root, n, store)
    assert all(rc == 0 for rc, _ in outs), "\n-----\n".join(o[-3000:] for _, o in outs)
    assert "process 1 of %d" % n in outs[1][1]
    assert_bitwise_equal(ref, store)
    records = pstore.finished(store)
    assert len(records) == PAIRS and _complete(store)
    # the work was shared: process p computed the tiles t with t % n == p, nothing twice
    assert all(r["process"] == t % n for (t, _), r in records.items())
    assert sum(_todo(o) for _, o in outs) == PAIRS


@pytest.mark.slow
@pytest.mark.parametrize("action,code", [("kill", -9), ("sigterm", 143)])
def test_killed_process_restarted_job_finishes_without_recomputing(world, action, code):
    root, ref = world
    store = root / f"{action}.zarr"
    # process 1 is killed (SIGKILL), or stopped by SLURM's notice (SIGTERM: a clean stop, exit
    # 143, JAX's preemption service must not swallow it), once its first (tile, block) is
    # written and marked; the job ends with it, as `srun --kill-on-bad-exit` ends a step
    fault = {"SOMOJAX_FAULT": f"predict_after_block@1:{action}"}
    procs = start(root, 2, store, env_of=lambda pid: fault if pid == 1 else {})
    try:
        assert procs[1].wait(timeout=TIMEOUT) == code
    finally:
        procs[0].kill()
        wait(procs)
    before = {f.name: f.stat().st_mtime_ns for f in pstore.progress_dir(store).glob("*.json")}
    assert 1 <= len(before) < PAIRS and not _complete(store)
    time.sleep(0.05)  # a rewritten marker would get a later mtime
    outs = launch(root, 2, store)
    assert all(rc == 0 for rc, _ in outs), "\n-----\n".join(o[-3000:] for _, o in outs)
    after = {f.name: f.stat().st_mtime_ns for f in pstore.progress_dir(store).glob("*.json")}
    assert len(after) == PAIRS and _complete(store)
    assert {k: after[k] for k in before} == before  # finished pairs were not computed again
    assert sum(_todo(o) for _, o in outs) == PAIRS - len(before)
    assert_bitwise_equal(ref, store)


def test_every_process_refuses_another_runs_store_before_compute(world):
    root, ref = world
    markers = {f.name: f.read_text() for f in pstore.progress_dir(ref).glob("*.json")}
    outs = launch(root, 2, ref, extra=["infer.end=2000-10-31"])  # another period: another run
    for rc, out in outs:
        assert rc == 2, out[-3000:]
        assert "holds predictions of another run" in out and " to do (" not in out
    assert {f.name: f.read_text() for f in pstore.progress_dir(ref).glob("*.json")} == markers
    assert json.loads(zarr.open_group(str(ref), mode="r").attrs["somojax_summary"])["processes"] == 1
