"""Scoring against the synthetic Earth's truth (`truth.zarr`), where the truth is known everywhere.

With a prediction store, somojax (the product trained on all stations) and the ERA5-like
baseline are scored against `sm_true` on every land cell of the domain over the days they share.
Without one, the cross-validated series is scored at the station cells only (with ERA5 on the
same cells). The truth is the soil model's own soil moisture, not rescaled to ERA5's climatology as
the targets are (docs/design.md#targets), so bias-type metrics include that rescaling; r and anomaly r do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax.evaluate import metrics as M
from somojax.evaluate.references import sample_cells
from somojax.evaluate.scoring import score_datasets, summaries, verdicts


@dataclass
class TruthResult:
    """Skill against the synthetic truth.

    Attributes:
      scope: `all land cells` or `station cells`.
      grid_scores: metrics [dataset, layer, latitude, longitude] (None at station scope).
      table: per-cell long table (dataset, layer, cell, metrics).
      summary: median and quantiles per dataset and layer.
      verdicts: per layer, whether somojax beats the ERA5-like baseline in anomaly r vs the truth.
      n_cells: cells scored per layer.
      period: (first, last) day scored.
    """

    scope: str
    grid_scores: xr.Dataset | None
    table: pd.DataFrame
    summary: pd.DataFrame
    verdicts: list[dict]
    n_cells: dict[str, int]
    period: tuple[str, str]


def _table_from_grid(scores: xr.Dataset) -> pd.DataFrame:
    st = scores.stack({C.CELL: (C.LAT, C.LON)})
    df = st[["n_days"] + list(M.METRICS)].to_dataframe().reset_index(drop=False)
    df[C.CELL] = df[C.LAT].round(4).astype(str) + "," + df[C.LON].round(4).astype(str)
    return df[df["n_days"] > 0].reset_index(drop=True)


def score_truth_grid(
    truth: xr.DataArray,
    products: Mapping[str, xr.DataArray],
    land: xr.DataArray,
    ours: str,
    baseline: str,
    window_days: int = 35,
    min_count: int = 10,
    quantiles=(0.2, 0.8),
) -> TruthResult:
    """Scores gridded products against the truth on every land cell.

    Args:
      truth: `sm_true` [layer, time, latitude, longitude].
      products: name -> [layer, time, latitude, longitude] (e.g. the prediction store's `sm` and
        the forcings' `sm_era5`), aligned with the truth on the common cells and days.
      land: [latitude, longitude] land mask (> 0 land).
    """
    arrays = [truth] + list(products.values())
    aligned = xr.align(*arrays, land, join="inner", exclude=[C.LAYER])
    truth, prods, land = aligned[0], aligned[1:-1], aligned[-1]
    layers = [
        l
        for l in (str(x) for x in truth[C.LAYER].values)
        if all(l in [str(x) for x in p[C.LAYER].values] for p in prods)
    ]
    is_land = land > 0
    per = []
    for name, p in zip(products, prods):
        per_layer = []
        for layer in layers:
            o = truth.sel({C.LAYER: layer}).astype(np.float64).where(is_land).load()
            s = p.sel({C.LAYER: layer}).astype(np.float64).load()
            per_layer.append(M.score(o, s, window_days, min_count))
        per.append(
            xr.concat(
                per_layer, dim=xr.DataArray(layers, dims=C.LAYER, name=C.LAYER), coords="minimal", compat="override"
            )
        )
    scores = xr.concat(
        per, dim=xr.DataArray(list(products), dims="dataset", name="dataset"), coords="minimal", compat="override"
    )
    scores = scores.transpose("dataset", C.LAYER, C.LAT, C.LON)
    table = _table_from_grid(scores)
    t = truth[C.TIME].values
    return TruthResult(
        scope="all land cells",
        grid_scores=scores,
        table=table,
        summary=summaries(table, quantiles)["all"],
        verdicts=verdicts(table, ours, baseline),
        n_cells={l: int(((scores["n_days"].sel(dataset=ours, layer=l)) > 0).sum()) for l in layers},
        period=(str(pd.Timestamp(t[0]).date()), str(pd.Timestamp(t[-1]).date())) if t.size else ("", ""),
    )


def score_truth_cells(
    truth: xr.DataArray,
    series: Mapping[str, xr.DataArray],
    latitude: np.ndarray,
    longitude: np.ndarray,
    cells: np.ndarray,
    ours: str,
    baseline: str,
    window_days: int = 35,
    min_count: int = 10,
    quantiles=(0.2, 0.8),
) -> TruthResult:
    """Scores `[layer, cell, time]` series against the truth sampled at the same cells."""
    time = next(iter(series.values()))[C.TIME].values
    obs = sample_cells(truth, latitude, longitude, time, cells).load()
    scores = score_datasets(obs, series, window_days, min_count)
    df = (
        scores[["n_days"] + list(M.METRICS)]
        .drop_vars([c for c in (C.LAT, C.LON) if c in scores.coords])
        .to_dataframe()
        .reset_index()
    )
    df = df[df["n_days"] > 0].reset_index(drop=True)
    layers = [str(x) for x in scores[C.LAYER].values]
    return TruthResult(
        scope="station cells",
        grid_scores=None,
        table=df,
        summary=summaries(df, quantiles)["all"],
        verdicts=verdicts(df, ours, baseline),
        n_cells={l: int((df[(df["dataset"] == ours) & (df[C.LAYER] == l)]).shape[0]) for l in layers},
        period=(str(pd.Timestamp(time[0]).date()), str(pd.Timestamp(time[-1]).date())) if len(time) else ("", ""),
    )
