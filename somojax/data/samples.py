"""A layer's training inputs from the analysis-ready stores (forcings, statics, targets).

Reads the stores into memory with xarray and builds the `WindowArrays` and sample tables that
`somojax.data.pipeline` batches for the training loop. The loop only depends on the `TrainData`
protocol (`somojax.data.pipeline`), so another reader (memory-mapped arrays for the global
training set, the multi-host scale-out) can replace this module without touching the engine.

Rules (docs/design.md#science):
- the day axis is the forcing period; targets are aligned to it (NaN outside the target period);
- a sample is (cell, end day e): e in the target period, window [e − L + 1, e] inside the forcing
  period with every input finite, and a finite target on day e (seq-to-one) or on at least one of
  the last `predict_last_n` days;
- train/validation split by cell (`data.val_fraction` of the cells, `data.split_seed`) or by
  period (`data.val_start`..`data.val_end` held out), inside the given training cells (CV folds);
- normalisation statistics from the training cells and period only (`compute_stats`); the
  upper-layer inputs `sm_L1`, `sm_L2` get the mean/std of the upper-layer predictions there;
- σ_c: population standard deviation of the raw target of each cell over the training period.
Cells whose statics are not finite cannot be used and are dropped with a warning naming them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid, stores
from somojax.config import Config
from somojax.errors import InputDataError, StoreError
from somojax.normalization import NormStats, compute_stats, mean_std
from somojax.data.pipeline import WindowArrays
from somojax.utils.logging import get_logger

log = get_logger("train")


@dataclass(frozen=True)
class LayerInputs:
    """Everything the loop needs to train one layer."""

    arrays: WindowArrays
    train_samples: np.ndarray  # [n, 2] (cell index, end-day index)
    val_samples: np.ndarray
    stats: NormStats
    dynamic_inputs: tuple[str, ...]
    static_inputs: tuple[str, ...]
    days: pd.DatetimeIndex  # the day axis of `arrays`
    train_cells: np.ndarray  # global cell ids
    val_cells: np.ndarray
    report: dict


def open_stores(cfg: Config) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """(forcings, statics, targets) of `cfg.store_dir`, validated."""
    d = cfg.store_dir
    return (
        stores.open_store(d, "forcings", variables=list(cfg.data.dynamic_inputs)),
        stores.open_store(d, "statics", variables=list(cfg.data.static_inputs)),
        stores.open_store(d, "targets"),
    )


def _points(ds: xr.Dataset, cells: np.ndarray, what: str) -> xr.Dataset:
    """The grid points of `cells` (global ids) as a new `cell` dimension (`StoreError` for cells
    outside the store, `grid.select_cells`)."""
    return grid.select_cells(ds, cells, f"the {what} store")


def cell_dynamic(forcings: xr.Dataset, cells: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """[cell, day, D] float32 raw dynamic inputs of `cells` over the forcing period."""
    pts = _points(forcings[list(names)], cells, "forcings")
    return np.stack([np.asarray(pts[v].transpose(C.CELL, C.TIME).values, np.float32) for v in names], axis=-1)


def cell_static(statics: xr.Dataset, cells: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """[cell, S] float32 raw statics of `cells`."""
    pts = _points(statics[list(names)], cells, "statics")
    return np.stack([np.asarray(pts[v].values, np.float32) for v in names], axis=-1)


def layer_target(targets: xr.Dataset, layer: str, cells: np.ndarray, days: pd.DatetimeIndex) -> np.ndarray:
    """[cell, day] raw target of `layer` on the forcing days (NaN where missing)."""
    sm = targets[C.SM].sel({C.LAYER: layer})
    idx = pd.Index(targets[C.CELL].values.astype(np.int64)).get_indexer(cells)
    sm = sm.isel({C.CELL: idx}).reindex({C.TIME: days})
    return np.asarray(sm.transpose(C.CELL, C.TIME).values, np.float32)


def layer_cells(targets: xr.Dataset, layer: str, start: str, end: str, cells: Sequence[int] | None) -> np.ndarray:
    """Global ids of the cells with at least one target of `layer` in [start, end], sorted."""
    if layer not in [str(x) for x in targets[C.LAYER].values]:
        raise StoreError(f"the targets store has no layer {layer!r} (it has {list(map(str, targets[C.LAYER].values))})")
    sm = targets[C.SM].sel({C.LAYER: layer, C.TIME: slice(start, end)})
    have = np.asarray(sm.notnull().any(C.TIME).values)
    ids = targets[C.CELL].values.astype(np.int64)[have]
    if cells is not None:
        ids = ids[np.isin(ids, np.asarray(list(cells), np.int64))]
    return np.sort(ids)


def split(cfg: Config, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training cells, validation cells): by cell, or all cells in both for a period split."""
    d = cfg.data
    if d.split == "period":
        return cells, cells
    n_val = int(round(d.val_fraction * cells.size))
    if d.val_fraction > 0 and cells.size >= 2:
        n_val = min(max(n_val, 1), cells.size - 1)
    perm = np.random.default_rng(d.split_seed).permutation(cells.size)
    val = np.sort(cells[perm[:n_val]])
    return np.sort(cells[perm[n_val:]]), val


def valid_windows(dynamic: np.ndarray, seq_length: int) -> np.ndarray:
    """[cell, day] True where the window ending that day lies inside the data and is all finite."""
    bad = ~np.all(np.isfinite(dynamic), axis=-1)
    csum = np.concatenate([np.zeros((bad.shape[0], 1), np.int64), np.cumsum(bad, axis=1)], axis=1)
    ok = np.zeros(bad.shape, bool)
    if bad.shape[1] >= seq_length:
        ok[:, seq_length - 1 :] = (csum[:, seq_length:] - csum[:, : bad.shape[1] - seq_length + 1]) == 0
    return ok


def sample_table(
    ok_window: np.ndarray, target: np.ndarray, day_mask: np.ndarray, cell_mask: np.ndarray, last_n: int
) -> np.ndarray:
    """[n, 2] (cell index, end day) of the valid samples among the masked cells and end days."""
    has = np.isfinite(target)
    if last_n > 1:  # any valid target among the last n days
        c = np.concatenate([np.zeros((has.shape[0], 1), np.int64), np.cumsum(has, axis=1)], axis=1)
        lo = np.maximum(np.arange(has.shape[1]) + 1 - last_n, 0)
        has = (c[:, 1:] - c[:, lo]) > 0
    ok = ok_window & has & day_mask[None, :] & cell_mask[:, None]
    c, e = np.nonzero(ok)
    return np.stack([c, e], axis=1).astype(np.int64)


def layer_inputs(
    cfg: Config,
    layer: str,
    *,
    cells: Sequence[int] | None = None,
    upper: Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]] | None = None,
    datasets: tuple[xr.Dataset, xr.Dataset, xr.Dataset] | None = None,
) -> LayerInputs:
    """Builds a layer's normalised arrays, sample tables and statistics.

    Args:
      cfg: run config (data: periods, split, input names; model: seq_length, predict_last_n).
      layer: `L1`, `L2` or `L3`.
      cells: restrict training and validation to these global cell ids (a CV fold's training
        cells); default: every cell with targets of the layer.
      upper: for the cascade, fn(raw dynamic [cell, day, D], raw statics [cell, S]) of this
        layer's cells -> {`sm_L1`...: [cell, day]} upper-layer predictions in m3 m-3.
      datasets: already opened (forcings, statics, targets).
    """
    d, m = cfg.data, cfg.model
    forcings, statics, targets = datasets or open_stores(cfg)
    days = pd.DatetimeIndex(forcings[C.TIME].values)
    raw, report = _raw_inputs(cfg, layer, cells, upper, (forcings, statics, targets), days)
    train_ids, val_ids = split(cfg, raw.cells)
    in_train = np.isin(raw.cells, train_ids)
    split_days = _split_days(cfg, days)
    stats = _layer_stats(cfg, layer, (forcings, statics, targets), raw.dynamic, train_ids, in_train, split_days)
    dyn_names = tuple(d.dynamic_inputs) + C.UPPER_LAYER_INPUTS[layer]
    st_names = tuple(d.static_inputs)
    arrays = _normalised(stats, layer, dyn_names, st_names, raw, split_days.in_period, days)
    ok = valid_windows(arrays.dynamic, m.seq_length)
    tr = sample_table(ok, arrays.target, split_days.train, in_train, m.predict_last_n)
    va = sample_table(ok, arrays.target, split_days.val, np.isin(raw.cells, val_ids), m.predict_last_n)
    report.update(_sample_counts(cfg, train_ids, val_ids, tr, va, raw.target, split_days.in_target, ok))
    _log_samples(cfg, layer, report)
    val_cells = val_ids if d.split == "cell" else np.empty(0, np.int64)
    return LayerInputs(arrays, tr, va, stats, dyn_names, st_names, days, train_ids, val_cells, report)


@dataclass
class _RawInputs:
    """A layer's usable cells and their raw (not normalised) inputs and target on the forcing days."""

    cells: np.ndarray  # [cell] global ids, sorted
    dynamic: np.ndarray  # [cell, day, D] float32, upper-layer predictions last
    static: np.ndarray  # [cell, S] float32, all finite
    target: np.ndarray  # [cell, day] float32, NaN where missing


@dataclass
class _SplitDays:
    """Masks over the forcing days: the target period, the training and validation end days,
    and the training period that the statistics come from (`period`, as ISO dates)."""

    in_target: np.ndarray
    train: np.ndarray
    val: np.ndarray
    period: tuple[str, str]
    in_period: np.ndarray


def _raw_inputs(
    cfg: Config,
    layer: str,
    cells: Sequence[int] | None,
    upper: Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]] | None,
    datasets: tuple[xr.Dataset, xr.Dataset, xr.Dataset],
    days: pd.DatetimeIndex,
) -> tuple[_RawInputs, dict]:
    """The raw inputs of the cells with targets of `layer` (among `cells`, if given) whose
    statics are finite, with `upper`'s predictions appended for L2 and L3; and the report so
    far (`cells`, and `dropped_cells_bad_statics` when statics dropped some)."""
    forcings, statics, targets = datasets
    d = cfg.data
    ids = layer_cells(targets, layer, d.target_start, d.target_end, cells)
    if ids.size == 0:
        raise InputDataError(
            f"no cell has targets of {layer} in {d.target_start}..{d.target_end}"
            + (" among the given cells" if cells is not None else "")
        )
    static = cell_static(statics, ids, tuple(d.static_inputs))
    good = np.all(np.isfinite(static), axis=1)
    report: dict = {"cells": int(ids.size)}
    if not good.all():
        log.warning(
            "%s: %d cells have non-finite statics and are not used: %s",
            layer,
            int((~good).sum()),
            ids[~good][:20].tolist(),
        )
        report["dropped_cells_bad_statics"] = ids[~good].tolist()
        ids, static = ids[good], static[good]
    dynamic = cell_dynamic(forcings, ids, d.dynamic_inputs)
    if C.UPPER_LAYER_INPUTS[layer]:
        if upper is None:
            raise InputDataError(f"{layer} needs the predictions of {C.UPPER_LAYER_INPUTS[layer]} (the cascade)")
        preds = upper(dynamic, static)
        extra = [np.asarray(preds[n], np.float32)[..., None] for n in C.UPPER_LAYER_INPUTS[layer]]
        dynamic = np.concatenate([dynamic, *extra], axis=-1)
    return _RawInputs(ids, dynamic, static, layer_target(targets, layer, ids, days)), report


def _split_days(cfg: Config, days: pd.DatetimeIndex) -> _SplitDays:
    """The day masks of `cfg.data`'s split: by period, training days are the target period
    without the validation period; by cell, both are the whole target period."""
    d = cfg.data
    in_target = (days >= pd.Timestamp(d.target_start)) & (days <= pd.Timestamp(d.target_end))
    if d.split == "period":
        in_val = (days >= pd.Timestamp(d.val_start)) & (days <= pd.Timestamp(d.val_end))
        train_days, val_days = in_target & ~in_val, in_target & in_val
        period = (
            (str(days[train_days][0].date()), str(days[train_days][-1].date()))
            if train_days.any()
            else (d.target_start, d.target_end)
        )
    else:
        train_days = val_days = in_target
        period = (d.target_start, d.target_end)
    in_period = (days >= pd.Timestamp(period[0])) & (days <= pd.Timestamp(period[1]))
    return _SplitDays(in_target, train_days, val_days, period, in_period)


def _layer_stats(
    cfg: Config,
    layer: str,
    datasets: tuple[xr.Dataset, xr.Dataset, xr.Dataset],
    dynamic: np.ndarray,
    train_ids: np.ndarray,
    in_train: np.ndarray,
    split_days: _SplitDays,
) -> NormStats:
    """Normalisation statistics from the training cells (global ids `train_ids`, rows
    `in_train` of `dynamic`) and period: the stores' inputs and target (`compute_stats`), and
    the upper-layer inputs from their columns of `dynamic`."""
    d = cfg.data
    forcings, statics, targets = datasets
    period = split_days.period
    stats = compute_stats(forcings, statics, targets, train_ids, period)
    for k, name in enumerate(C.UPPER_LAYER_INPUTS[layer]):
        vals = dynamic[in_train][:, split_days.in_period, len(d.dynamic_inputs) + k]
        mu, sd = mean_std(vals, name)
        stats = NormStats(
            mean={**stats.mean, name: mu},
            std={**stats.std, name: sd},
            target_mean=stats.target_mean,
            target_std=stats.target_std,
            cells=stats.cells,
            period=stats.period,
        )
    if layer not in stats.target_mean:
        raise InputDataError(f"no target of {layer} among the training cells in {period[0]}..{period[1]}")
    return stats


def _normalised(
    stats: NormStats,
    layer: str,
    dynamic_inputs: tuple[str, ...],
    static_inputs: tuple[str, ...],
    raw: _RawInputs,
    in_period: np.ndarray,
    days: pd.DatetimeIndex,
) -> WindowArrays:
    """`raw` normalised with `stats` (inputs in the order of the names), with σ_c of the raw
    target over the training period (`in_period`)."""
    mean, std = stats.vector(dynamic_inputs, "mean"), stats.vector(dynamic_inputs, "std")
    smean, sstd = stats.vector(static_inputs, "mean"), stats.vector(static_inputs, "std")
    tm, ts = stats.target_mean[layer], stats.target_std[layer]
    with np.errstate(invalid="ignore"):
        sigma = np.nanstd(np.where(in_period[None, :], raw.target, np.nan), axis=1).astype(np.float32)
    return WindowArrays(
        dynamic=((raw.dynamic - mean) / std).astype(np.float32),
        static=((raw.static - smean) / sstd).astype(np.float32),
        target=((raw.target - tm) / ts).astype(np.float32),
        sigma=sigma,
        cells=raw.cells,
        first_day=str(days[0].date()),
    )


def _sample_counts(
    cfg: Config,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    target: np.ndarray,
    in_target: np.ndarray,
    ok_window: np.ndarray,
) -> dict:
    """The report's counts: cells and samples of training and validation, target days, and
    target days whose input window is not complete (`ok_window` False)."""
    n_target = int(np.sum(np.isfinite(target) & in_target[None, :]))
    return {
        "train_cells": int(train_ids.size),
        "val_cells": int(val_ids.size) if cfg.data.split == "cell" else 0,
        "train_samples": int(len(train)),
        "val_samples": int(len(val)),
        "target_days": n_target,
        "target_days_without_full_window": int(n_target - np.sum(np.isfinite(target) & in_target[None, :] & ok_window)),
    }


def _log_samples(cfg: Config, layer: str, report: dict) -> None:
    """Logs the samples and cells of `report` (`_sample_counts`)."""
    log.info(
        "%s: %d training samples on %d cells, %d validation samples (%s split); %d target days lack a full %d-day input window",
        layer,
        report["train_samples"],
        report["train_cells"],
        report["val_samples"],
        cfg.data.split,
        report["target_days_without_full_window"],
        cfg.model.seq_length,
    )
