"""`somojax synth`: generate the synthetic Earth and write it in the raw formats of real data.

Order: region -> static maps -> true weather -> true soil moisture (bucket model on the target
layers) -> reanalysis weather and soil moisture (degraded, on ERA5's layers) -> stations ->
files: `raw/era5/`, `raw/static/`, `raw/ismn/`, `raw/synth_manifest.json`, and the truth store
`<store_dir>/truth.zarr`. Deterministic for `synth.seed`; re-running overwrites.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from somojax import constants as C
from somojax import stores
from somojax.config import Config, SynthConfig, to_dict
from somojax.errors import ConfigError
from somojax.synth import fields, soil, stations, weather, writers
from somojax.utils.logging import get_logger

log = get_logger("synth")

# the truth runs on the target layers plus a 50-100 cm buffer that L3 drains into
TRUTH_LAYERS_CM = [C.LAYER_BOUNDS_CM[l] for l in C.LAYERS] + [(50.0, 100.0)]
ERA5_LAYERS_CM = [C.ERA5_LAYER_BOUNDS_CM[v] for v in C.ERA5_SM_VARS]
ALBEDO = {
    fields.GRASSLAND: 0.20,
    fields.CROPLAND: 0.18,
    fields.DECIDUOUS_BROADLEAF: 0.14,
    fields.MIXED_FOREST: 0.13,
    fields.OPEN_SHRUBLAND: 0.25,
    fields.WATER: 0.08,
}
INCREMENT_MM_PER_K = 1.0  # analysis water per kelvin of first-guess 2 m temperature error [mm day-1 K-1]
INCREMENT_WEIGHTS = np.array([0.2, 0.35, 0.45])  # share of the increment in swvl1..3
ROOTS = {  # root fractions over the 4 truth layers
    fields.GRASSLAND: (0.40, 0.35, 0.20, 0.05),
    fields.CROPLAND: (0.45, 0.35, 0.15, 0.05),
    fields.DECIDUOUS_BROADLEAF: (0.20, 0.30, 0.30, 0.20),
    fields.MIXED_FOREST: (0.20, 0.30, 0.30, 0.20),
    fields.OPEN_SHRUBLAND: (0.35, 0.35, 0.20, 0.10),
}


def truth_params(st: fields.Statics) -> soil.SoilParams:
    """Bucket parameters of the truth for the land cells (row-major order).

    Clay soils crack and carry more macropore flow past the top layer after heavy rain; a weak
    capillary diffusion connects the layers, so the deep layers also wet and dry between storms.
    """
    land = st.land
    clay, sand = st.clay[land], st.sand[land]
    poro = np.stack([st.poro_top[land], st.poro_mid[land], st.poro_mid[land], st.poro_mid[land]])
    roots = np.array([ROOTS.get(int(v), ROOTS[fields.GRASSLAND]) for v in st.domveg[land]]).T
    return soil.SoilParams(
        thickness=np.array([10.0 * (b - a) for a, b in TRUTH_LAYERS_CM]),
        porosity=poro,
        field_capacity=poro * (0.55 + 0.5 * clay)[None],
        wilting_point=poro * (0.12 + 0.45 * clay)[None],
        drainage=np.stack([0.25 + 0.5 * sand, 0.12 + 0.3 * sand, 0.06 + 0.15 * sand, 0.03 + 0.05 * sand]),
        roots=roots,
        pet_coef=0.85,
        runoff_exp=3.0,
        degree_day=3.0,
        diffusion=np.array([4.0, 3.0, 2.0])[:, None],
        bypass_fraction=0.3 + 0.6 * clay,
        bypass_above=5.0,
        bypass_split=np.array([0.0, 0.5, 0.35, 0.15]),
    )


def reanalysis_params(st: fields.Statics) -> soil.SoilParams:
    """The reanalysis' land model on every cell: ERA5's layers, its own coarse soil map, no snow.

    Its soil map is the true clay content smoothed over ~0.5° (a coarser map of the same soil
    survey); hydraulic properties follow from it through a texture relation unlike the truth's.
    Drainage is sluggish but starts below field capacity, a strong diffusion couples the layers,
    and water that does not fit into the top layer runs off: the deep layers are damped, lagged
    versions of the surface. There are no macropores and no snow.
    """
    clay = np.clip(ndimage.gaussian_filter(st.clay, 2.0, mode="reflect"), 0.05, 0.5).ravel()
    ones = np.ones((3, clay.size))
    fc = (0.22 + 0.4 * clay) * ones
    wp = (0.06 + 0.3 * clay) * ones
    return soil.SoilParams(
        thickness=np.array([10.0 * (b - a) for a, b in ERA5_LAYERS_CM]),
        porosity=(0.40 + 0.12 * clay) * ones,
        field_capacity=fc,
        wilting_point=wp,
        drainage=np.array([0.06, 0.03, 0.01])[:, None] * ones,
        roots=np.array([0.35, 0.40, 0.25])[:, None] * ones,
        pet_coef=1.1,
        runoff_exp=1.5,
        degree_day=0.0,
        drainage_threshold=wp + 0.4 * (fc - wp),
        diffusion=10.0,
        infiltration_excess=True,
    )


def analysis_increments(era_w: weather.Weather, true_w: weather.Weather) -> np.ndarray:
    """The reanalysis' soil-moisture analysis increments [day, layer, cell] (all cells, row-major).

    Like ERA5's land data assimilation, the analysis adds water where its first guess of the
    2 m temperature is too warm and removes it where too cold, spread over the root zone. Its
    temperature errors are not caused by soil-moisture errors here (they are synoptic noise of
    its own), so the increments are errors the truth does not have. The mean error is
    bias-corrected away first; frozen ground (reanalysis T < 0 °C) gets none.
    """
    err = (era_w.t2m - true_w.t2m).reshape(era_w.t2m.shape[0], -1)
    err = err - err.mean(axis=0)
    thawed = era_w.t2m.reshape(err.shape) > 273.15
    return INCREMENT_MM_PER_K * INCREMENT_WEIGHTS[None, :, None] * (err * thawed)[:, None, :]


def check_settings(cfg: Config) -> None:
    """ConfigError for synth settings no world can be made of (one-piece and banded alike)."""
    s = cfg.synth
    for name, (a, b) in (("lat_range", s.lat_range), ("lon_range", s.lon_range)):
        if not a < b:
            raise ConfigError(f"synth.{name}={[a, b]}: the first edge must be smaller than the second")
    if 24 % s.hours_per_obs:
        raise ConfigError(f"synth.hours_per_obs={s.hours_per_obs} must divide 24")
    if pd.Timestamp(s.end) < pd.Timestamp(s.start) + pd.Timedelta(days=364):
        raise ConfigError(f"synth.start..end ({s.start}..{s.end}) must span at least a year")
    if not pd.Timestamp(s.start) <= pd.Timestamp(s.station_start) < pd.Timestamp(s.end):
        raise ConfigError(f"synth.station_start={s.station_start} must lie within {s.start}..{s.end}")


def simulate(cfg: Config) -> dict:
    """Simulates everything in memory (no files). Returns the pieces `generate` writes."""
    check_settings(cfg)
    s = cfg.synth
    region = fields.Region.from_edges(s.lat_range, s.lon_range)
    return simulate_region(s, np.random.default_rng(s.seed), region)


def simulate_region(
    s: SynthConfig,
    rng: np.random.Generator,
    region: fields.Region,
    land: np.ndarray | None = None,
    n_stations: int | None = None,
    globe: bool = False,
) -> dict:
    """Simulates one region (the whole demo, or one tile of the banded Earth, `synth.globe`).

    Args:
      land: [lat, lon] land mask to use instead of the demo's (a lake and a river).
      n_stations: stations of this region (default `synth.n_stations`).
      globe: a climate for any latitude, and as many storms per area as the demo has.
    """
    days = pd.date_range(s.start, s.end, freq="D")
    wetness = np.clip(region.east_fraction() + 0.15 * fields.smooth_noise(rng, region.shape, 3.0), 0.0, 1.0)
    st = fields.make_statics(rng, region, wetness)
    if land is not None:
        st = fields.with_land(st, wetness, land)
    albedo = np.vectorize(lambda v: ALBEDO.get(int(v), 0.2))(st.domveg).astype(np.float64)
    climate = weather.global_climate(region, st.elevation) if globe else None
    rate = storm_rate(region) if globe else 1.0
    true_w, storms, scale = weather.make_weather(rng, region, days, st.elevation, albedo, climate, rate)

    land = st.land
    truth = np.full((days.size, len(C.LAYERS)) + region.shape, np.nan)
    run = None
    if land.any():
        flat = lambda a: a[:, land]  # noqa: E731  [day, lat, lon] -> [day, land cell]
        run = soil.spun_up(truth_params(st), flat(true_w.tp), flat(true_w.t2m), flat(true_w.ssr + true_w.str))
        truth[:, :, land] = run.theta[:, : len(C.LAYERS)]

    era_w = weather.degrade(rng, region, true_w, storms, scale, st.elevation, albedo, rate)
    n_all = region.shape[0] * region.shape[1]
    rs = lambda a: a.reshape(days.size, n_all)  # noqa: E731
    era_run = soil.spun_up(
        reanalysis_params(st),
        rs(era_w.tp),
        rs(era_w.t2m),
        rs(era_w.ssr + era_w.str),
        analysis_increments(era_w, true_w),
    )
    swvl = {v: era_run.theta[:, k].reshape((days.size,) + region.shape) for k, v in enumerate(C.ERA5_SM_VARS)}

    n = s.n_stations if n_stations is None else n_stations
    sensors = []
    if n > 0 and land.any():
        sensors = stations.make_sensors(rng, region, st, truth, true_w.t2m, days, n, s.station_start, s.hours_per_obs)
    return {
        "region": region,
        "days": days,
        "statics": st,
        "weather": true_w,
        "era5_weather": era_w,
        "truth": truth,
        "truth_run": run,
        "swvl": swvl,
        "sensors": sensors,
    }


def storm_rate(region: fields.Region) -> float:
    """How many times the demo's storms per day a region needs for the demo's storms per area
    (storms are drawn over the region plus 2° on each side)."""
    demo = (6.0 + 4.0) * (8.0 + 4.0)
    return (region.north - region.south + 4.0) * (region.east - region.west + 4.0) / demo


def truth_dataset(region: fields.Region, days: pd.DatetimeIndex, truth: np.ndarray) -> xr.Dataset:
    """The truth store's dataset: `sm_true` (layer, time, latitude, longitude)."""
    coords = stores.grid_coord_attrs()
    return xr.Dataset(
        {
            C.SM_TRUE: (
                (C.LAYER, C.TIME, C.LAT, C.LON),
                np.moveaxis(truth, 1, 0).astype(np.float32),
                stores.cf_attrs(C.SM_TRUE),
            )
        },
        coords={
            C.LAYER: (
                C.LAYER,
                np.array(C.LAYERS, dtype=object),
                coords[C.LAYER],
            ),  # variable-length strings (Zarr v3 spec)
            C.TIME: days.values.astype("datetime64[ns]"),
            C.LAT: (C.LAT, region.lat, coords[C.LAT]),
            C.LON: (C.LON, region.lon, coords[C.LON]),
        },
        attrs={"title": "somojax synthetic Earth: true soil moisture on the target layers"},
    )


def generate(cfg: Config) -> Path:
    """Generates the synthetic Earth in one piece into `cfg.raw_dir` (+ the truth store); returns
    `cfg.raw_dir`. `somojax.synth.generate` chooses between this and the banded Earth (`globe`)."""
    t0 = time.perf_counter()
    sim = simulate(cfg)
    region, days = sim["region"], sim["days"]
    log.info(
        "simulated %d x %d cells, %d days, %d sensors in %.1f s",
        *region.shape,
        days.size,
        len(sim["sensors"]),
        time.perf_counter() - t0,
    )
    raw = cfg.raw_dir
    for sub in ("era5", "static", "ismn"):
        if (raw / sub).exists():
            shutil.rmtree(raw / sub)
    era5 = writers.write_era5(raw / "era5", region, sim["era5_weather"], sim["swvl"])
    static = writers.write_statics(raw / "static", region, sim["statics"])
    ismn = stations.write_ismn(sim["sensors"], raw / "ismn", sim["statics"])
    stores.write_store(truth_dataset(region, days, sim["truth"]), cfg.store_dir / C.TRUTH_STORE, "truth")
    n_values = sum(len(s.times) for s in sim["sensors"])
    manifest = {
        "config": to_dict(cfg)["synth"],
        "cells": {"lat": len(region.lat), "lon": len(region.lon), "land": int(sim["statics"].land.sum())},
        "days": int(days.size),
        "era5_files": [str(p.relative_to(raw)) for p in era5],
        "static_files": {k: str(p.relative_to(raw)) for k, p in static.items()},
        "ismn_files": len(ismn),
        "stations": len({s.station for s in sim["sensors"]}),
        "sensors": len(sim["sensors"]),
        "sensor_values": int(n_values),
        "truth_store": str(cfg.store_dir / C.TRUTH_STORE),
    }
    (raw / "synth_manifest.json").write_text(json.dumps(manifest, indent=1))
    log.info(
        "synthetic Earth written to %s in %.1f s: %d ERA5 files, %d station files (%d values), truth store %s",
        raw,
        time.perf_counter() - t0,
        len(era5),
        len(ismn),
        n_values,
        cfg.store_dir / C.TRUTH_STORE,
    )
    return raw
