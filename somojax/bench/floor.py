"""The hardware floor: the measured matmul rate of the recurrent shapes on this machine.

The recurrent matmul h·W_hh ([rows, H] × [H, 3H], 2·rows·H·3H FLOP) is the irreducible work of
every EA-LSTM step; its measured rate turns a benchmark's FLOP count into its minimum time.
FLOPs counted (documented in docs/benchmarks.md):
- training step, per member: 3 × 2·B·T·H·3H (forward h·W_hh, backward dh·W_hhᵀ, the weight
  gradient hᵀ·dgates); the input projection (D/H of that) and the nonlinearities are not counted;
- exact rollout: 2·H·3H per cell-step (98 kFLOP at H = 128), as docs/design.md#inference-semantics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from somojax.bench.harness import measure


@functools.partial(jax.jit, static_argnames=("n",))
def _chain(x: jax.Array, w: jax.Array, n: int) -> jax.Array:
    """n matmuls in one compiled loop (dispatch excluded); each reads a step-dependent input."""

    def body(i, acc):
        xi = x * (1.0 + 1e-7 * i.astype(x.dtype))  # loop-variant: the product cannot be hoisted
        return acc + jnp.matmul(xi, w, precision=jax.lax.Precision.HIGHEST)

    return jax.lax.fori_loop(0, n, body, jnp.zeros((x.shape[0], w.shape[1]), x.dtype))


def matmul_rate(rows: int, k: int, n: int, repeats: int = 5, target_flop: float = 2e10) -> dict:
    """Measured fp32 GFLOP/s of [rows, k] × [k, n]: the better of two ways to run it.

    On one device (the product spread over its intra-op threads) and, when this process has
    several local devices that divide `rows`, data-parallel (each device multiplies its own
    rows: one device per core on a CPU, somojax/utils/devices.py). The floor is the best the
    machine measurably does, so a step that runs data-parallel is held to the data-parallel rate.
    """
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((rows, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
    flop = 2.0 * rows * k * n
    reps = int(max(4, min(4096, target_flop / flop)))
    t = measure(lambda: _chain(x, w, reps).block_until_ready(), warmup=1, repeats=repeats)
    one = flop * reps / t["median_s"] / 1e9
    out = {"shape": [rows, k, n], "gflops": one, "gflops_one_device": one, "matmuls_per_call": reps}
    devices = jax.local_devices()
    if len(devices) > 1 and rows % len(devices) == 0:
        mesh = Mesh(np.asarray(devices), ("rows",))
        split = jax.jit(
            jax.shard_map(lambda a, b: _chain(a, b, reps), mesh=mesh, in_specs=(P("rows"), P()), out_specs=P("rows"),
                          check_vma=False)
        )
        xs = jax.device_put(x, NamedSharding(mesh, P("rows")))
        ws = jax.device_put(w, NamedSharding(mesh, P()))
        t = measure(lambda: split(xs, ws).block_until_ready(), warmup=1, repeats=repeats)
        out["gflops_data_parallel"] = flop * reps / t["median_s"] / 1e9
        out["devices"] = len(devices)
        out["gflops"] = max(one, out["gflops_data_parallel"])
    return out


def train_step_flop(batch: int, days: int, hidden: int) -> float:
    """Counted FLOPs of one member's training step (three recurrent matmuls per step)."""
    return 3 * 2.0 * batch * days * hidden * 3 * hidden


def cell_step_flop(hidden: int) -> float:
    """Counted FLOPs of one recurrent cell-step (h·W_hh)."""
    return 2.0 * hidden * 3 * hidden
