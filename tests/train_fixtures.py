"""Small learnable data sets for the training-engine tests (not a test module)."""

from __future__ import annotations

import dataclasses

import numpy as np

from somojax.config import Config, load_config
from somojax.data.pipeline import ArrayTrainData, WindowArrays


def learnable_arrays(
    n_cells: int = 12, n_days: int = 160, n_dynamic: int = 3, n_static: int = 2, seed: int = 0, gap_frac: float = 0.2
) -> WindowArrays:
    """Targets that an LSTM can learn: a leaky bucket filled by input 0, scaled by a static.

    y_t = a_c · s_t,  s_t = 0.9 s_{t-1} + 0.1 x0_t,  a_c = 1 + 0.5 static0_c; 20% of days missing.
    """
    rng = np.random.default_rng(seed)
    dyn = rng.standard_normal((n_cells, n_days, n_dynamic)).astype(np.float32)
    stat = rng.standard_normal((n_cells, n_static)).astype(np.float32)
    s = np.zeros((n_cells, n_days))
    for t in range(n_days):
        s[:, t] = 0.9 * (s[:, t - 1] if t else 0.0) + 0.1 * dyn[:, t, 0]
    y = (1.0 + 0.5 * stat[:, :1]) * s * 3.0
    y[rng.uniform(size=y.shape) < gap_frac] = np.nan
    sigma = np.nanstd(y, axis=1).astype(np.float32)
    return WindowArrays(dyn, stat, y.astype(np.float32), sigma, np.arange(n_cells) + 1000)


def samples(arrays: WindowArrays, seq_length: int, cells, days) -> np.ndarray:
    """(cell index, end day) of every sample with a valid last target."""
    out = [(c, e) for c in cells for e in days if e >= seq_length - 1 and np.isfinite(arrays.target[c, e])]
    return np.asarray(out, np.int64).reshape(-1, 2)


def assert_close_after_adam(actual, desired, *, rtol: float, atol: float, lr: float, updates: int, err_msg=""):
    """Two trainings equal to float32 rounding, compared after `updates` Adam updates of rate `lr`.

    Adam moves a weight by about lr·m/(√v + ε) per update. For a gradient component near zero the
    float32 rounding of the gradient's sum (its order differs between the runs compared: devices,
    stacking, batch splits) changes that ratio, and so the weight, by a sizeable fraction of lr
    while every other weight agrees to rounding. So: all but a few elements (1%, at least one)
    within rtol/atol, and every element within lr x updates.
    """
    a, d = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    diff = np.abs(a - d)
    off = diff > atol + rtol * np.abs(d)
    assert off.sum() <= max(1, off.size // 100), f"{err_msg}: {off.sum()} of {off.size} elements beyond rtol/atol"
    assert diff.max() <= lr * updates, f"{err_msg}: {diff.max():.3g} beyond lr x updates = {lr * updates:.3g}"


def tiny_config(tmp_path, kernel: dict | None = None, **train) -> Config:
    cfg = load_config(
        "tiny", [f"workdir={tmp_path}", "model.hidden_size=8", "model.seq_length=20", "model.dropout=0.1"]
    )
    # the paper's epoch schedule unless a test asks for another (epochs x max_updates_per_epoch updates)
    t = dict(
        members=2,
        batch_size=16,
        epochs=3,
        max_updates_per_epoch=4,
        learning_rates=((0, 1e-2),),
        log_every_steps=2,
        lr_schedule="paper",
        max_updates=None,
        validate_every_updates=None,
        patience=None,
    )
    t.update(train)
    k = dataclasses.replace(cfg.kernel, **(kernel or {}))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **t), kernel=k)


def array_data(cfg: Config, arrays: WindowArrays | None = None, val_cells=(10, 11)) -> ArrayTrainData:
    arrays = arrays or learnable_arrays()
    n_cells, n_days = arrays.target.shape
    train_cells = [c for c in range(n_cells) if c not in val_cells]
    L = cfg.model.seq_length
    return ArrayTrainData(
        arrays,
        samples(arrays, L, train_cells, range(n_days)),
        samples(arrays, L, val_cells, range(n_days)),
        seq_length=L,
        predict_last_n=cfg.model.predict_last_n,
        batch_size=cfg.train.batch_size,
        members=cfg.train.members,
        shared_batches=cfg.train.shared_batches,
        seed=cfg.train.seed,
        max_updates_per_epoch=cfg.train.max_updates_per_epoch,
    )


def write_learnable_stores(
    store_dir, n_days: int = 300, n_target_cells: int = 12, seed: int = 0, start: str = "2000-01-01"
):
    """Forcings, statics and targets stores on a 2°x2° grid whose L1/L2/L3 targets are learnable.

    L1 is a leaky bucket filled by `log_tp`, L2 a slower bucket filled by L1, L3 slower still;
    every target is scaled by the cell's `clay`, and 20% of the target days are missing.
    Returns the global ids of the target cells.
    """
    import pandas as pd
    import xarray as xr

    from somojax import constants as C
    from somojax import grid, stores

    rng = np.random.default_rng(seed)
    lat, lon = grid.lat_centres(40.0, 42.0), grid.lon_centres(-98.0, -96.0)
    time = pd.date_range(start, periods=n_days, freq="D")
    shape = (n_days, lat.size, lon.size)
    season = np.sin(2 * np.pi * np.arange(n_days) / 365.0)[:, None, None]
    f = {v: (rng.standard_normal(shape) + (k % 3) * season).astype(np.float32) for k, v in enumerate(C.DYNAMIC_INPUTS)}
    f["log_tp"] = np.log1p(rng.exponential(2.0, shape) * (rng.uniform(size=shape) < 0.3)).astype(np.float32)
    coords = {C.TIME: time, C.LAT: lat, C.LON: lon, C.LAYER: np.asarray(C.LAYERS, dtype=object)}
    fvars = {v: ((C.TIME, C.LAT, C.LON), a) for v, a in f.items()}
    fvars[C.SM_ERA5] = ((C.LAYER, C.TIME, C.LAT, C.LON), np.zeros((3,) + shape, np.float32))
    forc = xr.Dataset(fvars, coords=coords)
    st = {v: rng.standard_normal((lat.size, lon.size)).astype(np.float32) for v in C.STATIC_INPUTS}
    st[C.LAND_MASK] = np.ones((lat.size, lon.size), np.float32)
    stat = xr.Dataset({v: ((C.LAT, C.LON), a) for v, a in st.items()}, coords={C.LAT: lat, C.LON: lon})
    iy = rng.choice(lat.size, n_target_cells)
    ix = (
        rng.choice(lon.size, n_target_cells, replace=False)
        if n_target_cells <= lon.size
        else rng.choice(lon.size, n_target_cells)
    )
    pairs = sorted(set(zip(iy.tolist(), ix.tolist())))
    iy, ix = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    cells = grid.cell_id(lat[iy], lon[ix])
    rain = f["log_tp"][:, iy, ix].T  # [cell, day]
    scale = 1.0 + 0.3 * np.tanh(st["clay"][iy, ix])[:, None]
    layers = []
    prev = rain
    for rate in (0.15, 0.05, 0.02):
        s = np.zeros_like(prev, dtype=np.float64)
        for t in range(n_days):
            s[:, t] = (1 - rate) * (s[:, t - 1] if t else 0.0) + rate * prev[:, t]
        layers.append(0.1 + 0.2 * scale * s)
        prev = s
    sm = np.stack(layers).astype(np.float32)  # [layer, cell, day]
    sm[rng.uniform(size=sm.shape) < 0.2] = np.nan
    targ = xr.Dataset(
        {
            C.SM: ((C.LAYER, C.CELL, C.TIME), sm),
            "n_series": ((C.LAYER, C.CELL), np.ones((3, len(cells)), np.int32)),
            "provenance": ((C.LAYER, C.CELL), np.full((3, len(cells)), "test/station/sensor@0.05", dtype=object)),
        },
        coords={
            C.LAYER: np.asarray(C.LAYERS, dtype=object),
            C.CELL: cells,
            C.TIME: time,
            C.LAT: (C.CELL, lat[iy]),
            C.LON: (C.CELL, lon[ix]),
        },
    )
    stores.write_store(forc, stores.store_path(store_dir, "forcings"), "forcings")
    stores.write_store(stat, stores.store_path(store_dir, "statics"), "statics")
    stores.write_store(targ, stores.store_path(store_dir, "targets"), "targets")
    return cells


def store_config(tmp_path, n_days: int = 300, **train) -> Config:
    """A tiny config reading the stores of `write_learnable_stores` from <tmp>/stores."""
    import pandas as pd

    end = str((pd.Timestamp("2000-01-01") + pd.Timedelta(days=n_days - 1)).date())
    cfg = load_config(
        "tiny",
        [
            f"workdir={tmp_path}",
            "data.forcing_start=2000-01-01",
            f"data.forcing_end={end}",
            "data.target_start=2000-03-01",
            f"data.target_end={end}",
            "data.val_fraction=0.25",
            "model.hidden_size=8",
            "model.seq_length=20",
            "model.dropout=0.0",
        ],
    )
    t = dict(
        members=2,
        batch_size=16,
        epochs=4,
        max_updates_per_epoch=8,
        learning_rates=((0, 2e-2),),
        log_every_steps=4,
        lr_schedule="paper",
        max_updates=None,
        validate_every_updates=None,
        patience=None,
    )
    t.update(train)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **t))


# ----------------------------------------------------------------------------------------
# kill-and-resume: a training run in a child process, stopped by a fault (somojax.utils.faults)
# ----------------------------------------------------------------------------------------
_CHILD = """
import os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from somojax.utils.signals import Interrupted
from tests.test_train_engine import make_trainer
from tests.train_fixtures import tiny_config

cfg = tiny_config(Path({tmp!r}), **{kw!r})
try:
    make_trainer(cfg, Path({tmp!r}), name={name!r}).fit()
except Interrupted as e:
    print("INTERRUPTED", e, flush=True)
    sys.exit(e.exit_code)
"""

# wall-clock fields of metrics.jsonl: they differ between any two runs
TIMING_KEYS = ("time", "train/steps_per_s", "train/samples_per_s")


def run_child(tmp_path, kw: dict, fault: str, name: str = "run", timeout: float = 300):
    """Runs `make_trainer(tiny_config(tmp, **kw), name=name).fit()` in a child process with
    SOMOJAX_FAULT=`fault` and the parent's 8 CPU devices (so results compare bitwise)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    script = Path(tmp_path) / f"child-{name}.py"
    script.write_text(_CHILD.format(repo=str(repo), tmp=str(tmp_path), kw=kw, name=name))
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "SOMOJAX_FAULT": fault,
    }
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout)


def metric_records(path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    from somojax.utils.logging import read_metrics

    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(path)]


def checkpoint_params(ckpt_dir) -> dict:
    """{"best": params, "latest": params, "best_step", "latest_step"} of a layer's checkpoints."""
    from somojax.checkpoint import TrainCheckpointer, load_bundle

    with TrainCheckpointer(ckpt_dir) as ck:
        latest, best = ck.latest_step(), ck.best_steps()
    return {
        "best": load_bundle(ckpt_dir, which="best").params,
        "latest": load_bundle(ckpt_dir, which="latest").params,
        "latest_step": latest,
        "best_steps": best,
    }
