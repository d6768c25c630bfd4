"""The analysis-ready and output stores: their schema, validation on read, and safe writing.

Every stage reads only the stores of the stage before (docs/design.md#architecture). The schema below is the
contract between them; `open_store` checks it so that a wrong store fails with a message saying
what is wrong instead of a shape error deep inside training.

| store (in the store dir)  | dims                                  | variables |
|---------------------------|---------------------------------------|-----------|
| `forcings.zarr`           | (time, latitude, longitude)           | the dynamic inputs (`log_tp`, `t2m`, `snr`, `ssrd`, `q`, `skt`) |
|                           | (layer, time, latitude, longitude)    | `sm_era5`: ERA5 soil moisture on the target layers |
| `statics.zarr`            | (latitude, longitude)                 | the ten statics, and `land` (1 land, 0 not) |
| `targets.zarr`            | (layer, cell, time)                   | `sm` [m3 m-3], NaN where missing |
|                           | (layer, cell)                         | `n_series`, `provenance` (network/station/sensor@depths) |
|                           | coords on `cell`                      | `cell` (global cell id), `latitude`, `longitude` |
| `truth.zarr` (synthetic)  | (layer, time, latitude, longitude)    | `sm_true` |
| `predictions.zarr`        | (layer, time, latitude, longitude)    | `sm` (ensemble mean), `sm_spread` (member std) |

`latitude` increases and `longitude` runs −180..180 on a 0.25° grid of cell centres; `time` is
daily (datetime64, midnight UTC); `layer` holds `L1`, `L2`, `L3`. Each store has the global
attributes `somojax_store` (its kind) and `somojax_schema` (the schema version).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import xarray as xr

from somojax import constants as C
from somojax.errors import StoreError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StoreSchema:
    """What a store must contain: variables with their dims, and required coordinates."""

    kind: str
    variables: dict[str, tuple[str, ...]]
    coords: tuple[str, ...]
    gridded: bool = True  # has a regular 0.25° latitude/longitude grid
    daily: bool = True  # has a daily time axis


FORCINGS = StoreSchema(
    "forcings",
    {**{v: (C.TIME, C.LAT, C.LON) for v in C.DYNAMIC_INPUTS}, C.SM_ERA5: (C.LAYER, C.TIME, C.LAT, C.LON)},
    (C.TIME, C.LAT, C.LON, C.LAYER),
)
STATICS = StoreSchema(
    "statics",
    {**{v: (C.LAT, C.LON) for v in C.STATIC_INPUTS}, C.LAND_MASK: (C.LAT, C.LON)},
    (C.LAT, C.LON),
    daily=False,
)
TARGETS = StoreSchema(
    "targets",
    {C.SM: (C.LAYER, C.CELL, C.TIME), "n_series": (C.LAYER, C.CELL), "provenance": (C.LAYER, C.CELL)},
    (C.LAYER, C.CELL, C.TIME, C.LAT, C.LON),
    gridded=False,
)
TRUTH = StoreSchema("truth", {C.SM_TRUE: (C.LAYER, C.TIME, C.LAT, C.LON)}, (C.LAYER, C.TIME, C.LAT, C.LON))
PREDICTIONS = StoreSchema(
    "predictions",
    {C.SM: (C.LAYER, C.TIME, C.LAT, C.LON), C.SM_SPREAD: (C.LAYER, C.TIME, C.LAT, C.LON)},
    (C.LAYER, C.TIME, C.LAT, C.LON),
)
SCHEMAS = {s.kind: s for s in (FORCINGS, STATICS, TARGETS, TRUTH, PREDICTIONS)}
FILENAMES = {
    "forcings": C.FORCINGS_STORE,
    "statics": C.STATICS_STORE,
    "targets": C.TARGETS_STORE,
    "truth": C.TRUTH_STORE,
    "predictions": C.PREDICTIONS_STORE,
}


def validate(
    ds: xr.Dataset, kind: str, source: str | os.PathLike = "dataset", variables: Iterable[str] | None = None
) -> None:
    """Raises `StoreError` naming the first problem found against the schema of `kind`.

    Args:
      ds: the dataset (lazily opened is fine: only coordinates are read).
      kind: one of `forcings`, `statics`, `targets`, `truth`, `predictions`.
      source: the store path, for messages.
      variables: the variables required (default: all of the schema). A forcing store made for a
        subset of inputs can be validated against that subset.
    """
    schema = SCHEMAS[kind]
    found = ds.attrs.get("somojax_store")
    if found is not None and found != kind:
        raise StoreError(f"{source} is a {found!r} store, expected a {kind!r} store")
    required = _check_variables(ds, schema, kind, source, variables)
    # a subset of the variables needs only the coordinates of its dimensions (no `layer` without sm_era5)
    coords = (
        schema.coords
        if variables is None
        else [c for c in schema.coords if any(c in dims for dims in required.values())]
    )
    for coord in coords:
        if coord not in ds.coords:
            raise StoreError(f"{source}: coordinate {coord!r} is missing (found {sorted(ds.coords)})")
    if schema.gridded:
        _check_grid(ds, source)
    if schema.daily and C.TIME in ds.coords:
        _check_daily_time(ds[C.TIME].values, source)
    if C.LAYER in ds.coords:
        bad = [str(x) for x in ds[C.LAYER].values if str(x) not in C.LAYERS]
        if bad:
            raise StoreError(f"{source}: unknown layer labels {bad}; expected a subset of {C.LAYERS}")
    if kind == "targets" and ds.sizes.get(C.CELL, 0):
        _check_cell_ids(ds, source)


def _check_variables(
    ds: xr.Dataset, schema: StoreSchema, kind: str, source: str | os.PathLike, variables: Iterable[str] | None
) -> dict[str, tuple[str, ...]]:
    """Raises `StoreError` on the first required variable missing or with other dims than the
    schema's; returns the required variables with their dims ({name: dims})."""
    default_dims = (C.TIME, C.LAT, C.LON) if schema.daily else (C.LAT, C.LON)
    required = schema.variables if variables is None else {v: schema.variables.get(v, default_dims) for v in variables}
    for var, dims in required.items():
        if var not in ds.variables:
            raise StoreError(
                f"{source}: variable {var!r} is missing (the {kind} store needs {sorted(required)}; "
                f"it has {sorted(ds.data_vars)}). Re-run `somojax prepare` or fix the store."
            )
        if tuple(ds[var].dims) != tuple(dims):
            raise StoreError(f"{source}: variable {var!r} has dims {tuple(ds[var].dims)}, expected {tuple(dims)}")
    return required


def _check_grid(ds: xr.Dataset, source: str | os.PathLike) -> None:
    """Raises `StoreError` unless latitude and longitude are increasing 0.25° cell centres, the
    longitudes within -180..180."""
    for d in (C.LAT, C.LON):
        v = np.asarray(ds[d].values, np.float64)
        if v.size > 1 and not np.allclose(np.diff(v), C.GRID_RES, atol=1e-4):
            raise StoreError(f"{source}: {d} must increase in 0.25° steps (got steps {np.unique(np.diff(v))[:4]})")
        off = (v - C.GRID_RES / 2) / C.GRID_RES
        if not np.allclose(off, np.round(off), atol=1e-3):
            raise StoreError(f"{source}: {d} values are not 0.25° cell centres (first: {v[:3]})")
    lon = ds[C.LON].values
    if lon.size and (lon.min() < -180 or lon.max() > 180):
        raise StoreError(f"{source}: longitude must lie in -180..180 (found {lon.min()}..{lon.max()})")


def _check_daily_time(t: np.ndarray, source: str | os.PathLike) -> None:
    """Raises `StoreError` unless the time values `t` are datetime64 consecutive days."""
    if not np.issubdtype(t.dtype, np.datetime64):
        raise StoreError(f"{source}: time has dtype {t.dtype}, expected datetime64")
    if t.size > 1 and not np.all(np.diff(t) == np.timedelta64(1, "D")):
        raise StoreError(f"{source}: time must be consecutive days without gaps")


def _check_cell_ids(ds: xr.Dataset, source: str | os.PathLike) -> None:
    """Raises `StoreError` unless a targets store's cell ids are unique and each is the cell of
    its station's latitude/longitude (`grid.cell_id`)."""
    from somojax.grid import cell_id

    cells = np.asarray(ds[C.CELL].values)
    if np.unique(cells).size != cells.size:
        raise StoreError(f"{source}: cell ids are not unique")
    expect = cell_id(np.asarray(ds[C.LAT].values), np.asarray(ds[C.LON].values))
    wrong = np.nonzero(expect != cells)[0]
    if wrong.size:
        i = int(wrong[0])
        raise StoreError(
            f"{source}: cell {int(cells[i])} has latitude/longitude {float(ds[C.LAT].values[i])}, "
            f"{float(ds[C.LON].values[i])}, which lie in cell {int(expect[i])} ({wrong.size} such cells)"
        )


def store_path(store_dir: str | os.PathLike, kind: str) -> Path:
    """The path of a store of `kind` inside a store directory."""
    return Path(store_dir) / FILENAMES[kind]


def open_store(path: str | os.PathLike, kind: str, variables: Iterable[str] | None = None) -> xr.Dataset:
    """Opens a Zarr store lazily and validates it against the schema of `kind`.

    `path` may be the store itself or a store directory holding it.
    """
    path = Path(path)
    if path.is_dir() and not (path / "zarr.json").exists() and (path / FILENAMES[kind]).exists():
        path = path / FILENAMES[kind]
    if not path.exists():
        raise StoreError(f"the {kind} store {path} does not exist; run the stage that writes it first")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as e:  # zarr raises a variety of errors for broken stores
        raise StoreError(f"{path} is not a readable Zarr store: {e}") from None
    validate(ds, kind, path, variables)
    return ds


def write_store(ds: xr.Dataset, path: str | os.PathLike, kind: str, encoding: dict | None = None) -> Path:
    """Validates `ds` and writes it as a Zarr v3 store atomically (temporary path, then rename),
    with consolidated metadata (`consolidate`).

    A crash mid-write leaves no half-written store behind under `path`.
    """
    path = Path(path)
    validate(ds, kind, path)
    ds = ds.copy()
    ds.attrs.update({"somojax_store": kind, "somojax_schema": SCHEMA_VERSION})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding or {})
        consolidate(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# CF standard names (table version 93) of the variables that have one; the others (log_tp,
# ETOPOsd, arid, domveg) are described by long_name only
STANDARD_NAMES = {
    "t2m": "air_temperature",
    "skt": "surface_temperature",
    "q": "specific_humidity",
    "ssrd": "surface_downwelling_shortwave_flux_in_air",  # MJ m-2 day-1 is a flux, convertible to W m-2
    "snr": "surface_net_downward_radiative_flux",
    "ETOPOavg": "surface_altitude",
    "tp": "lwe_precipitation_rate",
    "clay": "mass_fraction_of_clay_in_soil",
    "sand": "mass_fraction_of_sand_in_soil",
    "silt": "mass_fraction_of_silt_in_soil",
    "poro_top": "soil_porosity",
    "poro_mid": "soil_porosity",
    C.LAND_MASK: "land_binary_mask",
    C.SM: "volume_fraction_of_condensed_water_in_soil",
    C.SM_ERA5: "volume_fraction_of_condensed_water_in_soil",
    C.SM_TRUE: "volume_fraction_of_condensed_water_in_soil",
}


def consolidate(path: str | os.PathLike) -> None:
    """Consolidates a Zarr v3 store's metadata, so that `xarray.open_zarr(path)` reads one
    document instead of every array's (and opens without a fallback warning). Consolidated
    metadata is a zarr-python extension of v3 (its warning says so); other readers ignore it."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
        zarr.consolidate_metadata(str(path))


def cf_attrs(var: str) -> dict:
    """CF attributes (units, long_name, standard_name where CF has one) of a known variable."""
    attrs = {}
    if var in C.UNITS:
        attrs["units"] = C.UNITS[var]
    if var in C.LONG_NAMES:
        attrs["long_name"] = C.LONG_NAMES[var]
    if var in STANDARD_NAMES:
        attrs["standard_name"] = STANDARD_NAMES[var]
    return attrs


def grid_coord_attrs() -> dict[str, dict]:
    """CF attributes of the grid, layer and time coordinates."""
    return {
        C.LAT: {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude of the cell centre"},
        C.LON: {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude of the cell centre"},
        C.LAYER: {"long_name": "soil layer: L1 0-10 cm, L2 10-30 cm, L3 30-50 cm"},
    }
