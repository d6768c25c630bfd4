"""Daily forcings from ERA5: the six dynamic inputs, ERA5 soil moisture on the target layers, and
the long-term statics `tp` and `arid` (docs/design.md#inputs).

Everything here is lazy (xarray on dask): nothing is computed until the store is written, so the
same code runs on 20 years of global hourly ERA5 on a dask cluster. Order of operations per
variable: crop to the region (+ one ERA5 point of margin) -> nonlinear per-step quantities (q) at
native points and times -> daily aggregation in UTC days -> ERA5 points to 0.25° cell centres
(mean of the four surrounding points) -> nonlinear daily transforms (`log_tp`).

Time conventions (CDS since 2024, and ERA5 in general): an accumulated quantity (tp, ssr, str,
ssrd) stamped at time t is the amount over the hour ending at t, so the total of UTC day D is the
sum of the values stamped D 01:00 ... D+1 00:00. Instantaneous quantities are averaged over the
values stamped D 00:00 ... D 23:00. ERA5-Land's convention (accumulated since 00 UTC, so the day
total is the value stamped D+1 00:00) is supported with `accumulation="since_00utc"`. Daily files
(time step one day) carry day totals for accumulations and daily means otherwise.
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.errors import InputDataError
from somojax.prepare.era5 import ACCUMULATED
from somojax.stores import cf_attrs, grid_coord_attrs

DAY = np.timedelta64(1, "D")

# formula constants (IFS documentation, Cy41r2 Part IV, eq. 7.5 and 7.4: saturation over water)
R_DRY_OVER_VAPOUR = 0.622  # ε = R_d / R_v
E0_PA = 611.21
A_W = 17.502
T0_K = 273.16
B_W_K = 32.19
J_PER_MJ = 1.0e6
MM_PER_M = 1000.0
DAYS_PER_YEAR = 365.25

Accumulation = Literal["hourly", "since_00utc"]


# ----------------------------------------------------------------------------------------
# formulas (work on NumPy, dask and xarray alike)
# ----------------------------------------------------------------------------------------
def vapour_pressure(d2m):
    """Vapour pressure [Pa] from the 2 m dew point [K]: e = 611.21·exp(17.502·(Td−273.16)/(Td−32.19))."""
    return E0_PA * np.exp(A_W * (d2m - T0_K) / (d2m - B_W_K))


def specific_humidity(d2m, sp):
    """Specific humidity [kg kg-1] from dew point [K] and surface pressure [Pa]:
    q = 0.622·e / (p − 0.378·e)."""
    e = vapour_pressure(d2m)
    return R_DRY_OVER_VAPOUR * e / (sp - (1.0 - R_DRY_OVER_VAPOUR) * e)


def log_precip(tp_mm_day):
    """`log_tp` = ln(1 + precipitation [mm day-1])."""
    return np.log1p(tp_mm_day)


def net_radiation_mj(ssr_j, str_j):
    """Surface net radiation [MJ m-2 day-1] from the day totals of ssr and str [J m-2]."""
    return (ssr_j + str_j) / J_PER_MJ


def aridity(snr_mj_day, p_mm_day, p_min_mm_day):
    """Aridity index: net radiation as mm of evaporation (/2.45 MJ per mm) over precipitation.

    Precipitation below `p_min_mm_day` is raised to it (see docs/real-data.md, "aridity").
    """
    return (snr_mj_day / C.LATENT_HEAT_VAPORISATION) / np.maximum(p_mm_day, p_min_mm_day)


def era5_layer_weights() -> dict[str, dict[str, float]]:
    """Depth weights of swvl1..3 for each target layer (normalised to sum 1)."""
    out = {}
    for layer, w in C.ERA5_TO_TARGET_WEIGHTS.items():
        tot = sum(w.values())
        out[layer] = {k: v / tot for k, v in w.items()}
    return out


# ----------------------------------------------------------------------------------------
# time: sub-daily -> UTC days
# ----------------------------------------------------------------------------------------
def _step(t: np.ndarray) -> np.timedelta64 | None:
    if t.size < 2:
        return None
    d = np.diff(t).astype("timedelta64[s]")
    vals, counts = np.unique(d, return_counts=True)
    return vals[np.argmax(counts)]


def _missing_message(name: str, missing: np.ndarray, expected_n: int, source: str, hint: str = "") -> str:
    shown = ", ".join(np.datetime_as_string(missing[:4], unit="h"))
    return (
        f"{name}: {missing.size} of {expected_n} time steps needed are missing ({shown}"
        f"{', ...' if missing.size > 4 else ''}) in {source}.{hint}"
    )


def _source_text(da: xr.DataArray) -> str:
    """The files `da` was read from, as one string for messages (at most 300 characters)."""
    return ", ".join(map(str, da.attrs.get("source_files", [da.attrs.get("source_file", "?")])))[:300]


def _time_step(t: np.ndarray, name: str, start: str, end: str, source: str) -> np.timedelta64:
    """The time step of the stamps `t` (datetime64[ns]), in seconds: the most common spacing, or
    one day for a single stamp. Raises `InputDataError` when `t` is empty."""
    dt = _step(t.astype("datetime64[s]"))
    if dt is None:
        dt = np.timedelta64(86400, "s") if t.size == 1 else None
    if dt is None:
        raise InputDataError(
            f"{name}: no time step in {start}..{end} in {source}"
            + (" (the files hold none of the forcing period)" if t.size == 0 else "")
        )
    return dt


def _pick_days(da: xr.DataArray, idx: np.ndarray, days: np.ndarray) -> xr.DataArray:
    """The time steps `idx` of `da`, restamped with `days` (one per day)."""
    return da.isel({C.TIME: idx}).assign_coords({C.TIME: days})


def _from_daily_file(da: xr.DataArray, t: np.ndarray, days: np.ndarray, name: str, source: str) -> xr.DataArray:
    """`days` taken from a daily file (stamps `t` at 00:00 or 12:00); raises `InputDataError`
    naming the days missing."""
    tday = t.astype("datetime64[D]").astype("datetime64[ns]")
    idx = pd.Index(tday).get_indexer(days)
    if (idx < 0).any():
        raise InputDataError(
            _missing_message(
                name, days[idx < 0], days.size, source, " Extend the ERA5 files to cover the forcing period."
            )
        )
    return _pick_days(da, idx, days)


def _from_since_00utc(da: xr.DataArray, t: np.ndarray, days: np.ndarray, name: str, source: str) -> xr.DataArray:
    """Day totals of a running total since 00 UTC: the value stamped D+1 00:00 is the total of
    day D. Raises `InputDataError` naming the stamps missing."""
    need = days + DAY
    idx = pd.Index(t).get_indexer(need)
    if (idx < 0).any():
        raise InputDataError(
            _missing_message(
                name, need[idx < 0], days.size, source, " (accumulated since 00 UTC: day D needs D+1 00:00)"
            )
        )
    return _pick_days(da, idx, days)


def _sub_daily_steps(
    da: xr.DataArray, t: np.ndarray, days: np.ndarray, dt: np.timedelta64, name: str, source: str, accumulated: bool
) -> xr.DataArray:
    """The `days.size * n` steps of `da` that make up `days` (n steps of `dt` per day; for an
    accumulation the steps ending D 01:00 ... D+1 00:00), in order along time. Raises
    `InputDataError` for an accumulation that is not hourly and for steps missing."""
    dt_s = int(dt / np.timedelta64(1, "s"))
    n = 86400 // dt_s
    if accumulated and dt_s != 3600:
        raise InputDataError(
            f"{name}: accumulated variables need hourly data (each value the amount of the preceding hour) "
            f"or daily totals; found a {dt_s / 3600:g}-hourly step in {source}. Request all 24 hours from the CDS."
        )
    first = days[0] + (dt if accumulated else np.timedelta64(0, "s"))
    need = first + np.arange(days.size * n) * dt.astype("timedelta64[ns]")
    idx = pd.Index(t).get_indexer(need)
    if (idx < 0).any():
        hint = (
            " The accumulation of the last hour of day D is stamped D+1 00:00; include that step."
            if accumulated
            else ""
        )
        raise InputDataError(_missing_message(name, need[idx < 0], days.size * n, source, hint))
    i0 = int(idx[0])
    contiguous = bool(np.all(np.diff(idx) == 1))
    return da.isel({C.TIME: slice(i0, i0 + days.size * n)}) if contiguous else da.isel({C.TIME: idx})


def _aggregate_days(
    sel: xr.DataArray, n: int, days: np.ndarray, accumulated: bool, days_per_chunk: int | None
) -> xr.DataArray:
    """(day·n, ...) steps `sel` -> (day, ...) day totals (`accumulated`) or means, stamped `days`.
    A dask `sel` is rechunked to `days_per_chunk` days (default ~100 MB) per chunk first."""
    nd = days.size
    if hasattr(sel.data, "dask"):
        per_day = int(np.prod([sel.sizes[d] for d in sel.dims if d != C.TIME])) * 4 * n
        k = days_per_chunk or max(1, int(96e6 // max(per_day, 1)))
        sel = sel.chunk({C.TIME: n * min(k, nd)})
    sel = sel.drop_vars(C.TIME)
    # strict reductions: a missing step makes the day NaN
    per = sel.coarsen({C.TIME: n}, boundary="exact").construct({C.TIME: (C.TIME, "_step")})
    out = per.sum("_step", skipna=False) if accumulated else per.mean("_step", skipna=False)
    return out.assign_coords({C.TIME: days})


def daily(
    da: xr.DataArray,
    name: str,
    start: str,
    end: str,
    accumulated: bool,
    accumulation: Accumulation = "hourly",
    days_per_chunk: int | None = None,
) -> xr.DataArray:
    """Daily values of one ERA5 variable over the UTC days start..end (inclusive).

    Args:
      da: (time, ...) lazily loaded, hourly, sub-daily or daily.
      name: short name, for messages.
      start, end: ISO dates.
      accumulated: True for amounts (day total), False for states (daily mean).
      accumulation: convention of hourly accumulations (module docstring).
      days_per_chunk: dask chunk along the output time (default: keep ~100 MB per chunk).

    Returns:
      (time, ...) with one value per day stamped at 00:00 UTC. Every needed time step must be
      present; otherwise `InputDataError` names the missing ones.
    """
    source = _source_text(da)
    t = da[C.TIME].values.astype("datetime64[ns]")
    days = pd.date_range(start, end, freq="D").values.astype("datetime64[ns]")
    dt = _time_step(t, name, start, end, source)
    dt_s = int(dt / np.timedelta64(1, "s"))
    if dt_s == 86400:
        out = _from_daily_file(da, t, days, name, source)
    elif 86400 % dt_s != 0:
        raise InputDataError(
            f"{name}: time step {dt_s / 3600:g} h does not divide a day; use hourly or daily ERA5 ({source})"
        )
    elif accumulated and accumulation == "since_00utc":
        out = _from_since_00utc(da, t, days, name, source)
    else:
        sel = _sub_daily_steps(da, t, days, dt, name, source, accumulated)
        out = _aggregate_days(sel, 86400 // dt_s, days, accumulated, days_per_chunk)
    out.attrs = {"source_files": da.attrs.get("source_files", [])}
    return out


# ----------------------------------------------------------------------------------------
# space: ERA5 points -> 0.25° cell centres
# ----------------------------------------------------------------------------------------
def grid_kind(da: xr.DataArray, source: str = "input") -> str:
    """ "points" (ERA5 native, multiples of 0.25°) or "centres" (.125/.375/...); anything else
    raises the "grid is not 0.25°" error."""
    kinds = []
    for d in (C.LAT, C.LON):
        v = np.asarray(da[d].values, np.float64)
        if v.size < 2:
            raise InputDataError(f"{source}: {d} has a single value; cannot tell the grid (need a 0.25° grid)")
        steps = np.diff(v)
        if not np.allclose(steps, C.GRID_RES, atol=1e-4):
            raise InputDataError(
                f"{source}: the grid is not 0.25° ({d} steps {np.unique(np.round(steps, 4))[:4]}°). "
                "Request ERA5 at 0.25° (the CDS default) or regrid to 0.25° first."
            )
        r = v / C.GRID_RES
        if np.allclose(r, np.round(r), atol=4e-4):
            kinds.append("points")
        elif np.allclose(r - 0.5, np.round(r - 0.5), atol=4e-4):
            kinds.append("centres")
        else:
            raise InputDataError(
                f"{source}: {d} values {v[:3]} are neither 0.25° points (.00/.25) nor cell centres (.125/.375)"
            )
    if kinds[0] != kinds[1]:
        raise InputDataError(f"{source}: latitude is on {kinds[0]} but longitude on {kinds[1]}; expected the same kind")
    return kinds[0]


def _indexer(coord: np.ndarray, want: np.ndarray, d: str, source: str, wrap: bool) -> np.ndarray:
    """Indices of the grid points `want` in the file's coordinate: they must be there (1e-4°)."""
    want = grid.wrap_lon(want) if wrap else np.asarray(want, np.float64)
    idx, inside = grid.nearest_index(coord, want, tol=1e-4, periodic=wrap)
    if not inside.all():
        miss = want[~inside]
        raise InputDataError(
            f"{source}: {d} does not cover the region: {miss.size} needed {d} value(s) missing "
            f"({', '.join(f'{x:g}' for x in miss[:4])}{', ...' if miss.size > 4 else ''}); "
            f"the file covers {float(np.min(coord)):g}..{float(np.max(coord)):g}"
        )
    return idx


def to_cell_centres(da: xr.DataArray, lats: np.ndarray, lons: np.ndarray, source: str = "input") -> xr.DataArray:
    """Values at the 0.25° cell centres (lats, lons).

    ERA5's native points sit on multiples of 0.25°; a cell centre lies between four of them and
    gets their mean (the NaN-aware mean of the available ones; NaN only if all four are
    missing). Data already on cell centres is selected as is. Any other grid is an error.
    """
    kind = grid_kind(da, source)
    lats, lons = np.asarray(lats, np.float64), np.asarray(lons, np.float64)
    if kind == "centres":
        il = _indexer(da[C.LAT].values, lats, C.LAT, source, wrap=False)
        io = _indexer(da[C.LON].values, lons, C.LON, source, wrap=True)
        out = da.isel({C.LAT: il, C.LON: io})
        return out.assign_coords({C.LAT: lats, C.LON: lons})
    h = C.GRID_RES / 2
    plat = np.append(lats - h, lats[-1] + h)
    plon = np.append(lons - h, lons[-1] + h)
    il = _indexer(da[C.LAT].values, plat, C.LAT, source, wrap=False)
    io = _indexer(da[C.LON].values, plon, C.LON, source, wrap=True)
    pts = da.isel({C.LAT: il, C.LON: io}).drop_vars([C.LAT, C.LON])
    total = None
    count = None
    for a in (slice(0, -1), slice(1, None)):
        for b in (slice(0, -1), slice(1, None)):
            x = pts.isel({C.LAT: a, C.LON: b}).data
            ok = ~np.isnan(x)
            xs = np.where(ok, x, 0.0)
            total = xs if total is None else total + xs
            count = ok.astype(np.int8) if count is None else count + ok
    mean = total / np.where(count > 0, count, np.nan)
    dims = pts.dims
    coords = {d: pts[d] for d in dims if d in pts.coords and d not in (C.LAT, C.LON)}
    coords.update({C.LAT: lats, C.LON: lons})
    return xr.DataArray(mean, dims=dims, coords=coords, attrs=da.attrs)


# ----------------------------------------------------------------------------------------
# the builder
# ----------------------------------------------------------------------------------------
def region_cells(lat_range: Sequence[float], lon_range: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes and longitudes of a region given by its edges."""
    return grid.lat_centres(*lat_range), grid.lon_centres(*lon_range)


def region_bbox(lat_range: Sequence[float], lon_range: Sequence[float]) -> tuple[float, float, float, float]:
    """(south, north, west, east) of the ERA5 points needed for a region's cell centres: the
    region's edges (the outermost points sit on the edges)."""
    return float(lat_range[0]), float(lat_range[1]), float(lon_range[0]), float(lon_range[1])


# which ERA5 variables each dynamic input is built from
INPUT_SOURCES: dict[str, tuple[str, ...]] = {
    "log_tp": ("tp",),
    "t2m": ("t2m",),
    "snr": ("ssr", "str"),
    "ssrd": ("ssrd",),
    "q": ("d2m", "sp"),
    "skt": ("skt",),
}


def _check_era5(era5: Mapping[str, xr.DataArray], inputs: Sequence[str]) -> None:
    """Raises `InputDataError` for an input somojax does not build or an ERA5 variable that is not
    on a latitude/longitude grid."""
    unknown = [v for v in inputs if v not in INPUT_SOURCES]
    if unknown:
        raise InputDataError(f"data.dynamic_inputs: unknown input(s) {unknown}; somojax builds {list(INPUT_SOURCES)}")
    for v, da in era5.items():
        if C.LAT not in da.dims or C.LON not in da.dims:
            raise InputDataError(
                f"ERA5 {v} in {da.attrs.get('source_files')} has dims {da.dims}, not a latitude/longitude grid; "
                "forcings need gridded ERA5 (a 0.25° latitude/longitude grid)"
            )


def _dynamic_input(
    v: str,
    era5: Mapping[str, xr.DataArray],
    day: Callable[[str], xr.DataArray],
    cells: Callable[[xr.DataArray, str], xr.DataArray],
    start: str,
    end: str,
) -> xr.DataArray:
    """Dynamic input `v` (time, latitude, longitude), float32 with its CF attrs; `day(name)` gives
    the daily values of an ERA5 variable and `cells(da, name)` puts them on the cell centres."""
    if v == "log_tp":
        x = log_precip(cells(day("tp"), "tp") * MM_PER_M)
    elif v == "t2m" or v == "skt":
        x = cells(day(v), v)
    elif v == "snr":
        x = cells(net_radiation_mj(day("ssr"), day("str")), "ssr+str")
    elif v == "ssrd":
        x = cells(day("ssrd"), "ssrd") / J_PER_MJ
    elif v == "q":
        # humidity is nonlinear in d2m and sp: computed per time step before the daily mean
        d2m, sp = xr.align(era5["d2m"], era5["sp"], join="inner")
        qh = specific_humidity(d2m, sp)
        qh.attrs = {
            "source_files": list(era5["d2m"].attrs.get("source_files", []))
            + list(era5["sp"].attrs.get("source_files", []))
        }
        x = cells(daily(qh, "q (from d2m and sp)", start, end, accumulated=False), "q")
    return x.astype(np.float32).assign_attrs(cf_attrs(v))


def _sm_era5(day: Callable[[str], xr.DataArray], cells: Callable[[xr.DataArray, str], xr.DataArray]) -> xr.DataArray:
    """ERA5 soil moisture on the target layers (layer, time, latitude, longitude), float32 with its
    CF attrs: swvl1..3 (daily, on the cell centres) weighted per `era5_layer_weights`."""
    sm = {k: cells(day(k), k) for k in C.ERA5_SM_VARS}
    layers = []
    for layer, w in era5_layer_weights().items():
        layers.append(sum(wk * sm[k] for k, wk in w.items()))
    out = (
        xr.concat(layers, dim=C.LAYER)
        .assign_coords({C.LAYER: np.array(C.LAYERS, dtype=object)})
        .transpose(C.LAYER, C.TIME, C.LAT, C.LON)
        .astype(np.float32)
        .assign_attrs(cf_attrs(C.SM_ERA5))
    )
    out.attrs["layer_weights"] = str(C.ERA5_TO_TARGET_WEIGHTS)
    return out


def _forcings_dataset(out: Mapping[str, xr.DataArray], accumulation: Accumulation) -> xr.Dataset:
    """The variables `out` as one dataset, with the grid's coordinate attrs and the dataset attrs
    recording the accumulation convention and the grid handling."""
    ds = xr.Dataset(out)
    attrs = grid_coord_attrs()
    for d in (C.LAT, C.LON, C.LAYER):
        if d in ds.coords:
            ds[d].attrs.update(attrs[d])
    ds[C.TIME].attrs.update({"long_name": "UTC day", "standard_name": "time"})
    ds.attrs["era5_accumulation_convention"] = accumulation
    ds.attrs["era5_grid_handling"] = "ERA5 points on multiples of 0.25 deg averaged (4 points) to 0.25 deg cell centres"
    return ds


def build_forcings(
    era5: Mapping[str, xr.DataArray],
    start: str,
    end: str,
    lat_range: Sequence[float],
    lon_range: Sequence[float],
    inputs: Sequence[str] = C.DYNAMIC_INPUTS,
    accumulation: Accumulation = "hourly",
    with_sm: bool = True,
) -> xr.Dataset:
    """The forcings store's dataset (lazy): `inputs` (time, latitude, longitude) and `sm_era5`
    (layer, time, latitude, longitude), on the region's 0.25° cells, days start..end.

    Args:
      era5: `read_era5` output (short names, ERA5 units).
      start, end: first and last forcing day (ISO).
      lat_range, lon_range: region edges.
      inputs: dynamic inputs to build (any of `constants.DYNAMIC_INPUTS`).
      accumulation: hourly accumulation convention ("hourly" = ERA5/CDS, "since_00utc" = ERA5-Land).
      with_sm: also build `sm_era5` from swvl1..3.
    """
    lats, lons = region_cells(lat_range, lon_range)
    _check_era5(era5, inputs)

    def day(name: str) -> xr.DataArray:
        return daily(era5[name], name, start, end, accumulated=name in ACCUMULATED, accumulation=accumulation)

    def cells(da: xr.DataArray, name: str) -> xr.DataArray:
        return to_cell_centres(da, lats, lons, f"ERA5 {name} ({', '.join(map(str, era5_files(era5, name)))[:200]})")

    out = {v: _dynamic_input(v, era5, day, cells, start, end) for v in inputs}
    if with_sm:
        out[C.SM_ERA5] = _sm_era5(day, cells)
    return _forcings_dataset(out, accumulation)


def era5_files(era5: Mapping[str, xr.DataArray], name: str) -> list[str]:
    da = era5.get(name)
    return list(da.attrs.get("source_files", [])) if da is not None else []


def long_term_statics(
    forcings: xr.Dataset, start: str, end: str, p_min_mm_year: float = 1.0
) -> tuple[xr.Dataset, dict]:
    """`tp` (mean annual precipitation [mm year-1]) and `arid` over the days start..end.

    Computed from the daily forcings (`log_tp`, `snr`): P = mean of expm1(log_tp) [mm day-1],
    tp = 365.25·P, arid = (mean snr / 2.45) / max(P, p_min) with p_min = p_min_mm_year / 365.25.

    Returns:
      (dataset with `tp`, `arid` on (latitude, longitude), info for the report: the number of
      cells where the precipitation floor applied).
    """
    sel = forcings.sel({C.TIME: slice(start, end)})
    if sel.sizes[C.TIME] == 0:
        raise InputDataError(
            f"the forcings have no day in {start}..{end} to compute the long-term statics tp and arid over"
        )
    p = np.expm1(sel["log_tp"].astype(np.float64)).mean(C.TIME, skipna=False)
    rn = sel["snr"].astype(np.float64).mean(C.TIME, skipna=False)
    p_min = p_min_mm_year / DAYS_PER_YEAR
    tp = (p * DAYS_PER_YEAR).astype(np.float32).assign_attrs(cf_attrs("tp"))
    arid = aridity(rn, p, p_min).astype(np.float32).assign_attrs(cf_attrs("arid"))
    arid.attrs["precipitation_floor_mm_year"] = p_min_mm_year
    floored = int((p < p_min).sum())
    ds = xr.Dataset({"tp": tp, "arid": arid})
    ds.attrs["period"] = f"{start}..{end}"
    return ds, {
        "period": [start, end],
        "days": int(sel.sizes[C.TIME]),
        "precipitation_floor_mm_year": p_min_mm_year,
        "cells_at_precipitation_floor": floored,
    }
