"""Reference soil-moisture datasets, read lazily and sampled at the target cells.

A reference is a gridded daily product on some latitude/longitude grid, with the layers it
represents. Readers (all lazy, through xarray/dask):

- **ERA5** interpolated to the target layers: `sm_era5` of the forcings store (always there).
- **ESA CCI SM** daily images (`ESACCI-SOILMOISTURE-L3S-SSMV-*-YYYYMMDD000000-fv*.nc`, variable
  `sm`, latitude descending): a folder, a glob or a list of files. Surface product: layer L1 only.
- **Per-layer yearly NetCDF files**: SoMo.ml (`SoMo.ml_v1_<LAYER>_<YYYY>.nc`) and somojax's own
  export (`somojax_<LAYER>_<YYYY>.nc`); `<LAYER>` may be `L1`/`layer1`.
- **A somojax prediction store** (Zarr, `sm` (layer, time, latitude, longitude)).
- **Any other NetCDF/Zarr product** with one soil-moisture variable, when told which layers it
  stands for (see `parse_spec`), e.g. GLEAM root-zone soil moisture for L2 and L3.

`sample_cells` takes the value of the grid cell nearest to each target cell centre (within half
the product's grid step; NaN outside its coverage) on the target days (NaN where the product has
no data), giving `[layer, cell, time]` like the targets.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.errors import ConfigError, InputDataError
from somojax.grid import normalize_latlon
from somojax.utils.logging import get_logger

log = get_logger("evaluate")

ESA_CCI_RE = re.compile(r"ESACCI-SOILMOISTURE-.*?-(\d{8})\d*-fv[\d.]+\.nc$", re.IGNORECASE)
LAYER_FILE_RE = re.compile(r"^(?P<prefix>.+?)_(?:L|layer)(?P<layer>[1-3])_(?P<year>\d{4})\.nc4?$", re.IGNORECASE)
SPEC_RE = re.compile(r"^(?P<name>[^=@:]+?)?(?:@(?P<layers>[^=:]+))?(?::(?P<var>[^=]+))?=(?P<path>.+)$")


@dataclass(frozen=True)
class Reference:
    """A gridded reference product.

    Attributes:
      name: the dataset's name in tables and figures (e.g. `ESA CCI`).
      layers: the target layers it represents.
      data: soil moisture [m3 m-3], [layer, time, latitude, longitude] (lazy), latitude increasing,
        longitude −180..180, `layer` labelled with `layers`.
      source: where it was read from.
      kind: `era5`, `esa_cci`, `layer_files`, `store` or `generic`.
    """

    name: str
    layers: tuple[str, ...]
    data: xr.DataArray
    source: str
    kind: str


@dataclass(frozen=True)
class RefSpec:
    """A parsed `evaluate.references` entry: `[name][@L1,L2][:variable]=path` or just `path`."""

    path: str
    name: str | None = None
    layers: tuple[str, ...] | None = None
    variable: str | None = None


def parse_spec(spec: str) -> RefSpec:
    """Parses a reference entry.

    `path` alone lets the reader infer name, layers and variable from the files;
    `GLEAM@L2,L3:SMroot=/data/gleam/SMroot_*.nc` names the dataset, the layers it stands for and
    its variable. A path that itself contains `=` must be given in the long form (`name=path`).
    """
    m = SPEC_RE.match(spec) if "=" in spec else None
    if not m:
        return RefSpec(path=spec)
    layers = None
    if m.group("layers"):
        layers = tuple(s.strip() for s in m.group("layers").split(",") if s.strip())
        bad = [x for x in layers if x not in C.LAYERS]
        if bad:
            raise ConfigError(f"evaluate.references entry {spec!r}: unknown layers {bad}; use {C.LAYERS}")
    return RefSpec(
        path=m.group("path"),
        name=(m.group("name") or "").strip() or None,
        layers=layers,
        variable=(m.group("var") or "").strip() or None,
    )


# ----------------------------------------------------------------------------------------
# opening
# ----------------------------------------------------------------------------------------
def _is_zarr(p: Path) -> bool:
    return p.suffix == ".zarr" or (p.is_dir() and ((p / "zarr.json").exists() or (p / ".zgroup").exists()))


def expand_files(path: str | os.PathLike | Sequence[str]) -> list[Path]:
    """A folder (searched recursively for *.nc / *.nc4), a glob, a file or a list of those, sorted."""
    if isinstance(path, (list, tuple)):
        return sorted({f for p in path for f in expand_files(p)})
    p = Path(path)
    if p.is_dir():
        files = [Path(f) for ext in ("nc", "nc4") for f in glob.glob(str(p / "**" / f"*.{ext}"), recursive=True)]
    elif any(ch in str(path) for ch in "*?["):
        files = [Path(f) for f in glob.glob(str(path), recursive=True)]
    else:
        files = [p] if p.exists() else []
    if not files:
        raise ConfigError(f"reference {path}: no such file, or no NetCDF files (*.nc, *.nc4) found there")
    return sorted(files)


def _to_daily(da: xr.DataArray, source: str) -> xr.DataArray:
    if C.TIME not in da.dims:
        for cand in ("valid_time", "date", "day"):
            if cand in da.dims:
                da = da.rename({cand: C.TIME})
                break
        else:
            raise InputDataError(f"{source}: no time dimension (found dims {da.dims})")
    t = pd.DatetimeIndex(da[C.TIME].values).floor("D")
    if t.has_duplicates:
        raise InputDataError(
            f"{source}: more than one value per day ({int(t.duplicated().sum())} duplicate days); daily products only"
        )
    return da.assign_coords({C.TIME: t}).sortby(C.TIME)


def _pick_variable(ds: xr.Dataset, variable: str | None, source: str) -> xr.DataArray:
    if variable:
        if variable not in ds.data_vars:
            raise ConfigError(f"reference {source}: variable {variable!r} not found; it has {sorted(ds.data_vars)}")
        return ds[variable]
    if C.SM in ds.data_vars:
        return ds[C.SM]
    spatial = {"lat", "lon", C.LAT, C.LON}
    cands = [v for v in ds.data_vars if len(spatial & set(ds[v].dims)) == 2 and ds[v].ndim >= 3]
    if len(cands) == 1:
        return ds[cands[0]]
    raise ConfigError(
        f"reference {source}: cannot tell which variable is soil moisture (candidates {cands}); "
        "name it in evaluate.references as `name:variable=path`"
    )


def _finish(da: xr.DataArray, layers: tuple[str, ...], source: str) -> xr.DataArray:
    """Normalises grid and time, gives a `layer` dim labelled `layers`, float32 attributes."""
    da = normalize_latlon(da, source)
    da = _to_daily(da, source)
    if C.LAYER not in da.dims:
        da = da.expand_dims({C.LAYER: list(layers)})
    else:
        da = da.assign_coords({C.LAYER: [str(x) for x in da[C.LAYER].values]}).sel({C.LAYER: list(layers)})
    keep = {C.LAYER, C.TIME, C.LAT, C.LON}
    extra = [d for d in da.dims if d not in keep]
    if extra:
        raise InputDataError(
            f"{source}: unexpected dimensions {extra}; a reference has (layer, time, latitude, longitude)"
        )
    da = da.drop_vars([c for c in da.coords if c not in keep])
    return da.transpose(C.LAYER, C.TIME, C.LAT, C.LON)


def _date_filter(
    files: list[Path], regex: re.Pattern, fmt_group: str, start: str | None, end: str | None
) -> list[Path]:
    if not (start or end):
        return files
    lo = pd.Timestamp(start) if start else pd.Timestamp.min
    hi = pd.Timestamp(end) if end else pd.Timestamp.max
    out = []
    for f in files:
        m = regex.search(f.name)
        if fmt_group == "date":
            d0 = d1 = pd.Timestamp(m.group(1))
        else:  # a year
            y = int(m.group("year"))
            d0, d1 = pd.Timestamp(y, 1, 1), pd.Timestamp(y, 12, 31)
        if d1 >= lo.normalize() and d0 <= hi:
            out.append(f)
    return out


def open_esa_cci(path, start: str | None = None, end: str | None = None, name: str = "ESA CCI") -> Reference:
    """ESA CCI SM daily images (folder, glob or files) as a lazy L1 reference.

    Only files whose date (from the file name) lies in [start, end] are opened.
    """
    files = [f for f in expand_files(path) if ESA_CCI_RE.search(f.name)]
    if not files:
        raise ConfigError(f"reference {path}: no ESA CCI daily files (ESACCI-SOILMOISTURE-...-YYYYMMDD000000-fv*.nc)")
    files = _date_filter(files, ESA_CCI_RE, "date", start, end)
    if not files:
        raise InputDataError(f"reference {path}: no ESA CCI file falls in the evaluation period {start}..{end}")
    ds = xr.open_mfdataset(
        [str(f) for f in files],
        combine="by_coords",
        preprocess=lambda d: d[[C.SM]],
        data_vars="minimal",
        coords="minimal",
        compat="override",
    )
    return Reference(name, ("L1",), _finish(ds[C.SM], ("L1",), str(path)), str(path), "esa_cci")


def open_layer_files(
    path, start: str | None = None, end: str | None = None, name: str | None = None, variable: str | None = None
) -> Reference:
    """Yearly per-layer NetCDF files (`<prefix>_<LAYER>_<YYYY>.nc`: SoMo.ml, somojax export)."""
    files = [f for f in expand_files(path) if LAYER_FILE_RE.match(f.name)]
    if not files:
        raise ConfigError(f"reference {path}: no files named <prefix>_<LAYER>_<YYYY>.nc")
    files = _date_filter(files, LAYER_FILE_RE, "year", start, end) or files
    by_layer: dict[str, list[Path]] = {}
    prefixes = set()
    for f in files:
        m = LAYER_FILE_RE.match(f.name)
        by_layer.setdefault(f"L{m.group('layer')}", []).append(f)
        prefixes.add(m.group("prefix"))
    if name is None:
        p = sorted(prefixes)[0]
        name = (
            "SoMo.ml"
            if p.lower().startswith("somo.ml")
            else ("somojax (export)" if p.lower().startswith("somojax") else p)
        )
    parts = []
    for layer in sorted(by_layer):
        ds = xr.open_mfdataset(
            [str(f) for f in sorted(by_layer[layer])],
            combine="by_coords",
            data_vars="minimal",
            coords="minimal",
            compat="override",
        )
        da = _pick_variable(ds, variable, str(path))
        if C.LAYER in da.dims:
            da = da.squeeze(C.LAYER, drop=True)
        parts.append(_finish(da, (layer,), f"{path} ({layer})"))
    layers = tuple(sorted(by_layer))
    data = xr.concat(parts, dim=C.LAYER, join="outer") if len(parts) > 1 else parts[0]
    return Reference(name, layers, data, str(path), "layer_files")


def open_store_reference(
    path, name: str | None = None, variable: str | None = None, layers: tuple[str, ...] | None = None
) -> Reference:
    """A Zarr store with soil moisture (layer, time, latitude, longitude), e.g. a somojax prediction store."""
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as e:  # noqa: BLE001 - zarr raises many kinds
        raise InputDataError(f"reference {path}: not a readable Zarr store: {e}") from None
    da = _pick_variable(ds, variable, str(path))
    if C.LAYER in da.dims:
        have = tuple(str(x) for x in da[C.LAYER].values)
        layers = tuple(x for x in (layers or have) if x in have)
    elif layers is None:
        raise ConfigError(f"reference {path}: no `layer` dimension; say which layers it stands for: name@L1=path")
    if name is None:
        name = "somojax" if ds.attrs.get("somojax_store") == "predictions" else Path(path).name.removesuffix(".zarr")
    return Reference(name, layers, _finish(da, layers, str(path)), str(path), "store")


def open_generic(path, name: str | None, layers: tuple[str, ...] | None, variable: str | None) -> Reference:
    files = expand_files(path)
    ds = xr.open_mfdataset(
        [str(f) for f in files], combine="by_coords", data_vars="minimal", coords="minimal", compat="override"
    )
    da = _pick_variable(ds, variable, str(path))
    if C.LAYER in da.dims:
        have = tuple(str(x) for x in da[C.LAYER].values)
        layers = tuple(x for x in (layers or have) if x in have)
    elif layers is None:
        raise ConfigError(
            f"reference {path}: cannot tell which layers it represents; write it as "
            "`name@L1=path` (e.g. `GLEAM@L2,L3:SMroot=/data/gleam/*.nc`)"
        )
    return Reference(name or files[0].stem, layers, _finish(da, layers, str(path)), str(path), "generic")


def open_reference(spec: str, start: str | None = None, end: str | None = None) -> Reference:
    """Opens one `evaluate.references` entry (see `parse_spec`), choosing the reader from the files."""
    s = parse_spec(spec)
    p = Path(s.path)
    if _is_zarr(p):
        if not p.exists():
            raise ConfigError(f"reference {p}: no such Zarr store")
        ref = open_store_reference(p, s.name, s.variable, s.layers)
    else:
        files = expand_files(s.path)
        if all(ESA_CCI_RE.search(f.name) for f in files):
            ref = open_esa_cci(files, start, end, name=s.name or "ESA CCI")
        elif all(LAYER_FILE_RE.match(f.name) for f in files):
            ref = open_layer_files(files, start, end, name=s.name, variable=s.variable)
        else:
            ref = open_generic(files, s.name, s.layers, s.variable)
    if s.layers and ref.kind != "generic":
        keep = tuple(x for x in s.layers if x in ref.layers)
        ref = replace(ref, layers=keep, data=ref.data.sel({C.LAYER: list(keep)}))
    log.info("reference %s: %s, layers %s, %d days", ref.name, ref.source, ",".join(ref.layers), ref.data.sizes[C.TIME])
    return ref


def era5_reference(forcings: xr.Dataset, name: str = "ERA5") -> Reference:
    """ERA5 soil moisture interpolated to the target layers (`sm_era5` of the forcings store)."""
    da = forcings[C.SM_ERA5]
    layers = tuple(str(x) for x in da[C.LAYER].values)
    return Reference(name, layers, da.transpose(C.LAYER, C.TIME, C.LAT, C.LON), "forcings store: sm_era5", "era5")


# ----------------------------------------------------------------------------------------
# sampling at target cells
# ----------------------------------------------------------------------------------------
def sample_cells(
    data: xr.DataArray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    time: pd.DatetimeIndex | np.ndarray,
    cell: np.ndarray | None = None,
) -> xr.DataArray:
    """Values of gridded `data` [layer, time, latitude, longitude] at cell centres and days.

    Nearest grid point within half the product's grid step (NaN outside its coverage), reindexed
    to `time` (NaN on days it lacks). Returns a lazy `[layer, cell, time]` DataArray.
    """
    lat = np.asarray(latitude, np.float64)
    lon = grid.wrap_lon(longitude)
    ilat, oklat = grid.nearest_index(data[C.LAT].values, lat)
    ilon, oklon = grid.nearest_index(data[C.LON].values, lon, periodic=True)
    cell = np.arange(lat.size) if cell is None else np.asarray(cell)
    t = pd.DatetimeIndex(time)
    sub = data.sel({C.TIME: slice(t[0], t[-1])}) if data.sizes[C.TIME] else data
    pts = sub.isel({C.LAT: xr.DataArray(ilat, dims=C.CELL), C.LON: xr.DataArray(ilon, dims=C.CELL)})
    pts = pts.drop_vars([C.LAT, C.LON]).assign_coords({C.CELL: cell})
    pts = pts.where(xr.DataArray(oklat & oklon, dims=C.CELL, coords={C.CELL: cell}))
    pts = pts.reindex({C.TIME: t})
    return pts.transpose(C.LAYER, C.CELL, C.TIME)
