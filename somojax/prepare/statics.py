"""Static maps: ETOPO1 elevation statistics, GLDAS soil, porosity, vegetation, land masks.

Readers return DataArrays on the 0.25° cell centres of the requested region (latitude
increasing, longitude −180..180) with CF units; cells a file does not cover are NaN and counted
by `build_statics`.

- ETOPO1 (1 arc-minute, `Band1` from GDAL exports, `z` from NOAA/GMT grids): the mean and
  (population, ddof=0) standard deviation of the points inside each 0.25° cell. A point exactly
  on a cell edge belongs to the cell *below* it (cells are half-open intervals (a, b]); for the
  grid-registered ETOPO1 this gives every cell 15 × 15 points, and it is the rule that makes the
  32N–45N sample "drop the first row and column and reshape into 15 × 15 blocks". Cell-registered
  grids (points at .5′) have no point on an edge. Any resolution that divides 0.25° works.
- GLDAS parameter files (`GLDASp4_*_025d.nc4`): already on the cell centres.
- Land masks: GLDAS `GLDAS_mask` (cell centres; land where ≥ 0.5) or ERA5 `lsm` (points on
  multiples of 0.25°: the mean of the four points around a cell, land where ≥ 0.5).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import dask
import numpy as np
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError
from somojax.grid import normalize_latlon
from somojax.prepare.bounds import STATIC as STATIC_BOUNDS
from somojax.prepare.bounds import FILL_REASON, Screen, check_screen, classify, screen, screen_from_terms, screen_terms
from somojax.prepare.bounds import clean as bounds_clean
from somojax.prepare.forcings import grid_kind, region_cells, to_cell_centres

# accepted variable names per static (first found wins); GLDAS names first
GLDAS_NAMES: dict[str, tuple[str, ...]] = {
    "clay": ("GLDAS_soilfraction_clay", "clay", "clay_fraction"),
    "sand": ("GLDAS_soilfraction_sand", "sand", "sand_fraction"),
    "silt": ("GLDAS_soilfraction_silt", "silt", "silt_fraction"),
    "poro_top": ("GLDAS_porosity_top", "poro_top", "porosity_top"),
    "poro_mid": ("GLDAS_porosity_mid", "poro_mid", "porosity_mid"),
    "domveg": ("GLDAS_domveg", "domveg", "dominant_vegetation"),
}
ETOPO_NAMES = ("Band1", "z", "elevation", "altitude", "topo")
MASK_NAMES = ("GLDAS_mask", "lsm", "land", "land_mask", "landmask", "mask")
FRACTION_UNITS = ("-", "1", "", "fraction", "0-1", "m3 m-3", "m3/m3", "m**3 m**-3")


def _open(path: str | os.PathLike, what: str) -> xr.Dataset:
    path = str(path)
    if not path:
        raise InputDataError(f"{what}: no file given; set it in the config (see docs/real-data.md)")
    if not os.path.exists(path):
        raise InputDataError(f"{what}: {path} does not exist")
    try:
        return xr.open_dataset(path, chunks=None, decode_timedelta=False)
    except Exception as e:
        raise InputDataError(f"{what}: cannot open {path} as NetCDF ({type(e).__name__}: {str(e)[:200]})") from None


def _pick(ds: xr.Dataset, names: Sequence[str], path: str, what: str) -> xr.DataArray:
    for n in names:
        if n in ds.data_vars:
            return ds[n]
    raise InputDataError(
        f"{path}: no variable for {what}; expected one of {list(names)}, found {sorted(map(str, ds.data_vars))}"
    )


def _squeeze_2d(da: xr.DataArray, path: str) -> xr.DataArray:
    """Drops size-1 extra dims (GLDAS `time`, ERA5 `time` of lsm: first time step)."""
    for d in list(da.dims):
        if d in ("lat", "lon", C.LAT, C.LON, "x", "y"):
            continue
        da = da.isel({d: 0}, drop=True)
    for c in list(da.coords):
        if c not in da.dims:
            da = da.drop_vars(c)
    if da.ndim != 2:
        raise InputDataError(f"{path}: {da.name} has dims {da.dims}; expected a latitude/longitude map")
    return da


def _to_region(da: xr.DataArray, lats: np.ndarray, lons: np.ndarray, path: str) -> xr.DataArray:
    """Cell-centre map -> the region's cells (NaN where the file has no cell)."""
    kind = grid_kind(da, path)
    if kind != "centres":
        return to_cell_centres(da, lats, lons, path)
    ilat = np.round((da[C.LAT].values - C.GRID_RES / 2) / C.GRID_RES).astype(np.int64)
    ilon = np.round((da[C.LON].values - C.GRID_RES / 2) / C.GRID_RES).astype(np.int64)
    da = da.assign_coords({C.LAT: ilat, C.LON: ilon})
    want_lat = np.round((lats - C.GRID_RES / 2) / C.GRID_RES).astype(np.int64)
    want_lon = np.round((lons - C.GRID_RES / 2) / C.GRID_RES).astype(np.int64)
    out = da.reindex({C.LAT: want_lat, C.LON: want_lon})
    return out.assign_coords({C.LAT: lats, C.LON: lons})


def read_gldas(
    path: str | os.PathLike,
    names: Sequence[str],
    lat_range: Sequence[float],
    lon_range: Sequence[float],
    what: str = "GLDAS",
) -> dict[str, xr.DataArray]:
    """GLDAS parameter maps (soil fractions, porosity, dominant vegetation) on the region's cells.

    Args:
      path: a `GLDASp4_*_025d.nc4` file.
      names: statics to read from it (keys of `GLDAS_NAMES`).
    """
    ds = _open(path, what)
    lats, lons = region_cells(lat_range, lon_range)
    out = {}
    for name in names:
        da = _squeeze_2d(_pick(ds, GLDAS_NAMES[name], str(path), f"{name!r} ({what})"), str(path))
        if name != "domveg":
            units = str(da.attrs.get("units", "")).strip()
            if units not in FRACTION_UNITS:
                raise InputDataError(f"{path}: {da.name} has units {units!r}, expected a fraction (-, 1 or m3 m-3)")
        src_name = str(da.name)
        units = str(da.attrs.get("units", "")).strip()
        da = normalize_latlon(da.to_dataset(name="v"), str(path))["v"]
        da = _to_region(da, lats, lons, str(path)).astype(np.float32)
        from somojax.stores import cf_attrs

        out[name] = da.assign_attrs(
            {**cf_attrs(name), "source_file": str(path), "source_variable": src_name, "source_units": units}
        )
    return out


def screen_static(da: xr.DataArray, name: str, land: xr.DataArray) -> tuple[xr.DataArray, Screen]:
    """A static map with the bounds applied (values outside NaN), and what the bounds found on
    land cells (which decide whether the map as a whole is implausible, `bounds.check_screen`).

    Values outside the bounds on water cells (a fill value such as −9999 over the sea written
    without `_FillValue`) are counted in `extra["dropped off land"]`.
    """
    b = STATIC_BOUNDS[name]
    on_land = (land > 0.5).values
    src = f"{da.attrs.get('source_file', '?')} ({da.attrs.get('source_variable', name)})"
    s = screen(da.where(on_land), b, src, name, extra={"units_attribute": da.attrs.get("source_units", "")})
    reasons, _ = classify(da.values, b)
    s.extra["dropped off land"] = int((np.logical_or.reduce(list(reasons.values())) & ~on_land).sum())
    return bounds_clean(da, b), s


def read_land_mask(path: str | os.PathLike, lat_range: Sequence[float], lon_range: Sequence[float]) -> xr.DataArray:
    """Land mask (1 land, 0 not) on the region's cells from a GLDAS mask or an ERA5 `lsm`."""
    ds = _open(path, "data.land_mask")
    da = _squeeze_2d(_pick(ds, MASK_NAMES, str(path), "the land mask"), str(path))
    src_name = str(da.name)
    da = normalize_latlon(da.to_dataset(name="v"), str(path))["v"].astype(np.float64)
    lats, lons = region_cells(lat_range, lon_range)
    frac = _to_region(da, lats, lons, str(path))
    # a fill value (−9999 over the sea) is water; other values outside 0..1 (a mask in percent) count
    b = STATIC_BOUNDS["land"]
    s = screen(frac, b, f"{path} ({src_name})", "land mask")
    check_screen(s, "static", ignore=(FILL_REASON,))
    frac = bounds_clean(frac, b)
    land = xr.where(frac.isnull(), np.nan, (frac >= 0.5).astype(np.float32)).astype(np.float32)
    return land.assign_attrs(
        {
            "long_name": "land mask (1 land, 0 water)",
            "units": "1",
            "source_file": str(path),
            "source_variable": src_name,
            "threshold": "land fraction >= 0.5",
            "values_outside_bounds": s.n_dropped,
        }
    )


def _cell_index(x: np.ndarray) -> np.ndarray:
    """Index of the 0.25° cell (a, b] holding x: a point on an edge belongs to the cell below."""
    return np.ceil(np.asarray(x, np.float64) / C.GRID_RES - 1e-6).astype(np.int64) - 1


def _edge_start(coord: np.ndarray, res: float) -> int:
    """Index of the first point that starts a cell (the first point above a cell edge)."""
    starts = np.nonzero(_cell_index(coord) != _cell_index(coord - res))[0]
    return int(starts[0]) if starts.size else 0


def read_etopo(
    path: str | os.PathLike, lat_range: Sequence[float], lon_range: Sequence[float]
) -> tuple[dict[str, xr.DataArray], Screen]:
    """`ETOPOavg`, `ETOPOsd` [m]: mean and standard deviation (ddof=0) of elevation per cell.

    Points outside the elevation bounds (`bounds.STATIC["elevation"]`) are left out of their
    cell's statistics. The region's cells not covered by whole blocks of the file are NaN.

    Returns:
      ({"ETOPOavg", "ETOPOsd"} in memory, what the bounds found among the points read), both
      computed in one pass over the points.
    """
    da, src_name, units = _etopo_elevation(path)
    blk, n_lat, n_lon = _whole_cells(da, _grid_spacing(da, path), path)
    bound = STATIC_BOUNDS["elevation"]
    terms = screen_terms(blk, bound)
    mean, std = _cell_mean_std(bounds_clean(blk, bound), n_lat, n_lon)
    lats, lons = region_cells(lat_range, lon_range)
    from somojax.stores import cf_attrs

    mean, std, terms = dask.compute(mean, std, terms)
    out = {}
    for name, x in (("ETOPOavg", mean), ("ETOPOsd", std)):
        x = _to_region(x, lats, lons, str(path)).astype(np.float32)
        out[name] = x.assign_attrs(
            {**cf_attrs(name), "source_file": str(path), "source_variable": src_name, "points_per_cell": n_lat * n_lon}
        )
    extra = {"units_attribute": units or "none (metres assumed; NOAA's grids have none)"}
    return out, screen_from_terms(terms, f"{path} ({src_name})", "elevation", bound, extra=extra)


def _etopo_elevation(path: str | os.PathLike) -> tuple[xr.DataArray, str, str]:
    """Opens the elevation grid of an ETOPO1 file (lazily).

    Returns (the 2-D elevation on normalised latitude/longitude, the file's name for the
    variable, its `units` attribute, "" where it has none); raises InputDataError on a unit
    other than metres.
    """
    ds = _open(path, "data.etopo")
    da = _pick(ds, ETOPO_NAMES, str(path), "ETOPO1 elevation")
    src_name = str(da.name)
    if "x" in da.dims and "y" in da.dims and "lat" not in da.dims and "latitude" not in da.dims:
        da = da.rename({"x": "lon", "y": "lat"})
    da = _squeeze_2d(da, str(path))
    units = str(da.attrs.get("units", "")).strip()
    if units.lower() not in (
        "",
        "m",
        "meters",
        "metres",
        "meter",
        "metre",
    ):  # NOAA's ETOPO1 grids have no units attribute
        raise InputDataError(f"{path}: {src_name} has units {units!r}, expected metres")
    return normalize_latlon(da.to_dataset(name="v"), str(path))["v"], src_name, units


def _grid_spacing(da: xr.DataArray, path: str | os.PathLike) -> dict[str, float]:
    """The spacing [°] {latitude: ..., longitude: ...} of a regular grid whose spacing divides
    0.25°; raises InputDataError on any other grid."""
    res = {}
    for d in (C.LAT, C.LON):
        v = np.asarray(da[d].values, np.float64)
        steps = np.diff(v)
        r = float(np.median(steps))
        n = C.GRID_RES / r
        if not np.allclose(steps, r, rtol=1e-3) or abs(n - round(n)) > 1e-3 or round(n) < 1:
            raise InputDataError(f"{path}: {d} spacing {r:.6g}° is not regular or does not divide 0.25°")
        res[d] = r
    return res


def _whole_cells(da: xr.DataArray, res: Mapping[str, float], path: str | os.PathLike) -> tuple[xr.DataArray, int, int]:
    """Crops a grid of spacing `res` (`_grid_spacing`) to the whole 0.25° cells it covers.

    Returns (the crop as float64 in dask chunks of whole cells, points per cell along latitude,
    along longitude); raises InputDataError where the grid covers no whole cell.
    """
    n_lat, n_lon = int(round(C.GRID_RES / res[C.LAT])), int(round(C.GRID_RES / res[C.LON]))
    i0 = _edge_start(da[C.LAT].values, res[C.LAT])
    j0 = _edge_start(da[C.LON].values, res[C.LON])
    ni = (da.sizes[C.LAT] - i0) // n_lat
    nj = (da.sizes[C.LON] - j0) // n_lon
    if ni < 1 or nj < 1:
        raise InputDataError(f"{path}: covers no whole 0.25° cell")
    blk = da.isel({C.LAT: slice(i0, i0 + ni * n_lat), C.LON: slice(j0, j0 + nj * n_lon)})
    blk = blk.chunk({C.LAT: min(ni, 60) * n_lat, C.LON: min(nj, 120) * n_lon}).astype(np.float64)
    return blk, n_lat, n_lon


def _cell_mean_std(blk: xr.DataArray, n_lat: int, n_lon: int) -> tuple[xr.DataArray, xr.DataArray]:
    """(mean, standard deviation with ddof=0) of each block of n_lat x n_lon points of a crop of
    whole cells (`_whole_cells`), on the cells' centres; lazy, NaN points left out."""
    lat_c = (_cell_index(blk[C.LAT].values[::n_lat]) + 0.5) * C.GRID_RES
    lon_c = (_cell_index(blk[C.LON].values[::n_lon]) + 0.5) * C.GRID_RES
    co = blk.coarsen({C.LAT: n_lat, C.LON: n_lon}, boundary="exact")
    mean = co.mean().assign_coords({C.LAT: lat_c, C.LON: lon_c})
    std = co.std().assign_coords({C.LAT: lat_c, C.LON: lon_c})
    return mean, std


def build_statics(
    etopo: Mapping[str, xr.DataArray],
    gldas: Mapping[str, xr.DataArray],
    climate: xr.Dataset,
    land: xr.DataArray,
    names: Sequence[str] = C.STATIC_INPUTS,
) -> tuple[xr.Dataset, dict]:
    """The statics store's dataset and a report of missing values on land cells."""
    parts = {**etopo, **gldas, **{k: climate[k] for k in ("tp", "arid") if k in climate}}
    missing = [n for n in names if n not in parts]
    if missing:
        raise InputDataError(f"statics missing: {missing}; check data.etopo / data.gldas_* (found {sorted(parts)})")
    ds = xr.Dataset({n: parts[n] for n in names})
    from somojax.stores import STANDARD_NAMES, grid_coord_attrs

    land_attrs = {**land.attrs, "standard_name": STANDARD_NAMES[C.LAND_MASK], "units": "1"}
    ds[C.LAND_MASK] = land.fillna(0).astype(np.float32).assign_attrs(land_attrs)

    attrs = grid_coord_attrs()
    for d in (C.LAT, C.LON):
        ds[d].attrs.update(attrs[d])
    island = ds[C.LAND_MASK].values > 0.5
    info = {
        "cells": int(island.size),
        "land_cells": int(island.sum()),
        "land_mask_missing_cells (set to water)": int(land.isnull().sum()),
        "land_cells_with_missing_value": {n: int((np.isnan(ds[n].values) & island).sum()) for n in names},
    }
    return ds, info
