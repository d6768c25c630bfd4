"""`somojax export`: the prediction store as CF-1.8 / ACDD-1.3 NetCDF files, one per layer and year.

Named `somojax_<LAYER>_<YYYY>.nc` after SoMo.ml's released `SoMo.ml_v1_<LAYER>_<YYYY>.nc`. Each
holds `sm` and `sm_spread` (time, latitude, longitude) with their `cell_methods` (daily means of
the ensemble mean / spread), `valid_min`/`valid_max`, a scalar `layer_depth` coordinate with
bounds, time and cell bounds, a `crs` grid mapping and the ACDD discovery attributes. Coordinates
carry no `_FillValue`; run bookkeeping (fingerprints, checkpoint paths, NaN counts, timings)
stays in the Zarr store and is not copied. `cfchecks` (CF-1.8) reports neither errors nor
warnings on these files (tests/test_export_cf.py).

Chunks (`NETCDF_CHUNKS`): (30 days, 60, 60 cells) of float32, 432 kB. For a quasi-global year
(365 × 600 × 1440) a daily map touches 10 × 24 = 240 chunks and a 20-year series of one cell
20 files × 13 chunks = 260: the two reads cost the same (chunk area / time length is chosen so
that 20 years of one cell and one day of the globe decompress equal amounts), where chunks of
one day each made the series read every chunk of every file. `docs/output.md` gives measured
read times.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from somojax import __version__
from somojax import constants as C
from somojax import stores
from somojax.config import Config
from somojax.errors import OutputError, writing
from somojax.infer import store as pstore
from somojax.utils.logging import Progress, get_logger

log = get_logger("infer")

NETCDF_CHUNKS = (30, 60, 60)  # (time, latitude, longitude); see the module docstring
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
# what the value of a day is: a daily mean (of the in-situ targets the model learned), over the members
CELL_METHODS = {C.SM: "time: mean realization: mean", C.SM_SPREAD: "time: mean realization: standard_deviation"}
LONG_NAMES = {
    C.SM: "volumetric soil moisture, ensemble mean",
    C.SM_SPREAD: "volumetric soil moisture, ensemble standard deviation (spread of the members)",
}


def export_filename(layer: str, year: int) -> str:
    return f"somojax_{layer}_{year}.nc"


def export(cfg: Config) -> list[Path]:
    """Writes one NetCDF file per layer and year of `cfg.predictions_path` to `cfg.export_dir`."""
    path = cfg.predictions_path
    ds = stores.open_store(path, "predictions")
    pstore.check_complete(ds, path)
    out_dir = cfg.export_dir
    with writing("the export directory", out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    years = np.unique(pd.DatetimeIndex(ds[C.TIME].values).year)
    written = []
    with Progress(total=len(years) * ds.sizes[C.LAYER], desc="export", unit="file") as prog:
        for layer in map(str, ds[C.LAYER].values):
            for year in years:
                part = ds[[C.SM, C.SM_SPREAD]].sel({C.LAYER: layer, C.TIME: str(year)})
                times = pd.DatetimeIndex(part[C.TIME].values)
                out = grid_dataset(
                    part, layer, global_attributes(cfg, ds.attrs, layer, times, part[C.LAT].values, part[C.LON].values)
                )
                target = out_dir / export_filename(layer, int(year))
                write_netcdf(out, target)
                written.append(target)
                prog.update(1)
    log.info("exported %d files to %s (chunks %s of time, latitude, longitude)", len(written), out_dir, NETCDF_CHUNKS)
    return written


# ----------------------------------------------------------------------------------------
# the CF variables
# ----------------------------------------------------------------------------------------
def sm_attrs(var: str) -> dict:
    """CF attributes of `sm` / `sm_spread` in a user file."""
    a = {"units": C.UNITS[var], "long_name": LONG_NAMES[var], "cell_methods": CELL_METHODS[var]}
    if var == C.SM:
        a["standard_name"] = stores.STANDARD_NAMES[C.SM]
    a.update({"valid_min": np.float32(0.0), "valid_max": np.float32(1.0)})
    return a


def time_coords(times: pd.DatetimeIndex) -> tuple[tuple, tuple]:
    """`time` (the day's start, UTC) with bounds [day, next day): the values are daily means."""
    t = times.values.astype("datetime64[ns]")
    bounds = np.stack([t, t + np.timedelta64(1, "D")], axis=1)
    attrs = {"standard_name": "time", "long_name": "time (start of the UTC day)", "axis": "T", "bounds": "time_bounds"}
    return (C.TIME, t, attrs), ((C.TIME, "nv"), bounds)


def depth_coords(layer: str) -> tuple[tuple, tuple]:
    """Scalar `layer_depth` (mid-depth) with bounds: the layer's top and bottom, positive down."""
    top, bottom = (v / 100.0 for v in C.LAYER_BOUNDS_CM[layer])
    attrs = {
        "standard_name": "depth",
        "long_name": f"depth of soil layer {layer} ({top * 100:g}-{bottom * 100:g} cm)",
        "units": "m",
        "positive": "down",
        "axis": "Z",
        "bounds": "layer_depth_bounds",
    }
    return ((), (top + bottom) / 2, attrs), (("nv",), np.array([top, bottom]))


def cell_bounds(centres: np.ndarray) -> np.ndarray:
    """[n, 2] edges of 0.25° cells around their centres."""
    c = np.asarray(centres, np.float64)
    return np.stack([c - C.GRID_RES / 2, c + C.GRID_RES / 2], axis=1)


def crs_variable() -> xr.DataArray:
    return xr.DataArray(
        np.int32(0),
        attrs={
            "grid_mapping_name": "latitude_longitude",
            "semi_major_axis": 6378137.0,
            "inverse_flattening": 298.257223563,
            "long_name": "WGS 84",
        },
    )


def grid_dataset(part: xr.Dataset, layer: str, attrs: Mapping[str, object]) -> xr.Dataset:
    """One layer's (time, latitude, longitude) maps as a CF dataset."""
    geo = stores.grid_coord_attrs()
    lat, lon = part[C.LAT].values, part[C.LON].values
    data = {
        v: (
            (C.TIME, C.LAT, C.LON),
            part[v].values.astype(np.float32),
            {**sm_attrs(v), "grid_mapping": "crs", "coordinates": "layer_depth"},
        )
        for v in (C.SM, C.SM_SPREAD)
    }
    time, time_bounds = time_coords(pd.DatetimeIndex(part[C.TIME].values))
    depth, depth_bounds = depth_coords(layer)
    # layer_depth is named by the data variables' `coordinates` alone (a scalar coordinate would
    # be attached by xarray to the bounds and crs too, which CDO reads as inconsistent)
    bounds = {
        "layer_depth": depth,
        "time_bounds": time_bounds,
        "layer_depth_bounds": depth_bounds,
        "latitude_bounds": ((C.LAT, "nv"), cell_bounds(lat)),
        "longitude_bounds": ((C.LON, "nv"), cell_bounds(lon)),
    }
    return xr.Dataset(
        {**data, **bounds, "crs": crs_variable()},
        coords={
            C.TIME: time,
            C.LAT: (C.LAT, lat, {**geo[C.LAT], "axis": "Y", "bounds": "latitude_bounds"}),
            C.LON: (C.LON, lon, {**geo[C.LON], "axis": "X", "bounds": "longitude_bounds"}),
        },
        attrs=dict(attrs),
    )


def encoding(ds: xr.Dataset, chunks: Mapping[str, int] | None = None) -> dict:
    """NetCDF encoding: compressed float32 data with NaN as fill, no fill value on anything else."""
    enc = {}
    for name, var in ds.variables.items():
        if name in (C.SM, C.SM_SPREAD):
            shape = tuple(min(chunks.get(d, n), n) for d, n in zip(var.dims, var.shape)) if chunks else None
            enc[name] = {
                **COMPRESSION,
                "dtype": "float32",
                "_FillValue": np.float32(np.nan),
                **({"chunksizes": shape} if shape else {}),
            }
        else:
            enc[name] = {"_FillValue": None}
    enc[C.TIME] = {
        "units": "days since 1970-01-01 00:00:00",
        "calendar": "proleptic_gregorian",
        "dtype": "int32",
        "_FillValue": None,
    }
    if "time_bounds" in ds.variables:
        enc["time_bounds"] = dict(enc[C.TIME])
    return enc


# ----------------------------------------------------------------------------------------
# discovery attributes (ACDD-1.3)
# ----------------------------------------------------------------------------------------
def global_attributes(
    cfg: Config,
    store_attrs: Mapping[str, object],
    layer: str,
    times: pd.DatetimeIndex,
    lat,
    lon,
    *,
    feature: str = "grid",
) -> dict:
    """CF and ACDD global attributes of a user file (nothing of the run's bookkeeping).

    `store_attrs` supplies `somojax_members`, `somojax_mode` and `somojax_cost_cell_steps_per_output`
    (JSON text or mappings by layer) for `source`; `lat`, `lon` are the cell centres or points.
    """
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    pad = C.GRID_RES / 2
    top, bottom = (v / 100.0 for v in C.LAYER_BOUNDS_CM[layer]) if layer in C.LAYER_BOUNDS_CM else (0.0, 0.5)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = "a 0.25° grid" if feature == "grid" else "points (one series per site)"
    return {
        "Conventions": "CF-1.8, ACDD-1.3",
        "title": f"somojax daily soil moisture, layer {layer} ({top * 100:g}-{bottom * 100:g} cm), {times[0].year}"
        + (f"-{times[-1].year}" if times[-1].year != times[0].year else ""),
        "summary": "Daily volumetric soil moisture of one soil layer on "
        + where
        + ", predicted by an ensemble of Entity-Aware LSTMs "
        "trained on in-situ measurements (ISMN) and driven by ERA5 weather and static maps, as in SoMo.ml (O & Orth 2021). "
        "sm is the ensemble mean, sm_spread the standard deviation over the members.",
        "keywords": "soil moisture, machine learning, LSTM, ISMN, ERA5",
        "institution": cfg.infer.institution or "unknown (set infer.institution)",
        "source": _source(store_attrs, layer),
        "references": "O, S. & Orth, R. Global soil moisture data derived through machine learning trained with in-situ measurements. "
        "Sci. Data 8, 170 (2021), doi:10.1038/s41597-021-00964-1",
        "license": cfg.infer.license,
        "history": f"{now} somojax {__version__} export",
        "date_created": now,
        "product_version": __version__,
        "time_coverage_start": f"{times[0]:%Y-%m-%d}T00:00:00Z",
        "time_coverage_end": f"{times[-1] + pd.Timedelta(days=1):%Y-%m-%d}T00:00:00Z",
        "time_coverage_duration": f"P{len(times)}D",
        "time_coverage_resolution": "P1D",
        "geospatial_lat_min": float(lat.min() - pad),
        "geospatial_lat_max": float(lat.max() + pad),
        "geospatial_lat_units": "degrees_north",
        "geospatial_lon_min": float(lon.min() - pad),
        "geospatial_lon_max": float(lon.max() + pad),
        "geospatial_lon_units": "degrees_east",
        "geospatial_vertical_min": top,
        "geospatial_vertical_max": bottom,
        "geospatial_vertical_units": "m",
        "geospatial_vertical_positive": "down",
    }


def _source(store_attrs: Mapping[str, object], layer: str) -> str:
    """'somojax 0.1.0; EA-LSTM ensemble of 5 members; exact rollout (...)' from the store's attributes."""

    def read(key):
        v = store_attrs.get(key, "{}")
        return json.loads(v) if isinstance(v, str) else dict(v)

    members = read("somojax_members").get(layer)
    mode = read("somojax_mode").get(layer)
    cost = read("somojax_cost_cell_steps_per_output").get(layer)
    parts = [f"somojax {__version__}", "EA-LSTM ensemble" + (f" of {members} members" if members else "")]
    if mode == "exact":
        parts.append(
            f"exact rollout: every day predicted from its own {cost:g}-day window" if cost else "exact rollout"
        )
    elif mode:
        parts.append(f"{mode} rollout ({cost:g} cell-steps per output)" if cost else f"{mode} rollout")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------
def write_netcdf(ds: xr.Dataset, target: Path, enc: dict | None = None) -> None:
    """Writes under a temporary name and renames: a file named `target` is always complete."""
    enc = encoding(ds, dict(zip((C.TIME, C.LAT, C.LON), NETCDF_CHUNKS))) if enc is None else enc
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        with writing("the NetCDF export", target):
            ds.to_netcdf(tmp, encoding=enc, format="NETCDF4")
            os.replace(tmp, target)
    except RuntimeError as e:  # netCDF4/HDF5 report a full disk as "NetCDF: HDF error"
        free = shutil.disk_usage(target.parent).free
        raise OutputError(
            f"cannot write the NetCDF export {target}: {e} ({free / 1e6:.1f} MB free on its disk; a full disk or a file "
            "system without HDF5 file locking are the usual causes: free space, set infer.export_dir elsewhere, or "
            "export HDF5_USE_FILE_LOCKING=FALSE)"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
