"""Writers of the synthetic Earth's raw files, in the layouts of the real downloads.

- ERA5 as the CDS delivers NetCDF since 2024: dims (`valid_time`, `latitude`, `longitude`),
  latitude descending, longitude 0..360 on ERA5's native points (multiples of 0.25°: the
  corners of the 0.25° cells), ERA5 short names, units and long names. One file per year.
  Day totals of the accumulations (`tp` [m], `ssr`, `str`, `ssrd` [J m-2]), day means of
  the rest, stamped 00:00 UTC (the layout of the CDS daily-statistics product with sums for
  accumulations). Daily keeps the demo's raw files small; the readers of hourly files are tested
  on their own in tests/test_readers_era5.py and tests/test_prepare_forcings.py.
- ETOPO1 as NOAA's 1-arc-minute NetCDF (`Band1` [m] on `lat`/`lon` points incl. both edges).
- GLDAS 0.25° static files (`time=1, lat, lon`; `GLDAS_soilfraction_*`, `GLDAS_porosity_*`,
  `GLDAS_domveg`, `GLDAS_mask`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from somojax.synth.fields import Region, Statics
from somojax.synth.weather import Weather

ETOPO_FILE = "etopo1_1arcmin.nc"
ERA5_META = {
    "tp": ("Total precipitation", "m", "sum"),
    "t2m": ("2 metre temperature", "K", "mean"),
    "d2m": ("2 metre dewpoint temperature", "K", "mean"),
    "sp": ("Surface pressure", "Pa", "mean"),
    "ssr": ("Surface net short-wave (solar) radiation", "J m**-2", "sum"),
    "str": ("Surface net long-wave (thermal) radiation", "J m**-2", "sum"),
    "ssrd": ("Surface short-wave (solar) radiation downwards", "J m**-2", "sum"),
    "skt": ("Skin temperature", "K", "mean"),
    "swvl1": ("Volumetric soil water layer 1", "m**3 m**-3", "mean"),
    "swvl2": ("Volumetric soil water layer 2", "m**3 m**-3", "mean"),
    "swvl3": ("Volumetric soil water layer 3", "m**3 m**-3", "mean"),
}


def to_corners(field: np.ndarray, wrap_lon: bool = False) -> np.ndarray:
    """Cell-centre field [..., ny, nx] -> values at the (ny+1)x(nx+1) cell corners.

    A corner takes the mean of the cells around it (edges: replicated), so that the mean of a
    cell's four corners is a [1 2 1]/4-smoothed version of the cell field. `wrap_lon`: the
    field goes round the globe, so the corners on ±180° take the cells on both sides.
    """
    pad = [(0, 0)] * (field.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(field, pad, mode="edge")
    if wrap_lon:
        p[..., 0], p[..., -1] = p[..., -2], p[..., 1]
    return 0.25 * (p[..., :-1, :-1] + p[..., 1:, :-1] + p[..., :-1, 1:] + p[..., 1:, 1:])


def era5_fields(w: Weather, swvl: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Daily fields in ERA5 units on cell centres: day totals for accumulations, else means."""
    mj = 1e6
    return {
        "tp": w.tp / 1000.0,
        "t2m": w.t2m,
        "d2m": w.d2m,
        "sp": w.sp,
        "ssr": w.ssr * mj,
        "str": w.str * mj,
        "ssrd": w.ssrd * mj,
        "skt": w.skt,
        **swvl,
    }


def _era5_dataset(fields: dict[str, np.ndarray], times: np.ndarray, region: Region) -> xr.Dataset:
    lat = region.south + 0.25 * np.arange(region.lat.size + 1)
    lon = region.west + 0.25 * np.arange(region.lon.size + 1)
    lon360 = np.mod(lon, 360.0)
    order = np.argsort(lon360, kind="stable")
    data = {}
    for name, arr in fields.items():
        long_name, units, method = ERA5_META[name]
        corners = to_corners(arr)[:, ::-1, :][:, :, order]  # latitude descending, longitude 0..360
        data[name] = (
            ("valid_time", "latitude", "longitude"),
            corners.astype(np.float32),
            {"long_name": long_name, "units": units, "cell_methods": f"valid_time: {method}", "GRIB_shortName": name},
        )
    ds = xr.Dataset(
        data,
        coords={
            "valid_time": ("valid_time", times, {"standard_name": "time", "long_name": "time"}),
            "latitude": ("latitude", lat[::-1], {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("longitude", lon360[order], {"units": "degrees_east", "standard_name": "longitude"}),
            "expver": ("valid_time", np.full(times.size, "0001"), {"long_name": "model experiment version"}),
        },
        attrs={
            "Conventions": "CF-1.7",
            "institution": "somojax synthetic Earth (ERA5-like reanalysis, not ECMWF data)",
            "frequency": "daily",
            "GRIB_centre": "ecmf",
        },
    )
    return ds


def write_era5(out_dir: Path, region: Region, w: Weather, swvl: dict[str, np.ndarray]) -> list[Path]:
    """Writes daily `era5_<YYYY>.nc` files; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = era5_fields(w, swvl)
    paths = []
    years = w.days.year.values
    for year in np.unique(years):
        sel = years == year
        days = w.days[sel]
        ds = _era5_dataset({k: v[sel] for k, v in fields.items()}, days.values.astype("datetime64[ns]"), region)
        p = out_dir / f"era5_{year}.nc"
        enc = {v: {"zlib": True, "complevel": 1} for v in ds.data_vars}
        ds.to_netcdf(p, encoding=enc)
        paths.append(p)
    return paths


def write_statics(out_dir: Path, region: Region, st: Statics) -> dict[str, Path]:
    """ETOPO1-like and GLDAS-like static files; returns {kind: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"etopo": write_etopo(out_dir, st)}
    paths.update(write_gldas(out_dir, region, st))
    return paths


def write_etopo(out_dir: Path, st: Statics) -> Path:
    """The ETOPO1-like elevation points of `st`; returns the path."""
    etopo = xr.Dataset(
        {"Band1": (("lat", "lon"), st.elev_points, {"long_name": "GDAL Band Number 1", "units": "m"})},
        coords={
            "lat": ("lat", st.lat_points, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", st.lon_points, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"title": "synthetic ETOPO1-like 1 arc-minute elevation (somojax synthetic Earth)"},
    )
    path = out_dir / ETOPO_FILE
    etopo.to_netcdf(path, encoding={"Band1": {"zlib": True, "complevel": 1}})
    return path


def write_gldas(out_dir: Path, region: Region, st: Statics) -> dict[str, Path]:
    """The GLDAS-like maps of `st` (soil, porosity, vegetation, land mask); returns {kind: path}."""
    paths = {}

    def gldas(name: str, variables: dict[str, tuple[np.ndarray, str, str]]) -> Path:
        coords = {
            "time": ("time", np.array(["2000-01-01"], dtype="datetime64[ns]")),
            "lat": ("lat", region.lat.astype(np.float32), {"units": "degrees_north"}),
            "lon": ("lon", region.lon.astype(np.float32), {"units": "degrees_east"}),
        }
        data = {
            v: (("time", "lat", "lon"), arr[None].astype(np.float32), {"long_name": ln, "units": u})
            for v, (arr, ln, u) in variables.items()
        }
        p = out_dir / name
        xr.Dataset(data, coords=coords, attrs={"title": f"synthetic {name} (somojax synthetic Earth)"}).to_netcdf(p)
        return p

    land = st.land
    masked = lambda a: np.where(land, a, -9999.0)  # noqa: E731  GLDAS marks water with a fill value
    paths["gldas_soil"] = gldas(
        "GLDASp4_soilfraction_025d.nc4",
        {
            "GLDAS_soilfraction_clay": (masked(st.clay), "clay fraction", "1"),
            "GLDAS_soilfraction_sand": (masked(st.sand), "sand fraction", "1"),
            "GLDAS_soilfraction_silt": (masked(st.silt), "silt fraction", "1"),
        },
    )
    paths["gldas_porosity"] = gldas(
        "GLDASp4_porosity_025d.nc4",
        {
            "GLDAS_porosity_top": (masked(st.poro_top), "soil porosity, top layer", "m3 m-3"),
            "GLDAS_porosity_mid": (masked(st.poro_mid), "soil porosity, middle layer", "m3 m-3"),
        },
    )
    paths["gldas_vegetation"] = gldas(
        "GLDASp4_domveg_025d.nc4", {"GLDAS_domveg": (st.domveg.astype(np.float32), "dominant vegetation type", "1")}
    )
    paths["land_mask"] = gldas("GLDASp4_landmask_025d.nc4", {"GLDAS_mask": (land.astype(np.float32), "land mask", "1")})
    return paths
