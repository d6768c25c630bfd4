"""ERA5 readers: CDS NetCDF (old and new layouts), GRIB (cfgrib), ARCO-ERA5-style Zarr.

Every reader returns ERA5 short names (`t2m`, `tp`, `ssr`, ...) in ERA5's native units, with
the time dimension `time` (UTC), latitude increasing and longitude in −180..180
(`grid.normalize_latlon`). Layout differences handled here:

- CDS NetCDF before 2024: `time`; near-real-time requests may carry an `expver` *dimension*
  (1 = ERA5, 5 = ERA5T): the two are folded into one series, ERA5 preferred.
- CDS NetCDF since 2024: `valid_time`, an `expver` *coordinate* (dropped), `number`.
- GRIB through cfgrib (the optional `grib` extra): several hypercubes per file are merged;
  forecast-style (time, step) axes are flattened onto `valid_time`.
- ARCO-ERA5 Zarr (`gs://gcp-public-data-arco-era5/ar/...`): long names such as
  `2m_temperature` are mapped to short names.
- CMIP-style daily files (xclim test data, some post-processed ERA5): `tas`, `pr`, `rss`, ...
  are mapped to short names and converted (fluxes [W m-2, kg m-2 s-1] times the time step become
  the amounts [J m-2, m] ERA5 writes). A quantity without a CMIP equivalent in the file stays
  missing and the forcing builder says so.

Variables are returned one DataArray per short name (`read_era5`), each with its own time axis:
CDS requests often deliver variables for different periods in different files, and the daily
builder checks each variable's time coverage separately.
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax.errors import InputDataError
from somojax.grid import normalize_latlon
from somojax.prepare.bounds import ERA5 as ERA5_BOUNDS
from somojax.prepare.bounds import Screen, screen_from_terms, screen_terms
from somojax.prepare.bounds import clean as bounds_clean
from somojax.prepare.units import CMIP_FLUX_UNITS, CMIP_NAMES, ERA5_UNITS, LONG_NAMES, check_units, normalize_units

# accumulated quantities: each value is the amount over the preceding time step
ACCUMULATED = ("tp", "ssr", "str", "ssrd")
FORCING_VARS = ("tp", "t2m", "d2m", "sp", "ssr", "str", "ssrd", "skt")
SM_VARS = C.ERA5_SM_VARS
KNOWN = FORCING_VARS + SM_VARS + ("lsm",)

_TIME_NAMES = ("valid_time", "time", "date")


def expand_paths(patterns: Iterable[str | os.PathLike], what: str = "data.era5") -> list[str]:
    """Expands globs; a pattern that matches nothing is an error naming it. URLs pass through."""
    out: list[str] = []
    for pat in patterns:
        pat = str(pat)
        if "://" in pat:
            out.append(pat)
            continue
        hits = sorted(glob.glob(os.path.expanduser(pat)))
        if not hits:
            raise InputDataError(f"{what}: {pat!r} matches no file")
        out += hits
    return out


def _open_one(path: str) -> list[xr.Dataset]:
    """Opens a file lazily (no dask yet): NetCDF, GRIB (may give several hypercubes) or Zarr."""
    p = path.rstrip("/")
    low = p.lower()
    try:
        if low.endswith((".grib", ".grb", ".grib1", ".grib2", ".grb2")):
            try:
                import cfgrib
            except ImportError:
                raise InputDataError(
                    f"{path}: reading GRIB needs cfgrib and eccodes (pip install 'somojax[grib]'), "
                    "or download NetCDF from the CDS instead"
                ) from None
            with warnings.catch_warnings():  # cfgrib's own xarray merge deprecation
                warnings.simplefilter("ignore", FutureWarning)
                return list(cfgrib.open_datasets(p, indexpath="", cache_geo_coords=True))
        if low.endswith(".zarr") or (
            os.path.isdir(p) and (Path(p, "zarr.json").exists() or Path(p, ".zgroup").exists())
        ):
            try:  # ARCO-ERA5 has consolidated metadata; stores written by xarray/zarr 3 may not
                return [xr.open_zarr(p, chunks=None, consolidated=True, decode_timedelta=False)]
            except (KeyError, FileNotFoundError, ValueError):
                return [xr.open_zarr(p, chunks=None, consolidated=False, decode_timedelta=False)]
        _limit_netcdf_chunk_cache()
        return [xr.open_dataset(p, chunks=None, decode_timedelta=False)]
    except InputDataError:
        raise
    except FileNotFoundError:
        raise InputDataError(f"ERA5 file {path} does not exist") from None
    except Exception as e:
        raise InputDataError(
            f"{path}: cannot open as NetCDF, GRIB or Zarr ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def _time_step_seconds(t: np.ndarray) -> float | None:
    if t.size < 2:
        return None
    d = np.diff(t.astype("datetime64[s]").astype(np.int64))
    return float(np.median(d))


def standardize(ds: xr.Dataset, source: str, stated_units: Mapping[str, str] | None = None) -> xr.Dataset:
    """One opened file -> short names, ERA5 units checked, `time` dim, lat/lon normalised.

    Variables somojax does not use are dropped. Data stays lazy. A variable without a `units`
    attribute takes the unit `stated_units` (`data.units`) gives it, else it is an error.
    """
    ds, cmip = _short_names(ds, source, stated_units or {})
    ds = _time_dim(_flatten_forecast_steps(ds))
    _check_increasing_time(ds, source)
    ds = _fold_expver(ds)
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c not in ("latitude", "longitude", "lat", "lon")])
    ds = _convert_cmip(ds, cmip, source)
    for v in ds.data_vars:
        check_units(v, ds[v].attrs.get("units"), ERA5_UNITS[v], source)
    ds = _normalize_grid(ds, source)
    for v in ds.data_vars:
        ds[v].attrs["source_file"] = source
    return ds


def _short_names(
    ds: xr.Dataset, source: str, stated_units: Mapping[str, str]
) -> tuple[xr.Dataset, dict[str, tuple[str, str]]]:
    """Renames long names to short names and keeps the variables somojax uses, with units.

    Takes an opened file and the units `data.units` states; returns the dataset of the known
    short-name variables and the CMIP-named ones, and the CMIP names found ({name: (short,
    kind)}, converted later by `_convert_cmip`).
    """
    ren = {k: v for k, v in LONG_NAMES.items() if k in ds.data_vars and v not in ds.data_vars}
    ds = ds.rename(ren)
    cmip = {k: v for k, v in CMIP_NAMES.items() if k in ds.data_vars and v[0] not in ds.data_vars}
    keep = [v for v in ds.data_vars if v in KNOWN] + list(cmip)
    return _with_stated_units(ds[keep], stated_units, cmip, source), cmip


def _flatten_forecast_steps(ds: xr.Dataset) -> xr.Dataset:
    """GRIB forecast fields on (time, step) -> one `valid_time` axis, sorted; others unchanged."""
    if "step" in ds.dims and "time" in ds.dims and "valid_time" in ds.coords:
        ds = ds.stack(_vt=("time", "step"))
        vt = ds["valid_time"].values
        ds = ds.drop_vars(["time", "step", "valid_time", "_vt"], errors="ignore")
        ds = ds.assign_coords(_vt=vt).rename({"_vt": "valid_time"}).sortby("valid_time")
    return ds


def _time_dim(ds: xr.Dataset) -> xr.Dataset:
    """Names the time dimension `time`, whichever of `_TIME_NAMES` the file uses.

    GRIB's `valid_time` (time + step) replaces `time`/`date` as the dimension; a scalar time
    (GRIB, or a single map) becomes a length-1 dimension; the other time coordinates are
    dropped. A dataset without any time is returned as it is.
    """
    for dim in [d for d in ("time", "date") if d in ds.dims]:
        if "valid_time" in ds.coords and ds["valid_time"].dims == (dim,):
            ds = ds.swap_dims({dim: "valid_time"})
    tname = next((n for n in _TIME_NAMES if n in ds.dims), None)
    if tname is None:
        tname = next((n for n in _TIME_NAMES if n in ds.coords and ds[n].ndim == 0), None)
        if tname is not None:
            ds = ds.expand_dims(tname)
    if tname is not None and tname != C.TIME:
        ds = ds.drop_vars(
            [n for n in _TIME_NAMES if n in ds.coords and n != tname and ds[n].ndim <= 1 and n not in ds.dims],
            errors="ignore",
        )
        ds = ds.rename({tname: C.TIME})
    return ds


def _check_increasing_time(ds: xr.Dataset, source: str) -> None:
    """Raises InputDataError naming the first time stamp of `source` that does not increase."""
    if C.TIME in ds.dims and ds.sizes[C.TIME] > 1:
        t = ds[C.TIME].values
        back = np.nonzero(t[1:] <= t[:-1])[0]
        if back.size:  # a truncated NetCDF-3 file reads the missing time stamps as 0 (1900-01-01, 1970-01-01)
            i = int(back[0])
            raise InputDataError(
                f"{source}: time stamps within this file do not increase ({np.datetime_as_string(t[i + 1], 'h')} follows "
                f"{np.datetime_as_string(t[i], 'h')}): the file may be truncated or damaged (download it again)"
            )


def _fold_expver(ds: xr.Dataset) -> xr.Dataset:
    """Old CDS layout: an `expver` dimension with ERA5 (1) and ERA5T (5) side by side, NaN where
    not valid -> one series, the lower expver preferred. Without the dimension: unchanged."""
    if "expver" in ds.dims:
        order = sorted(ds["expver"].values.tolist(), key=lambda x: int(str(x)))
        merged = ds.sel(expver=order[0])
        for ev in order[1:]:
            merged = merged.combine_first(ds.sel(expver=ev))
        ds = merged.drop_vars("expver", errors="ignore")
    return ds


def _convert_cmip(ds: xr.Dataset, cmip: Mapping[str, tuple[str, str]], source: str) -> xr.Dataset:
    """Replaces each CMIP-named variable ({name: (short, kind)}) by its ERA5 short name.

    States keep their values (units checked); fluxes become amounts over the time step of the
    file's time axis (`_cmip_amount`). Returns the dataset; raises InputDataError on a wrong unit.
    """
    if cmip:
        dt = _time_step_seconds(ds[C.TIME].values) if C.TIME in ds.dims else None
        for name, (short, kind) in cmip.items():
            da = ds[name]
            if kind == "state":
                check_units(f"{name} (CMIP name of {short})", da.attrs.get("units"), ERA5_UNITS[short], source)
                conv = da
            else:
                conv = _cmip_amount(da, name, kind, dt, source)
            conv.attrs.update({"somojax_converted_from": f"{name} [{da.attrs.get('units')}]"})
            ds = ds.drop_vars(name).assign({short: conv})
    return ds


def _cmip_amount(da: xr.DataArray, name: str, kind: str, dt: float | None, source: str) -> xr.DataArray:
    """A CMIP flux (`kind` "precip_flux" in kg m-2 s-1, else W m-2) times the time step `dt` [s]
    -> the amount ERA5 writes (m, J m-2), with its `units` attribute."""
    if dt is None:
        raise InputDataError(f"{source}: cannot convert the flux {name!r} to an amount without a time axis")
    u = normalize_units(da.attrs.get("units"))
    if kind == "precip_flux":
        if u not in ("kg m-2 s-1", "mm s-1"):
            raise InputDataError(
                f"{source}: variable {name!r} has units {da.attrs.get('units')!r}, expected 'kg m-2 s-1'"
            )
        conv = da * (dt / 1000.0)  # kg m-2 s-1 * s -> mm -> m
        conv.attrs = {"units": "m"}
    else:
        if u != "W m-2":
            raise InputDataError(f"{source}: variable {name!r} has units {da.attrs.get('units')!r}, expected 'W m-2'")
        conv = da * dt
        conv.attrs = {"units": "J m-2"}
    return conv


def _normalize_grid(ds: xr.Dataset, source: str) -> xr.Dataset:
    """A dataset on a lat/lon grid -> `grid.normalize_latlon`, float64 coordinates, dimensions
    ordered (time, latitude, longitude, ...). One without a grid (a point series): unchanged."""
    has_grid = all(any(n in ds.dims for n in names) for names in (("latitude", "lat"), ("longitude", "lon")))
    if has_grid:
        ds = normalize_latlon(ds, source)
        for d in (C.LAT, C.LON):
            ds = ds.assign_coords({d: ds[d].astype(np.float64)})
        ds = ds.transpose(*[d for d in (C.TIME, C.LAT, C.LON) if d in ds.dims], ...)
    return ds


def _with_stated_units(
    ds: xr.Dataset, stated: Mapping[str, str], cmip: Mapping[str, tuple[str, str]], source: str
) -> xr.Dataset:
    """Gives each variable without a `units` attribute the unit stated in `data.units`; one with
    neither is an error (units are never guessed from values)."""
    for name in list(ds.data_vars):
        if str(ds[name].attrs.get("units", "")).strip():
            continue
        short, kind = cmip.get(name, (name, "state"))
        unit = stated.get(name)
        if unit is None:
            if "" in ERA5_UNITS[short]:
                continue  # dimensionless (lsm)
            expected = ERA5_UNITS[short][0] if kind == "state" else CMIP_FLUX_UNITS[kind]
            raise InputDataError(
                f"{source}: variable {name!r} has no 'units' attribute; somojax never guesses units from values. If it is in "
                f"{expected!r}, state it in the config: data.units: {{{name}: {expected}}} (override: 'data.units={{{name}: {expected}}}'), "
                "or add the attribute to the file."
            )
        ds[name] = ds[name].assign_attrs(units=unit, units_source="data.units (the file has no units attribute)")
    return ds


# HDF5 chunk cache per open NetCDF variable. netCDF-C's default (64 MiB) is kept for every
# variable of every file while prepare runs, so ERA5 split into per-year files of 11 variables
# held gigabytes of cache whatever the map size; the dask chunks read whole file chunks anyway,
# so a small cache costs no rereads worth measuring (docs/stores.md, forcings.zarr).
NETCDF_CHUNK_CACHE_BYTES = 4 << 20


def _limit_netcdf_chunk_cache() -> None:
    """Sets netCDF4's chunk cache for the files opened from now on (a process-wide setting)."""
    import netCDF4

    size, slots, preemption = netCDF4.get_chunk_cache()
    if size != NETCDF_CHUNK_CACHE_BYTES:
        netCDF4.set_chunk_cache(NETCDF_CHUNK_CACHE_BYTES, slots, preemption)


def open_file(path: str | os.PathLike, stated_units: Mapping[str, str] | None = None) -> xr.Dataset:
    """Opens one ERA5 file (NetCDF/GRIB/Zarr) as a standardised, lazy dataset."""
    path = str(path)
    parts = [standardize(d, path, stated_units) for d in _open_one(path)]
    parts = [p for p in parts if p.data_vars]
    if not parts:
        return xr.Dataset()
    if len(parts) == 1:
        return parts[0]
    return xr.merge(parts, compat="override", join="outer", combine_attrs="drop_conflicts")


def _chunk(da: xr.DataArray, target_bytes: float = 96e6) -> xr.DataArray:
    """Dask chunks of whole maps and as many time steps as fit in ~100 MB (whole days when
    hourly), so that daily reductions stay chunk-local."""
    if C.TIME not in da.dims:
        return da.chunk()
    per_step = max(1, int(np.prod([da.sizes[d] for d in da.dims if d != C.TIME])) * 4)
    n = max(1, int(target_bytes // per_step))
    dt = _time_step_seconds(da[C.TIME].values)
    if dt and dt < 86400 and 86400 % dt == 0:
        per_day = int(86400 // dt)
        n = max(per_day, n // per_day * per_day)
    return da.chunk({C.TIME: min(n, da.sizes[C.TIME])})


def _crop_period(da: xr.DataArray, period: tuple[str, str]) -> xr.DataArray | None:
    """The time steps of `da` (with a non-empty time axis) that the UTC days `period` need, up to
    the next day's 00:00; None when it holds none of them."""
    t0 = np.datetime64(pd.Timestamp(period[0]).normalize().to_datetime64(), "ns")
    t1 = np.datetime64(pd.Timestamp(period[1]).normalize().to_datetime64(), "ns") + np.timedelta64(1, "D")
    tv = da[C.TIME].values.astype("datetime64[ns]")
    keep = np.nonzero((tv >= t0) & (tv <= t1))[0]
    if keep.size == 0:
        return None
    contiguous = keep[-1] - keep[0] + 1 == keep.size
    return da.isel({C.TIME: slice(int(keep[0]), int(keep[-1]) + 1) if contiguous else keep})


def _crop_box(da: xr.DataArray, bbox: tuple[float, float, float, float]) -> xr.DataArray:
    """`da` (on a latitude/longitude grid) cut to bbox (south, north, west, east)."""
    s, n, w, e = bbox
    da = da.sel({C.LAT: slice(s - 1e-6, n + 1e-6)})
    if -180.0 < w and e < 180.0:  # a box touching ±180 needs the wrapped points too
        da = da.sel({C.LON: slice(w - 1e-6, e + 1e-6)})
    return da


def _check_grid(v: str, da: xr.DataArray, f: str, grids: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> None:
    """Records the first grid of variable `v` (from file `f`) in `grids`; raises `InputDataError`
    when a later file's grid differs."""
    if v in grids:
        la, lo, f0 = grids[v]
        if (
            la.shape != da[C.LAT].shape
            or lo.shape != da[C.LON].shape
            or not (np.allclose(la, da[C.LAT].values) and np.allclose(lo, da[C.LON].values))
        ):
            raise InputDataError(
                f"{v}: files {f0} and {f} have different latitude/longitude grids; use one grid for all ERA5 files"
            )
    else:
        grids[v] = (da[C.LAT].values, da[C.LON].values, f)


def _read_pieces(
    files: Sequence[str],
    want: set[str],
    bbox: tuple[float, float, float, float] | None,
    period: tuple[str, str] | None,
    stated_units: Mapping[str, str] | None,
) -> dict[str, list[xr.DataArray]]:
    """{short name: one cropped DataArray per file holding it}, in file order. A variable no file
    holds any of `period` of gets one empty piece, so the daily builder names the missing days."""
    pieces: dict[str, list[xr.DataArray]] = {}
    empty: dict[str, xr.DataArray] = {}
    grids: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    for f in files:
        ds = open_file(f, stated_units)
        for v in ds.data_vars:
            if v not in want:
                continue
            da = ds[v]
            if period is not None and C.TIME in da.dims and da.sizes[C.TIME] > 0:
                cropped = _crop_period(da, period)
                if cropped is None:
                    empty.setdefault(v, da.isel({C.TIME: slice(0, 0)}))
                    continue
                da = cropped
            if bbox is not None and C.LAT in da.dims:
                da = _crop_box(da, bbox)
            if C.LAT in da.dims:
                _check_grid(v, da, f, grids)
            pieces.setdefault(v, []).append(da)
    for v, da in empty.items():
        pieces.setdefault(v, [da])
    return pieces


def _join_pieces(v: str, parts: list[xr.DataArray]) -> xr.DataArray:
    """The pieces of variable `v` as one DataArray, in time order, with `attrs["source_files"]` and
    (with a time axis) `attrs["file_steps"]`; raises `InputDataError` when the files overlap."""
    if C.TIME in parts[0].dims:
        parts = sorted(parts, key=lambda p: p[C.TIME].values[0] if p[C.TIME].size else np.datetime64("NaT"))
    srcs = [p.attrs.get("source_file", "?") for p in parts]
    steps = [int(p.sizes[C.TIME]) for p in parts] if C.TIME in parts[0].dims else None
    if C.TIME in parts[0].dims:
        parts = [_chunk(p) for p in parts]
        da = xr.concat(parts, dim=C.TIME, join="exact", combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]
        t = da[C.TIME].values
        if t.size > 1:
            dup = t[1:] == t[:-1]
            if dup.any() or np.any(t[1:] < t[:-1]):
                first = t[1:][dup][0] if dup.any() else t[1:][t[1:] < t[:-1]][0]
                raise InputDataError(
                    f"{v}: the files {srcs} overlap in time (e.g. {np.datetime_as_string(first, 'h')} appears twice); "
                    "pass each period once"
                )
    else:
        da = parts[0]
    da = da.copy()
    da.attrs["source_files"] = srcs
    if steps is not None:
        da.attrs["file_steps"] = steps
    return da


def read_era5(
    paths: Sequence[str | os.PathLike],
    variables: Iterable[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    what: str = "data.era5",
    period: tuple[str, str] | None = None,
    stated_units: Mapping[str, str] | None = None,
) -> dict[str, xr.DataArray]:
    """Reads ERA5 files into one lazy DataArray per short name, concatenated over time.

    Args:
      paths: files, globs, Zarr stores or URLs (any mix of formats).
      variables: short names to keep (default: all somojax knows).
      bbox: (south, north, west, east) in degrees: crop to this box before anything is loaded.
      what: the config key, for messages.
      period: (first day, last day): keep only the times these UTC days need (up to the next
        day's 00:00, which holds the last hourly accumulation), before any dask graph is built —
        ARCO-ERA5 holds 80+ years of hours.
      stated_units: units of variables whose files have no `units` attribute (`data.units`,
        see `units.stated_units`).

    Returns:
      {short name: DataArray (time, latitude, longitude)} in ERA5 units, data lazy (dask).
      Each array's `attrs["source_files"]` lists the files it came from in time order and
      `attrs["file_steps"]` how many of its time steps each holds.
    """
    files = expand_paths(paths, what)
    want = set(variables) if variables is not None else set(KNOWN)
    pieces = _read_pieces(files, want, bbox, period, stated_units)
    return {v: _join_pieces(v, parts) for v, parts in pieces.items()}


def require(
    era5: Mapping[str, xr.DataArray], names: Iterable[str], files: Sequence[str], what: str = "data.era5"
) -> None:
    """Raises naming the missing short names, what was found and where we looked."""
    missing = [n for n in names if n not in era5]
    if missing:
        cmip = {v[0]: k for k, v in CMIP_NAMES.items()}
        long = {v: k for k, v in LONG_NAMES.items() if "_" in k}
        alias = ", ".join(f"{m} ({long.get(m, '?')}{', CMIP ' + cmip[m] if m in cmip else ''})" for m in missing)
        raise InputDataError(
            f"ERA5 variable(s) missing: {alias}. Found {sorted(era5) or 'nothing usable'} in {what} = {list(files)[:6]}"
            f"{' ...' if len(files) > 6 else ''}. Download them too (see docs/real-data.md)."
        )


# ----------------------------------------------------------------------------------------
# physical plausibility (bounds.ERA5)
# ----------------------------------------------------------------------------------------
def _file_parts(da: xr.DataArray) -> Iterator[tuple[str, xr.DataArray]]:
    """(file, the part of `da` it holds), from `read_era5`'s `source_files` and `file_steps`."""
    srcs = list(da.attrs.get("source_files", [])) or ["?"]
    steps = da.attrs.get("file_steps")
    if not steps or C.TIME not in da.dims:
        yield ", ".join(srcs), da
        return
    i = 0
    for src, n in zip(srcs, steps):
        if n:
            yield src, da.isel({C.TIME: slice(i, i + n)})
        i += n


def _scales(da: xr.DataArray, name: str, accumulation: str) -> tuple[float, float]:
    """(noise scale, day factor) of a variable: accumulations' rounding noise grows with the
    hours per time step, and their mean value times the steps per day is the mean day total
    (running totals since 00 UTC: the mean value is at most the day total, factor 1)."""
    if name not in ACCUMULATED:
        return 1.0, 1.0
    dt = (_time_step_seconds(da[C.TIME].values) if C.TIME in da.dims else None) or 3600.0
    return dt / 3600.0, (86400.0 / dt if accumulation == "hourly" else 1.0)


def screen_era5(
    era5: Mapping[str, xr.DataArray], accumulation: str = "hourly", steps_per_file: int = 0
) -> list[Screen]:
    """The plausibility screen (`bounds.ERA5`) of every variable in every file, in one pass.

    Args:
      era5: `read_era5` output.
      accumulation: `data.era5_accumulation` (how accumulations are stamped).
      steps_per_file: 0 reads every value (exact counts); N > 0 reads N evenly spaced time steps
        of each file (`data.era5_check_steps`: enough to catch a wrong unit, scale or fill value
        in TBs of ERA5, counts only what was read).
    """
    import dask

    jobs = []
    for name, da in era5.items():
        b = ERA5_BOUNDS.get(name)
        if b is None:
            continue
        noise_scale, day_factor = _scales(da, name, accumulation)
        for src, part in _file_parts(da):
            n = part.sizes.get(C.TIME, 1)
            checked = "every value"
            if steps_per_file and C.TIME in part.dims and n > steps_per_file:
                # dask reads the chunks holding these steps (about a day each for global maps)
                idx = np.unique(np.linspace(0, n - 1, steps_per_file).round().astype(np.int64))
                part, checked = part.isel({C.TIME: idx}), f"{idx.size:,} of {n:,} time steps"
            jobs.append(
                (src, name, b, screen_terms(part, b, noise_scale), dict(checked=checked, day_factor=day_factor))
            )
    try:
        terms = dask.compute([j[3] for j in jobs])[0]
    except (OSError, RuntimeError, ValueError, EOFError):  # a damaged file: find and name it
        for src, name, _, job, _ in jobs:
            try:
                dask.compute(job)
            except (OSError, RuntimeError, ValueError, EOFError) as e:
                raise InputDataError(
                    f"{src}: cannot read {name} ({type(e).__name__}: {str(e)[:200]}); the file may be truncated or damaged: download it again"
                ) from None
        raise
    return [screen_from_terms(t, src, name, b, **kw) for (src, name, b, _, kw), t in zip(jobs, terms)]


def clean_era5(era5: Mapping[str, xr.DataArray], accumulation: str = "hourly") -> dict[str, xr.DataArray]:
    """`era5` with the bounds applied lazily: rounding noise set to the bound, values outside NaN."""
    out = {}
    for name, da in era5.items():
        b = ERA5_BOUNDS.get(name)
        out[name] = da if b is None else bounds_clean(da, b, _scales(da, name, accumulation)[0])
    return out
