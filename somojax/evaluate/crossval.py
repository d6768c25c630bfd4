"""k-fold cross-validation over target cells: the SoMo.ml* series (O & Orth 2021, Technical Validation).

Protocol:
1. Folds are assigned per CELL, across layers: a cell that is a target in L1 and L2 is in the same
   fold for both, so a test cell is unseen by the fold's L1 model too, whose predictions are the
   L2/L3 models' upper-layer inputs. Cells are shuffled with `evaluate.fold_seed` and dealt out
   round-robin within groups of the same layer pattern (which layers a cell has targets in), so
   every layer's cells are spread evenly over the folds.
2. Fold k trains the whole cascade L1 → L2 → L3 with the config's training settings on the cells
   of the other folds (its own normalisation statistics, its own train/validation split inside
   those cells) into `<evaluation_dir>/folds/k/`, then predicts its own test cells through the
   fold's cascade (L2/L3 inputs from the fold's L1/L2 models).
3. Resumable: a fold whose `done.json` matches the current fold cells and config is not trained
   again; an interrupted fold resumes from its own checkpoints.
4. The per-fold predictions are assembled into `cv_predictions.zarr` (layer, cell, time).

The assignment is saved as `folds.csv` (one row per cell) and `folds.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time as _time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax.config import Config, to_dict
from somojax.errors import CheckpointError, ConfigError
from somojax.utils.logging import format_seconds, get_logger

log = get_logger("evaluate")

FOLDS_CSV = "folds.csv"
FOLDS_JSON = "folds.json"
CV_STORE = "cv_predictions.zarr"
FOLD_DONE = "done.json"
FOLD_PREDICTIONS = "test_predictions.nc"


# ----------------------------------------------------------------------------------------
# fold assignment
# ----------------------------------------------------------------------------------------
def layer_presence(targets: xr.Dataset) -> pd.DataFrame:
    """Per cell: whether it has any target value in each layer, and its number of target days.

    Returns a DataFrame indexed by cell id with columns latitude, longitude, has_L1.., days_L1..
    """
    valid = targets[C.SM].notnull().sum(C.TIME).load()  # [layer, cell]
    df = pd.DataFrame(
        {"latitude": targets[C.LAT].values.astype(np.float64), "longitude": targets[C.LON].values.astype(np.float64)},
        index=pd.Index(targets[C.CELL].values.astype(np.int64), name=C.CELL),
    )
    for layer in C.LAYERS:
        days = valid.sel({C.LAYER: layer}).values if layer in valid[C.LAYER].values else np.zeros(len(df), np.int64)
        df[f"days_{layer}"] = np.asarray(days, np.int64)
        df[f"has_{layer}"] = df[f"days_{layer}"] > 0
    return df


def assign_folds(presence: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Assigns each cell with any target to one of `k` folds (stratified by layer pattern).

    Args:
      presence: `layer_presence` output.
      k: number of folds (≥ 2).
      seed: shuffling seed.

    Returns:
      `presence` restricted to cells with targets, with an int column `fold` in 0..k-1.
    """
    if k < 2:
        raise ConfigError(f"evaluate.folds={k}: cross-validation needs at least 2 folds")
    has = presence[[f"has_{l}" for l in C.LAYERS]].to_numpy()
    df = presence[has.any(axis=1)].copy()
    n = len(df)
    if n < k:
        raise ConfigError(f"evaluate.folds={k}: only {n} target cells; use at most {n} folds")
    pattern = (df[[f"has_{l}" for l in C.LAYERS]].to_numpy() * (1 << np.arange(len(C.LAYERS)))).sum(axis=1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(pattern[order], kind="stable")]  # shuffled within each pattern group
    fold = np.empty(n, np.int64)
    fold[order] = np.arange(n) % k  # one counter across groups: per-layer counts differ by few cells
    df["fold"] = fold
    return df


def save_folds(folds: pd.DataFrame, out_dir: Path, k: int, seed: int) -> tuple[Path, Path]:
    """Writes `folds.csv` (one row per cell) and `folds.json` (cells per fold)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / FOLDS_CSV
    folds.reset_index().to_csv(csv.with_suffix(".tmp"), index=False)
    csv.with_suffix(".tmp").replace(csv)
    js = out_dir / FOLDS_JSON
    payload = {
        "folds": k,
        "fold_seed": seed,
        "n_cells": int(len(folds)),
        "cells": {str(f): [int(c) for c in folds.index[folds["fold"] == f]] for f in range(k)},
        "cells_per_layer": {str(f): {l: int(folds[f"has_{l}"][folds["fold"] == f].sum()) for l in C.LAYERS} for f in range(k)},
    }
    js.with_suffix(".tmp").write_text(json.dumps(payload, indent=1))
    js.with_suffix(".tmp").replace(js)
    return csv, js


def load_folds(out_dir: Path) -> pd.DataFrame:
    """Reads `folds.csv` back (indexed by cell)."""
    return pd.read_csv(Path(out_dir) / FOLDS_CSV).set_index(C.CELL)


# ----------------------------------------------------------------------------------------
# fold runs
# ----------------------------------------------------------------------------------------
def fold_dir(cfg: Config, k: int) -> Path:
    return cfg.evaluation_dir / "folds" / str(k)


def fold_config(cfg: Config, k: int) -> Config:
    """The run config of fold k: same settings, its own working directory (checkpoints, logs),
    the run's stores, and no evaluation inside."""
    return dataclasses.replace(
        cfg,
        workdir=str(fold_dir(cfg, k)),
        data=dataclasses.replace(cfg.data, store_dir=str(cfg.store_dir)),
    )


def _fingerprint(cfg: Config, train_cells: np.ndarray, test_cells: np.ndarray) -> str:
    d = to_dict(cfg)
    payload = {s: d[s] for s in ("data", "model", "train")}
    payload["data"] = {k: v for k, v in payload["data"].items() if k != "store_dir"}
    payload["train_cells"] = [int(c) for c in np.sort(train_cells)]
    payload["test_cells"] = [int(c) for c in np.sort(test_cells)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# (fold config, training cells, layers, fresh) -> {layer: Bundle}; fresh: discard the fold's checkpoints
TrainFn = Callable[[Config, np.ndarray, tuple[str, ...], bool], dict]
# (fold config, {layer: Bundle}, test cells, first day, last day) -> [layer, cell, time]
PredictFn = Callable[[Config, dict, np.ndarray, str, str], xr.DataArray]


def prediction_period(cfg: Config, targets: xr.Dataset) -> tuple[str, str]:
    """The days the CV series covers: the target period within the targets store."""
    t = pd.DatetimeIndex(targets[C.TIME].values)
    start = max(pd.Timestamp(cfg.data.target_start), t[0])
    end = min(pd.Timestamp(cfg.data.target_end), t[-1])
    if end < start:
        raise ConfigError(f"data.target_start..target_end ({cfg.data.target_start}..{cfg.data.target_end}) does not overlap the targets store ({t[0].date()}..{t[-1].date()})")
    return str(start.date()), str(end.date())


def run_fold(
    cfg: Config,
    k: int,
    folds: pd.DataFrame,
    period: tuple[str, str],
    train_fn: TrainFn,
    predict_fn: PredictFn,
) -> xr.DataArray:
    """Trains (or resumes) fold k and predicts its test cells; returns [layer, cell, time].

    The fold's `done.json` records the training cells each layer's model was trained on (from
    the checkpoints' normalisation statistics), the test cells and a fingerprint of the settings;
    a test cell found among a model's training cells is an error.
    """
    d = fold_dir(cfg, k)
    layers = tuple(cfg.train.layers)
    test = folds.index[folds["fold"] == k].to_numpy(np.int64)
    train_cells = folds.index[folds["fold"] != k].to_numpy(np.int64)
    fp = _fingerprint(cfg, train_cells, test)
    done, pred_path = d / FOLD_DONE, d / FOLD_PREDICTIONS
    if done.exists() and pred_path.exists():
        try:
            if json.loads(done.read_text()).get("fingerprint") == fp:
                log.info("fold %d: finished before, reusing %s", k, pred_path)
                return xr.open_dataarray(pred_path).load()
        except ValueError:
            pass
        log.warning("fold %d: settings or cells changed since it was trained; training it again", k)
        done.unlink()
    fcfg = fold_config(cfg, k)
    d.mkdir(parents=True, exist_ok=True)
    fresh = (d / "fingerprint").exists() and (d / "fingerprint").read_text() != fp
    (d / "fingerprint").write_text(fp)
    t0 = _time.perf_counter()
    log.info("fold %d/%d: training %s on %d cells (%d test cells)", k + 1, int(folds["fold"].max()) + 1, ",".join(layers), train_cells.size, test.size)
    bundles = train_fn(fcfg, train_cells, layers, fresh)
    seen = {layer: sorted(int(c) for c in b.stats.cells) for layer, b in bundles.items()}
    validated = {layer: checkpoint_cells(fcfg.checkpoint_dir / layer, "val_cells") for layer in bundles}
    leaked = {layer: sorted((set(s) | set(validated[layer])) & set(test.tolist())) for layer, s in seen.items()}
    leaked = {l: v for l, v in leaked.items() if v}
    if leaked:
        raise CheckpointError(f"fold {k}: models in {d} were trained on test cells {leaked}; delete {d} and run evaluate again")
    t_train = _time.perf_counter() - t0
    pred = predict_fn(fcfg, bundles, test, period[0], period[1])
    pred = pred.transpose(C.LAYER, C.CELL, C.TIME).astype(np.float32)
    pred.name = C.SM
    tmp = pred_path.with_suffix(".tmp.nc")
    pred.to_netcdf(tmp)
    tmp.replace(pred_path)
    done.write_text(
        json.dumps(
            {
                "fold": k,
                "fingerprint": fp,
                "test_cells": [int(c) for c in test],
                "train_cells": {l: seen[l] for l in seen},  # the checkpoints' NormStats.cells
                "val_cells": validated,  # cells used for validation / early stopping inside the fold
                "train_seconds": round(t_train, 1),
                "predict_seconds": round(_time.perf_counter() - t0 - t_train, 1),
            },
            indent=1,
        )
    )
    log.info("fold %d/%d: done in %s", k + 1, int(folds["fold"].max()) + 1, format_seconds(_time.perf_counter() - t0))
    return pred


def checkpoint_cells(layer_dir: Path, key: str) -> list[int]:
    """Union of a cell list (`train_cells`, `val_cells`) over the JSON metadata of every checkpoint
    of a layer directory (`<layer>/{best,state}/<step>/meta/metadata`, written by training)."""
    cells: set[int] = set()
    for f in sorted(Path(layer_dir).glob("*/*/meta/metadata")):
        try:
            cells |= {int(c) for c in json.loads(f.read_text()).get(key, [])}
        except (ValueError, TypeError, AttributeError):
            raise CheckpointError(f"{f}: unreadable checkpoint metadata; delete {layer_dir} and run evaluate again") from None
    return sorted(cells)


def assemble(parts: list[xr.DataArray], folds: pd.DataFrame, targets: xr.Dataset) -> xr.Dataset:
    """Concatenates the folds' test predictions into one [layer, cell, time] dataset on the targets' cells."""
    sm = xr.concat(parts, dim=C.CELL).sortby(C.CELL)
    cells = folds.index.to_numpy(np.int64)
    sm = sm.reindex({C.CELL: cells})
    lat = targets[C.LAT].to_series().set_axis(targets[C.CELL].values)
    lon = targets[C.LON].to_series().set_axis(targets[C.CELL].values)
    ds = xr.Dataset(
        {C.SM: sm, "fold": (C.CELL, folds.loc[cells, "fold"].to_numpy(np.int16))},
        coords={C.LAT: (C.CELL, lat.loc[cells].to_numpy()), C.LON: (C.CELL, lon.loc[cells].to_numpy())},
    )
    # variable-length strings: Zarr v3 has a specified dtype for them, not for fixed-width unicode
    ds = ds.assign_coords({C.LAYER: np.asarray([str(x) for x in ds[C.LAYER].values], dtype=object)})
    ds[C.SM].attrs.update({"units": C.UNITS[C.SM], "long_name": "cross-validated soil moisture (each cell predicted by the fold model that never saw it)"})
    ds.attrs.update({"somojax_product": "cross-validation", "description": "SoMo.ml*-style series: k-fold CV over target cells"})
    return ds


def cross_validate(
    cfg: Config,
    targets: xr.Dataset,
    train_fn: TrainFn | None = None,
    predict_fn: PredictFn | None = None,
) -> xr.DataArray:
    """Runs (or resumes) the k-fold CV and returns the SoMo.ml*-style series [layer, cell, time].

    Writes `folds.csv`, `folds.json`, `folds/<k>/` (checkpoints, test predictions, done.json)
    and `cv_predictions.zarr` into `cfg.evaluation_dir`.
    """
    if train_fn is None or predict_fn is None:
        from somojax.evaluate import cascade

        train_fn = train_fn or cascade.train_fold
        predict_fn = predict_fn or cascade.predict_fold
    out = cfg.evaluation_dir
    k, seed = cfg.evaluate.folds, cfg.evaluate.fold_seed
    folds = assign_folds(layer_presence(targets), k, seed)
    save_folds(folds, out, k, seed)
    period = prediction_period(cfg, targets)
    parts = [run_fold(cfg, f, folds, period, train_fn, predict_fn) for f in range(k)]
    ds = assemble(parts, folds, targets)
    path = out / CV_STORE
    tmp = out / f".{CV_STORE}.tmp"
    ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    if path.exists():
        shutil.rmtree(path)
    tmp.replace(path)
    log.info("cross-validation: %d folds, series of %d cells written to %s", k, ds.sizes[C.CELL], path)
    return ds[C.SM]
