"""`somojax predict` at points (`infer.region=points`): one time series per site, no grid.

Points come from `infer.points_file` — a CSV with `latitude`, `longitude` and optionally `name`
(or `station`, `id`) columns, or an ISMN archive (zip or folder: one point per station) — or,
when only `infer.forcing_tables` is set, from those tables' cells. Each point is predicted from
the inputs of the 0.25° cell that contains it, read from

- the analysis-ready stores (`forcings.zarr`, `statics.zarr`), any region of them and only the
  variables the models read (no `sm_era5`, no `land` mask), or
- SoMo.ml's own tables as its authors distribute them (`infer.forcing_tables`: a folder of
  `features_<lat>_<lon>.dat`, daily rows, a column per variable, -9999 for missing;
  `infer.statics_table`: `global_attri.dat`, a row `<lat>_<lon>` per cell).

The output is one CF-1.8 discrete-sampling-geometry file per layer, `featureType: timeSeries`
in the orthogonal multidimensional representation: `sm`, `sm_spread` (time, station),
`station_name` (cf_role timeseries_id), the points' `latitude`/`longitude`, and the same
variable attributes and discovery attributes as the gridded export (`somojax.infer.export`).
Files: `<infer.output or <workdir>/points>/somojax_points_<LAYER>.nc`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.checkpoint import Bundle
from somojax.config import Config
from somojax.errors import ConfigError, InputDataError, writing
from somojax.infer import engine, rollout
from somojax.infer.export import COMPRESSION, depth_coords, global_attributes, sm_attrs, time_coords, write_netcdf
from somojax.utils.logging import format_seconds, get_logger
from somojax.models.kernel import infer_kernel

log = get_logger("infer")

NAME_COLUMNS = ("name", "station", "station_name", "id")
TABLE_NAME = re.compile(r"features_(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)\.dat$")
MISSING = -9999.0  # the authors' missing-value code


@dataclass(frozen=True)
class Points:
    """Sites to predict: names and coordinates as given; each is served by its 0.25° cell."""

    names: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray

    @property
    def cells(self) -> np.ndarray:
        return grid.cell_id(self.lat, self.lon)


# ----------------------------------------------------------------------------------------
# the points
# ----------------------------------------------------------------------------------------
def read_points(cfg: Config) -> Points:
    """The points of `infer.points_file` (CSV or ISMN archive), else the forcing tables' cells."""
    if cfg.infer.points_file:
        path = Path(cfg.infer.points_file)
        if path.is_dir() or path.suffix.lower() == ".zip":
            return read_ismn_stations(path)
        return read_points_csv(path)
    tables = list_tables(Path(cfg.infer.forcing_tables))
    lat, lon = grid.cell_centre(np.array(sorted(tables), np.int64))
    return Points(tuple(tables[c][0] for c in sorted(tables)), lat, lon)


def read_points_csv(path: Path) -> Points:
    """Points of a CSV: `latitude`, `longitude`, optionally a name column (else `<lat>_<lon>`)."""
    key = f"infer.points_file={str(path)!r}"
    table, lat, lon, lines = rollout.read_lat_lon_table(path, key)
    col = next((c for c in NAME_COLUMNS if c in table.columns), None)
    names = table[col].str.strip() if col else pd.Series([f"{a:g}_{b:g}" for a, b in zip(lat, lon)])
    if (names == "").any():
        raise ConfigError(
            f"{key}: lines {lines[(names == '').to_numpy()][:5].tolist()} have an empty {col}; name every point"
        )
    dup = names.duplicated(keep=False).to_numpy()
    if dup.any():
        first = names[dup].iloc[0]
        raise ConfigError(
            f"{key}: lines {lines[(names == first).to_numpy()].tolist()} name the same point {first!r}; names must be unique"
        )
    return Points(tuple(names), lat, np.where(lon > 180, lon - 360, lon))


def read_ismn_stations(path: Path) -> Points:
    """One point per station of an ISMN archive (`network/station`, its coordinates)."""
    from somojax.prepare.ismn import scan_ismn

    scan = scan_ismn(path)
    sites: dict[str, tuple[float, float]] = {}
    for f in scan.files:
        sites.setdefault(f"{f.network}/{f.station}", (f.latitude, f.longitude))
    if not sites:
        raise InputDataError(
            f"infer.points_file={str(path)!r}: the ISMN archive holds no soil-moisture station ({len(scan.skipped)} files unreadable)"
        )
    names = sorted(sites)
    return Points(tuple(names), np.array([sites[n][0] for n in names]), np.array([sites[n][1] for n in names]))


# ----------------------------------------------------------------------------------------
# inputs at the points' cells: [C, T] dynamic and [C] static columns
# ----------------------------------------------------------------------------------------
Inputs = tuple[pd.DatetimeIndex, dict[str, np.ndarray], dict[str, np.ndarray]]


def inputs_from_stores(cfg: Config, bundles: Mapping[str, Bundle], points: Points, cells: np.ndarray) -> Inputs:
    forcings, statics = rollout.open_stores(cfg)
    rollout.check_store_variables(cfg, bundles, forcings, statics)
    lat, lon = grid.cell_centre(cells)
    outside = [
        i
        for i, (a, b) in enumerate(zip(lat, lon))
        if not (
            np.isclose(statics[C.LAT].values, a, atol=1e-3).any()
            and np.isclose(statics[C.LON].values, b, atol=1e-3).any()
        )
    ]
    if outside:
        show = ", ".join(
            f"{points.names[int(np.argmax(points.cells == cells[i]))]} ({lat[i]:g}, {lon[i]:g})" for i in outside[:5]
        )
        raise ConfigError(
            f"infer.points_file: {len(outside)} of {cells.size} points' cells are not in the statics store {cfg.store_dir} "
            f"({statics[C.LAT].values.min()}..{statics[C.LAT].values.max()} N, {statics[C.LON].values.min()}..{statics[C.LON].values.max()} E): "
            f"{show}; prepare stores that cover them or remove them"
        )
    dyn, sta = rollout.inputs_of(bundles)
    pts = {C.LAT: xr.DataArray(lat, dims=C.CELL), C.LON: xr.DataArray(lon, dims=C.CELL)}
    f = forcings[dyn].sel(pts, method="nearest", tolerance=1e-3)
    s = statics[sta].sel(pts, method="nearest", tolerance=1e-3)
    columns = {v: np.asarray(f[v].transpose(C.CELL, C.TIME).values, np.float32) for v in dyn}
    return pd.DatetimeIndex(f[C.TIME].values), columns, {v: np.asarray(s[v].values, np.float32) for v in sta}


def list_tables(folder: Path) -> dict[int, tuple[str, Path]]:
    """{cell id: (`<lat>_<lon>` as written, path)} of the `features_<lat>_<lon>.dat` in a folder."""
    if not folder.is_dir():
        raise ConfigError(
            f"infer.forcing_tables={str(folder)!r} is not a folder (expected SoMo.ml's forcing/ folder of features_<lat>_<lon>.dat)"
        )
    found = {}
    for p in sorted(folder.iterdir()):
        m = TABLE_NAME.match(p.name)
        if m:
            found[int(grid.cell_id(float(m.group(1)), float(m.group(2))))] = (f"{m.group(1)}_{m.group(2)}", p)
    if not found:
        raise ConfigError(f"infer.forcing_tables={str(folder)!r} holds no features_<lat>_<lon>.dat file")
    return found


def inputs_from_tables(cfg: Config, bundles: Mapping[str, Bundle], points: Points, cells: np.ndarray) -> Inputs:
    dyn, sta = rollout.inputs_of(bundles)
    tables = list_tables(Path(cfg.infer.forcing_tables))
    missing = [c for c in cells if int(c) not in tables]
    if missing:
        lat, lon = grid.cell_centre(np.array(missing))
        raise ConfigError(
            f"infer.forcing_tables={cfg.infer.forcing_tables!r} has no table for {len(missing)} points' cells, e.g. "
            + ", ".join(f"features_{a:g}_{b:g}.dat" for a, b in zip(lat[:3], lon[:3]))
            + f" ({len(tables)} tables there)"
        )
    frames = [read_forcing_table(tables[int(c)][1], dyn) for c in cells]
    days = pd.date_range(min(f.index[0] for f in frames), max(f.index[-1] for f in frames), freq="D")
    # kept in float64 until normalised, as the authors do (a temperature of 300 K rounded to
    # float32 moves its z-score by up to 1e-6)
    columns = {v: np.stack([f[v].reindex(days).to_numpy(np.float64) for f in frames]) for v in dyn}
    return days, columns, read_statics_table(Path(cfg.infer.statics_table), [tables[int(c)][0] for c in cells], sta)


def read_forcing_table(path: Path, variables: Sequence[str]) -> pd.DataFrame:
    """One of SoMo.ml's forcing tables: a date per row, a column per variable, -9999 missing."""
    try:
        df = pd.read_csv(path, sep=",", index_col=0, header=0, parse_dates=True, na_values=[MISSING])
    except (ValueError, pd.errors.ParserError) as e:
        raise InputDataError(f"{path} is not a readable forcing table ({type(e).__name__}: {str(e)[:200]})") from None
    absent = [v for v in variables if v not in df.columns]
    if absent:
        raise InputDataError(f"{path} lacks the model inputs {absent} (columns: {list(df.columns)})")
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.has_duplicates or not df.index.is_monotonic_increasing:
        raise InputDataError(
            f"{path}: the first column must hold increasing, distinct dates (found {list(df.index[:3])})"
        )
    return df[list(variables)].astype(np.float64)


def read_statics_table(path: Path, ids: Sequence[str], variables: Sequence[str]) -> dict[str, np.ndarray]:
    """The statics of cells `<lat>_<lon>` from SoMo.ml's `global_attri.dat` (a row per cell)."""
    if not path.is_file():
        raise ConfigError(f"infer.statics_table={str(path)!r} does not exist (SoMo.ml's attri/global_attri.dat)")
    try:
        df = pd.read_csv(path, sep=",", index_col=0, header=0)
    except (ValueError, pd.errors.ParserError) as e:
        raise InputDataError(f"{path} is not a readable statics table ({type(e).__name__}: {str(e)[:200]})") from None
    df.index = df.index.astype(str).str.strip()
    absent = [v for v in variables if v not in df.columns]
    rows = [i for i in ids if i not in df.index]
    if absent or rows:
        raise InputDataError(
            f"{path} lacks " + (f"the columns {absent} " if absent else "") + (f"the rows {rows[:5]}" if rows else "")
        )
    return {v: df.loc[list(ids), v].to_numpy(np.float64) for v in variables}


# ----------------------------------------------------------------------------------------
# predict and write
# ----------------------------------------------------------------------------------------
def points_output_dir(cfg: Config) -> Path:
    return Path(cfg.infer.output) if cfg.infer.output else cfg.run_dir / "points"


def predict_points(cfg: Config, layers: Sequence[str] | None = None) -> dict:
    """Predicts every point of `read_points(cfg)` over infer.start..end; writes one file per layer."""
    t_start = time.perf_counter()
    out, bundles = rollout.load_bundles(cfg, layers)
    rollout.check_settings(cfg, bundles)
    points = read_points(cfg)
    cells, index = np.unique(points.cells, return_inverse=True)  # two sites in one cell share its inputs
    source = inputs_from_tables if cfg.infer.forcing_tables else inputs_from_stores
    times, columns, statics = source(cfg, bundles, points, cells)
    start, end = pd.Timestamp(cfg.infer.start), pd.Timestamp(cfg.infer.end)
    rollout.check_period(bundles, out, times, start, end)
    first = start - pd.Timedelta(days=max(engine.spinup_days(bundles, l) for l in out))
    keep = (times >= first) & (times <= end)
    options = infer_kernel(cfg.kernel)
    ds = rollout.predict_columns(
        bundles, times[keep], {v: c[:, keep] for v, c in columns.items()}, statics, start, out, cfg.infer.mode, options
    )
    modes = {l: engine.resolve_mode(bundles[l], cfg.infer.mode) for l in out}
    attrs = rollout.model_attrs(bundles, modes, out)
    folder = points_output_dir(cfg)
    with writing("the points output folder", folder):
        folder.mkdir(parents=True, exist_ok=True)
    files = []
    for layer in out:
        part = ds.sel({C.LAYER: layer}).isel({C.CELL: index})
        target = folder / f"somojax_points_{layer}.nc"
        write_netcdf(points_dataset(cfg, points, part, layer, attrs), target, points_encoding(len(points.names)))
        files.append(str(target))
    wall = time.perf_counter() - t_start
    log.info(
        "predicted %d points (%d cells) x %d days (%s) in %s; wrote %s",
        len(points.names),
        cells.size,
        ds.sizes[C.TIME],
        modes,
        format_seconds(wall),
        ", ".join(files),
    )
    return {
        "layers": out,
        "points": len(points.names),
        "cells": int(cells.size),
        "days": int(ds.sizes[C.TIME]),
        "modes": modes,
        "files": files,
        "cell_steps": ds.attrs["cell_steps"],
        "wall_seconds": round(wall, 2),
    }


def points_dataset(
    cfg: Config, points: Points, part: xr.Dataset, layer: str, model_attrs: Mapping[str, object]
) -> xr.Dataset:
    """One layer's series at the points as a CF timeSeries dataset (orthogonal multidimensional;
    (time, station): time first, so that CDO reads the points as a grid of sites)."""
    times = pd.DatetimeIndex(part[C.TIME].values)
    time_var, time_bounds = time_coords(times)
    depth, depth_bounds = depth_coords(layer)
    geo = {"latitude": ("degrees_north", points.lat), "longitude": ("degrees_east", points.lon)}
    coords = {
        name: ("station", values, {"standard_name": name, "long_name": f"{name} of the site", "units": units})
        for name, (units, values) in geo.items()
    }
    centre_lat, centre_lon = grid.cell_centre(points.cells)
    data = {
        v: (
            (C.TIME, "station"),
            part[v].transpose(C.TIME, C.CELL).values.astype(np.float32),
            {**sm_attrs(v), "coordinates": "time latitude longitude station_name layer_depth"},
        )
        for v in (C.SM, C.SM_SPREAD)
    }
    extra = {
        "station_name": (
            "station",
            np.array(points.names, dtype=object),
            {"cf_role": "timeseries_id", "long_name": "name of the site"},
        ),
        "cell_latitude": (
            "station",
            centre_lat,
            {"units": "degrees_north", "long_name": "centre of the 0.25 degree cell whose inputs were used"},
        ),
        "cell_longitude": (
            "station",
            centre_lon,
            {"units": "degrees_east", "long_name": "centre of the 0.25 degree cell whose inputs were used"},
        ),
        "layer_depth": depth,
        "layer_depth_bounds": depth_bounds,
        "time_bounds": time_bounds,
    }
    attrs = global_attributes(cfg, model_attrs, layer, times, points.lat, points.lon, feature="points")
    return xr.Dataset(
        {**data, **extra, **coords}, coords={C.TIME: time_var}, attrs={**attrs, "featureType": "timeSeries"}
    )


def points_encoding(n_points: int) -> dict:
    """NaN-filled compressed data; station names as a char array (CF has no variable-length strings)."""
    enc = {v: {**COMPRESSION, "dtype": "float32", "_FillValue": np.float32(np.nan)} for v in (C.SM, C.SM_SPREAD)}
    for v in ("latitude", "longitude", "cell_latitude", "cell_longitude", "layer_depth", "layer_depth_bounds"):
        enc[v] = {"_FillValue": None}
    enc["station_name"] = {"dtype": "S1", "char_dim_name": "name_strlen", "_FillValue": None}
    enc[C.TIME] = {
        "units": "days since 1970-01-01 00:00:00",
        "calendar": "proleptic_gregorian",
        "dtype": "int32",
        "_FillValue": None,
    }
    enc["time_bounds"] = dict(enc[C.TIME])
    return enc
