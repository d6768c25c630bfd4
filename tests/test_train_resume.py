"""A training process killed with SIGKILL at an arbitrary step resumes to bitwise the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from somojax.checkpoint import TrainCheckpointer
from tests.test_train_engine import leaves_equal, make_trainer
from tests.train_fixtures import tiny_config

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import os, sys, time
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from tests.test_train_engine import make_trainer
    from tests.train_fixtures import array_data, tiny_config

    class Slow:  # a slow data source, so that the parent can kill us mid-run
        def __init__(self, d):
            self.d = d
            self.steps_per_epoch, self.n_train, self.n_val = d.steps_per_epoch, d.n_train, d.n_val
        def val_batches(self):
            return self.d.val_batches()
        def train_iterator(self):
            it = self.d.train_iterator()
            class W:
                def __next__(s):
                    time.sleep(0.4)
                    return next(it)
                def get_state(s):
                    return it.get_state()
                def set_state(s, st):
                    it.set_state(st)
            return W()

    cfg = tiny_config(Path({tmp!r}), **{kw!r})
    make_trainer(cfg, Path({tmp!r}), data=Slow(array_data(cfg)), name="killed").fit()
    """
)


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_is_bitwise_identical(tmp_path):
    kw = dict(epochs=2, max_updates_per_epoch=6, checkpoint_every_steps=1, keep_checkpoints=2)
    cfg = tiny_config(tmp_path, **kw)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), tmp=str(tmp_path), kw=kw))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ck_dir = tmp_path / "ckpt" / "killed" / "state"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and child.poll() is None:
            steps = [int(p.name) for p in ck_dir.glob("*") if p.name.isdigit()] if ck_dir.exists() else []
            if steps and max(steps) >= 4:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stdout.read().decode()[-3000:]
        child.send_signal(signal.SIGKILL)  # no cleanup, possibly in the middle of a save
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    with TrainCheckpointer(tmp_path / "ckpt" / "killed") as ck:
        killed_at = ck.latest_step()
    assert 4 <= killed_at < 12

    resumed = make_trainer(cfg, tmp_path, name="killed").fit()
    straight = make_trainer(cfg, tmp_path, name="straight").fit()
    assert resumed.resumed_from == killed_at
    assert int(straight.state["step"]) == 12
    assert leaves_equal(jax.device_get(straight.state), jax.device_get(resumed.state))
    np.testing.assert_array_equal(
        [h["val_loss"] for h in straight.loop.history], [h["val_loss"] for h in resumed.loop.history]
    )
