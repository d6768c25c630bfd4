"""The prediction store: a Zarr v3 template filled tile by tile, with a record of finished work.

Layout (docs/output.md): `sm` and `sm_spread` (layer, time, latitude, longitude) float32, NaN
outside the predicted cells. Zarr v3 shards of (1 layer, shard_time, shard_lat, shard_lon) are
the unit of WRITING: a tile is one shard_lat × shard_lon rectangle of cells, a time block a
multiple of shard_time days, so two writers never touch the same shard (Zarr does not lock).
Inner chunks (chunk_time, chunk_lat, chunk_lon) are the unit of READING, small enough that both
a daily map and a cell's time series read little.

Resuming: the store is created once from a template (coordinates, attributes, empty arrays);
after a (tile, block) has been written, a marker `<store>.progress/t<tile>-b<block>.json` is
written atomically. A restarted rollout skips every marked (tile, block) and recomputes the
others — a (tile, block) killed half-way is rewritten whole, so nothing is lost or written
twice. Processes of a multi-host job write disjoint tiles and their own markers. The attribute
`somojax_complete` is set true only when every (tile, block) is marked; `check_complete` is
what export and evaluation call before they read a store.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from somojax import __version__
from somojax import constants as C
from somojax import stores
from somojax.errors import StoreError, writing
from somojax.infer.engine import NAN_REASON_TEXT

VARIABLES = (C.SM, C.SM_SPREAD)


@dataclass(frozen=True)
class Layout:
    """Coordinates and Zarr layout of a prediction store."""

    layers: tuple[str, ...]
    times: pd.DatetimeIndex
    lat: np.ndarray  # increasing cell centres
    lon: np.ndarray
    shard: tuple[int, int, int]  # (time, lat, lon)
    chunk: tuple[int, int, int]

    def __post_init__(self):
        for a, b, what in zip(self.shard, self.chunk, ("time", "lat", "lon")):
            if a % b:
                raise StoreError(f"layout.shard_{what}={a} must be a multiple of layout.chunk_{what}={b}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.layers), len(self.times), len(self.lat), len(self.lon))

    def tiles(self) -> list[tuple[slice, slice]]:
        """(lat slice, lon slice) of every tile, row-major."""
        _, sy, sx = self.shard
        return [
            (slice(y, min(y + sy, len(self.lat))), slice(x, min(x + sx, len(self.lon))))
            for y in range(0, len(self.lat), sy)
            for x in range(0, len(self.lon), sx)
        ]

    def time_blocks(self, block_days: int) -> list[slice]:
        """Output-day slices of at most `block_days` (a multiple of shard_time, at least one)."""
        st = self.shard[0]
        n = max(st, (block_days // st) * st)
        return [slice(t, min(t + n, len(self.times))) for t in range(0, len(self.times), n)]


def template(layout: Layout, attrs: Mapping[str, object]) -> xr.Dataset:
    """The empty store: coordinates, CF attributes, lazily NaN-filled arrays."""
    st, sy, sx = layout.shard
    chunks = (1, st, sy, sx)
    coord_attrs = stores.grid_coord_attrs()
    bounds = np.array([C.LAYER_BOUNDS_CM[l] for l in layout.layers], np.float64) / 100.0
    data = {}
    for v in VARIABLES:
        a = stores.cf_attrs(v)
        a.update({"grid_mapping": "crs", "coordinates": "layer_depth"})
        if v == C.SM:
            a["standard_name"] = stores.STANDARD_NAMES[C.SM]
        data[v] = ((C.LAYER, C.TIME, C.LAT, C.LON), da.full(layout.shape, np.nan, dtype=np.float32, chunks=chunks), a)
    ds = xr.Dataset(
        data,
        coords={
            C.LAYER: (C.LAYER, np.array(layout.layers, dtype=object), coord_attrs[C.LAYER]),
            C.TIME: (
                C.TIME,
                layout.times.values.astype("datetime64[ns]"),
                {"standard_name": "time", "long_name": "day (UTC)"},
            ),
            C.LAT: (C.LAT, layout.lat, coord_attrs[C.LAT]),
            C.LON: (C.LON, layout.lon, coord_attrs[C.LON]),
            "layer_depth": (
                C.LAYER,
                bounds.mean(axis=1),
                {
                    "standard_name": "depth",
                    "units": "m",
                    "positive": "down",
                    "bounds": "layer_depth_bounds",
                    "long_name": "mid-depth of the soil layer",
                },
            ),
            "layer_depth_bounds": (
                (C.LAYER, "nv"),
                bounds,
                {"units": "m", "long_name": "top and bottom of the soil layer"},
            ),
            "crs": (
                (),
                np.int32(0),
                {
                    "grid_mapping_name": "latitude_longitude",
                    "semi_major_axis": 6378137.0,
                    "inverse_flattening": 298.257223563,
                },
            ),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": "somojax daily soil moisture (EA-LSTM ensemble, SoMo.ml method)",
            "source": f"somojax {__version__}",
            "references": "O, S. & Orth, R. Sci. Data 8, 170 (2021), doi:10.1038/s41597-021-00964-1",
            **{k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in attrs.items()},
        },
    )
    return ds


def _encoding(layout: Layout) -> dict:
    st, sy, sx = layout.shard
    ct, cy, cx = layout.chunk
    return {
        v: {"chunks": (1, ct, cy, cx), "shards": (1, st, sy, sx), "compressors": [zarr.codecs.ZstdCodec(level=1)]}
        for v in VARIABLES
    }


def progress_dir(path: Path) -> Path:
    return path.with_name(path.name + ".progress")


def open_or_create(path: Path, layout: Layout, attrs: Mapping[str, object], fingerprint: str, fresh: bool) -> bool:
    """Creates the store from its template, or checks that an existing one belongs to this run.

    Returns True when the store was (re)created. An existing store made by another run
    (different checkpoints, config, period or grid) is an error unless `fresh`.
    """
    prog = progress_dir(path)
    if not fresh and check_owner(path, fingerprint):
        return False
    # resume safety (kill or Ctrl-C at any moment): the finished-block records go before the
    # store, and the records' folder exists before the store appears, so a store is never seen
    # with records of blocks it has lost, nor without the folder its records go to
    if prog.exists():
        shutil.rmtree(prog)
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    ds = template(
        layout,
        {
            **attrs,
            "somojax_fingerprint": fingerprint,
            "somojax_store": "predictions",
            "somojax_schema": stores.SCHEMA_VERSION,
        },
    )
    try:
        with writing("the prediction store", path):
            ds.to_zarr(tmp, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=_encoding(layout))
            prog.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a template that failed half-way
    return True


def check_owner(path: Path, fingerprint: str) -> bool:
    """Whether the store exists; raises `StoreError` when it belongs to another run (different
    checkpoints, config, period or grid) or is not a readable prediction store."""
    if not path.exists():
        return False
    try:
        found = zarr.open_group(str(path), mode="r").attrs.get("somojax_fingerprint")
    except Exception as e:
        raise StoreError(
            f"{path} exists but is not a readable prediction store ({e}); remove it or use --fresh"
        ) from None
    if found != fingerprint:
        raise StoreError(
            f"{path} holds predictions of another run (fingerprint {found}, this run {fingerprint}: other checkpoints, "
            "config, period or grid). Use `somojax predict --fresh` to replace it, or set infer.output to a new path."
        )
    return True


def marker(path: Path, tile: int, block: int) -> Path:
    return progress_dir(path) / f"t{tile:06d}-b{block:04d}.json"


def finished(path: Path) -> dict[tuple[int, int], dict]:
    """The recorded (tile, block) pairs and their records."""
    out = {}
    prog = progress_dir(path)
    if not prog.exists():
        return out
    for f in prog.glob("t*-b*.json"):
        t, b = f.stem[1:].split("-b")
        out[(int(t), int(b))] = json.loads(f.read_text())
    return out


def write_block(
    path: Path, layout: Layout, tile: tuple[slice, slice], block: slice, values: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Writes one (tile, block): `values[var][layer]` of shape [days, lat, lon] (whole shards)."""
    ys, xs = tile
    with writing("the prediction store", path):
        group = zarr.open_group(str(path), mode="r+")
        for var in VARIABLES:
            arr = group[var]
            for li, layer in enumerate(layout.layers):
                arr[li, block, ys, xs] = values[var][layer]


def mark(path: Path, tile: int, block: int, record: Mapping[str, object]) -> None:
    """Records a finished (tile, block) atomically (after its data write returned)."""
    m = marker(path, tile, block)
    tmp = m.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
    try:
        with writing("a progress marker of the prediction store", m):
            tmp.write_text(json.dumps(record))
            os.replace(tmp, m)
    finally:
        tmp.unlink(missing_ok=True)


def set_attrs(path: Path, attrs: Mapping[str, object]) -> None:
    """Adds global attributes to a store (values JSON-encoded where not scalar) and consolidates
    its metadata, so that a plain `xarray.open_zarr(path)` opens it without a fallback warning
    (consolidated metadata is a zarr-python extension of v3; other readers ignore it)."""
    with writing("the attributes of the prediction store", path):
        group = zarr.open_group(str(path), mode="r+")
        group.attrs.update({k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in attrs.items()})
        stores.consolidate(path)


def check_complete(ds: xr.Dataset, path: Path) -> None:
    """Raises `StoreError` unless `somojax predict` finished every (tile, block) of the store."""
    if ds.attrs.get("somojax_store") != "predictions":
        raise StoreError(
            f"{path} is not a somojax prediction store (no somojax_store=predictions attribute); set infer.output to one"
        )
    if not ds.attrs.get("somojax_complete"):
        done = len(finished(Path(path)))
        raise StoreError(
            f"the prediction store {path} is incomplete ({done} (tile, block) pairs finished): run `somojax predict` with the "
            "same config to finish it (it resumes), or `somojax predict --fresh` to start over"
        )


def sum_nan_counts(records, layers) -> dict[str, dict[str, int]]:
    """NaN outputs per layer and reason, summed over the `nan` entries of block records."""
    total: dict[str, dict[str, int]] = {l: {} for l in layers}
    for r in records:
        for l, counts in r.get("nan", {}).items():
            for k, n in counts.items():
                total.setdefault(l, {})[k] = total.get(l, {}).get(k, 0) + int(n)
    return total


def describe_nan_counts(counts: Mapping[str, int]) -> str:
    """'12 of 3400 values NaN (incomplete window 0, ...)' for one layer's `sum_nan_counts`."""
    reasons = {k: v for k, v in counts.items() if k != "values"}
    parts = ", ".join(f"{NAN_REASON_TEXT.get(k, k)} {v}" for k, v in reasons.items())
    return f"{sum(reasons.values())} of {counts.get('values', 0)} predicted values NaN ({parts})"
