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
3. The folds train together: each layer of all folds is one stacked ensemble of folds x members
   (`somojax.train.groups`), each fold on its own data and with its own validation, schedule,
   early stopping and best checkpoint, so fold k gets what it gets trained alone (up to float32
   rounding), from one compiled step instead of k trainings (docs/training.md, "Stacked folds").
4. Resumable: a fold whose `done.json` matches the current fold cells and config is not trained
   or predicted again; one whose `trained.json` matches is only predicted; an interrupted stacked
   training resumes from `folds/stacked/` when it was started for the same folds and settings.
5. The per-fold predictions are assembled into `cv_predictions.zarr` (layer, cell, time).

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
        "cells_per_layer": {
            str(f): {l: int(folds[f"has_{l}"][folds["fold"] == f].sum()) for l in C.LAYERS} for f in range(k)
        },
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


# (fold configs, training cells per fold, layers, fresh, stack directory) -> {fold: {layer: Bundle}};
# fresh: discard the stacked run's and these folds' checkpoints first
TrainFn = Callable[[dict[int, Config], dict[int, np.ndarray], tuple[str, ...], bool, Path], dict[int, dict]]
# (fold config, {layer: Bundle}, test cells, first day, last day) -> [layer, cell, time]
PredictFn = Callable[[Config, dict, np.ndarray, str, str], xr.DataArray]
FOLD_TRAINED = "trained.json"


def prediction_period(cfg: Config, targets: xr.Dataset) -> tuple[str, str]:
    """The days the CV series covers: the target period within the targets store."""
    t = pd.DatetimeIndex(targets[C.TIME].values)
    start = max(pd.Timestamp(cfg.data.target_start), t[0])
    end = min(pd.Timestamp(cfg.data.target_end), t[-1])
    if end < start:
        raise ConfigError(
            f"data.target_start..target_end ({cfg.data.target_start}..{cfg.data.target_end}) does not overlap the targets store ({t[0].date()}..{t[-1].date()})"
        )
    return str(start.date()), str(end.date())


def stack_dir(cfg: Config) -> Path:
    """The stacked training of the folds (its train states, `<layer>/state/`)."""
    return cfg.evaluation_dir / "folds" / "stacked"


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    k: int
    train_cells: np.ndarray
    test_cells: np.ndarray
    fingerprint: str


def fold_plan(cfg: Config, k: int, folds: pd.DataFrame) -> FoldPlan:
    test = folds.index[folds["fold"] == k].to_numpy(np.int64)
    train_cells = folds.index[folds["fold"] != k].to_numpy(np.int64)
    return FoldPlan(k, train_cells, test, _fingerprint(cfg, train_cells, test))


def _marker_matches(path: Path, fp: str) -> bool:
    try:
        return path.exists() and json.loads(path.read_text()).get("fingerprint") == fp
    except ValueError:
        return False


def finished_prediction(cfg: Config, plan: FoldPlan) -> xr.DataArray | None:
    """Fold k's test predictions when its `done.json` matches the current cells and settings."""
    d = fold_dir(cfg, plan.k)
    done, pred_path = d / FOLD_DONE, d / FOLD_PREDICTIONS
    if not done.exists():
        return None
    if pred_path.exists() and _marker_matches(done, plan.fingerprint):
        log.info("fold %d: finished before, reusing %s", plan.k, pred_path)
        return xr.open_dataarray(pred_path).load()
    log.warning("fold %d: settings or cells changed since it was trained; training it again", plan.k)
    done.unlink()
    return None


def train_stacked(cfg: Config, plans: list[FoldPlan], train_fn: TrainFn) -> tuple[dict[int, dict], float]:
    """Trains (or resumes) the cascades of the folds in `plans` together; ({fold: bundles}, seconds).

    The stacked run resumes only when it was started for exactly these folds and settings;
    otherwise it and these folds' checkpoints start over.
    """
    sd = stack_dir(cfg)
    sd.mkdir(parents=True, exist_ok=True)
    fp = hashlib.sha256(json.dumps([[p.k, p.fingerprint] for p in plans]).encode()).hexdigest()[:16]
    fresh = not ((sd / "fingerprint").exists() and (sd / "fingerprint").read_text() == fp)
    (sd / "fingerprint").write_text(fp)
    cfgs = {p.k: fold_config(cfg, p.k) for p in plans}
    for p in plans:
        fold_dir(cfg, p.k).mkdir(parents=True, exist_ok=True)
        (fold_dir(cfg, p.k) / FOLD_TRAINED).unlink(missing_ok=True)
    t0 = _time.perf_counter()
    log.info(
        "cross-validation: training folds %s together (%s)",
        ",".join(str(p.k + 1) for p in plans),
        "from scratch" if fresh else "resuming",
    )
    bundles = train_fn(cfgs, {p.k: p.train_cells for p in plans}, tuple(cfg.train.layers), fresh, sd)
    seconds = _time.perf_counter() - t0
    for p in plans:
        (fold_dir(cfg, p.k) / FOLD_TRAINED).write_text(
            json.dumps({"fingerprint": p.fingerprint, "trained_with": [q.k for q in plans]})
        )
    return bundles, seconds


def load_fold_bundles(cfg: Config, k: int) -> dict:
    """Fold k's trained cascade from its checkpoints."""
    from somojax.checkpoint import load_bundle

    return {layer: load_bundle(fold_config(cfg, k).checkpoint_dir / layer) for layer in cfg.train.layers}


def predict_fold(
    cfg: Config, plan: FoldPlan, bundles: dict, period: tuple[str, str], predict_fn: PredictFn, train_seconds: float
) -> xr.DataArray:
    """Checks fold k's models for leaked test cells, predicts its test cells, writes `done.json`.

    `done.json` records the training cells each layer's model was trained on (from the
    checkpoints' normalisation statistics), the validation cells, the test cells and a
    fingerprint of the settings; a test cell found among a model's cells is an error.
    """
    k, test, d = plan.k, plan.test_cells, fold_dir(cfg, plan.k)
    fcfg = fold_config(cfg, k)
    seen = {layer: sorted(int(c) for c in b.stats.cells) for layer, b in bundles.items()}
    validated = {layer: checkpoint_cells(fcfg.checkpoint_dir / layer, "val_cells") for layer in bundles}
    leaked = {layer: sorted((set(s) | set(validated[layer])) & set(test.tolist())) for layer, s in seen.items()}
    leaked = {l: v for l, v in leaked.items() if v}
    if leaked:
        raise CheckpointError(
            f"fold {k}: models in {d} were trained on test cells {leaked}; delete {d} and run evaluate again"
        )
    t0 = _time.perf_counter()
    pred = predict_fn(fcfg, bundles, test, period[0], period[1])
    pred = pred.transpose(C.LAYER, C.CELL, C.TIME).astype(np.float32)
    pred.name = C.SM
    pred_path = d / FOLD_PREDICTIONS
    tmp = pred_path.with_suffix(".tmp.nc")
    pred.to_netcdf(tmp)
    tmp.replace(pred_path)
    (d / FOLD_DONE).write_text(
        json.dumps(
            {
                "fold": k,
                "fingerprint": plan.fingerprint,
                "test_cells": [int(c) for c in test],
                "train_cells": {l: seen[l] for l in seen},  # the checkpoints' NormStats.cells
                "val_cells": validated,  # cells used for validation / early stopping inside the fold
                "train_seconds": round(train_seconds, 1),  # of the stacked training it was part of
                "predict_seconds": round(_time.perf_counter() - t0, 1),
            },
            indent=1,
        )
    )
    return pred


def checkpoint_cells(layer_dir: Path, key: str) -> list[int]:
    """Union of a cell list (`train_cells`, `val_cells`) over the JSON metadata of every checkpoint
    of a layer directory (`<layer>/{best,state}/<step>/meta/metadata`, written by training)."""
    cells: set[int] = set()
    for f in sorted(Path(layer_dir).glob("*/*/meta/metadata")):
        try:
            cells |= {int(c) for c in json.loads(f.read_text()).get(key, [])}
        except (ValueError, TypeError, AttributeError):
            raise CheckpointError(
                f"{f}: unreadable checkpoint metadata; delete {layer_dir} and run evaluate again"
            ) from None
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
    ds[C.SM].attrs.update(
        {
            "units": C.UNITS[C.SM],
            "long_name": "cross-validated soil moisture (each cell predicted by the fold model that never saw it)",
        }
    )
    ds.attrs.update(
        {"somojax_product": "cross-validation", "description": "SoMo.ml*-style series: k-fold CV over target cells"}
    )
    return ds


def cross_validate(
    cfg: Config,
    targets: xr.Dataset,
    train_fn: TrainFn | None = None,
    predict_fn: PredictFn | None = None,
) -> xr.DataArray:
    """Runs (or resumes) the k-fold CV and returns the SoMo.ml*-style series [layer, cell, time].

    The folds still to train are trained together, one stacked ensemble per layer
    (`train_fn`, default `cascade.train_folds`); each then predicts its test cells.
    Writes `folds.csv`, `folds.json`, `folds/<k>/` (checkpoints, test predictions, done.json),
    `folds/stacked/` (the stacked train states) and `cv_predictions.zarr` into `cfg.evaluation_dir`.
    """
    if train_fn is None or predict_fn is None:
        from somojax.evaluate import cascade

        train_fn = train_fn or cascade.train_folds
        predict_fn = predict_fn or cascade.predict_fold
    out = cfg.evaluation_dir
    k, seed = cfg.evaluate.folds, cfg.evaluate.fold_seed
    folds = assign_folds(layer_presence(targets), k, seed)
    save_folds(folds, out, k, seed)
    period = prediction_period(cfg, targets)
    plans = [fold_plan(cfg, f, folds) for f in range(k)]
    parts = {p.k: finished_prediction(cfg, p) for p in plans}
    todo = [p for p in plans if parts[p.k] is None]
    untrained = [p for p in todo if not _marker_matches(fold_dir(cfg, p.k) / FOLD_TRAINED, p.fingerprint)]
    bundles, seconds = train_stacked(cfg, untrained, train_fn) if untrained else ({}, 0.0)
    for p in todo:
        t0 = _time.perf_counter()
        parts[p.k] = predict_fold(cfg, p, bundles.get(p.k) or load_fold_bundles(cfg, p.k), period, predict_fn, seconds)
        log.info("fold %d/%d: test cells predicted in %s", p.k + 1, k, format_seconds(_time.perf_counter() - t0))
    ds = assemble([parts[f] for f in range(k)], folds, targets)
    path = out / CV_STORE
    tmp = out / f".{CV_STORE}.tmp"
    ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    if path.exists():
        shutil.rmtree(path)
    tmp.replace(path)
    log.info("cross-validation: %d folds, series of %d cells written to %s", k, ds.sizes[C.CELL], path)
    return ds[C.SM]
