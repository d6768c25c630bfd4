"""`somojax predict`: checkpoints + analysis-ready stores -> the prediction store, tile by tile.

Order of work (docs/inference.md):
1. load the layers' bundles (and the upper layers the cascade needs), open the stores, check —
   before any compute — that variables, input order, statistics, period and spin-up fit;
2. create (or re-open) the store from its template; list the (tile, time block) pairs not yet
   recorded as finished;
3. for each pair: read the tile's region cells over the block plus the cascade's spin-up
   (a reader thread prefetches the next pair), run the cascade on device (cells sharded over the
   `data` mesh axis, members one after another), write every layer's mean and spread (a writer
   thread), record the pair as finished;
4. write the summary (cells, days, mode, cell-steps, wall time, throughput) into the store.

`predict_cells` is the in-memory variant for a list of cells (cross-validation, checks).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import jax
import numpy as np
import pandas as pd
import xarray as xr
from jax.sharding import NamedSharding, PartitionSpec as P

from somojax import __version__
from somojax import constants as C
from somojax import grid, stores
from somojax.checkpoint import Bundle, load_bundle
from somojax.config import Config
from somojax.errors import CheckpointError, ConfigError, InputDataError
from somojax.infer import engine, kernels
from somojax.infer import store as pstore
from somojax.sharding import make_mesh
from somojax.utils import distributed, faults
from somojax.utils.logging import Progress, format_seconds, get_logger
from somojax.models.kernel import KernelOptions, infer_kernel

log = get_logger("infer")


# ----------------------------------------------------------------------------------------
# models and inputs
# ----------------------------------------------------------------------------------------
def needed_layers(layers: Sequence[str]) -> list[str]:
    """The layers to run for `layers`: themselves and every layer above them in the cascade."""
    need = set(layers)
    for l in layers:
        need |= {u.removeprefix("sm_") for u in C.UPPER_LAYER_INPUTS[l]}
        for u in list(need):
            need |= {v.removeprefix("sm_") for v in C.UPPER_LAYER_INPUTS[u]}
    return [l for l in C.LAYERS if l in need]


def load_bundles(cfg: Config, layers: Sequence[str] | None = None) -> tuple[list[str], dict[str, Bundle]]:
    """(output layers, bundles of every layer the cascade needs) from `cfg.checkpoint_dir`."""
    if layers:
        bad = [l for l in layers if l not in C.LAYERS]
        if bad:
            raise ConfigError(f"unknown layers {bad}; expected some of {list(C.LAYERS)}")
        out = [l for l in C.LAYERS if l in layers]
    else:
        out = [l for l in C.LAYERS if (cfg.checkpoint_dir / l).is_dir()]
        if not out:
            raise CheckpointError(
                f"no trained layer under {cfg.checkpoint_dir}; run `somojax train` or `somojax import-torch` first"
            )
    bundles = {}
    for l in needed_layers(out):
        try:
            bundles[l] = _load_checked(cfg.checkpoint_dir / l, l)
        except CheckpointError as e:
            why = "" if l in out else f" (predicting {out} needs {l}: the cascade)"
            raise CheckpointError(f"{e}{why}") from None
    return out, bundles


def _load_checked(directory: Path, layer: str) -> Bundle:
    """`load_bundle`, with a damaged checkpoint, another layer's model or non-finite weights as errors."""
    try:
        b = load_bundle(directory)
    except CheckpointError:
        raise
    except Exception as e:  # orbax and tensorstore raise many types for files they cannot read
        raise CheckpointError(
            f"checkpoint {directory} cannot be read ({type(e).__name__}: {str(e)[:200]}); it is damaged or not a "
            f"somojax checkpoint: train {layer} again (`somojax train --fresh --layers {layer}`) or import its weights again"
        ) from None
    if b.layer != layer:
        raise CheckpointError(
            f"checkpoint {directory} holds a model of layer {b.layer}, not {layer}; put each layer's checkpoint in checkpoints/<layer>"
        )
    bad = [k for k, v in b.params.items() if not np.isfinite(np.asarray(v)).all()]
    if bad:
        raise CheckpointError(
            f"checkpoint {directory}: the weights {bad} hold NaN or Inf (did training diverge?); train {layer} again"
        )
    return b


def check_settings(cfg: Config, bundles: Mapping[str, Bundle]) -> None:
    """The config agrees with what each checkpoint records: window length, outputs per window,
    the set of inputs (a PyTorch import records what it was told; a mismatch means the config
    describes another model)."""
    for layer, b in bundles.items():
        where = cfg.checkpoint_dir / layer
        pairs = (
            ("model.seq_length", b.model.seq_length, cfg.model.seq_length),
            ("model.predict_last_n", b.model.predict_last_n, cfg.model.predict_last_n),
            (
                "data.dynamic_inputs",
                sorted(v for v in b.dynamic_inputs if not v.startswith("sm_L")),
                sorted(cfg.data.dynamic_inputs),
            ),
            ("data.static_inputs", sorted(b.static_inputs), sorted(cfg.data.static_inputs)),
        )
        for key, recorded, configured in pairs:
            if recorded != configured:
                fix = f", or set {key}={recorded}" if not isinstance(recorded, list) else ""
                raise CheckpointError(
                    f"the {layer} checkpoint {where} records {key}={recorded}, but config {cfg.name} says {key}={configured}: "
                    f"predict with the config the model was trained or imported with (-c somo-v1 for SoMo.ml v1){fix}"
                )


def check_inputs(bundles: Mapping[str, Bundle], forcings: xr.Dataset, statics: xr.Dataset, source: str) -> None:
    """Every variable a model reads exists in the stores and has statistics (before compute)."""
    for layer, b in bundles.items():
        dyn = [v for v in b.dynamic_inputs if not v.startswith("sm_L")]
        upper = [v for v in b.dynamic_inputs if v.startswith("sm_L")]
        if sorted(upper) != sorted(C.UPPER_LAYER_INPUTS[layer]):
            raise CheckpointError(
                f"the {layer} model reads upper-layer inputs {upper}, but the cascade gives {list(C.UPPER_LAYER_INPUTS[layer])}"
            )
        missing = [v for v in dyn if v not in forcings.data_vars] + [
            v for v in b.static_inputs if v not in statics.data_vars
        ]
        if missing:
            raise CheckpointError(
                f"the {layer} model needs {missing}, which the stores in {source} do not have "
                f"(forcings: {sorted(forcings.data_vars)}, statics: {sorted(statics.data_vars)}). "
                "Prepare the stores with the model's inputs (data.dynamic_inputs / data.static_inputs)."
            )
        nostats = [
            v for v in list(b.dynamic_inputs) + list(b.static_inputs) if v not in b.stats.mean or v not in b.stats.std
        ]
        if nostats or layer not in b.stats.target_mean:
            raise CheckpointError(
                f"the {layer} checkpoint has no normalisation statistics for {nostats or ['its target']}"
            )


def check_period(
    bundles: Mapping[str, Bundle], layers: Sequence[str], t: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp
) -> None:
    """The forcing days `t` must start early enough for every layer's spin-up and reach the end."""
    if end > t[-1] or start > end:
        raise InputDataError(
            f"prediction period {start.date()}..{end.date()} is not inside the forcing period {t[0].date()}..{t[-1].date()}"
            + (" (start after end)" if start > end else "")
        )
    short = []
    for l in layers:
        need = engine.spinup_days(bundles, l)
        first = start - pd.Timedelta(days=need)
        if first < t[0]:
            short.append(
                f"{l} needs {need} days of forcing before {start.date()} (from {first.date()}), {(t[0] - first).days} days are missing"
            )
    if short:
        raise InputDataError(
            f"the forcing starts on {t[0].date()}, too late for the prediction period starting {start.date()}: "
            + "; ".join(short)
            + ". Start infer.start later or prepare forcings from earlier."
        )


def _read(
    ds: xr.Dataset, names: Sequence[str], t0, t1, ys: slice, xs: slice, rows: np.ndarray, cols: np.ndarray
) -> dict[str, np.ndarray]:
    """Raw values of `names` at cells (rows, cols) of a tile: dynamic [C, T], static [C]."""
    out = {}
    for v in names:
        da = ds[v]
        if C.TIME in da.dims:
            block = da.isel({C.LAT: ys, C.LON: xs}).sel({C.TIME: slice(t0, t1)}).values  # [T, y, x]
            out[v] = np.ascontiguousarray(block[:, rows, cols].T, dtype=np.float32)
        else:
            out[v] = da.isel({C.LAT: ys, C.LON: xs}).values[rows, cols].astype(np.float32)
    return out


def inputs_of(bundles: Mapping[str, Bundle]) -> tuple[list[str], list[str]]:
    dyn, sta = [], []
    for b in bundles.values():
        dyn += [v for v in b.dynamic_inputs if not v.startswith("sm_L") and v not in dyn]
        sta += [v for v in b.static_inputs if v not in sta]
    return dyn, sta


# ----------------------------------------------------------------------------------------
# in-memory prediction at cells
# ----------------------------------------------------------------------------------------
def predict_cells(
    bundles: Mapping[str, Bundle],
    forcings: xr.Dataset,
    statics: xr.Dataset,
    cells: Sequence[int] | np.ndarray,
    start: str,
    end: str,
    layers: Sequence[str] | None = None,
    mode: str = "auto",
    options: KernelOptions = KernelOptions(),
) -> xr.Dataset:
    """Predictions at a list of cells over start..end (the cascade in one pass).

    Args:
      bundles: models by layer (those the cascade needs).
      forcings, statics: the analysis-ready stores (`stores.open_store`).
      cells: global cell ids (`grid.cell_id`).
      start, end: output period (ISO dates); the forcing must cover the spin-up before start.
      layers: output layers (default: all in `bundles`).

    Returns:
      Dataset with `sm`, `sm_spread` (layer, cell, time) and `latitude`, `longitude` on `cell`;
      attrs `mode` and `cell_steps`.
    """
    layers = [l for l in C.LAYERS if l in (layers or bundles)]
    start_t, end_t = pd.Timestamp(start), pd.Timestamp(end)
    check_inputs(bundles, forcings, statics, "the given stores")
    check_period(bundles, layers, pd.DatetimeIndex(forcings[C.TIME].values), start_t, end_t)
    cells = np.asarray(cells, np.int64)
    lat, lon = grid.cell_centre(cells)
    t0 = start_t - pd.Timedelta(days=max(engine.spinup_days(bundles, l) for l in layers))
    dyn, sta = inputs_of(bundles)
    f = grid.select_cells(forcings[dyn].sel({C.TIME: slice(t0, end_t)}), cells, "the forcings store")
    s = grid.select_cells(statics[sta], cells, "the statics store")
    columns = {v: np.asarray(f[v].transpose(C.CELL, C.TIME).values, np.float32) for v in dyn}
    stat = {v: np.asarray(s[v].values, np.float32) for v in sta}
    ds = predict_columns(bundles, pd.DatetimeIndex(f[C.TIME].values), columns, stat, start_t, layers, mode, options)
    return ds.assign_coords({C.CELL: cells, C.LAT: (C.CELL, lat), C.LON: (C.CELL, lon)})


def predict_columns(
    bundles: Mapping[str, Bundle],
    times: pd.DatetimeIndex,
    columns: Mapping[str, np.ndarray],
    statics: Mapping[str, np.ndarray],
    start: pd.Timestamp,
    layers: Sequence[str],
    mode: str = "auto",
    options: KernelOptions = KernelOptions(),
) -> xr.Dataset:
    """The cascade on raw input columns ([C, T] over `times`, which start with the spin-up)
    as a Dataset of `sm`, `sm_spread` (layer, cell, time) from `start` on."""
    out = engine.cascade(bundles, columns, statics, layers, mode, options)
    keep = slice(int(np.searchsorted(times, start)), None)
    return xr.Dataset(
        {
            C.SM: ((C.LAYER, C.CELL, C.TIME), np.stack([out[l].mean[:, keep] for l in layers]), stores.cf_attrs(C.SM)),
            C.SM_SPREAD: (
                (C.LAYER, C.CELL, C.TIME),
                np.stack([out[l].spread[:, keep] for l in layers]),
                stores.cf_attrs(C.SM_SPREAD),
            ),
        },
        coords={C.LAYER: list(layers), C.TIME: times[keep]},
        attrs={
            "mode": json.dumps({l: engine.resolve_mode(bundles[l], mode) for l in layers}),
            "cell_steps": int(sum(o.cell_steps for o in out.values())),
            "clipped_member_values": int(sum(out[l].clipped for l in layers)),
            "nan_counts": json.dumps({l: engine.count_nan_reasons(out[l].nan_reason[:, keep]) for l in layers}),
        },
    )


# ----------------------------------------------------------------------------------------
# the rollout to the store
# ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What one rollout computes."""

    layers: list[str]
    bundles: dict[str, Bundle]
    modes: dict[str, str]
    layout: pstore.Layout
    mask: np.ndarray  # [lat, lon] cells to predict
    blocks: list[slice]
    tiles: list[tuple[slice, slice]]
    spin: int  # input days before each block's first output day


def region_mask(cfg: Config, statics: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon, mask) of the cells to predict, on the statics grid cropped to the region."""
    s, n, w, e = cfg.infer.bbox
    lat, lon = statics[C.LAT].values, statics[C.LON].values
    ys = (lat > s) & (lat < n)
    xs = (lon > w) & (lon < e)
    if not ys.any() or not xs.any():
        raise ConfigError(
            f"infer.bbox={list(cfg.infer.bbox)} holds no cell of the statics store ({lat.min()}..{lat.max()} N, {lon.min()}..{lon.max()} E)"
        )
    lat, lon = lat[ys], lon[xs]
    if cfg.infer.region == "land":
        mask = statics[C.LAND_MASK].values[np.ix_(ys, xs)] > 0
    elif cfg.infer.region == "bbox":
        mask = np.ones((lat.size, lon.size), bool)
    else:
        ids = read_cells_file(Path(cfg.infer.cells_file))
        grid_ids = grid.cell_id(lat[:, None], lon[None, :])
        outside = ids[~np.isin(ids, grid_ids)]
        if outside.size:
            olat, olon = grid.cell_centre(outside[:5])
            raise ConfigError(
                f"infer.cells_file={cfg.infer.cells_file!r}: {outside.size} of its {ids.size} cells lie outside the statics store "
                f"within infer.bbox={list(cfg.infer.bbox)} ({lat.min()}..{lat.max()} N, {lon.min()}..{lon.max()} E), e.g. "
                + ", ".join(f"({a:g}, {b:g})" for a, b in zip(olat, olon))
                + "; remove them, widen infer.bbox, or prepare statics that cover them"
            )
        mask = np.isin(grid_ids, ids)
    if not mask.any():
        raise ConfigError(
            f"no cell to predict: region={cfg.infer.region!r} in bbox {list(cfg.infer.bbox)} selects nothing"
        )
    return lat, lon, mask


def read_lat_lon_table(path: Path, key: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(table as text, latitudes, longitudes, line numbers) of a CSV with latitude/longitude columns.

    Every row must hold numbers in range (latitude −90..90, longitude −180..360); a bad row is
    an error naming its line and the text as written. `key` names the setting in messages.
    """
    if not path.is_file():
        raise ConfigError(f"{key} does not exist (expected a CSV with latitude, longitude columns)")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=False)  # show "n/a" as written
    except (ValueError, pd.errors.ParserError) as e:  # empty, binary, ragged rows
        raise ConfigError(f"{key} is not a readable CSV ({type(e).__name__}: {str(e)[:200]})") from None
    cols = {c.strip().lower(): c for c in table.columns}
    if not {"latitude", "longitude"} <= set(cols):
        raise ConfigError(f"{key}: needs columns latitude and longitude (found {list(table.columns)})")
    lines = table.index.to_numpy() + 2  # the header is line 1
    coords = {}
    for name, lo, hi in (("latitude", -90, 90), ("longitude", -180, 360)):
        raw = table[cols[name]]
        v = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        if bad.any():
            rows = ", ".join(f"line {n}: {x!r}" for n, x in zip(lines[bad][:5], raw[bad][:5]))
            raise ConfigError(
                f"{key}: {bad.sum()} {name} values are not numbers in {lo}..{hi} ({rows}); fix or remove those rows"
            )
        coords[name] = v
    if table.empty:
        raise ConfigError(f"{key} lists no row (only a header); add rows of latitude,longitude")
    table.columns = [c.strip().lower() for c in table.columns]
    return table, coords["latitude"], coords["longitude"], lines


def read_cells_file(path: Path) -> np.ndarray:
    """Global cell ids of a CSV with `latitude`, `longitude` columns (one cell per row).

    Rows are checked by `read_lat_lon_table`; two rows naming the same cell are an error.
    """
    key = f"infer.cells_file={str(path)!r}"
    _, lat, lon, lines = read_lat_lon_table(path, key)
    ids = grid.cell_id(lat, lon)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids[dup][0]
        raise ConfigError(
            f"{key}: lines {', '.join(map(str, lines[ids == first]))} name the same 0.25° cell "
            f"({', '.join(f'{x:g}' for x in grid.cell_centre(first))}); {int(dup.sum())} rows repeat a cell: keep one row per cell"
        )
    return ids


def fingerprint(plan: Plan, cfg: Config) -> str:
    """Identity of a rollout: the models (weights, statistics, inputs), modes, period and grid."""
    h = hashlib.sha256()
    for l in plan.layers + [l for l in plan.bundles if l not in plan.layers]:
        b = plan.bundles[l]
        h.update(l.encode())
        for k in sorted(b.params):
            h.update(np.ascontiguousarray(b.params[k]).tobytes())
        h.update(b.stats.to_json().encode())
        h.update(json.dumps([b.dynamic_inputs, b.static_inputs, b.model.seq_length, b.model.predict_last_n]).encode())
    h.update(
        json.dumps(
            [
                plan.modes,
                str(plan.layout.times[0]),
                str(plan.layout.times[-1]),
                plan.layout.lat.tolist(),
                plan.layout.lon.tolist(),
            ]
        ).encode()
    )
    h.update(np.packbits(plan.mask).tobytes())
    h.update(json.dumps([plan.layout.shard, plan.layout.chunk]).encode())
    return h.hexdigest()[:20]


def open_stores(cfg: Config) -> tuple[xr.Dataset, xr.Dataset]:
    """The forcing and statics stores, opened lazily (their grids checked, not their variables)."""
    return stores.open_store(cfg.store_dir, "forcings", variables=()), stores.open_store(
        cfg.store_dir, "statics", variables=()
    )


def check_store_variables(
    cfg: Config, bundles: Mapping[str, Bundle], forcings: xr.Dataset, statics: xr.Dataset
) -> None:
    """The stores hold what the models read (and `land` for infer.region=land), and nothing more
    is asked: a store without `sm_era5` or a land mask serves a model that needs neither."""
    dyn, sta = inputs_of(bundles)
    stores.validate(forcings, "forcings", stores.store_path(cfg.store_dir, "forcings"), variables=dyn)
    land = [C.LAND_MASK] if cfg.infer.region == "land" else []
    stores.validate(statics, "statics", stores.store_path(cfg.store_dir, "statics"), variables=sta + land)
    check_inputs(bundles, forcings, statics, str(cfg.store_dir))


def make_plan(
    cfg: Config, out: list[str], bundles: dict[str, Bundle], forcings: xr.Dataset, statics: xr.Dataset
) -> Plan:
    modes = {l: engine.resolve_mode(b, cfg.infer.mode) for l, b in bundles.items()}
    start, end = pd.Timestamp(cfg.infer.start), pd.Timestamp(cfg.infer.end)
    check_period(bundles, out, pd.DatetimeIndex(forcings[C.TIME].values), start, end)
    lat, lon, mask = region_mask(cfg, statics)
    i = cfg.layout
    layout = pstore.Layout(
        tuple(out),
        pd.date_range(start, end, freq="D"),
        lat,
        lon,
        (i.shard_time, i.shard_lat, i.shard_lon),
        (i.chunk_time, i.chunk_lat, i.chunk_lon),
    )
    tiles = layout.tiles()
    spin = max(engine.spinup_days(bundles, l) for l in out)
    return Plan(out, bundles, modes, layout, mask, layout.time_blocks(i.time_block_days), tiles, spin)


def _cell_batch(cfg: Config, plan: Plan, n_in_days: int) -> int:
    """Most cells per device pass under `layout.tile_cells` and `layout.memory_budget_gb`.

    Bytes per cell and input day: inputs and their projection (D + 3H floats, one member at a
    time), the outputs of every layer (mean, spread, members), all float32, times 2 for copies.
    """
    h = max(b.model.hidden_size for b in plan.bundles.values())
    d = max(len(b.dynamic_inputs) for b in plan.bundles.values())
    m = max(b.n_members for b in plan.bundles.values())
    per_cell = n_in_days * 4 * 2 * (d + 3 * h + 3 * (m + 2))
    fit = int(cfg.layout.memory_budget_gb * 1e9 // per_cell)
    if fit < 1:
        raise ConfigError(
            f"layout.memory_budget_gb={cfg.layout.memory_budget_gb} is too small for one cell over {n_in_days} input days "
            f"({per_cell / 1e9:.2f} GB); raise it or lower layout.time_block_days"
        )
    return max(1, min(cfg.layout.tile_cells, fit))


def predict(cfg: Config, layers: Sequence[str] | None = None, fresh: bool = False) -> dict:
    """Rolls the trained cascade out over `cfg.infer`'s region and period into the store.

    Returns:
      The summary (also stored in the store's attrs as `somojax_summary`).
    """
    t_start = time.perf_counter()
    run = _start(cfg, layers, fresh)
    cell_steps = _roll_out(run)
    distributed.barrier("somojax-predict-done")  # process 0 then sees every process's records
    wall = time.perf_counter() - t_start
    records = pstore.finished(run.path)
    summary = _summary(run, cell_steps, records, wall)
    if run.pid == 0:
        _store_summary(run, summary, records)
    _log_finished(run, summary, wall)
    return summary


@dataclass
class _Run:
    """One process's share of a rollout: the plan, the stores it reads and writes, the
    (tile, time block) pairs it has to do, and how its device passes run."""

    cfg: Config
    plan: Plan
    path: Path  # the prediction store
    forcings: xr.Dataset
    statics: xr.Dataset
    work: list[tuple[int, int]]  # (tile, time block) pairs, in order
    pid: int
    nproc: int
    dynamic: list[str]  # the forcing variables the models read
    static: list[str]
    options: KernelOptions
    sharding: NamedSharding
    n_dev: int


@dataclass
class _Pair:
    """The raw inputs of one (tile, time block) pair: the tile's cells to predict (`rows`,
    `cols` within the tile) with their forcings [C, T] over the block plus spin-up, statics [C]."""

    ti: int
    bi: int
    rows: np.ndarray
    cols: np.ndarray
    dynamic: dict[str, np.ndarray]
    static: dict[str, np.ndarray]


def _start(cfg: Config, layers: Sequence[str] | None, fresh: bool) -> _Run:
    """Steps 1-2 of the rollout: loads and checks the models and stores (before any compute),
    creates or re-opens the prediction store, lists this process's unfinished pairs and logs
    them; returns the `_Run` that the later steps share."""
    forcings, statics = open_stores(cfg)
    out, bundles = load_bundles(cfg, layers)
    check_settings(cfg, bundles)
    check_store_variables(cfg, bundles, forcings, statics)
    plan = make_plan(cfg, out, bundles, forcings, statics)
    path = cfg.predictions_path
    fp = fingerprint(plan, cfg)
    pid, nproc = jax.process_index(), jax.process_count()
    _open_store(path, plan.layout, _store_attrs(cfg, plan), fp, fresh, pid, nproc)
    done = pstore.finished(path)
    work = _work(plan, done, pid, nproc)
    _log_start(plan, work, len(done))
    mesh = make_mesh(1, devices=jax.local_devices())  # each process rolls out its own tiles
    sharding = NamedSharding(mesh, P(C.DATA_AXIS))
    dyn, sta = inputs_of(plan.bundles)
    options = infer_kernel(cfg.kernel)
    return _Run(
        cfg, plan, path, forcings, statics, work, pid, nproc, dyn, sta, options, sharding, mesh.shape[C.DATA_AXIS]
    )


def _store_attrs(cfg: Config, plan: Plan) -> dict:
    """The global attributes a new prediction store is created with: models, provenance, period."""
    return {
        **model_attrs(plan.bundles, plan.modes, plan.layers),
        "somojax_checkpoints": {
            l: str((cfg.checkpoint_dir / l).resolve()) for l in plan.bundles
        },  # absolute: provenance outlives the working directory
        "somojax_period": [cfg.infer.start, cfg.infer.end],
        "somojax_region": cfg.infer.region,
        "ensemble": "sm: mean of the members' predictions (each de-normalised and clipped at 0); sm_spread: their standard deviation (ddof=0)",
    }


def _work(plan: Plan, done: Mapping, pid: int, nproc: int) -> list[tuple[int, int]]:
    """The (tile, time block) pairs process `pid` of `nproc` has to do: tiles with a cell to
    predict, dealt out round-robin, each with the time blocks not in `done`."""
    return [
        (ti, bi)
        for ti, (ys, xs) in enumerate(plan.tiles)
        if plan.mask[ys, xs].any() and ti % nproc == pid
        for bi in range(len(plan.blocks))
        if (ti, bi) not in done
    ]


def _log_start(plan: Plan, work: list[tuple[int, int]], n_done: int) -> None:
    """Logs what the rollout covers and how many of this process's pairs are to do."""
    log.info(
        "predict %s: %d cells x %d days, modes %s, %d members; %d tiles x %d time blocks, %d to do (%d done)",
        plan.layers,
        int(plan.mask.sum()),
        len(plan.layout.times),
        plan.modes,
        next(iter(plan.bundles.values())).n_members,
        sum(plan.mask[ys, xs].any() for ys, xs in plan.tiles),
        len(plan.blocks),
        len(work),
        n_done,
    )


def _read_pair(run: _Run, item: tuple[int, int]) -> _Pair:
    """Reads the raw inputs of the pair `item` = (tile, time block) from the stores."""
    ti, bi = item
    plan, times = run.plan, run.plan.layout.times
    ys, xs = plan.tiles[ti]
    blk = plan.blocks[bi]
    rows, cols = np.nonzero(plan.mask[ys, xs])
    t0 = times[blk.start] - pd.Timedelta(days=plan.spin)
    t1 = times[blk.stop - 1]
    gy, gx = _abs(run.statics, plan, ys, C.LAT), _abs(run.statics, plan, xs, C.LON)
    cols_d = _read(run.forcings, run.dynamic, t0, t1, gy, gx, rows, cols)
    cols_s = _read(run.statics, run.static, None, None, gy, gx, rows, cols)
    return _Pair(ti, bi, rows, cols, cols_d, cols_s)


def _roll_out(run: _Run) -> int:
    """Step 3: every pair of `run.work` read (a reader thread prefetches the next), predicted,
    then written and recorded as finished (a writer thread); returns the cell-steps computed."""
    cell_steps = 0
    work = run.work
    with (
        Progress(total=len(work), desc="predict", unit="block") as prog,
        cf.ThreadPoolExecutor(1) as reader,
        cf.ThreadPoolExecutor(1) as writer,
    ):
        pending_write = None
        nxt = reader.submit(_read_pair, run, work[0]) if work else None
        for k in range(len(work)):
            pair = nxt.result()
            nxt = reader.submit(_read_pair, run, work[k + 1]) if k + 1 < len(work) else None
            tile, blk = run.plan.tiles[pair.ti], run.plan.blocks[pair.bi]
            values, record = _predict_pair(run, pair)
            if pending_write is not None:
                pending_write.result()
                faults.point("predict_after_block", k)  # k blocks of this process written and marked
            pending_write = writer.submit(
                _write_and_mark, run.path, run.plan.layout, tile, blk, values, pair.ti, pair.bi, record
            )
            cell_steps += record["cell_steps"]
            prog.update(1, cells=pair.rows.size, cell_steps=record["cell_steps"])
        if pending_write is not None:
            pending_write.result()
    return cell_steps


def _predict_pair(run: _Run, pair: _Pair) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """The cascade on one pair's cells: (every layer's mean and spread on the tile's grid over
    the block, NaN off the cells, by variable then layer; the pair's record for the store)."""
    plan = run.plan
    ys, xs = plan.tiles[pair.ti]
    blk = plan.blocks[pair.bi]
    t_blk = time.perf_counter()
    outs = _run_batches(plan, pair.dynamic, pair.static, run.cfg, run.options, run.sharding, run.n_dev)
    n_out = blk.stop - blk.start
    shape = (n_out, ys.stop - ys.start, xs.stop - xs.start)
    values = {C.SM: {}, C.SM_SPREAD: {}}
    nans = {l: engine.count_nan_reasons(outs[l].nan_reason[:, plan.spin :]) for l in plan.layers}
    for l in plan.layers:
        for var, attr in ((C.SM, "mean"), (C.SM_SPREAD, "spread")):
            a = np.full(shape, np.nan, np.float32)
            a[:, pair.rows, pair.cols] = getattr(outs[l], attr)[:, plan.spin :].T
            values[var][l] = a
    record = {
        "cells": int(pair.rows.size),
        "days": int(n_out),
        "cell_steps": int(sum(o.cell_steps for o in outs.values())),
        "clipped": int(sum(outs[l].clipped for l in plan.layers)),
        "nan": nans,
        "seconds": round(time.perf_counter() - t_blk, 3),
        "process": run.pid,
    }
    return values, record


def _summary(run: _Run, cell_steps: int, records: Mapping[object, dict], wall: float) -> dict:
    """The rollout's summary: this process's `cell_steps` in this run, the store's `records` of
    finished pairs (every process's), the models and the machine; `wall` seconds since `predict` began."""
    plan = run.plan
    return {
        "layers": plan.layers,
        "cells": int(plan.mask.sum()),
        "days": len(plan.layout.times),
        "modes": plan.modes,
        "members": {l: plan.bundles[l].n_members for l in plan.layers},
        "cell_steps_this_run": cell_steps,
        "cell_steps_total": int(sum(r["cell_steps"] for r in records.values())),
        "clipped_member_values": int(sum(r["clipped"] for r in records.values())),
        "blocks_this_run": len(run.work),
        "blocks_total": len(records),
        "blocks_expected": _expected_blocks(plan),
        "nan_counts": pstore.sum_nan_counts(records.values(), plan.layers),
        "wall_seconds": round(wall, 2),
        "cell_steps_per_second": round(cell_steps / wall, 1) if wall > 0 else None,
        "devices": run.n_dev,
        "processes": run.nproc,
        "backend": jax.default_backend(),
        "somojax_version": __version__,
    }


def _expected_blocks(plan: Plan) -> int:
    """The (tile, time block) pairs of the whole rollout (all processes)."""
    return sum(len(plan.blocks) for ys, xs in plan.tiles if plan.mask[ys, xs].any())


def _store_summary(run: _Run, summary: dict, records: Mapping[object, dict]) -> None:
    """Step 4 (process 0): the summary into the store's attributes, and whether it is complete."""
    pstore.set_attrs(
        run.path,
        {
            "somojax_summary": summary,
            "somojax_clipped_member_values": summary["clipped_member_values"],
            "somojax_nan_counts": summary["nan_counts"],
            # export and evaluate refuse a store whose (tile, block) pairs are not all finished
            "somojax_complete": len(records) == summary["blocks_expected"],
        },
    )


def _log_finished(run: _Run, summary: dict, wall: float) -> None:
    """Logs the rollout's size, wall time and throughput, then each layer's NaN counts."""
    log.info(
        "predicted %d cells x %d days (%s) in %s: %.3g cell-steps, %.3g cell-steps/s; store %s",
        summary["cells"],
        summary["days"],
        run.plan.modes,
        format_seconds(wall),
        summary["cell_steps_this_run"],
        summary["cell_steps_per_second"] or 0,
        run.path,
    )
    for l, counts in summary["nan_counts"].items():
        log.info("%s: %s", l, pstore.describe_nan_counts(counts))


def _open_store(path: Path, layout: pstore.Layout, attrs: dict, fp: str, fresh: bool, pid: int, nproc: int) -> None:
    """Creates or re-opens the store; in a multi-process job process 0 creates it while every
    process first refuses another run's store (before any compute), then all wait for it."""
    if nproc == 1:
        pstore.open_or_create(path, layout, attrs, fp, fresh)
        return
    if not fresh:
        pstore.check_owner(path, fp)
    if pid == 0:
        pstore.open_or_create(path, layout, attrs, fp, fresh)
    distributed.barrier("somojax-predict-store")


def model_attrs(bundles: Mapping[str, Bundle], modes: Mapping[str, str], layers: Sequence[str]) -> dict:
    """Mode, its cost and the members of each output layer (store and file attributes)."""
    return {
        "somojax_mode": {l: modes[l] for l in layers},
        "somojax_cost_cell_steps_per_output": {
            l: kernels.cost_per_output(modes[l], bundles[l].model.seq_length, bundles[l].model.predict_last_n)
            for l in layers
        },
        "somojax_members": {l: bundles[l].n_members for l in layers},
    }


def _abs(statics: xr.Dataset, plan: Plan, sl: slice, dim: str) -> slice:
    """A slice of the plan's cropped grid as a slice of the store's full grid."""
    full = statics[dim].values
    first = plan.layout.lat[0] if dim == C.LAT else plan.layout.lon[0]
    off = int(np.argmin(np.abs(full - first)))
    return slice(off + sl.start, off + sl.stop)


def _run_batches(plan: Plan, cols_d, cols_s, cfg: Config, options, sharding, n_dev) -> dict[str, engine.LayerOutput]:
    """The cascade on a tile's cells, in device passes of at most `_cell_batch` cells."""
    n = next(iter(cols_s.values())).shape[0]
    t_in = next(iter(cols_d.values())).shape[1]
    size = _cell_batch(cfg, plan, t_in)
    parts = []
    for c0 in range(0, n, size):
        c1 = min(c0 + size, n)
        pad = (-(c1 - c0)) % n_dev  # equal shares per device
        d = {k: _pad(v[c0:c1], pad) for k, v in cols_d.items()}
        s = {k: _pad(v[c0:c1], pad) for k, v in cols_s.items()}
        out = engine.cascade(
            plan.bundles, d, s, plan.layers, cfg.infer.mode, options, sharding if n_dev > 1 else None, n_real=c1 - c0
        )
        parts.append({l: _unpad(o, c1 - c0) for l, o in out.items()})
    return {
        l: engine.LayerOutput(
            np.concatenate([p[l].mean for p in parts]),
            np.concatenate([p[l].spread for p in parts]),
            sum(p[l].clipped for p in parts),
            sum(p[l].cell_steps for p in parts),
            np.concatenate([p[l].nan_reason for p in parts]),
        )
        for l in parts[0]
    }


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    if not n:
        return a
    return np.concatenate([a, np.repeat(a[-1:], n, axis=0)])


def _unpad(o: engine.LayerOutput, n: int) -> engine.LayerOutput:
    return engine.LayerOutput(o.mean[:n], o.spread[:n], o.clipped, o.cell_steps, o.nan_reason[:n])


def _write_and_mark(path, layout, tile, blk, values, ti, bi, record) -> None:
    pstore.write_block(path, layout, tile, blk, values)
    pstore.mark(path, ti, bi, record)
