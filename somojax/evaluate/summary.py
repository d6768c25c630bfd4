"""Grouping of cells (continents, climate classes) and quantile summaries of per-cell metrics.

Continents come from a coarse lookup of latitude/longitude boxes (first match wins, `CONTINENT_BOXES`):
exact enough to group validation cells, not a coastline. Cells near the boxes' edges (Gibraltar,
Sinai and the Red Sea, Panama, the Urals, the Bering Strait) may land on the wrong side.

Climate classes, for the hydro-climatic grouping of O & Orth (2021, Figs. 3–5):
- aridity from the statics' `arid` = net radiation as evaporation equivalent over precipitation
  (Budyko's dryness index φ ≈ PET/P), classed by the UNEP aridity index AI = P/PET = 1/φ
  (Middleton & Thomas 1997, World Atlas of Desertification): humid (AI ≥ 0.65), dry sub-humid
  (0.5–0.65), semi-arid (0.2–0.5), arid (0.05–0.2), hyper-arid (< 0.05);
- temperature from the long-term mean of the forcing `t2m`: cold (< 5 °C), temperate (5–18 °C),
  warm (≥ 18 °C).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

# (name, south, north, west, east) in degrees; [south, north) x [west, east); first match wins
CONTINENT_BOXES: tuple[tuple[str, float, float, float, float], ...] = (
    ("Antarctica", -90.0, -60.0, -180.0, 180.0),
    ("South America", -60.0, 12.5, -82.0, -34.0),
    ("North America", 7.0, 90.0, -170.0, -50.0),
    ("Europe", 63.0, 67.0, -25.0, -13.0),  # Iceland (before Greenland's box)
    ("North America", 59.0, 90.0, -75.0, -10.0),  # Greenland
    ("North America", 50.0, 72.0, -180.0, -168.0),  # western Alaska, Aleutians
    ("Africa", -35.0, 35.8, -20.0, 32.0),
    ("Africa", -35.0, 31.6, 32.0, 35.0),  # Egypt, Sinai
    ("Africa", -35.0, 15.0, 35.0, 43.5),  # Sudan, Eritrea, Ethiopia
    ("Africa", 15.0, 22.0, 35.0, 38.5),  # north-eastern Sudan
    ("Africa", -35.0, 12.0, 43.5, 52.0),  # Horn of Africa, Madagascar
    ("Europe", 35.0, 82.0, -25.0, 40.0),
    ("Europe", 45.0, 82.0, 40.0, 60.0),  # European Russia west of the Urals
    ("Oceania", -50.0, -10.0, 110.0, 180.0),  # Australia, New Zealand
    ("Oceania", -11.0, 0.0, 130.0, 180.0),  # New Guinea, Melanesia
    ("Oceania", -50.0, 0.0, -180.0, -140.0),  # Pacific islands east of the dateline
    ("Asia", -11.0, 90.0, 25.0, 180.0),
)
CONTINENTS = ("Africa", "Asia", "Europe", "North America", "Oceania", "South America", "Antarctica", "other")

ARIDITY_CLASSES = ("humid", "dry sub-humid", "semi-arid", "arid", "hyper-arid")
# upper bounds of φ = 1/AI for each class: AI ≥ 0.65 <=> φ ≤ 1/0.65
_ARIDITY_PHI_EDGES = (1 / 0.65, 1 / 0.5, 1 / 0.2, 1 / 0.05)
TEMPERATURE_CLASSES = ("cold", "temperate", "warm")
_TEMPERATURE_EDGES_C = (5.0, 18.0)


def continent(latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Continent names of points (degrees north/east; longitude −180..180 or 0..360), `other` if none."""
    lat = np.asarray(latitude, np.float64)
    lon = ((np.asarray(longitude, np.float64) + 180.0) % 360.0) - 180.0
    out = np.full(lat.shape, "other", dtype=object)
    todo = np.ones(lat.shape, bool)
    for name, s, n, w, e in CONTINENT_BOXES:
        hit = todo & (lat >= s) & (lat < n) & (lon >= w) & (lon < e)
        out[hit] = name
        todo &= ~hit
    return out


def aridity_class(arid: np.ndarray) -> np.ndarray:
    """UNEP aridity class from the dryness index φ = `arid` (AI = 1/φ); `unknown` where NaN or ≤ 0."""
    phi = np.asarray(arid, np.float64)
    idx = np.searchsorted(np.asarray(_ARIDITY_PHI_EDGES), phi, side="left")
    out = np.asarray(ARIDITY_CLASSES, dtype=object)[np.clip(idx, 0, len(ARIDITY_CLASSES) - 1)]
    out[~np.isfinite(phi) | (phi <= 0)] = "unknown"
    return out


def temperature_class(t2m_kelvin: np.ndarray) -> np.ndarray:
    """cold (< 5 °C) / temperate (5–18 °C) / warm (≥ 18 °C) from the mean 2 m temperature [K]."""
    tc = np.asarray(t2m_kelvin, np.float64) - 273.15
    idx = np.searchsorted(np.asarray(_TEMPERATURE_EDGES_C), tc, side="right")
    out = np.asarray(TEMPERATURE_CLASSES, dtype=object)[np.clip(idx, 0, len(TEMPERATURE_CLASSES) - 1)]
    out[~np.isfinite(tc)] = "unknown"
    return out


def quantile_columns(quantiles: Sequence[float]) -> list[str]:
    """Column names of the quantiles: (0.2, 0.8) -> ['q20', 'q80']."""
    return [f"q{round(q * 100):02d}" for q in quantiles]


def summarize(
    table: pd.DataFrame,
    metrics: Sequence[str],
    by: str | None = None,
    quantiles: Sequence[float] = (0.2, 0.8),
) -> pd.DataFrame:
    """Median and quantiles over cells of each metric, per dataset and layer (and group `by`).

    Args:
      table: one row per (dataset, layer, cell) with the metric columns (NaN = not scored).
      metrics: the metric columns to summarise.
      by: an extra grouping column (`continent`, `aridity`, `temperature`, `climate`) or None.
      quantiles: the lower and upper quantile (the paper's whiskers: 0.2 and 0.8).

    Returns:
      Long table: dataset, layer, [group_by, group], metric, n_cells, median, q20, q80 (NaN-free
      cells only; groups without any scored cell are omitted).
    """
    keys = ["dataset", "layer"] + ([by] if by else [])
    qcols = quantile_columns(quantiles)
    rows = []
    for key, g in table.groupby(keys, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            v = g[m].to_numpy(np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            row = dict(zip(keys, key))
            if by:
                row["group_by"] = by
                row["group"] = row.pop(by)
            row.update({"metric": m, "n_cells": int(v.size), "median": float(np.median(v))})
            row.update({c: float(np.quantile(v, q)) for c, q in zip(qcols, quantiles)})
            rows.append(row)
    cols = ["dataset", "layer"] + (["group_by", "group"] if by else []) + ["metric", "n_cells", "median"] + qcols
    return pd.DataFrame(rows, columns=cols)
