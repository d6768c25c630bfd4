"""Two JAX processes (2 CPU devices each, gloo) train one ensemble together like one 4-device process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.test_train_engine import make_trainer
from tests.train_fixtures import tiny_config

REPO = Path(__file__).resolve().parent.parent
KW = dict(members=2, epochs=1, max_updates_per_epoch=3, checkpoint_every_steps=2)

CHILD = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    from pathlib import Path
    pid = int(sys.argv[1])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address="127.0.0.1:" + os.environ["COORD_PORT"], num_processes=2, process_id=pid)
    from jax.experimental import multihost_utils
    from tests.test_train_engine import make_trainer
    from tests.train_fixtures import tiny_config
    tmp = Path({tmp!r})
    cfg = tiny_config(tmp, **{kw!r})
    tr = make_trainer(cfg, tmp, name="mp")
    res = tr.fit()
    params = multihost_utils.process_allgather(res.state["params"], tiled=True)
    if pid == 0:
        np.savez(tmp / "mp.npz", **{{k: np.asarray(v) for k, v in params.items()}})
    print("mesh", dict(tr.mesh.shape), "val", res.loop.history[-1]["val_loss"], flush=True)
    jax.distributed.shutdown()
    """
)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_train_like_one(tmp_path):
    import portpicker

    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), tmp=str(tmp_path), kw=KW))
    env = {**os.environ, "COORD_PORT": str(portpicker.pick_unused_port()), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:  # never leave a hung child behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n-----\n".join(o[-3000:] for o in outs)
    assert "mesh {'member': 2, 'data': 2}" in outs[0]
    cfg = tiny_config(tmp_path, **KW)
    one = make_trainer(cfg, tmp_path, name="single", devices=jax.devices()[:4]).fit()
    got = np.load(tmp_path / "mp.npz")
    for k, v in jax.device_get(one.state["params"]).items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
