"""The synthetic Earth in tiles: any region up to the whole 0.25° globe in bounded memory.

With `synth.band_deg` > 0 (or a `synth.land_mask`) the region is cut into latitude bands of
`band_deg` and each band into tiles of `band_deg` × `band_deg` (smaller at the region's north
and east edges where it does not divide). Every tile is an independent small world
(`earth.simulate_region`, its own random streams from (seed, band, tile)) with a climate for
its latitude (`weather.global_climate`) and the demo's storms per area. Tiles do not know their
neighbours, so fields jump at tile edges; that is the price of the bounded memory.

A band's tiles are assembled, written into the region-wide files and freed: the peak memory is
that of one band, about (11 ERA5 + 3 truth variables) × days × band cells × 4 bytes, plus one
tile's simulation. The files are those `generate` writes and `prepare` reads:

- `era5/era5_<YYYY>.nc`: one file per year over the whole region, created empty with netCDF4
  and filled band by band. Chunks are one latitude row of points by 16 days, so every band
  writes whole chunks; the points of a band's south edge belong to the band below (as in
  `prepare`, a point on an edge belongs to the cell below it), except in the southernmost band.
  Over a full circle of longitude the corners on ±180° average the cells on both sides.
- `static/etopo1_1arcmin.nc`: the elevation points, band by band the same way, so that
  `prepare`'s cell means equal the elevation the weather was simulated with.
- the GLDAS maps (the region's cells: small) at the end, the stations of each tile as they come
  (named `b<band>t<tile>-Station-<n>`), `synth.n_stations` shared out over the tiles by land
  cells, and the truth store, band by band into its Zarr regions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path

import dask.array as dsa
import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import stores
from somojax.config import Config, SynthConfig, to_dict
from somojax.errors import ConfigError, InputDataError
from somojax.synth import earth, fields, stations, writers
from somojax.utils.logging import get_logger

log = get_logger("synth")

ERA5_CHUNK_DAYS = 16  # days per ERA5 chunk (one latitude row of points each)
TRUTH_CHUNK_LON = 360  # cells per truth-store chunk along longitude (latitude: one band)
STATIC_FIELDS = ("elevation", "clay", "sand", "silt", "poro_top", "poro_mid", "domveg", "land")


def enabled(s: SynthConfig) -> bool:
    """Whether `synth` builds the Earth in tiles (this module) rather than in one piece."""
    return s.band_deg > 0 or bool(s.land_mask)


def check(s: SynthConfig) -> None:
    """Raises `ConfigError` for settings the tiled Earth cannot use."""
    if s.band_deg < 0 or abs(s.band_deg / C.GRID_RES - round(s.band_deg / C.GRID_RES)) > 1e-9:
        raise ConfigError(
            f"synth.band_deg={s.band_deg}: must be 0 (the region in one piece) or a positive multiple of 0.25 degrees"
        )
    (south, north), (west, east) = s.lat_range, s.lon_range
    if not (-90.0 <= south < north <= 90.0 and -180.0 <= west < east <= 180.0):
        raise ConfigError(
            f"synth.lat_range={list(s.lat_range)}, synth.lon_range={list(s.lon_range)}: a tiled Earth needs "
            "latitudes within -90..90 and longitudes within -180..180"
        )
    if s.land_mask and not os.path.exists(s.land_mask):
        raise ConfigError(f"synth.land_mask={s.land_mask}: no such file; give an ERA5 lsm or GLDAS mask file, or ''")


def edges(lo: float, hi: float, step: float) -> list[tuple[float, float]]:
    """(lo, hi) cut into pieces of `step` degrees (the last one shorter); one piece if step is 0."""
    if step <= 0:
        return [(lo, hi)]
    n, q = round((hi - lo) / C.GRID_RES), round(step / C.GRID_RES)
    cuts = [lo + C.GRID_RES * i for i in range(0, n, q)] + [hi]
    return list(zip(cuts[:-1], cuts[1:]))


def region_land(s: SynthConfig) -> np.ndarray | None:
    """The land mask [lat, lon] of the whole region from `synth.land_mask`, read with `prepare`'s
    rule (ERA5 points: the mean of a cell's four corners >= 0.5); cells it has no value for are
    water. None without a file (each tile makes its own demo land)."""
    if not s.land_mask:
        return None
    from somojax.prepare.statics import read_land_mask

    try:
        mask = read_land_mask(s.land_mask, s.lat_range, s.lon_range)
    except InputDataError as e:
        raise ConfigError(f"synth.land_mask={s.land_mask}: not a usable land mask ({e})") from None
    return np.nan_to_num(mask.values, nan=0.0) > 0.5


def share_stations(n: int, weights: list[float]) -> list[int]:
    """`n` stations shared out over tiles in proportion to `weights` (their land cells); sums to n."""
    total = float(sum(weights))
    if total <= 0:
        return [0] * len(weights)
    cum = np.floor(n * np.cumsum(weights) / total + 1e-9).astype(int)
    return np.diff(np.concatenate([[0], cum])).tolist()


def _grid(s: SynthConfig) -> dict:
    """The region's cells, bands and tiles, as cell index ranges."""
    region = fields.Region.from_edges(s.lat_range, s.lon_range)
    idx = lambda x, o: round((x - o) / C.GRID_RES)  # noqa: E731
    bands = [(idx(a, s.lat_range[0]), idx(b, s.lat_range[0])) for a, b in edges(*s.lat_range, s.band_deg)]
    cols = [(idx(a, s.lon_range[0]), idx(b, s.lon_range[0])) for a, b in edges(*s.lon_range, s.band_deg)]
    wrap = abs(s.lon_range[1] - s.lon_range[0] - 360.0) < 1e-9
    return {"region": region, "bands": bands, "cols": cols, "wrap": wrap}


def _sub_region(region: fields.Region, rows: tuple[int, int], cols: tuple[int, int]) -> fields.Region:
    r = C.GRID_RES
    return fields.Region.from_edges(
        (region.south + r * rows[0], region.south + r * rows[1]), (region.west + r * cols[0], region.west + r * cols[1])
    )


def _era5_points(g: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latitudes descending, longitudes 0..360 as written, the order that sorts the corners'
    west-to-east longitudes into them) of the ERA5 points."""
    region = g["region"]
    lat = region.south + C.GRID_RES * np.arange(region.lat.size + 1)
    lon = region.west + C.GRID_RES * np.arange(region.lon.size + (0 if g["wrap"] else 1))
    lon360 = np.mod(lon, 360.0)
    order = np.argsort(lon360, kind="stable")
    return lat[::-1], lon360[order], order


def _create_era5(path: Path, days: pd.DatetimeIndex, lat: np.ndarray, lon: np.ndarray) -> None:
    """An empty ERA5-like daily file (the layout of `writers.write_era5`) to fill band by band."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.setncatts(
            {
                "Conventions": "CF-1.7",
                "institution": "somojax synthetic Earth (ERA5-like reanalysis, not ECMWF data)",
                "frequency": "daily",
                "GRIB_centre": "ecmf",
            }
        )
        for name, n in (("valid_time", days.size), ("latitude", lat.size), ("longitude", lon.size)):
            nc.createDimension(name, n)
        t = nc.createVariable("valid_time", "i8", ("valid_time",))
        t.setncatts({"standard_name": "time", "long_name": "time", "units": f"days since {days[0]:%Y-%m-%d}"})
        t.calendar = "proleptic_gregorian"
        t[:] = np.arange(days.size)
        ev = nc.createVariable("expver", str, ("valid_time",))
        ev.long_name = "model experiment version"
        ev[:] = np.full(days.size, "0001", dtype=object)
        for name, values, units in (("latitude", lat, "degrees_north"), ("longitude", lon, "degrees_east")):
            v = nc.createVariable(name, "f8", (name,))
            v.setncatts({"units": units, "standard_name": name})
            v[:] = values
        chunks = (min(ERA5_CHUNK_DAYS, days.size), 1, lon.size)
        for name, (long_name, units, method) in writers.ERA5_META.items():
            v = nc.createVariable(
                name,
                "f4",
                ("valid_time", "latitude", "longitude"),
                zlib=True,
                complevel=1,
                chunksizes=chunks,
                fill_value=np.nan,
            )
            v.setncatts(
                {
                    "long_name": long_name,
                    "units": units,
                    "cell_methods": f"valid_time: {method}",
                    "GRIB_shortName": name,
                    "coordinates": "expver",
                }
            )


def _write_era5_band(paths: dict[int, Path], band: dict, rows: tuple[int, int], g: dict, first: bool) -> None:
    """Writes a band's ERA5 cell fields {name: [day, ny, nx]} as corner points into the files."""
    n_pts = g["region"].lat.size + 1
    lo = rows[0] + (0 if first else 1)  # ascending point rows this band writes: lo..rows[1]
    file_rows = slice(n_pts - 1 - rows[1], n_pts - lo)
    order = _era5_points(g)[2]
    years = band["days"].year.values
    for name, cells in band["era5"].items():
        corners = writers.to_corners(cells, g["wrap"])[:, lo - rows[0] :, : order.size][:, ::-1][:, :, order]
        for year, path in paths.items():
            sel = np.nonzero(years == year)[0]
            with netCDF4.Dataset(path, "a") as nc:
                nc[name][:, file_rows, :] = corners[sel[0] : sel[-1] + 1]


def _create_etopo(path: Path, region: fields.Region) -> None:
    """An empty ETOPO1-like file of the region's 1′ points (both edges) to fill band by band."""
    n = fields.POINTS_PER_CELL
    lat = region.south + np.arange(region.lat.size * n + 1) / 60.0
    lon = region.west + np.arange(region.lon.size * n + 1) / 60.0
    with netCDF4.Dataset(path, "w") as nc:
        nc.title = "synthetic ETOPO1-like 1 arc-minute elevation (somojax synthetic Earth)"
        for name, values in (("lat", lat), ("lon", lon)):
            nc.createDimension(name, values.size)
            v = nc.createVariable(name, "f8", (name,))
            v.setncatts({"units": "degrees_north" if name == "lat" else "degrees_east", "standard_name": name})
            v[:] = values
        v = nc.createVariable("Band1", "f4", ("lat", "lon"), zlib=True, complevel=1, chunksizes=(1, lon.size))
        v.setncatts({"long_name": "GDAL Band Number 1", "units": "m"})


def _create_truth(path: Path, region: fields.Region, days: pd.DatetimeIndex, band_rows: int) -> None:
    """The truth store's metadata and coordinates, its values (NaN until written) chunked by band."""
    nd, (ny, nx) = days.size, region.shape
    chunks = (nd, 1, min(band_rows, ny), min(TRUTH_CHUNK_LON, nx))
    ds = earth.truth_dataset(region, days, dsa.full((nd, len(C.LAYERS), ny, nx), np.nan, np.float32, chunks=chunks))
    ds.attrs.update({"somojax_store": "truth", "somojax_schema": stores.SCHEMA_VERSION})
    stores.validate(ds, "truth", path)
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, compute=False)


def _tile(s: SynthConfig, g: dict, land: np.ndarray | None, b: int, t: int, n_stations: int) -> dict:
    """One tile's simulation, with its stations renamed to be unique in the region."""
    rows, cols = g["bands"][b], g["cols"][t]
    region = _sub_region(g["region"], rows, cols)
    tile_land = None if land is None else land[rows[0] : rows[1], cols[0] : cols[1]]
    rng = np.random.default_rng([s.seed, b, t])
    sim = earth.simulate_region(s, rng, region, tile_land, n_stations, globe=True)
    sim["sensors"] = [replace(x, station=f"b{b:02d}t{t:03d}-{x.station}") for x in sim["sensors"]]
    return sim


def _band(s: SynthConfig, g: dict, land: np.ndarray | None, b: int, shares: list[int], ismn: Path) -> dict:
    """Simulates band `b` tile by tile into band-wide arrays; writes each tile's stations."""
    rows = g["bands"][b]
    ny, nx, n = rows[1] - rows[0], g["region"].lon.size, fields.POINTS_PER_CELL
    band: dict = {"era5": {}, "statics": {}, "elev_points": np.empty((ny * n + 1, nx * n + 1), np.float32)}
    band["sensors"], band["values"] = 0, 0
    for t, cols in enumerate(g["cols"]):
        sim = _tile(s, g, land, b, t, shares[t])
        band["days"] = days = sim["days"]
        cells = (slice(None), slice(None), slice(cols[0], cols[1]))
        for name, arr in writers.era5_fields(sim["era5_weather"], sim["swvl"]).items():
            band["era5"].setdefault(name, np.empty((days.size, ny, nx), np.float32))[cells] = arr
        band.setdefault("truth", np.empty((len(C.LAYERS), days.size, ny, nx), np.float32))[..., cols[0] : cols[1]] = (
            np.moveaxis(sim["truth"], 1, 0)
        )
        st = sim["statics"]
        for name in STATIC_FIELDS:
            band["statics"].setdefault(name, np.empty((ny, nx), getattr(st, name).dtype))[:, cols[0] : cols[1]] = (
                getattr(st, name)
            )
        skip = 0 if t == 0 else 1  # a point on a tile edge belongs to the cell west of it
        band["elev_points"][:, cols[0] * n + skip : cols[1] * n + 1] = st.elev_points[:, skip:]
        stations.write_ismn(sim["sensors"], ismn, st)
        band["sensors"] += len(sim["sensors"])
        band["values"] += sum(len(x.times) for x in sim["sensors"])
        band.setdefault("stations", set()).update(x.station for x in sim["sensors"])
        del sim
    return band


def _write_band(band: dict, b: int, g: dict, files: dict, statics: dict) -> None:
    """Writes a simulated band into the region-wide files and statics maps."""
    rows, n = g["bands"][b], fields.POINTS_PER_CELL
    _write_era5_band(files["era5"], band, rows, g, first=b == 0)
    lo = rows[0] * n + (0 if b == 0 else 1)  # a point on a band edge belongs to the cell below it
    with netCDF4.Dataset(files["etopo"], "a") as nc:
        nc["Band1"][lo : rows[1] * n + 1, :] = band["elev_points"][lo - rows[0] * n :]
    region = {C.LAYER: slice(None), C.TIME: slice(None), C.LAT: slice(*rows), C.LON: slice(None)}
    xr.Dataset({C.SM_TRUE: ((C.LAYER, C.TIME, C.LAT, C.LON), band["truth"])}).to_zarr(
        files["truth_tmp"], region=region, zarr_format=3, consolidated=False
    )
    for name, arr in band["statics"].items():
        statics.setdefault(name, np.empty(g["region"].shape, arr.dtype))[rows[0] : rows[1]] = arr


def _create_files(cfg: Config, g: dict, days: pd.DatetimeIndex) -> dict:
    """Empty region-wide files: ERA5 per year, ETOPO, the truth store (under a temporary name)."""
    raw = cfg.raw_dir
    for sub in ("era5", "static", "ismn"):
        if (raw / sub).exists():
            shutil.rmtree(raw / sub)
        (raw / sub).mkdir(parents=True)
    lat, lon, _ = _era5_points(g)
    era5 = {}
    for year in np.unique(days.year.values):
        era5[int(year)] = raw / "era5" / f"era5_{year}.nc"
        _create_era5(era5[int(year)], days[days.year == year], lat, lon)
    etopo = raw / "static" / writers.ETOPO_FILE
    _create_etopo(etopo, g["region"])
    truth = cfg.store_dir / C.TRUTH_STORE
    tmp = truth.with_name(f".{truth.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _create_truth(tmp, g["region"], days, g["bands"][0][1] - g["bands"][0][0])
    return {"era5": era5, "etopo": etopo, "truth": truth, "truth_tmp": tmp}


def _finish_truth(files: dict) -> None:
    """The truth store under its name, consolidated (like `stores.write_store`, atomically)."""
    stores.consolidate(files["truth_tmp"])
    if files["truth"].exists():
        shutil.rmtree(files["truth"])
    os.replace(files["truth_tmp"], files["truth"])


def _shares(s: SynthConfig, g: dict, land: np.ndarray | None) -> list[list[int]]:
    """Stations per [band][tile], in proportion to the tiles' land cells (cells without a mask)."""
    weights = [
        float((b1 - b0) * (c1 - c0)) if land is None else float(land[b0:b1, c0:c1].sum())
        for b0, b1 in g["bands"]
        for c0, c1 in g["cols"]
    ]
    flat, nt = share_stations(s.n_stations, weights), len(g["cols"])
    return [flat[i * nt : (i + 1) * nt] for i in range(len(g["bands"]))]


def generate_banded(cfg: Config) -> Path:
    """Generates the tiled synthetic Earth into `cfg.raw_dir` (+ the truth store); returns it."""
    s, t0 = cfg.synth, time.perf_counter()
    check(s)
    g, land = _grid(s), region_land(s)
    days = pd.date_range(s.start, s.end, freq="D")
    files = _create_files(cfg, g, days)
    shares, statics, counts = _shares(s, g, land), {}, {"sensors": 0, "values": 0, "stations": 0}
    try:
        for b in range(len(g["bands"])):
            band = _band(s, g, land, b, shares[b], cfg.raw_dir / "ismn")
            _write_band(band, b, g, files, statics)
            counts["sensors"] += band["sensors"]
            counts["values"] += band["values"]
            counts["stations"] += len(band.get("stations", ()))
            log.info(
                "band %d/%d (%s) written after %.0f s",
                b + 1,
                len(g["bands"]),
                band_text(g, b),
                time.perf_counter() - t0,
            )
            del band
    except BaseException:
        shutil.rmtree(files["truth_tmp"], ignore_errors=True)
        raise
    _finish_truth(files)
    gldas = writers.write_gldas(cfg.raw_dir / "static", g["region"], _statics(statics))
    _write_manifest(cfg, g, days, files, gldas, statics, counts)
    log.info("tiled synthetic Earth written to %s in %.1f s", cfg.raw_dir, time.perf_counter() - t0)
    return cfg.raw_dir


def band_text(g: dict, b: int) -> str:
    r0, r1 = g["bands"][b]
    south = g["region"].south
    return f"{south + C.GRID_RES * r0:g}..{south + C.GRID_RES * r1:g}°N"


def _statics(maps: dict) -> fields.Statics:
    """The region's cell maps as `Statics` for `writers.write_gldas` (no elevation points)."""
    none = np.empty(0, np.float32)
    return fields.Statics(elev_points=none, lat_points=none, lon_points=none, **maps)


def _write_manifest(cfg: Config, g: dict, days, files: dict, gldas: dict, statics: dict, counts: dict) -> None:
    raw = cfg.raw_dir
    manifest = {
        "config": to_dict(cfg)["synth"],
        "cells": {
            "lat": int(g["region"].lat.size),
            "lon": int(g["region"].lon.size),
            "land": int(statics["land"].sum()),
        },
        "days": int(days.size),
        "bands": len(g["bands"]),
        "tiles": len(g["bands"]) * len(g["cols"]),
        "era5_files": [str(p.relative_to(raw)) for p in files["era5"].values()],
        "static_files": {
            "etopo": str(files["etopo"].relative_to(raw)),
            **{k: str(p.relative_to(raw)) for k, p in gldas.items()},
        },
        "ismn_files": len(list((raw / "ismn").rglob("*.stm"))),
        "stations": counts["stations"],
        "sensors": counts["sensors"],
        "sensor_values": int(counts["values"]),
        "truth_store": str(files["truth"]),
    }
    (raw / "synth_manifest.json").write_text(json.dumps(manifest, indent=1))


def generate(cfg: Config) -> Path:
    """The synthetic Earth into `cfg.raw_dir`: tile by tile in bounded memory when `synth.band_deg`
    or `synth.land_mask` is set (`generate_banded`), else in one piece (`earth.generate`)."""
    if not enabled(cfg.synth):
        return earth.generate(cfg)
    earth.check_settings(cfg)
    return generate_banded(cfg)
