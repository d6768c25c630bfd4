"""Small, schema-valid mock stores for the evaluation tests, without running the other stages.

`mock_stores` builds a synthetic truth on a small 0.25° grid, an "ERA5" that is a degraded copy
of it, targets at a few cells (the truth rescaled to ERA5's mean and standard deviation, with
noise and gaps, as `prepare` does), a prediction store and a cross-validated series that follow
the truth more closely than ERA5 does. Everything is deterministic given `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid, stores


@dataclass
class MockStores:
    forcings: xr.Dataset
    statics: xr.Dataset
    targets: xr.Dataset
    truth: xr.Dataset
    predictions: xr.Dataset
    cv: xr.DataArray  # [layer, cell, time]: a cross-validated series on the target cells


def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    """Moving average along the last axis (window w, edges cut), via cumulative sums."""
    cs = np.cumsum(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(w, 0)], mode="edge"), axis=-1)
    return (cs[..., w:] - cs[..., :-w]) / w


def mock_stores(
    n_lat: int = 8,
    n_lon: int = 8,
    south: float = 40.0,
    west: float = -98.0,
    start: str = "2001-01-01",
    days: int = 400,
    n_cells: int = 6,
    seed: int = 0,
    store_dir: str | Path | None = None,
) -> MockStores:
    """Builds (and with `store_dir`, writes) forcings, statics, targets, truth and predictions stores."""
    rng = np.random.default_rng(seed)
    lat = grid.lat_centres(south, south + n_lat * C.GRID_RES)
    lon = grid.lon_centres(west, west + n_lon * C.GRID_RES)
    time = pd.date_range(start, periods=days, freq="D")
    nl = len(C.LAYERS)
    doy = time.day_of_year.to_numpy()
    season = 0.08 * np.sin(2 * np.pi * (doy - 80) / 365.25)
    base = 0.25 + 0.05 * rng.uniform(-1, 1, (1, 1, n_lat, n_lon))
    smoothing = {0: 5, 1: 12, 2: 25}
    truth = np.empty((nl, days, n_lat, n_lon))
    for k in range(nl):
        noise = rng.normal(0, 1, (n_lat, n_lon, days))
        storms = _smooth(noise, smoothing[k]).transpose(2, 0, 1)
        truth[k] = base[0, 0] + season[:, None, None] * (1 - 0.2 * k) + 0.05 * storms / storms.std()
    truth = np.clip(truth, 0.02, 0.6)
    # ERA5-like: biased, damped and partly wrong anomalies
    era_noise = np.stack(
        [_smooth(rng.normal(0, 1, (n_lat, n_lon, days)), smoothing[k]).transpose(2, 0, 1) for k in range(nl)]
    )
    era5 = 0.05 + 0.8 * truth + 0.03 * era_noise / era_noise.std()
    # the product: close to the truth, slightly noisy
    pred = truth + rng.normal(0, 0.008, truth.shape)

    coords = {C.LAYER: list(C.LAYERS), C.TIME: time, C.LAT: lat, C.LON: lon}
    gdims = (C.LAYER, C.TIME, C.LAT, C.LON)
    forc = {
        v: ((C.TIME, C.LAT, C.LON), rng.normal(0, 1, (days, n_lat, n_lon)).astype(np.float32)) for v in C.DYNAMIC_INPUTS
    }
    t2m_c = 12.0 + 10.0 * np.sin(2 * np.pi * (doy - 110) / 365.25)
    forc["t2m"] = (
        (C.TIME, C.LAT, C.LON),
        (273.15 + t2m_c[:, None, None] + np.zeros((days, n_lat, n_lon))).astype(np.float32),
    )
    forcings = xr.Dataset({**forc, C.SM_ERA5: (gdims, era5.astype(np.float32))}, coords=coords)
    stat = {v: ((C.LAT, C.LON), rng.uniform(0.1, 1.0, (n_lat, n_lon)).astype(np.float32)) for v in C.STATIC_INPUTS}
    stat["arid"] = ((C.LAT, C.LON), np.linspace(0.8, 3.0, n_lat * n_lon).reshape(n_lat, n_lon).astype(np.float32))
    land = np.ones((n_lat, n_lon), np.int8)
    land[0, 0] = 0
    stat[C.LAND_MASK] = ((C.LAT, C.LON), land)
    statics = xr.Dataset(stat, coords={C.LAT: lat, C.LON: lon})
    truth_ds = xr.Dataset({C.SM_TRUE: (gdims, truth.astype(np.float32))}, coords=coords)
    predictions = xr.Dataset(
        {C.SM: (gdims, pred.astype(np.float32)), C.SM_SPREAD: (gdims, np.full(pred.shape, 0.01, np.float32))},
        coords=coords,
        attrs={"somojax_complete": True},  # a finished rollout (evaluate refuses unfinished ones)
    )

    # targets: n_cells land cells; each layer observed at a subset, truth rescaled to ERA5 mean/std
    flat = rng.choice(np.flatnonzero(land.ravel()), n_cells, replace=False)
    ii, jj = np.unravel_index(flat, land.shape)
    tgt = np.full((nl, n_cells, days), np.nan)
    cv = np.full((nl, n_cells, days), np.nan)
    for c, (i, j) in enumerate(zip(ii, jj)):
        for k in range(nl):
            if k > 0 and c % (k + 2) == 0:
                continue  # deeper layers have fewer cells
            x = truth[k, :, i, j] + rng.normal(0, 0.01, days)
            e = era5[k, :, i, j]
            x = e.mean() + (x - x.mean()) * e.std() / x.std()
            gaps = rng.random(days) < 0.15
            glen = min(40, days // 4)
            g0 = int(rng.integers(0, max(days - glen, 1)))
            gaps[g0 : g0 + glen] = True  # one long gap
            tgt[k, c] = np.where(gaps, np.nan, x)
            p = pred[k, :, i, j] + rng.normal(0, 0.01, days)
            cv[k, c] = e.mean() + (p - p.mean()) * e.std() / p.std()
    cid = grid.cell_id(lat[ii], lon[jj])
    targets = xr.Dataset(
        {
            C.SM: ((C.LAYER, C.CELL, C.TIME), tgt.astype(np.float32)),
            "n_series": ((C.LAYER, C.CELL), np.isfinite(tgt).any(-1).astype(np.int16)),
            "provenance": (
                (C.LAYER, C.CELL),
                np.array(
                    [[f"MOCK/st{c}/s@{C.LAYER_MID_CM[l]}" for c in range(n_cells)] for l in C.LAYERS], dtype=object
                ),
            ),
        },
        coords={C.LAYER: list(C.LAYERS), C.CELL: cid, C.TIME: time, C.LAT: (C.CELL, lat[ii]), C.LON: (C.CELL, lon[jj])},
    )
    cv_da = xr.DataArray(
        cv.astype(np.float32),
        dims=(C.LAYER, C.CELL, C.TIME),
        coords={C.LAYER: list(C.LAYERS), C.CELL: cid, C.TIME: time},
        name=C.SM,
    )
    out = MockStores(forcings, statics, targets, truth_ds, predictions, cv_da)
    if store_dir is not None:
        store_dir = Path(store_dir)
        for kind, ds in (("forcings", forcings), ("statics", statics), ("targets", targets), ("truth", truth_ds)):
            stores.write_store(ds, stores.store_path(store_dir, kind), kind)
    return out
