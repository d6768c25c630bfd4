"""SoMo.ml v1's released weights on its five released cells, 2000-2019: deviation from float64.

    python benchmarks/real_weights_precision.py --bundle path/to/somo_lstm

The bundle is the authors' `somo_lstm.zip` unpacked (docs/somo-v1.md). Inputs are normalised in
float64 from the tables, as the authors do; float64 and the NumPy float32 recurrence are written
here (as in tests/test_kernel_precision.py), the kernels run with the cell update before
(`kernel_precision.old_update`) and now, step-wise and hoisted. Per evaluation: the worst
deviation over the 36,525 cell-days (m3 m-3) and where, the second worst, the 99.99 % quantile
and the median. The NumPy float32 recurrence applies the head h·W_fc + b_fc in float64 (as
tests/test_kernel_precision.py does); "numpy float32, float32 head" is the same run with a float32
head, the fair comparison for the median (the kernels' head is float32).

One window, cell -0.625_-50.625 on 2012-03-22, is far worse than every other on every evaluation.
`--samples N` (default 48) measures how much of that is rounding luck: N exact reorderings of the
same model (the hidden units permuted, which changes only the order of every float32 sum) and N
perturbations of the float32 inputs by 1 ulp (random sign per value, float64 recomputed on them),
each evaluated by NumPy float32 and both kernels; plus how far 1 ulp of input moves the float64
answer itself. JSON: benchmarks/results/real_weights_precision-cpu-<cores>c.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_precision import NEW_UPDATE, machine, old_update, use  # noqa: E402  (sets the CPU devices first)

import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402

from somojax import constants as C  # noqa: E402
from somojax.infer import kernels  # noqa: E402
from somojax.models.kernel import KernelOptions  # noqa: E402

CELLS = ("-0.625_-49.375", "-0.625_-50.625", "-0.625_-51.875", "-0.625_-79.375", "-0.625_101.875")
L, DAYS, H = 365, 7305, 128
BAD_CELL, BAD_DAY = "-0.625_-50.625", "2012-03-22"  # the ill-conditioned window
T0 = pd.Timestamp("2000-01-01")
NAMES = {
    "W_ih": "lstm.weight_ih",
    "W_hh": "lstm.weight_hh",
    "b": "lstm.bias",
    "W_sh": "lstm.weight_sh",
    "b_s": "lstm.bias_s",
    "b_fc": "fc.bias",
}


def released(bundle: Path):
    sd = {
        k: v.numpy().astype(np.float64)
        for k, v in torch.load(bundle / "model" / "model_epoch15.pt", map_location="cpu").items()
    }
    dyn_scale = pd.read_csv(bundle / "ismn" / "lis" / "scaler_ALL_layer0.dat", index_col=0)
    sta_scale = pd.read_csv(bundle / "ismn" / "attri" / "scaler_ALL_statics.dat", index_col=0)
    attri = pd.read_csv(bundle / "ismn" / "attri" / "global_attri.dat", index_col=0)
    dyn = list(C.DYNAMIC_INPUTS)
    xs, x = [], []
    for name in CELLS:
        df = pd.read_csv(
            bundle / "ismn" / "forcing" / f"features_{name}.dat", index_col=0, parse_dates=True, na_values=-9999.0
        )
        t0 = int(np.searchsorted(df.index, pd.Timestamp("2000-01-01")))
        x.append(
            ((df[dyn].values - dyn_scale.loc["aveK", dyn].values) / dyn_scale.loc["stdK", dyn].values).astype(
                np.float32
            )[t0 - L + 1 :]
        )
        xs.append(((attri.loc[name].values - sta_scale.iloc[0].values) / sta_scale.iloc[1].values).astype(np.float32))
    return sd, np.stack(x), np.stack(xs), float(dyn_scale.loc["stdK", "sm"])


def numpy_last_state(sd, x, xs, dtype) -> np.ndarray:
    """Final hidden state of every window of one cell's days x [W + L − 1, D]: [W, H]."""
    w = {k: v.astype(dtype) for k, v in sd.items()}
    one, half = dtype(1), dtype(0.5)
    sig = (lambda z: one / (one + np.exp(-z))) if dtype == np.float32 else (lambda z: half * np.tanh(half * z) + half)
    n = x.shape[0] - L + 1
    i = sig(xs.astype(dtype) @ w["lstm.weight_sh"] + w["lstm.bias_s"])
    h = np.zeros((n, H), dtype)
    c = np.zeros_like(h)
    for s in range(L):
        g = h @ w["lstm.weight_hh"] + x[s : s + n].astype(dtype) @ w["lstm.weight_ih"] + w["lstm.bias"]
        c = sig(g[:, :H]) * c + i * np.tanh(g[:, 2 * H :])
        h = sig(g[:, H : 2 * H]) * np.tanh(c)
    return h


def numpy_head(sd, h, dtype) -> np.ndarray:
    return (h.astype(dtype) @ sd["fc.weight"][0].astype(dtype) + sd["fc.bias"][0].astype(dtype)).astype(np.float64)


def numpy_exact(sd, x, xs, dtype, head_dtype=np.float64) -> np.ndarray:
    return np.stack([numpy_head(sd, numpy_last_state(sd, x[c], xs[c], dtype), head_dtype) for c in range(x.shape[0])])


def kernel_exact(sd, x, xs, hoist: bool) -> np.ndarray:
    p = {k: jnp.asarray(sd[v], jnp.float32)[None] for k, v in NAMES.items()} | {
        "W_fc": jnp.asarray(sd["fc.weight"].T, jnp.float32)[None]
    }
    return np.asarray(
        kernels.predict_normalised(
            p,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(xs, jnp.float32),
            seq_length=L,
            kernel=KernelOptions(hoist=hoist),
        )[0],
        np.float64,
    )


def permuted(sd, perm) -> dict:
    """The same model with its hidden units reordered (exact in real arithmetic)."""
    g = np.concatenate([perm, H + perm, 2 * H + perm])
    return {
        "lstm.weight_ih": sd["lstm.weight_ih"][:, g],
        "lstm.weight_hh": sd["lstm.weight_hh"][perm][:, g],
        "lstm.bias": sd["lstm.bias"][g],
        "lstm.weight_sh": sd["lstm.weight_sh"][:, perm],
        "lstm.bias_s": sd["lstm.bias_s"][perm],
        "fc.weight": sd["fc.weight"][:, perm],
        "fc.bias": sd["fc.bias"],
    }


def stats(a) -> dict:
    a = np.asarray(a)
    return {
        "min": float(a.min()),
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "rms": float(np.sqrt((a**2).mean())),
        "max": float(a.max()),
    }


def ill_conditioned_day(sd, x, xs, sm_std, samples: int, seed: int = 0) -> dict:
    """The spread of each evaluation's deviation on the ill-conditioned window (m3 m-3)."""
    c, d, nb = CELLS.index(BAD_CELL), (pd.Timestamp(BAD_DAY) - T0).days, 16
    # the day amid 2·nb neighbours: the kernels step many windows together, as in production
    xw, xsw = x[c : c + 1, d - nb : d + nb + L], xs[c : c + 1]
    evals = {
        "numpy float32": lambda w, xi: numpy_exact(w, xi, xsw, np.float32)[0, nb],
        "step-wise": lambda w, xi: kernel_exact(w, xi, xsw, False)[0, nb],
        "hoisted": lambda w, xi: kernel_exact(w, xi, xsw, True)[0, nb],
    }
    f64 = lambda w, xi: numpy_exact(w, xi, xsw, np.float64)[0, nb]  # noqa: E731
    rng = np.random.default_rng(seed)
    perm, ulp, moved = {k: [] for k in evals}, {k: [] for k in evals}, []
    for _ in range(samples):
        w = permuted(sd, rng.permutation(H))
        ref = f64(w, xw)
        for k, f in evals.items():
            perm[k].append(abs(f(w, xw) - ref) * sm_std)
        xp = xw * (1 + rng.choice(np.float32([-1, 1]), xw.shape) * np.float32(2.0**-23))  # float32: 1 ulp per value
        ref_p = f64(sd, xp)
        moved.append(abs(ref_p - f64(sd, xw)) * sm_std)
        for k, f in evals.items():
            ulp[k].append(abs(f(sd, xp) - ref_p) * sm_std)
    ratio = {
        k: {
            s: stats(perm[k] + ulp[k])[s] / stats(perm["numpy float32"] + ulp["numpy float32"])[s]
            for s in ("median", "rms")
        }
        for k in evals
    }
    return {
        "cell": BAD_CELL,
        "day": BAD_DAY,
        "samples": samples,
        "float64_moved_by_1ulp_of_input": stats(moved),
        "hidden_units_permuted": {k: stats(v) for k, v in perm.items()},
        "inputs_moved_by_1ulp": {k: stats(v) for k, v in ulp.items()},
        "both_pooled_over_numpy_float32": ratio,
    }


def all_cell_days(sd, x, xs, sm_std) -> dict:
    """Deviation statistics over the 36,525 cell-days of every evaluation (m3 m-3)."""
    h32 = [numpy_last_state(sd, x[c], xs[c], np.float32) for c in range(len(CELLS))]
    ref = numpy_exact(sd, x, xs, np.float64)
    runs = {
        "numpy float32": np.stack([numpy_head(sd, h, np.float64) for h in h32]),
        "numpy float32, float32 head": np.stack([numpy_head(sd, h, np.float32) for h in h32]),
    }
    for form, update in (("before", old_update), ("now", NEW_UPDATE)):
        use(update)
        for hoist in (False, True):
            runs[f"{form}, {'hoisted' if hoist else 'step-wise'}"] = kernel_exact(sd, x, xs, hoist)
    use(NEW_UPDATE)
    out = {}
    for k, y in runs.items():
        e = np.abs(y - ref) * sm_std
        c, d = np.unravel_index(np.argmax(e), e.shape)
        q = np.quantile(e, [0.5, 0.99, 0.999, 0.9999])
        out[k] = {
            "max": float(e.max()),
            "at": [CELLS[c], str((T0 + pd.Timedelta(days=int(d))).date())],
            "second_max": float(np.sort(e.ravel())[-2]),
            "p99_99": float(q[3]),
            "p99_9": float(q[2]),
            "p99": float(q[1]),
            "median": float(q[0]),
            "rms": float(np.sqrt((e**2).mean())),
        }
        print(
            f"{k:28s} max {out[k]['max']:.3g} at {out[k]['at']}, second {out[k]['second_max']:.3g}, p99.99 {q[3]:.3g}, p99.9 {q[2]:.3g}, p99 {q[1]:.3g}, median {q[0]:.3g}"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True, help="the unpacked somo_lstm folder")
    ap.add_argument(
        "--samples", type=int, default=48, help="reorderings and 1-ulp perturbations on the ill-conditioned day"
    )
    args = ap.parse_args()
    sd, x, xs, sm_std = released(args.bundle)
    out = all_cell_days(sd, x, xs, sm_std)
    day = ill_conditioned_day(sd, x, xs, sm_std, args.samples)
    for part in ("hidden_units_permuted", "inputs_moved_by_1ulp"):
        for k, v in day[part].items():
            print(f"{BAD_DAY} {part:22s} {k:14s}", " ".join(f"{s} {v[s]:.2g}" for s in v))
    print(
        f"{BAD_DAY} float64 moved by 1 ulp of input:",
        " ".join(f"{s} {v:.2g}" for s, v in day["float64_moved_by_1ulp_of_input"].items()),
    )
    path = Path(__file__).parent / "results" / f"real_weights_precision-cpu-{machine()['cpu_cores']}c.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "real_weights_precision",
                "machine": machine(),
                "deviation_m3m3": out,
                "ill_conditioned_day": day,
            },
            indent=1,
        )
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
