"""`somojax train` resumed across a change of process count: a checkpoint written by 2 JAX
processes (gloo, jax.distributed on 127.0.0.1, one CPU device each) resumed by 1 process with 2
CPU devices, and the reverse. Both sides build the same (member 2, data 1) mesh, so the resumed
run is compared with the uninterrupted one bit for bit: params of the latest and best
checkpoints, the best steps and metrics.jsonl (without its wall-clock fields). Resumed onto a
single device (another mesh) it agrees within float32 round-off, not bitwise.

The first command stops on its budget (train.max_updates=5, a validation and a checkpoint
there); the second raises the budget to the tiny config's 10 updates and goes on from update 5.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_engine import leaves_equal
from tests.train_fixtures import checkpoint_params, metric_records, write_learnable_stores

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
DATA = [
    "data.forcing_start=2000-01-01",
    "data.forcing_end=2000-10-26",
    "data.target_start=2000-03-01",
    "data.target_end=2000-10-26",
    "data.val_fraction=0.25",
    "model.hidden_size=8",
    "model.seq_length=20",
]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(workdir: Path, stores: Path, processes: int, max_updates: int, devices: int = 2) -> list[str]:
    """One `somojax train` job of `processes` processes over `devices` CPU devices in all; their output."""
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith(("SOMOJAX_", "SLURM_"))}
    base.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "somojax",
        "train",
        "-c",
        "tiny",
        f"workdir={workdir}",
        f"data.store_dir={stores}",
        *DATA,
        f"layout.cpu_devices={devices // processes}",
        f"train.max_updates={max_updates}",
        "--layers",
        "L1",
    ]
    procs = []
    for pid in range(processes):
        env = dict(base)
        if processes > 1:
            env.update(
                SOMOJAX_COORDINATOR=f"127.0.0.1:{port}",
                SOMOJAX_NUM_PROCESSES=str(processes),
                SOMOJAX_PROCESS_ID=str(pid),
            )
        procs.append(
            subprocess.Popen(args, env=env, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    try:
        outs = [(p.wait(timeout=TIMEOUT), p.communicate()[0]) for p in procs]
    finally:  # never leave a hung process behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(rc == 0 for rc, _ in outs), "\n-----\n".join(o[-3000:] for _, o in outs)
    return [o for _, o in outs]


def result(workdir: Path) -> dict:
    d = workdir / "checkpoints" / "L1"
    return {**checkpoint_params(d), "metrics": metric_records(workdir / "metrics" / "L1" / "metrics.jsonl")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp_resume")
    write_learnable_stores(root / "stores")
    train(root / "ref", root / "stores", 1, 10)
    return root, result(root / "ref")


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_resume_onto_another_process_count_is_bitwise(world, first, then):
    root, ref = world
    run = root / f"p{first}to{then}"
    train(run, root / "stores", first, 5)
    assert checkpoint_params(run / "checkpoints" / "L1")["latest_step"] == 5
    outs = train(run, root / "stores", then, 10)
    assert "checkpoints/L1 at update 5 (1 validations done)" in outs[0], outs[0][-3000:]  # resumed, not retrained
    assert "mesh {'member': 2, 'data': 1} over 2 cpu device(s)" in outs[0]
    got = result(run)
    assert got["latest_step"] == ref["latest_step"] == 10
    assert got["best_steps"] == ref["best_steps"]
    assert leaves_equal(got["latest"], ref["latest"]) and leaves_equal(got["best"], ref["best"])
    assert got["metrics"] == ref["metrics"]


def _close(got, want, rtol=1e-5):
    """Records of metrics.jsonl equal up to float32 round-off in their numbers."""
    assert type(got) is type(want)
    if isinstance(got, dict):
        assert got.keys() == want.keys()
        for k in got:
            _close(got[k], want[k], rtol)
    elif isinstance(got, list):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            _close(a, b, rtol)
    elif isinstance(got, float):
        assert got == pytest.approx(want, rel=rtol, abs=1e-7)
    else:
        assert got == want


def test_resume_onto_one_device_is_within_float32_round_off(world):
    """2 processes, then 1 process with 1 CPU device: the mesh becomes (member 1, data 1) and the
    two members' products run in one program, so the sums round differently (seen: up to 1.2e-7
    in W_hh, whose entries reach 1.03); the run is the same up to that round-off."""
    root, ref = world
    run = root / "p2to1device"
    train(run, root / "stores", 2, 5)
    outs = train(run, root / "stores", 1, 10, devices=1)
    assert "mesh {'member': 1, 'data': 1} over 1 cpu device(s)" in outs[0]
    assert "checkpoints/L1 at update 5 (1 validations done)" in outs[0]
    got = result(run)
    assert got["latest_step"] == 10 and got["best_steps"] == ref["best_steps"]
    for which in ("latest", "best"):
        for k, v in ref[which].items():
            np.testing.assert_allclose(got[which][k], v, rtol=1e-5, atol=1e-6, err_msg=f"{which} {k}")
    _close(got["metrics"], ref["metrics"])
