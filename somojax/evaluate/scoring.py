"""Scoring datasets against the in-situ targets on the same cells and days, and the per-cell table.

Every dataset (the cross-validated series, ERA5, references) is given as `[layer, cell, time]` on
the targets' cells and days. Each is scored against the targets on its pair-wise complete days;
with `common_days=True` all datasets of a layer are scored only on the days where every one of
them (and the observation) has a value (the paper's robustness check).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.evaluate import metrics as M
from somojax.evaluate import summary as S


def score_datasets(
    obs: xr.DataArray,
    series: Mapping[str, xr.DataArray],
    window_days: int = 35,
    min_count: int = 10,
    common_days: bool = False,
) -> xr.Dataset:
    """Metrics of every dataset against `obs`, per layer and cell.

    Args:
      obs: targets [layer, cell, time] (NaN where missing; already limited to the evaluation
        period).
      series: dataset name -> [layer, cell, time] on the same cells and days (a dataset may cover
        fewer layers; the others are NaN).
      common_days: score every dataset only on days where all datasets and `obs` have values.

    Returns:
      Dataset [dataset, layer, cell] with the metrics of `metrics.score` (`n_days` included).
    """
    names = list(series)
    layers = [str(x) for x in obs[C.LAYER].values]
    per_layer = []
    for layer in layers:  # one layer at a time keeps the float64 temporaries small
        o = obs.sel({C.LAYER: layer}).astype(np.float64).load()
        sims = {}
        for n in names:
            s = series[n]
            if layer in [str(x) for x in s[C.LAYER].values]:
                sims[n] = (
                    s.sel({C.LAYER: layer}).reindex({C.CELL: o[C.CELL], C.TIME: o[C.TIME]}).astype(np.float64).load()
                )
            else:
                sims[n] = xr.full_like(o, np.nan)
        if common_days:
            present = [s for s in sims.values() if s.notnull().any()]
            mask = o.notnull()
            for s in present:
                mask = mask & s.notnull()
            o = o.where(mask)
        scored = [M.score(o, sims[n], window_days, min_count) for n in names]
        per_layer.append(xr.concat(scored, dim=xr.DataArray(names, dims="dataset", name="dataset")))
    out = xr.concat(per_layer, dim=xr.DataArray(layers, dims=C.LAYER, name=C.LAYER))
    out = out.transpose("dataset", C.LAYER, C.CELL)
    for c in (C.LAT, C.LON):
        if c in obs.coords:
            out = out.assign_coords({c: (C.CELL, obs[c].values)})
    out.attrs.update(
        {"anomaly_window_days": window_days, "anomaly_min_count": min_count, "common_days": int(common_days)}
    )
    return out


def cell_climate(
    cells: xr.DataArray | np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    statics: xr.Dataset | None = None,
    forcings: xr.Dataset | None = None,
    period: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Continent and climate of each cell (see `summary`), indexed by cell id.

    Columns: latitude, longitude, continent, arid (statics), t2m_c (mean forcing t2m in °C over
    `period`), aridity, temperature, climate (`temperature, aridity`).
    """
    cells = np.asarray(cells)
    lat, lon = np.asarray(latitude, np.float64), np.asarray(longitude, np.float64)
    df = pd.DataFrame({"cell": cells, "latitude": lat, "longitude": lon, "continent": S.continent(lat, lon)}).set_index(
        "cell"
    )
    arid = np.full(lat.shape, np.nan)
    if statics is not None and "arid" in statics:
        arid = grid.sample_points(statics["arid"], lat, lon).values.astype(np.float64)
    t2m = np.full(lat.shape, np.nan)
    if forcings is not None and "t2m" in forcings:
        f = forcings["t2m"]
        if period is not None:
            f = f.sel({C.TIME: slice(*period)})
        t2m = grid.sample_points(f, lat, lon).mean(C.TIME).values.astype(np.float64) - 273.15
    df["arid"], df["t2m_c"] = arid, t2m
    df["aridity"] = S.aridity_class(arid)
    df["temperature"] = S.temperature_class(t2m + 273.15)
    df["climate"] = df["temperature"] + ", " + df["aridity"]
    return df


def cell_table(
    scores: xr.Dataset, climate: pd.DataFrame | None = None, obs_days: xr.DataArray | None = None
) -> pd.DataFrame:
    """The per-cell metrics as a long table: one row per (dataset, layer, cell) that has a target.

    Args:
      scores: `score_datasets` output.
      climate: `cell_climate` output (joined on cell).
      obs_days: [layer, cell] number of observed days in the evaluation period; rows of cells
        without observations in a layer are dropped.
    """
    metric_vars = ["n_days"] + list(M.METRICS)
    df = scores[metric_vars].drop_vars([c for c in (C.LAT, C.LON) if c in scores.coords]).to_dataframe().reset_index()
    if obs_days is not None:
        od = (
            obs_days.drop_vars([c for c in (C.LAT, C.LON) if c in obs_days.coords])
            .to_dataframe(name="n_obs_days")
            .reset_index()
        )
        df = df.merge(od, on=[C.LAYER, C.CELL], how="left")
        df = df[df["n_obs_days"] > 0]
    if climate is not None:
        df = df.merge(climate, left_on=C.CELL, right_index=True, how="left")
    return df.reset_index(drop=True)


def summaries(table: pd.DataFrame, quantiles=(0.2, 0.8)) -> dict[str, pd.DataFrame]:
    """Summaries per layer (`all`) and per continent / aridity / temperature / climate class."""
    metrics = list(M.METRICS)
    out = {"all": S.summarize(table, metrics, None, quantiles)}
    for by in ("continent", "aridity", "temperature", "climate"):
        if by in table.columns:
            out[by] = S.summarize(table, metrics, by, quantiles)
    return out


def verdicts(table: pd.DataFrame, ours: str, baseline: str, metric: str = "anomaly_r") -> list[dict]:
    """Per layer: does `ours` beat `baseline` in `metric` over the cells both scored?

    `ours` beats the baseline when both its median is better AND it is better in more than half
    of the cells (a higher median alone can come from a minority of cells, or a tie of cells).

    Returns dicts with layer, n_cells, median_ours, median_baseline, median_better (bool),
    share_better (fraction of cells where ours is better), beats (bool, or None when no common
    cell), sentence.
    """
    spec = M.METRICS[metric]
    out = []
    for layer in C.LAYERS:
        a = table[(table["dataset"] == ours) & (table["layer"] == layer)].set_index(C.CELL)[metric]
        b = table[(table["dataset"] == baseline) & (table["layer"] == layer)].set_index(C.CELL)[metric]
        if a.empty and b.empty:
            continue
        j = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
        title = f"{layer} ({int(C.LAYER_BOUNDS_CM[layer][0])}–{int(C.LAYER_BOUNDS_CM[layer][1])} cm)"
        if j.empty:
            out.append(
                {
                    "layer": layer,
                    "n_cells": 0,
                    "median_ours": np.nan,
                    "median_baseline": np.nan,
                    "median_better": None,
                    "share_better": np.nan,
                    "beats": None,
                    "sentence": f"{title}: no cell scored for both {ours} and {baseline}; no verdict.",
                }
            )
            continue
        out.append({"layer": layer, **_verdict(j["a"], j["b"], spec, title, ours, baseline)})
    return out


def _verdict(a: pd.Series, b: pd.Series, spec: M.MetricInfo, title: str, ours: str, baseline: str) -> dict:
    """The verdict over common cells: `a` (ours) and `b` (baseline), the scores in the metric
    `spec` (an entry of `metrics.METRICS`).

    Returns {n_cells, median_ours, median_baseline, median_better, share_better, beats,
    sentence} (see `verdicts`); `title` names the layer in the sentence.
    """
    better = spec.better
    label = spec.label.replace("anomaly r", "anomaly correlation")
    ma, mb = float(a.median()), float(b.median())
    if better == "higher":
        median_better, share = ma > mb, float((a > b).mean())
    elif better == "lower":
        median_better, share = ma < mb, float((a < b).mean())
    else:
        median_better, share = abs(ma) < abs(mb), float((a.abs() < b.abs()).mean())
    beats = bool(median_better and share > 0.5)
    verb = "beats" if beats else "does not beat"
    why = ""
    if median_better != (share > 0.5):
        why = (
            "; the median is better, the majority of cells is not"
            if median_better
            else "; the majority of cells is better, the median is not"
        )
    return {
        "n_cells": int(len(a)),
        "median_ours": ma,
        "median_baseline": mb,
        "median_better": bool(median_better),
        "share_better": share,
        "beats": beats,
        "sentence": f"{title}: {ours} {verb} the {baseline} baseline in {label} (median {ma:.3f} vs {mb:.3f} over "
        f"{len(a)} cells; better in {100 * share:.0f}% of them{why}).",
    }
