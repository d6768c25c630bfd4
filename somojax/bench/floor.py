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

from somojax.bench.harness import round_robin


@functools.partial(jax.jit, static_argnames=("n",))
def _chain(x: jax.Array, w: jax.Array, n: int) -> jax.Array:
    """n matmuls in one compiled loop (dispatch excluded); each reads a step-dependent input."""

    def body(i, acc):
        xi = x * (1.0 + 1e-7 * i.astype(x.dtype))  # loop-variant: the product cannot be hoisted
        return acc + jnp.matmul(xi, w, precision=jax.lax.Precision.HIGHEST)

    return jax.lax.fori_loop(0, n, body, jnp.zeros((x.shape[0], w.shape[1]), x.dtype))


ONE, SPLIT = "matmul floor, one device", "matmul floor, data-parallel"  # names in a round robin


def matmul_fns(rows: int, k: int, n: int, target_flop: float = 2e10) -> tuple[dict, float]:
    """The floor's timed calls of [rows, k] × [k, n] and the FLOPs of one call.

    On one device (the product spread over its intra-op threads) and, when this process has
    several local devices that divide `rows`, data-parallel (each device multiplies its own
    rows: one device per core on a CPU, somojax/utils/devices.py). A benchmark times them in
    its own round robin, so the floor is sampled under the same drifting load as the step.
    """
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((rows, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
    reps = int(max(4, min(4096, target_flop / (2.0 * rows * k * n))))
    fns = {ONE: lambda: _chain(x, w, reps).block_until_ready()}
    devices = jax.local_devices()
    if len(devices) > 1 and rows % len(devices) == 0:
        mesh = Mesh(np.asarray(devices), ("rows",))
        split = jax.jit(
            jax.shard_map(
                lambda a, b: _chain(a, b, reps),
                mesh=mesh,
                in_specs=(P("rows"), P()),
                out_specs=P("rows"),
                check_vma=False,
            )
        )
        xs = jax.device_put(x, NamedSharding(mesh, P("rows")))
        ws = jax.device_put(w, NamedSharding(mesh, P()))
        fns[SPLIT] = lambda: split(xs, ws).block_until_ready()
    return fns, 2.0 * rows * k * n * reps


def rate_from_times(times: dict[str, dict], flop_per_call: float, shape: list[int]) -> dict:
    """GFLOP/s from the fastest call of each way (a floor is the best the machine measurably
    does: a slow sample is load from elsewhere, never the hardware). `times` as harness.round_robin."""
    out = {"shape": shape, "matmuls_per_call": int(round(flop_per_call / (2.0 * np.prod(shape))))}
    out["gflops_one_device"] = flop_per_call / times[ONE]["min_s"] / 1e9
    out["gflops"] = out["gflops_one_device"]
    if SPLIT in times:
        out["gflops_data_parallel"] = flop_per_call / times[SPLIT]["min_s"] / 1e9
        out["devices"] = len(jax.local_devices())
        out["gflops"] = max(out["gflops"], out["gflops_data_parallel"])
    out["floor_samples"] = sum(t["repeats"] for name, t in times.items() if name in (ONE, SPLIT))
    return out


def matmul_rate(rows: int, k: int, n: int, repeats: int = 5, target_flop: float = 2e10) -> dict:
    """Measured fp32 GFLOP/s of [rows, k] × [k, n], timed alone (`repeats` samples, the best kept)."""
    fns, flop = matmul_fns(rows, k, n, target_flop)
    return rate_from_times(round_robin(fns, warmup=1, repeats=repeats), flop, [rows, k, n])


def floor_check(step_s: float, floor_s: float, what: str = "step") -> dict:
    """`floor_ratio` = step / floor, or, for a step faster than its own floor, no ratio and a
    `measurement_failure` saying so: the floor was measured under more load than the step."""
    if step_s >= floor_s:
        return {"floor_ratio": step_s / floor_s}
    return {"floor_ratio": None, "measurement_failure": f"{what} {_fmt(step_s)} below its floor {_fmt(floor_s)}"}


def _fmt(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 10 else f"{s:.3g} s"


def train_step_flop(batch: int, days: int, hidden: int) -> float:
    """Counted FLOPs of one member's training step (three recurrent matmuls per step)."""
    return 3 * 2.0 * batch * days * hidden * 3 * hidden


def cell_step_flop(hidden: int) -> float:
    """Counted FLOPs of one recurrent cell-step (h·W_hh)."""
    return 2.0 * hidden * 3 * hidden
