"""Training killed or interrupted at every dangerous point resumes to bitwise the uninterrupted run.

Each case runs the tiny trainer in a child process with SOMOJAX_FAULT set (somojax.utils.faults:
SIGKILL, SIGINT, SIGTERM or a double SIGINT at a named point of the loop or inside an orbax save),
then resumes in this process and compares with one uninterrupted run: the final train state, the
params of the latest and best checkpoints, the best step and metrics.jsonl (without its
wall-clock fields).

The run: 3 epochs x 4 updates, a checkpoint every 3 updates (async) besides the epoch ends,
a log record every 2 updates; validations at steps 4, 8, 12. Each child process costs ~10 s
(JAX start and compilation), so the default suite kills at the point of the issue (between the
two saves); the other points are marked slow (test_train_budget.py interrupts a run in-process).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import jax
import numpy as np
import pytest

from somojax.utils import faults, signals
from tests.test_train_engine import leaves_equal, make_trainer
from tests.train_fixtures import checkpoint_params, metric_records, run_child, tiny_config

KW = dict(epochs=3, max_updates_per_epoch=4, checkpoint_every_steps=3, log_every_steps=2, keep_checkpoints=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    res = make_trainer(tiny_config(tmp, **KW), tmp, name="run").fit()
    d = tmp / "ckpt" / "run"
    return {
        "state": jax.device_get(res.state),
        "ckpt": checkpoint_params(d),
        "metrics": metric_records(d / "metrics.jsonl"),
        "loop": res.loop,
    }


def assert_same_as_reference(reference, tmp_path, res):
    d = tmp_path / "ckpt" / "run"
    got = checkpoint_params(d)
    ref = reference["ckpt"]
    assert int(res.state["step"]) == 12
    assert leaves_equal(jax.device_get(res.state), reference["state"])
    assert got["latest_step"] == ref["latest_step"] == 12
    assert got["best_steps"] == ref["best_steps"]
    assert leaves_equal(got["latest"], ref["latest"]) and leaves_equal(got["best"], ref["best"])
    assert metric_records(d / "metrics.jsonl") == reference["metrics"]
    assert (
        res.loop.history == reference["loop"].history
        and res.loop.to_json()["tracker"] == reference["loop"].to_json()["tracker"]
    )
    assert not list(d.rglob("*orbax-checkpoint-tmp*")), "a temporary directory of a killed save was left"


def kill_then_resume(reference, tmp_path, fault, rc):
    out = run_child(tmp_path, KW, fault)
    assert out.returncode == rc, out.stdout[-2000:] + out.stderr[-4000:]
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    res = make_trainer(tiny_config(tmp_path, **KW), tmp_path, name="run").fit()
    assert_same_as_reference(reference, tmp_path, res)
    return out, res


# the dangerous points of the epoch end at step 8 (best improves there), and a mid-epoch save
@pytest.mark.parametrize(
    "fault",
    [
        "between_saves@8",  # best/8 finalised, state/8 not started (the StepAlreadyExistsError of the issue)
        pytest.param("inside_state_save@8", marks=pytest.mark.slow),  # state/8 fully written, not renamed
        pytest.param("inside_best_save@8", marks=pytest.mark.slow),
        pytest.param("after_val_metrics@8", marks=pytest.mark.slow),
        pytest.param("after_state_save@8", marks=pytest.mark.slow),
        pytest.param("inside_state_save@3", marks=pytest.mark.slow),  # the asynchronous mid-epoch save
        pytest.param("after_step@7", marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_a_dangerous_point_then_resume_is_bitwise(reference, tmp_path, fault):
    kill_then_resume(reference, tmp_path, fault + ":kill", -signal.SIGKILL)


@pytest.mark.parametrize(
    "fault, rc, resumed_from",
    [
        pytest.param(
            "after_step@6:sigint", 130, 6, marks=pytest.mark.slow
        ),  # mid-epoch: a checkpoint at the current step
        pytest.param(
            "inside_state_save@8:sigterm", 143, 8, marks=pytest.mark.slow
        ),  # in the epoch-end save: it completes first
        pytest.param("between_saves@4:sigint", 130, 4, marks=pytest.mark.slow),
        # second Ctrl-C (sent from orbax's save thread once the first is handled): os._exit at once
        pytest.param("inside_state_save@3:sigint2", 130, None, marks=pytest.mark.slow),
    ],
)
def test_sigint_and_sigterm_stop_cleanly_and_resume_bitwise(reference, tmp_path, fault, rc, resumed_from):
    out, res = kill_then_resume(reference, tmp_path, fault, rc)
    if fault.endswith(":sigint2"):  # the second handled as a second, not merged with the first
        assert "second SIGINT: stopping now" in out.stderr, out.stderr[-2000:]
    if resumed_from is not None:
        assert "INTERRUPTED" in out.stdout and "the same command resumes here" in out.stdout
        assert res.resumed_from == resumed_from


@pytest.mark.slow  # the same path, with the plateau schedule: test_train_budget.py
def test_sigint_in_process_stops_after_the_step_with_a_checkpoint(reference, tmp_path):
    cfg = tiny_config(tmp_path, **KW)
    # what the process had (the default handler, or SIG_IGN when started in the background by a
    # non-interactive shell)
    before = signal.getsignal(signal.SIGINT)

    def hook(point, step):
        if point == "after_step" and step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    faults.hook = hook
    try:
        with pytest.raises(signals.Interrupted) as e:
            make_trainer(cfg, tmp_path, name="run").fit()
    finally:
        faults.hook = None
    assert e.value.exit_code == 130 and "after update 5" in str(e.value)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    res = make_trainer(cfg, tmp_path, name="run").fit()
    assert res.resumed_from == 5
    assert_same_as_reference(reference, tmp_path, res)


@pytest.mark.slow
def test_several_kills_in_one_run(reference, tmp_path):
    """Killed at three different points, resumed each time by a new process."""
    for fault, rc in (("inside_best_save@4:kill", -9), ("after_step@6:sigterm", 143), ("between_saves@8:kill", -9)):
        out = run_child(tmp_path, KW, fault)
        assert out.returncode == rc, out.stderr[-3000:]
    res = make_trainer(tiny_config(tmp_path, **KW), tmp_path, name="run").fit()
    assert_same_as_reference(reference, tmp_path, res)


def test_metrics_truncate_drops_later_and_broken_records(tmp_path):
    from somojax.utils.logging import MetricsWriter, read_metrics

    with MetricsWriter(tmp_path, tensorboard=False) as w:
        for s in (1, 2, 3, 4):
            w.write(s, {"loss": float(s)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a kill in the middle of a line
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        assert w.truncate(2) == 3
        w.write(3, {"loss": 30.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    with MetricsWriter(tmp_path, tensorboard=False) as w:
        assert w.truncate(None) == 3
    assert read_metrics(tmp_path / "metrics.jsonl") == []


# ----------------------------------------------------------------------------------------
# the prediction store (somojax/infer/store.py): a stop while it is (re)created
# ----------------------------------------------------------------------------------------
def _layout():
    import pandas as pd

    from somojax.infer.store import Layout

    return Layout(
        ("L1",),
        pd.date_range("2000-01-01", periods=4),
        np.arange(2) + 40.125,
        np.arange(2) - 97.875,
        (4, 2, 2),
        (2, 2, 2),
    )


def test_prediction_store_created_then_stopped_before_anything_else_resumes(tmp_path, monkeypatch):
    from somojax.infer import store as pstore

    path = tmp_path / "p.zarr"
    real = os.replace

    def replace_then_stop(a, b):  # (os.replace is the module's: zarr's own writes pass through)
        real(a, b)
        if Path(b) == path:
            raise KeyboardInterrupt  # the moment right after the store appeared

    monkeypatch.setattr(pstore.os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pstore.open_or_create(path, _layout(), {}, "fp", fresh=False)
    monkeypatch.setattr(pstore.os, "replace", real)
    assert pstore.open_or_create(path, _layout(), {}, "fp", fresh=False) is False  # resumed
    pstore.mark(path, 0, 0, {"cells": 4})  # its records have somewhere to go
    assert pstore.finished(path) == {(0, 0): {"cells": 4}}


def test_prediction_store_replaced_with_fresh_and_stopped_mid_delete_keeps_no_stale_records(tmp_path, monkeypatch):
    import shutil

    from somojax.infer import store as pstore

    path = tmp_path / "p.zarr"
    pstore.open_or_create(path, _layout(), {}, "fp", fresh=False)
    pstore.mark(path, 0, 0, {"cells": 4})
    real = shutil.rmtree
    calls = []

    def rmtree_then_stop(p, *a, **k):
        real(p, *a, **k)
        if Path(p).parent == tmp_path:
            calls.append(Path(p))
            raise KeyboardInterrupt  # stopped after the first deletion

    monkeypatch.setattr(pstore.shutil, "rmtree", rmtree_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pstore.open_or_create(path, _layout(), {}, "fp", fresh=True)
    monkeypatch.setattr(pstore.shutil, "rmtree", real)
    assert calls == [pstore.progress_dir(path)]  # the records went first
    pstore.open_or_create(path, _layout(), {}, "fp", fresh=False)
    assert pstore.finished(path) == {}  # every block is recomputed, none is trusted blindly


@pytest.mark.ondemand
def test_kill_resume_benchmark_with_a_few_stops(tmp_path):
    """benchmarks/kill_resume.py on the real CLI: 3 random stops of train and of predict."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [
            sys.executable,
            str(repo / "benchmarks" / "kill_resume.py"),
            "--kills",
            "3",
            "--seed",
            "5",
            "--workdir",
            str(tmp_path),
            "--out",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    assert "train: 3 stops" in out.stdout and "predict: 3 stops" in out.stdout
