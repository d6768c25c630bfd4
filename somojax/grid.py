"""The regular 0.25° latitude/longitude grid of every store.

Cell centres lie at .125/.375/.625/.875; latitude increases, longitude runs −180..180. Inputs
with longitudes 0..360 or decreasing latitude are normalised on the way in
(`normalize_latlon`). A cell is identified by `cell_id = row * 1440 + col`, with row counted
from −89.875 and col from −179.875.

This module is the package's one answer to "which cell holds this point" (`cell_id`), "which
index of a grid is it" (`nearest_index`, `indices`) and "is it inside the grid" (the mask of
`nearest_index`), each with a tolerance: by default a point belongs to the nearest grid point
when it lies within half a grid step of it (`HALF_CELL` for the 0.25° grid; plus `SLACK` for
coordinates rounded to float32). A point farther away is outside: `nearest_index` says so in its
mask, `indices` and `select_cells` raise naming the values, `sample_points` gives NaN there. A
nearest-neighbour look-up without that tolerance would silently give a point outside the region
its edge cell's value.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError, StoreError

RES = C.GRID_RES
HALF_CELL = RES / 2
SLACK = 1e-6  # degrees: coordinates stored as float32 or computed by sums differ by ~1e-6


def lat_centres(south: float = -90.0, north: float = 90.0) -> np.ndarray:
    """Cell-centre latitudes (increasing) of the cells between two edges."""
    _check_edge(south, "south")
    _check_edge(north, "north")
    n = int(round((north - south) / RES))
    return south + RES / 2 + RES * np.arange(n)


def lon_centres(west: float = -180.0, east: float = 180.0) -> np.ndarray:
    """Cell-centre longitudes (increasing, −180..180) between two edges."""
    _check_edge(west, "west")
    _check_edge(east, "east")
    n = int(round((east - west) / RES))
    return west + RES / 2 + RES * np.arange(n)


def _check_edge(x: float, what: str) -> None:
    if abs(x / RES - round(x / RES)) > 1e-6:
        raise InputDataError(f"{what} edge {x} is not on the 0.25° grid (a multiple of 0.25)")


def cell_id(lat: np.ndarray | float, lon: np.ndarray | float) -> np.ndarray:
    """Global cell index of the cell containing (lat, lon); lon in −180..180 or 0..360.

    A latitude outside −90..90 (or a non-finite coordinate) is not on the globe: `ValueError`
    naming it, never the edge row. Latitude 90 belongs to the northernmost row.
    """
    lat = np.asarray(lat, np.float64)
    lon = np.asarray(lon, np.float64)
    bad = ~(np.isfinite(lat) & (np.abs(lat) <= 90.0)) | ~np.isfinite(lon)
    if np.any(bad):
        raise ValueError(
            f"coordinates off the globe: latitude {np.broadcast_to(lat, bad.shape)[bad][:3]} / longitude {np.broadcast_to(lon, bad.shape)[bad][:3]} (latitude must be in -90..90)"
        )
    lon = ((lon + 180.0) % 360.0) - 180.0
    row = np.clip(np.floor((lat + 90.0) / RES), 0, C.N_LAT_GLOBAL - 1).astype(np.int64)
    col = np.clip(np.floor((lon + 180.0) / RES), 0, C.N_LON_GLOBAL - 1).astype(np.int64)
    return row * C.N_LON_GLOBAL + col


def cell_centre(cid: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of the centre of global cell(s) `cid`."""
    cid = np.asarray(cid, np.int64)
    row, col = np.divmod(cid, C.N_LON_GLOBAL)
    return -90.0 + RES / 2 + RES * row, -180.0 + RES / 2 + RES * col


def wrap_lon(lon: np.ndarray | float) -> np.ndarray:
    """Longitudes in −180..180 (from 0..360 or any other turn)."""
    return ((np.asarray(lon, np.float64) + 180.0) % 360.0) - 180.0


def nearest_index(
    coord: np.ndarray, values: np.ndarray | float, tol: float | None = None, periodic: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest point of the increasing 1-d grid `coord` for each value, and whether
    the value is inside the grid: within `tol` (+ `SLACK`) of that point.

    Args:
      coord: increasing coordinate values (a store's latitude or longitude).
      values: points to look up (any shape).
      tol: the largest distance that still counts as inside; default half the grid's step (its
        smallest spacing: a regional grid may skip cells), `HALF_CELL` for a one-point grid.
      periodic: longitude: values are wrapped to −180..180 and the nearest point may lie across
        the dateline.

    Returns:
      (index [values' shape] int64, inside [values' shape] bool); outside points get the index of
      the nearest point all the same, so callers must use the mask.
    """
    grid = np.asarray(coord, np.float64)
    x = wrap_lon(values) if periodic else np.asarray(values, np.float64)
    if grid.size == 0:
        return np.zeros(x.shape, np.int64), np.zeros(x.shape, bool)
    steps = np.diff(grid)
    if periodic and grid.size > 1:
        steps = np.append(steps, grid[0] + 360.0 - grid[-1])
    if tol is None:
        tol = float(np.min(steps[steps > 0])) / 2 if np.any(steps > 0) else HALF_CELL
    if grid.size == 1:
        idx = np.zeros(x.shape, np.int64)
        dist = np.abs(grid[0] - x)
    else:
        i = np.clip(np.searchsorted(grid, x), 1, grid.size - 1)
        left, right = grid[i - 1], grid[i]
        idx = np.where(np.abs(x - left) <= np.abs(right - x), i - 1, i).astype(np.int64)
        dist = np.abs(grid[idx] - x)
    if periodic:
        d_first = np.abs(grid[0] + 360.0 - x)
        d_last = np.abs(x + 360.0 - grid[-1])
        idx = np.where(d_first < dist, 0, np.where(d_last < dist, grid.size - 1, idx))
        dist = np.minimum(dist, np.minimum(d_first, d_last))
    return idx, dist <= tol + SLACK


def indices(
    coord: np.ndarray,
    values: np.ndarray | float,
    what: str,
    tol: float | None = None,
    periodic: bool = False,
    error: type[Exception] = InputDataError,
) -> np.ndarray:
    """`nearest_index` for points that must be inside the grid: raises `error` naming the first
    values outside and the grid's extent (`what`: e.g. "file.nc: latitude")."""
    idx, inside = nearest_index(coord, values, tol, periodic)
    if not np.all(inside):
        miss = np.asarray(values, np.float64)[~inside]
        c = np.asarray(coord, np.float64)
        extent = f"{c.min():g}..{c.max():g}" if c.size else "nothing"
        raise error(
            f"{what} does not cover {miss.size} point(s) ({', '.join(f'{x:g}' for x in miss[:4])}{', ...' if miss.size > 4 else ''}); "
            f"it covers {extent}"
        )
    return idx


def select_cells(
    ds: xr.Dataset | xr.DataArray, cells: np.ndarray, what: str = "the store"
) -> xr.Dataset | xr.DataArray:
    """The grid points of global cell ids `cells` as a new `cell` dimension (one vectorised
    `isel`). A cell whose centre lies farther than half a grid step from every point of `ds` is
    outside it: `StoreError` naming the cells."""
    cells = np.asarray(cells, np.int64)
    lat, lon = cell_centre(cells)
    ilat, in_lat = nearest_index(ds[C.LAT].values, lat, HALF_CELL)
    ilon, in_lon = nearest_index(ds[C.LON].values, lon, HALF_CELL, periodic=True)
    bad = ~(in_lat & in_lon)
    if bad.any():
        raise StoreError(
            f"cells {cells[bad][:5].tolist()} lie outside {what}'s region (centres {lat[bad][:2]} N, {lon[bad][:2]} E)"
        )
    return ds.isel({C.LAT: xr.DataArray(ilat, dims=C.CELL), C.LON: xr.DataArray(ilon, dims=C.CELL)})


def sample_points(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray, tol: float | None = None) -> xr.DataArray:
    """Values of gridded `da` at points (lat, lon) along a new `cell` dimension: the nearest grid
    point within `tol` (default half the grid's step), NaN for points outside the grid."""
    ilat, in_lat = nearest_index(da[C.LAT].values, lat, tol)
    ilon, in_lon = nearest_index(da[C.LON].values, lon, tol, periodic=True)
    pts = da.isel({C.LAT: xr.DataArray(ilat, dims=C.CELL), C.LON: xr.DataArray(ilon, dims=C.CELL)})
    return pts.where(xr.DataArray(in_lat & in_lon, dims=C.CELL))


def normalize_latlon(ds: xr.Dataset | xr.DataArray, source: str = "input") -> xr.Dataset | xr.DataArray:
    """Renames lat/lon to `latitude`/`longitude`, wraps longitude to −180..180, sorts both.

    Args:
      ds: data with latitude/longitude coordinates under common names (lat, lon, latitude,
        longitude, y/x are not guessed).
      source: the file name, for error messages.
    """
    names = {}
    for cand, std in (("lat", C.LAT), ("lon", C.LON), ("Latitude", C.LAT), ("Longitude", C.LON)):
        if cand in ds.dims or cand in ds.coords:
            names[cand] = std
    if names:
        ds = ds.rename(names)
    for d in (C.LAT, C.LON):
        if d not in ds.coords:
            raise InputDataError(f"{source}: no {d!r} (or short name) coordinate; found {list(ds.coords)}")
    lon = ds[C.LON].values
    if np.nanmax(lon) > 180.0:
        ds = ds.assign_coords({C.LON: ((ds[C.LON] + 180.0) % 360.0) - 180.0})
    ds = ds.sortby(C.LON).sortby(C.LAT)
    return ds
