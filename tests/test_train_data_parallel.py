"""Data parallelism of the training step: the recurrence under shard_map, and one CPU device per core.

- On a mesh with a `data` axis the `loop` and `stacked` steps give the same members as the
  unsharded step, and their compiled program has no collective inside any loop (the gradient sum
  over devices happens once, after the backward loop). The same step left to the automatic
  partitioner (no mesh given) gathers activations and sums gradients inside its loops: that is
  what the check catches, and why the shard_map exists (2.2x slower on 2 devices, docs/training.md).
- `somojax.utils.devices` picks and sets the CPU device count before JAX starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from somojax import sharding as shd
from somojax.checkpoint import state_shardings
from somojax.config import load_config
from somojax.errors import ConfigError
from somojax.train.step import BATCH_KEYS, init_state, make_optimizer, make_train_step, step_options
from somojax.utils.devices import FLAG, cpu_device_count, flag_count, needs_blocking_dispatch, with_device_count

M, B, T, D, S, H = 2, 16, 40, 3, 2, 8  # T: several weight-gradient blocks (a real loop)


def _setup(dropout: float = 0.3):
    cfg = load_config("tiny")
    model = dataclasses.replace(cfg.model, hidden_size=H, seq_length=T, dropout=dropout)
    opts = step_options(model, cfg.train)
    tx = make_optimizer(1.0)
    return model, opts, tx


def _batch(rng, members: int) -> dict:
    return {
        "x_d": rng.standard_normal((members, B, T, D)).astype(np.float32),
        "x_s": rng.standard_normal((members, B, S)).astype(np.float32),
        "y": rng.standard_normal((members, B, 1)).astype(np.float32),
        "sigma": rng.uniform(0.05, 0.3, (members, B)).astype(np.float32),
    }


def _sharded_step(mode: str, members: int, give_mesh: bool):
    """(jitted step, state, batch, lr) on a (member, data) mesh over all devices."""
    model, opts, tx = _setup()
    mesh = shd.make_mesh(members, 1)  # member axis 1: data over all devices
    key = jax.random.key(5)
    shapes = jax.eval_shape(lambda: init_state(key, members, D, S, model, tx))
    st_sh = state_shardings(shapes, mesh)
    state = jax.jit(lambda: init_state(key, members, D, S, model, tx), out_shardings=st_sh)()
    bsh = shd.batch_sharding(mesh, per_member=True)
    step = jax.jit(
        make_train_step(opts, tx, shared_batches=False, mode=mode, mesh=mesh if give_mesh else None),
        in_shardings=(st_sh, {k: bsh for k in BATCH_KEYS}, NamedSharding(mesh, P())),
        out_shardings=(st_sh, NamedSharding(mesh, P())),
    )
    batch = {k: jax.device_put(v, bsh) for k, v in _batch(np.random.default_rng(2), members).items()}
    return step, state, batch, jax.device_put(jnp.float32(1e-2), NamedSharding(mesh, P())), mesh


def _collectives_in_loops(hlo: str) -> list[str]:
    """Names of collective ops inside the body of any while loop of an optimized HLO module."""
    comps, name, lines = {}, None, []
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
        if m and line.rstrip().endswith("{"):
            name, lines = m.group(1), []
        elif line.startswith("}") and name:
            comps[name] = "\n".join(lines)
            name = None
        elif name:
            lines.append(line)
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    found = []
    seen, todo = set(), list(bodies)
    while todo:  # a body and every computation it calls (fusions, nested loops)
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        text = comps[c]
        found += re.findall(
            r"= [^=]*? (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)[-\w]*\(", text
        )
        todo += re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", text)
    return found


@pytest.mark.parametrize("mode,members", [("loop", 1), ("stacked", M)])
def test_no_collective_inside_the_time_loops(mode, members):
    assert jax.device_count() >= 2, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (conftest)"
    step, state, batch, lr, mesh = _sharded_step(mode, members, give_mesh=True)
    assert mesh.shape["data"] == jax.device_count()
    hlo = step.lower(state, batch, lr).compile().as_text()
    assert "while" in hlo
    assert _collectives_in_loops(hlo) == []
    # the same step without the mesh is left to the partitioner: collectives inside the loops
    step_auto, *_ = _sharded_step(mode, members, give_mesh=False)
    assert _collectives_in_loops(step_auto.lower(state, batch, lr).compile().as_text())


@pytest.mark.parametrize("mode,members", [("loop", 1), ("stacked", M), ("loop", M)])
def test_data_parallel_step_equals_the_one_device_step(mode, members):
    step, state, batch, lr, _ = _sharded_step(mode, members, give_mesh=True)
    host_state = jax.tree.map(np.asarray, state)
    host_batch = jax.tree.map(np.asarray, batch)
    for _ in range(2):
        state, m = step(state, batch, lr)
    model, opts, tx = _setup()
    one = jax.jit(make_train_step(opts, tx, shared_batches=False, mode=mode))
    ref_state = jax.tree.map(jnp.asarray, host_state)
    ref_batch = jax.tree.map(jnp.asarray, host_batch)
    for _ in range(2):
        ref_state, ref_m = one(ref_state, ref_batch, jnp.float32(1e-2))
    np.testing.assert_allclose(np.asarray(m["loss"]), np.asarray(ref_m["loss"]), rtol=1e-5)
    # the gradient norm is scale-sensitive (Adam's update is not): a gradient summed over the
    # wrong devices, or not summed, shows here
    np.testing.assert_allclose(np.asarray(m["grad_norm"]), np.asarray(ref_m["grad_norm"]), rtol=1e-4)
    for k, v in ref_state["params"].items():  # Adam turns rounding-size gradient differences of
        # near-zero entries into differences of up to a fraction of one update (lr 1e-2)
        np.testing.assert_allclose(np.asarray(state["params"][k]), np.asarray(v), rtol=1e-5, atol=5e-5, err_msg=k)


def test_cpu_device_count_rules():
    assert cpu_device_count(0, 256, cores=2) == 2
    assert cpu_device_count(0, 256, cores=6) == 4  # the largest count <= 6 dividing the batch
    assert cpu_device_count(0, 7, cores=4) == 1
    assert cpu_device_count(3, 256, cores=2) == 3  # an explicit count is taken as given
    with pytest.raises(ConfigError, match="layout.cpu_devices=-1"):
        cpu_device_count(-1, 256)
    assert flag_count(f"--xla_foo=1 {FLAG}=8") == 8
    assert flag_count("--xla_foo=1") is None
    assert with_device_count(f"--a {FLAG}=8 --b", 2) == f"--a --b {FLAG}=2"


@pytest.mark.parametrize("requested", [0, 3])
def test_configure_sets_the_device_count_before_jax_starts(requested):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    code = (
        "from somojax.utils.devices import configure_cpu_devices, cpu_device_count;"
        f"n = configure_cpu_devices({requested}, 256);"
        "import jax; print(n, cpu_device_count({requested}, 256), jax.device_count())".replace(
            "{requested}", str(requested)
        )
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    n, want, got = map(int, out.stdout.split())
    assert n == want == got
    # a count already in XLA_FLAGS wins
    env["XLA_FLAGS"] = f"{FLAG}=5"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "5" and out.stdout.split()[2] == "5"


_PINGPONG = """
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from somojax.train.compile import JitOnce
from somojax.utils.devices import needs_blocking_dispatch
mesh = jax.make_mesh((len(jax.devices()),), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
sync = needs_blocking_dispatch(jax.devices())
assert sync
kw = dict(mesh=mesh, in_specs=P("d"), out_specs=P("d"), check_vma=False)
f = JitOnce(jax.shard_map(lambda x: jax.lax.psum(jnp.tanh(x @ x.T).sum(), "d") + 0 * x, **kw), sync=sync)
g = JitOnce(jax.shard_map(lambda x: jax.lax.psum(jnp.sin(x).sum(), "d") * x, **kw), sync=sync)
x = jax.device_put(jnp.ones((256, 64)), NamedSharding(mesh, P("d")))
for _ in range(3000):
    y, z = f(x), g(x)
jax.block_until_ready((y, z))
print("ok")
"""


def test_cpu_multi_device_programs_run_one_at_a_time():
    # Two multi-device programs with collectives dispatched back to back deadlock XLA:CPU's
    # shared thread pool (utils/devices.py); waiting for each call's results avoids it. Without
    # the wait this loop hung within its first 2,000 iterations on 2, 4 and 8 devices.
    assert needs_blocking_dispatch(jax.devices()) == (jax.device_count() > 1)
    assert not needs_blocking_dispatch(jax.devices()[:1])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"{FLAG}=2 --xla_cpu_collective_call_terminate_timeout_seconds=15")
    out = subprocess.run([sys.executable, "-c", _PINGPONG], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
