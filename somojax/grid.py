"""The regular 0.25° latitude/longitude grid of every store.

Cell centres lie at .125/.375/.625/.875; latitude increases, longitude runs −180..180. Inputs
with longitudes 0..360 or decreasing latitude are normalised on the way in
(`normalize_latlon`). A cell is identified by `cell_id = row * 1440 + col`, with row counted
from −89.875 and col from −179.875.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError

RES = C.GRID_RES


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


def snap(x: np.ndarray | float) -> np.ndarray:
    """The centre of the 0.25° cell containing x (latitude or longitude in degrees)."""
    x = np.asarray(x, dtype=np.float64)
    return np.floor(x / RES) * RES + RES / 2


def cell_id(lat: np.ndarray | float, lon: np.ndarray | float) -> np.ndarray:
    """Global cell index of the cell containing (lat, lon); lon in −180..180 or 0..360."""
    lat = np.asarray(lat, np.float64)
    lon = ((np.asarray(lon, np.float64) + 180.0) % 360.0) - 180.0
    row = np.clip(np.floor((lat + 90.0) / RES), 0, C.N_LAT_GLOBAL - 1).astype(np.int64)
    col = np.clip(np.floor((lon + 180.0) / RES), 0, C.N_LON_GLOBAL - 1).astype(np.int64)
    return row * C.N_LON_GLOBAL + col


def cell_centre(cid: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of the centre of global cell(s) `cid`."""
    cid = np.asarray(cid, np.int64)
    row, col = np.divmod(cid, C.N_LON_GLOBAL)
    return -90.0 + RES / 2 + RES * row, -180.0 + RES / 2 + RES * col


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


def check_quarter_degree(ds: xr.Dataset | xr.DataArray, source: str = "input", atol: float = 1e-4) -> None:
    """Raises unless latitude/longitude are 0.25° cell centres (.125/.375/.625/.875)."""
    for d in (C.LAT, C.LON):
        v = np.asarray(ds[d].values, np.float64)
        if v.size > 1:
            steps = np.diff(v)
            if not np.allclose(steps, RES, atol=atol):
                raise InputDataError(
                    f"{source}: {d} is not a regular 0.25° grid (steps {np.unique(np.round(steps, 4))[:5]}); "
                    "regrid it to 0.25° cell centres first (e.g. with xesmf or cdo remapcon)"
                )
        off = (v - RES / 2) / RES
        if not np.allclose(off, np.round(off), atol=atol / RES):
            raise InputDataError(
                f"{source}: {d} values {v[:3]}... are not 0.25° cell centres (.125/.375/.625/.875); "
                "ERA5's native grid has points at .00/.25/.50/.75 — interpolate or shift to cell centres"
            )
