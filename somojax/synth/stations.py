"""Stations of the synthetic Earth: sensors observing the truth, written as an ISMN archive.

Each station sits at a random point of a land cell (some cells get two stations) and carries
1–4 sensors at realistic depths (point probes at 5, 10, 20, 30, 40, 50 cm; a cosmic-ray probe
over 0–19 cm). A sensor sees the truth of the soil it samples — the thickness-weighted mean of
the target layers over its depth range (a point probe at depth d reads the layer holding d,
boundary depths belonging to the upper layer) — through its own calibration:
    value = offset + scale · truth + noise,   offset ~ N(0, 0.03), scale ~ U(0.8, 1.2),
sampled every `hours_per_obs` hours, with random missing values, multi-week outages, a few
short-lived sensors, and ISMN quality flags: `G` normally; `C01` (negative), `C03` (above
saturation), `D03` (spike), `D05`/`D03,D05` (dubious plateaus), `D02` (air below 0 °C), `U`.
Values under bad flags are corrupted the way those flags describe, so the flag filter matters.
The archive imitates ISMN's "header+values" format file for file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from somojax import constants as C
from somojax.synth.fields import Region, Statics

NETWORK = "SYNTH"
PROFILES: tuple[tuple[tuple[float, float, str], ...], ...] = (
    ((0.05, 0.05, "ThetaProbe-ML2X"),),
    ((0.05, 0.05, "Hydraprobe-II"), (0.20, 0.20, "Hydraprobe-II"), (0.50, 0.50, "Hydraprobe-II")),
    ((0.05, 0.05, "EC5"), (0.10, 0.10, "EC5"), (0.20, 0.20, "EC5"), (0.40, 0.40, "EC5")),
    ((0.00, 0.19, "Cosmic-ray-Probe"),),
    ((0.10, 0.10, "CS655"), (0.30, 0.30, "CS655"), (0.50, 0.50, "CS655")),
    ((0.05, 0.05, "TDR"), (0.40, 0.40, "TDR")),
)
FLAG_RATES = {"D03": 0.010, "C01": 0.004, "C03": 0.003, "D05": 0.006, "D03,D05": 0.002, "U": 0.006}


@dataclass
class Sensor:
    """One sensor and its hourly record (times, values, flags)."""

    station: str
    cell_row: int
    cell_col: int
    lat: float
    lon: float
    elevation: float
    depth_from: float  # m
    depth_to: float  # m
    name: str
    offset: float
    scale: float
    times: pd.DatetimeIndex
    values: np.ndarray
    flags: np.ndarray  # str
    clean: np.ndarray  # offset + scale * truth at the sampled times (no noise, no corruption)


def sensor_truth_weights(depth_from: float, depth_to: float) -> np.ndarray:
    """Weights of the target layers L1..L3 in a sensor's reading (sums to 1)."""
    lo, hi = depth_from * 100.0, depth_to * 100.0
    bounds = [C.LAYER_BOUNDS_CM[l] for l in C.LAYERS]
    if hi - lo < 1e-9:  # a point probe reads the layer holding it (boundaries: upper layer)
        w = np.array([1.0 if a < lo <= b or (lo == 0 and a == 0) else 0.0 for a, b in bounds])
        if w.sum() == 0:
            w[-1] = 1.0
        return w / w.sum()
    w = np.array([max(0.0, min(b, hi) - max(a, lo)) for a, b in bounds])
    return w / w.sum()


def make_sensors(
    rng: np.random.Generator,
    region: Region,
    statics: Statics,
    truth: np.ndarray,
    t2m: np.ndarray,
    days: pd.DatetimeIndex,
    n_stations: int,
    station_start: str,
    hours_per_obs: int,
) -> list[Sensor]:
    """Draws the network and records every sensor.

    Args:
      truth: [day, layer(L1..L3), lat, lon] true soil moisture.
      t2m: [day, lat, lon] true air temperature [K] (frozen-soil flags).
    """
    land_cells = np.argwhere(statics.land)
    first_obs = max(int(np.searchsorted(days, pd.Timestamp(station_start))), 0)
    picks = rng.choice(len(land_cells), size=n_stations, replace=len(land_cells) < n_stations)
    # every 8th station shares its cell with the previous one (several series in one cell)
    for i in range(8, n_stations, 8):
        picks[i] = picks[i - 1]
    sensors: list[Sensor] = []
    for i, pick in enumerate(picks):
        row, col = land_cells[pick]
        sensors += _station_sensors(
            rng, f"Station-{i + 1:03d}", row, col, region, statics, truth, t2m, days, first_obs, hours_per_obs
        )
    return sensors


def _station_sensors(
    rng: np.random.Generator,
    name: str,
    row: int,
    col: int,
    region: Region,
    statics: Statics,
    truth: np.ndarray,
    t2m: np.ndarray,
    days: pd.DatetimeIndex,
    first_obs: int,
    hours_per_obs: int,
) -> list[Sensor]:
    """Draws one station in cell (row, col) (position within the cell, period from day
    `first_obs` on, depth profile) and records its sensors (`_record`), one per depth."""
    lat = region.lat[row] + rng.uniform(-0.12, 0.12)
    lon = region.lon[col] + rng.uniform(-0.12, 0.12)
    elev = float(statics.elevation[row, col])
    start_day = first_obs + int(rng.integers(0, 300))
    end_day = days.size - int(rng.integers(0, 200)) if rng.random() < 0.4 else days.size
    if start_day >= end_day - 1:
        start_day = first_obs
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    sensors = []
    for depth_from, depth_to, kind in profile:
        s0, s1 = start_day, end_day
        if rng.random() < 0.05:  # a sensor that failed after a few weeks
            s1 = min(s1, s0 + int(rng.integers(20, 55)))
        sensors.append(
            _record(
                rng,
                name,
                row,
                col,
                lat,
                lon,
                elev,
                depth_from,
                depth_to,
                kind,
                truth,
                t2m,
                days,
                s0,
                s1,
                hours_per_obs,
                statics,
            )
        )
    return sensors


def _record(
    rng, station, row, col, lat, lon, elev, d_from, d_to, kind, truth, t2m, days, s0, s1, hours, statics
) -> Sensor:
    w = sensor_truth_weights(d_from, d_to)
    daily_truth = truth[s0:s1, :, row, col] @ w  # [day]
    per_day = 24 // hours
    n = (s1 - s0) * per_day
    times = pd.date_range(days[s0], periods=n, freq=f"{hours}h")
    day_idx = np.repeat(np.arange(s1 - s0), per_day)
    offset, scale = float(rng.normal(0.0, 0.03)), float(rng.uniform(0.8, 1.2))
    hour = times.hour.values
    diurnal = 0.002 * np.sin(2 * np.pi * (hour - 9) / 24)
    clean = offset + scale * daily_truth[day_idx]
    values = clean + diurnal + rng.normal(0.0, 0.006, n)
    flags = np.full(n, "G", dtype=object)
    u = rng.random(n)
    edge = 0.0
    for flag, rate in FLAG_RATES.items():
        sel = (u >= edge) & (u < edge + rate)
        flags[sel] = flag
        edge += rate
    frozen = (t2m[s0:s1, row, col] < 271.0)[day_idx] & (rng.random(n) < 0.7) & (flags == "G")
    flags[frozen] = "D02"
    values = np.where(flags == "D03", values + rng.uniform(0.1, 0.25, n), values)
    values = np.where(flags == "D03,D05", values + 0.12, values)
    values = np.where(flags == "C01", -rng.uniform(0.01, 0.1, n), values)
    values = np.where(flags == "C03", statics.poro_top[row, col] + rng.uniform(0.05, 0.2, n), values)
    values = np.where(frozen, values * 0.6, values)  # liquid water only in frozen soil
    # gaps: single missing values and 0-3 outages of 1-7 weeks (boundaries mid-day)
    keep = rng.random(n) > 0.04
    for _ in range(int(rng.integers(0, 4))):
        a = int(rng.integers(0, max(n - 1, 1)))
        keep[a : a + int(rng.integers(7 * per_day, 50 * per_day))] = False
    return Sensor(
        station,
        int(row),
        int(col),
        float(lat),
        float(lon),
        elev,
        d_from,
        d_to,
        kind,
        offset,
        scale,
        times[keep],
        values[keep],
        flags[keep].astype(str),
        clean[keep],
    )


def ismn_filename(s: Sensor) -> str:
    """ISMN file name: NETWORK_NETWORK_STATION_sm_FROM_TO_SENSOR_START_END.stm."""
    start, end = s.times[0].strftime("%Y%m%d"), s.times[-1].strftime("%Y%m%d")
    return f"{NETWORK}_{NETWORK}_{s.station}_sm_{s.depth_from:.6f}_{s.depth_to:.6f}_{s.name}_{start}_{end}.stm"


def header_line(s: Sensor) -> str:
    """The "header+values" header: network, network, station, lat, lon, elevation, depths, sensor."""
    return (
        f"{NETWORK:<10} {NETWORK:<15} {s.station:<17} {s.lat:9.5f} {s.lon:10.5f} "
        f"{s.elevation:7.2f} {s.depth_from:7.2f} {s.depth_to:7.2f} {s.name}"
    )


def value_lines(s: Sensor) -> str:
    """The "YYYY/MM/DD HH:MM value flag provider_flag" lines of a sensor, joined by newlines.

    Days, times of day and values rounded to 1e-4 repeat a lot, so each distinct one is
    formatted once and looked up (much faster than formatting every value).
    """
    t = s.times.values.astype("datetime64[m]")
    day = t.astype("datetime64[D]")
    days, day_of = np.unique(day, return_inverse=True)
    day_text = [d.replace("-", "/") for d in np.datetime_as_string(days, unit="D").tolist()]
    minutes, minute_of = np.unique((t - day).astype(np.int64), return_inverse=True)
    clock_text = [f"{m // 60:02d}:{m % 60:02d}" for m in minutes.tolist()]
    tenths_of_mille = np.round(np.asarray(s.values, np.float64) * 1e4).astype(np.int64)
    lo = int(tenths_of_mille.min(initial=0))
    value_text = [f"{v / 1e4:8.4f}" for v in range(lo, int(tenths_of_mille.max(initial=0)) + 1)]
    return "\n".join(
        f"{day_text[a]} {clock_text[b]} {value_text[v - lo]} {f} M"
        for a, b, v, f in zip(
            day_of.tolist(), minute_of.tolist(), tenths_of_mille.tolist(), s.flags.astype(str).tolist()
        )
    )


def write_ismn(sensors: list[Sensor], root: Path, statics: Statics) -> list[Path]:
    """Writes the archive: NETWORK/STATION/<file>.stm and a static-variables CSV per station."""
    paths = []
    stations: dict[str, Sensor] = {}
    for s in sensors:
        if len(s.times) == 0:
            continue
        d = root / NETWORK / s.station
        d.mkdir(parents=True, exist_ok=True)
        p = d / ismn_filename(s)
        p.write_text(header_line(s) + "\n" + value_lines(s) + "\n")
        paths.append(p)
        stations.setdefault(s.station, s)
    for name, s in stations.items():
        r, c = s.cell_row, s.cell_col
        rows = [
            "quantity_name;unit;depth_from[m];depth_to[m];value;description;quantity_source_name;",
            f"saturation;m^3*m^-3;0.00;0.30;{statics.poro_top[r, c]:.2f};;SYNTH;synthetic Earth;somojax;1;0.25deg;;;",
            f"clay fraction;% weight;0.00;0.30;{100 * statics.clay[r, c]:.2f};;SYNTH;synthetic Earth;somojax;1;0.25deg;;;",
            f"sand fraction;% weight;0.00;0.30;{100 * statics.sand[r, c]:.2f};;SYNTH;synthetic Earth;somojax;1;0.25deg;;;",
            f"silt fraction;% weight;0.00;0.30;{100 * statics.silt[r, c]:.2f};;SYNTH;synthetic Earth;somojax;1;0.25deg;;;",
            f"saturation;m^3*m^-3;0.30;1.00;{statics.poro_mid[r, c]:.2f};;SYNTH;synthetic Earth;somojax;1;0.25deg;;;",
        ]
        (root / NETWORK / name / f"{NETWORK}_{NETWORK}_{name}_static_variables.csv").write_text("\n".join(rows) + "\n")
    return paths
