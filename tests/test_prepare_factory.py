"""Small raw-data factories for the preparation tests (no tests here).

They write files in the real raw formats (ISMN header+values, CDS-style ERA5 NetCDF, ETOPO1,
GLDAS) for a 1°×1° region, so `prepare` can run end to end in a second without the synthetic
Earth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

REGION_LAT = (40.0, 41.0)
REGION_LON = (-98.0, -97.0)


def write_ismn_file(
    folder: Path,
    network: str,
    station: str,
    lat: float,
    lon: float,
    depth_from: float,
    depth_to: float,
    sensor: str,
    times: pd.DatetimeIndex,
    values: np.ndarray,
    flags: list[str] | np.ndarray,
    newline: str = "\r\n",
) -> Path:
    """One ISMN header+values file in the ISMN folder layout <network>/<station>/<file>.stm."""
    d = Path(folder) / network / station
    d.mkdir(parents=True, exist_ok=True)
    start, end = times[0].strftime("%Y%m%d"), times[-1].strftime("%Y%m%d")
    name = f"{network}_{network}_{station}_sm_{depth_from:.6f}_{depth_to:.6f}_{sensor}_{start}_{end}.stm"
    head = f"{network:<10} {network:<15} {station:<17} {lat:9.5f} {lon:11.5f} {100.0:7.2f} {depth_from:7.2f} {depth_to:7.2f} {sensor}"
    lines = [head] + [f"{t:%Y/%m/%d %H:%M} {v:8.4f} {f} M" for t, v, f in zip(times, values, flags)]
    p = d / name
    p.write_bytes((newline.join(lines) + newline).encode("ascii"))
    return p


def era5_points(lat_range=REGION_LAT, lon_range=REGION_LON) -> tuple[np.ndarray, np.ndarray]:
    """ERA5 native points (multiples of 0.25°) around a region, latitude descending, lon 0..360."""
    lats = np.arange(lat_range[1], lat_range[0] - 0.01, -0.25)
    lons = np.arange(lon_range[0], lon_range[1] + 0.01, 0.25) % 360.0
    return lats, lons


def era5_dataset(
    times: pd.DatetimeIndex, lats: np.ndarray, lons: np.ndarray, seed: int = 0, daily: bool = True
) -> xr.Dataset:
    """A CDS-style (2024+ layout) ERA5 dataset with every variable somojax uses, in ERA5 units."""
    rng = np.random.default_rng(seed)
    shape = (len(times), len(lats), len(lons))
    doy = np.asarray(times.day_of_year, np.float64)[:, None, None]
    hour = np.asarray(times.hour, np.float64)[:, None, None]
    steps = 1 if daily else 24
    t2m = 283.0 + 10 * np.sin(2 * np.pi * (doy - 100) / 365.25) + rng.normal(0, 1, shape)
    if not daily:
        t2m = t2m + 4 * np.sin(2 * np.pi * (hour - 9) / 24)
    tp_day = np.maximum(rng.gamma(0.6, 4.0, shape) - 1.0, 0.0) / 1000.0  # m/day
    ssr_day = (12.0 + 6 * np.sin(2 * np.pi * (doy - 80) / 365.25) + rng.normal(0, 1, shape)) * 1e6
    str_day = (-5.0 + rng.normal(0, 0.5, shape)) * 1e6
    ssrd_day = ssr_day * 1.25
    sm1 = 0.25 + 0.05 * np.sin(2 * np.pi * doy / 365.25) + rng.normal(0, 0.01, shape)
    data = {
        "t2m": (t2m, "K", "2 metre temperature"),
        "d2m": (t2m - 5.0 - rng.uniform(0, 3, shape), "K", "2 metre dewpoint temperature"),
        "sp": (96000.0 + rng.normal(0, 300, shape), "Pa", "Surface pressure"),
        "skt": (t2m + 1.0, "K", "Skin temperature"),
        "tp": (tp_day / steps, "m", "Total precipitation"),
        "ssr": (ssr_day / steps, "J m**-2", "Surface net short-wave (solar) radiation"),
        "str": (str_day / steps, "J m**-2", "Surface net long-wave (thermal) radiation"),
        "ssrd": (ssrd_day / steps, "J m**-2", "Surface short-wave (solar) radiation downwards"),
        "swvl1": (sm1, "m**3 m**-3", "Volumetric soil water layer 1"),
        "swvl2": (sm1 + 0.02, "m**3 m**-3", "Volumetric soil water layer 2"),
        "swvl3": (sm1 * 0.5 + 0.15, "m**3 m**-3", "Volumetric soil water layer 3"),
    }
    ds = xr.Dataset(
        {
            k: (("valid_time", "latitude", "longitude"), v.astype(np.float32), {"units": u, "long_name": ln})
            for k, (v, u, ln) in data.items()
        },
        coords={
            "valid_time": times.values,
            "latitude": ("latitude", lats, {"units": "degrees_north"}),
            "longitude": ("longitude", lons, {"units": "degrees_east"}),
            "number": 0,
            "expver": ("valid_time", np.array(["0001"] * len(times))),
        },
        attrs={"Conventions": "CF-1.7", "institution": "European Centre for Medium-Range Weather Forecasts"},
    )
    return ds


def write_era5_daily(
    folder: Path, start: str, end: str, lat_range=REGION_LAT, lon_range=REGION_LON, seed: int = 0
) -> list[Path]:
    """Daily ERA5 files era5_<YYYY>.nc (day totals for accumulations, means otherwise)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lats, lons = era5_points(lat_range, lon_range)
    times = pd.date_range(start, end, freq="D")
    ds = era5_dataset(times, lats, lons, seed, daily=True)
    out = []
    for year in sorted(set(times.year)):
        p = folder / f"era5_{year}.nc"
        ds.sel(valid_time=str(year)).to_netcdf(p)
        out.append(p)
    return out


def write_statics(folder: Path, lat_range=REGION_LAT, lon_range=REGION_LON, seed: int = 0) -> dict[str, Path]:
    """ETOPO1 1′ (grid-registered, one row/column beyond the region), GLDAS soil, porosity,
    vegetation and mask files covering the region."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # ETOPO1: points every 1' from the south/west edges to the north/east edges (inclusive)
    elat = lat_range[0] + np.arange(int(round((lat_range[1] - lat_range[0]) * 60)) + 1) / 60.0
    elon = lon_range[0] + np.arange(int(round((lon_range[1] - lon_range[0]) * 60)) + 1) / 60.0
    z = (400.0 + 50 * np.sin(elat[:, None]) * np.cos(elon[None, :]) + rng.normal(0, 20, (elat.size, elon.size))).astype(
        np.float32
    )
    paths = {}
    paths["etopo"] = folder / "etopo1_1arcmin.nc"
    xr.Dataset(
        {"Band1": (("lat", "lon"), z, {"long_name": "GDAL Band Number 1"})}, coords={"lat": elat, "lon": elon}
    ).to_netcdf(paths["etopo"])
    clat = np.arange(lat_range[0] + 0.125, lat_range[1], 0.25)
    clon = np.arange(lon_range[0] + 0.125, lon_range[1], 0.25)
    shp = (1, clat.size, clon.size)

    def gldas(name: str, variables: dict[str, tuple[np.ndarray, str]]) -> Path:
        p = folder / name
        xr.Dataset(
            {
                k: (("time", "lat", "lon"), v.reshape(shp).astype(np.float32), {"units": u, "missing_value": -9999.0})
                for k, (v, u) in variables.items()
            },
            coords={"time": [np.datetime64("2000-01-01")], "lat": clat, "lon": clon},
        ).to_netcdf(p)
        return p

    clay = rng.uniform(0.1, 0.3, shp)
    sand = rng.uniform(0.2, 0.5, shp)
    paths["gldas_soil"] = gldas(
        "GLDASp4_soilfraction_025d.nc4",
        {
            "GLDAS_soilfraction_clay": (clay, "-"),
            "GLDAS_soilfraction_sand": (sand, "-"),
            "GLDAS_soilfraction_silt": (1 - clay - sand, "-"),
        },
    )
    paths["gldas_porosity"] = gldas(
        "GLDASp4_porosity_025d.nc4",
        {
            "GLDAS_porosity_top": (rng.uniform(0.4, 0.5, shp), "m3 m-3"),
            "GLDAS_porosity_mid": (rng.uniform(0.35, 0.45, shp), "m3 m-3"),
        },
    )
    paths["gldas_vegetation"] = gldas(
        "GLDASp4_domveg_025d.nc4", {"GLDAS_domveg": (rng.integers(1, 14, shp).astype(float), "-")}
    )
    paths["land_mask"] = gldas("GLDASp4_landmask_025d.nc4", {"GLDAS_mask": (np.ones(shp), "0 = water; 1 = land")})
    return paths


def hourly_station(
    start: str, end: str, seed: int, base: float = 0.25, amp: float = 0.05
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Hourly soil moisture with a seasonal cycle, mostly 'G' flags and a few dubious ones."""
    rng = np.random.default_rng(seed)
    t = pd.date_range(start, f"{end} 23:00", freq="h")
    v = base + amp * np.sin(2 * np.pi * t.day_of_year.values / 365.25) + rng.normal(0, 0.005, t.size)
    flags = np.where(rng.uniform(size=t.size) < 0.02, "D03,D05", "G").astype(object)
    return t, v, flags
