"""SoMo.ml v1's released weights on its five released cells, 2000-2019: deviation from float64.

    python benchmarks/real_weights_precision.py --bundle path/to/somo_lstm

The bundle is the authors' `somo_lstm.zip` unpacked (docs/somo-v1.md). Inputs are normalised in
float64 from the tables, as the authors do; float64 and the NumPy float32 recurrence are written
here (as in tests/test_kernel_precision.py), the kernels run with the cell update before
(`kernel_precision.old_update`) and now, step-wise and hoisted. Per evaluation: the worst
deviation over the 36,525 cell-days (m3 m-3) and where, the second worst, the 99.99 % quantile
and the median. JSON: benchmarks/results/real_weights_precision-cpu-<cores>c.json.
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

CELLS = ("-0.625_-49.375", "-0.625_-50.625", "-0.625_-51.875", "-0.625_-79.375", "-0.625_101.875")
L, DAYS, H = 365, 7305, 128


def released(bundle: Path):
    sd = {k: v.numpy().astype(np.float64) for k, v in torch.load(bundle / "model" / "model_epoch15.pt", map_location="cpu").items()}
    dyn_scale = pd.read_csv(bundle / "ismn" / "lis" / "scaler_ALL_layer0.dat", index_col=0)
    sta_scale = pd.read_csv(bundle / "ismn" / "attri" / "scaler_ALL_statics.dat", index_col=0)
    attri = pd.read_csv(bundle / "ismn" / "attri" / "global_attri.dat", index_col=0)
    dyn = list(C.DYNAMIC_INPUTS)
    xs, x = [], []
    for name in CELLS:
        df = pd.read_csv(bundle / "ismn" / "forcing" / f"features_{name}.dat", index_col=0, parse_dates=True, na_values=-9999.0)
        t0 = int(np.searchsorted(df.index, pd.Timestamp("2000-01-01")))
        x.append(((df[dyn].values - dyn_scale.loc["aveK", dyn].values) / dyn_scale.loc["stdK", dyn].values).astype(np.float32)[t0 - L + 1 :])
        xs.append(((attri.loc[name].values - sta_scale.iloc[0].values) / sta_scale.iloc[1].values).astype(np.float32))
    return sd, np.stack(x), np.stack(xs), float(dyn_scale.loc["stdK", "sm"])


def numpy_exact(sd, x, xs, dtype) -> np.ndarray:
    w = {k: v.astype(dtype) for k, v in sd.items()}
    one, half = dtype(1), dtype(0.5)
    sig = (lambda z: one / (one + np.exp(-z))) if dtype == np.float32 else (lambda z: half * np.tanh(half * z) + half)
    out = []
    for c_ in range(len(CELLS)):
        i = sig(xs[c_].astype(dtype) @ w["lstm.weight_sh"] + w["lstm.bias_s"])
        h = np.zeros((DAYS, H), dtype)
        c = np.zeros_like(h)
        for s in range(L):
            g = h @ w["lstm.weight_hh"] + x[c_, s : s + DAYS].astype(dtype) @ w["lstm.weight_ih"] + w["lstm.bias"]
            c = sig(g[:, :H]) * c + i * np.tanh(g[:, 2 * H :])
            h = sig(g[:, H : 2 * H]) * np.tanh(c)
        out.append(h.astype(np.float64) @ sd["fc.weight"][0] + sd["fc.bias"][0])
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True, help="the unpacked somo_lstm folder")
    args = ap.parse_args()
    sd, x, xs, sm_std = released(args.bundle)
    ref = numpy_exact(sd, x, xs, np.float64)
    runs = {"numpy float32": numpy_exact(sd, x, xs, np.float32)}
    names = {"W_ih": "lstm.weight_ih", "W_hh": "lstm.weight_hh", "b": "lstm.bias", "W_sh": "lstm.weight_sh", "b_s": "lstm.bias_s", "b_fc": "fc.bias"}
    p = {k: jnp.asarray(sd[v], jnp.float32)[None] for k, v in names.items()} | {"W_fc": jnp.asarray(sd["fc.weight"].T, jnp.float32)[None]}
    for form, update in (("before", old_update), ("now", NEW_UPDATE)):
        use(update)
        for hoist in (False, True):
            y = kernels.predict_normalised(p, jnp.asarray(x), jnp.asarray(xs), seq_length=L, hoist=hoist)
            runs[f"{form}, {'hoisted' if hoist else 'step-wise'}"] = np.asarray(y[0], np.float64)
    use(NEW_UPDATE)
    out = {}
    for k, y in runs.items():
        e = np.abs(y - ref) * sm_std  # m3 m-3
        c, d = np.unravel_index(np.argmax(e), e.shape)
        out[k] = {"max": float(e.max()), "at": [CELLS[c], str((pd.Timestamp("2000-01-01") + pd.Timedelta(days=int(d))).date())],
                  "second_max": float(np.sort(e.ravel())[-2]), "p99_99": float(np.quantile(e, 0.9999)), "median": float(np.median(e))}
        print(f"{k:22s} max {out[k]['max']:.3g} at {out[k]['at']}, second {out[k]['second_max']:.3g}, p99.99 {out[k]['p99_99']:.3g}, median {out[k]['median']:.3g}")
    path = Path(__file__).parent / "results" / f"real_weights_precision-cpu-{machine()['cpu_cores']}c.json"
    path.write_text(json.dumps({"benchmark": "real_weights_precision", "machine": machine(), "deviation_m3m3": out}, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
