"""The exact-mode step's cell update: precision against float64 and speed, old form vs new.

    python benchmarks/kernel_precision.py [--repeats 7]

old: c <- sigma(z_f) c + i tanh(z_g) with sigma(z) = tanh(z/2)/2 + 1/2 (somojax before
2026-12-01); new: c <- c - sigma(-z_f) c + i tanh(z_g) (`somojax.models.cell.next_state`).
1. Deviation from NumPy float64 of a long-memory EA-LSTM (forget bias 5, H = 16, L = 365,
   3 cells x 20 years; tests/test_kernel_precision.py's model), for the NumPy float32 recurrence
   and both forms on both kernel paths (step-wise = the CPU default, hoisted = the GPU/TPU one).
2. Same-process A/B of the exact rollout, 1 cell x 7305 days, H = 128, L = 365 (the shape of
   `somojax bench --only rollout`), the two forms timed round-robin.
JSON: benchmarks/results/kernel_precision-cpu-<cores>c.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # as `somojax` on 2 cores

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from somojax.bench.harness import machine  # noqa: E402
from somojax.infer import kernels  # noqa: E402
from somojax.models import cell, ensemble  # noqa: E402
from somojax.models.kernel import KernelOptions  # noqa: E402
from tests.test_kernel_precision import deviations  # noqa: E402

NEW_UPDATE = cell.next_state


def old_update(i, c, gates):
    hs = c.shape[-1]
    c = cell.sigmoid(gates[..., :hs]) * c + i * jnp.tanh(gates[..., 2 * hs :])
    return cell.sigmoid(gates[..., hs : 2 * hs]) * jnp.tanh(c), c


def use(update) -> None:
    cell.next_state = update  # the kernels look it up in models/cell.py when they trace
    jax.clear_caches()


def precision() -> dict:
    out = {}
    for name, update in (("old", old_update), ("new", NEW_UPDATE)):
        use(update)
        d = deviations()
        out[name] = {k: float(v) for k, v in d.items()}
        print(name, {k: f"{v:.3g}" for k, v in d.items()})
    return out


def speed(repeats: int) -> dict:
    H, L, D, S, days = 128, 365, 6, 10, 7305
    params = ensemble.init_ensemble(jax.random.key(0), 1, D, S, H)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, days + L - 1, D)), jnp.float32)
    xs = jnp.asarray(rng.standard_normal((1, S)), jnp.float32)
    compiled = {}
    for name, update in (("old", old_update), ("new", NEW_UPDATE)):
        use(update)
        f = jax.jit(
            lambda p, x, xs: kernels.predict_normalised.__wrapped__(
                p, x, xs, seq_length=L, kernel=KernelOptions(hoist=False, rows_per_step=1536)
            )
        )
        compiled[name] = f.lower(params, x, xs).compile()
        compiled[name](params, x, xs).block_until_ready()
    times = {k: [] for k in compiled}
    for _ in range(repeats):
        for k, f in compiled.items():
            t = time.perf_counter()
            f(params, x, xs).block_until_ready()
            times[k].append(time.perf_counter() - t)
    res = {
        k: {"median_s": float(np.median(v)), "min_s": float(min(v)), "all_s": [round(t, 3) for t in v]}
        for k, v in times.items()
    }
    res["new_over_old_median"] = res["new"]["median_s"] / res["old"]["median_s"]
    print({k: (v if isinstance(v, float) else round(v["median_s"], 3)) for k, v in res.items()})
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    result = {
        "benchmark": "kernel_precision",
        "machine": machine(),
        "precision": precision(),
        "speed_exact_1cell_7305d_H128": speed(args.repeats),
    }
    use(NEW_UPDATE)
    path = Path(__file__).parent / "results" / f"kernel_precision-cpu-{machine()['cpu_cores']}c.json"
    path.write_text(json.dumps(result, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
