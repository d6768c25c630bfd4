"""Training and prediction of one cross-validation fold with the real cascade.

`train_folds` trains L1 → L2 → L3 of several folds together (`somojax.train.run.train_folds`:
each layer of all folds one stacked ensemble, checkpoints in each fold's own directory, so layer
k's upper-layer inputs come from the fold's own models); `train_fold` trains one fold alone
(`somojax.train.train(cells=)`), the same result. `predict_fold` rolls the fold's cascade out at its test cells: L1 from the forcings, L2
from the forcings and the fold's L1 prediction, L3 from those and the fold's L2 prediction, each
day with its own exact `seq_length`-day window (docs/design.md#inference-semantics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax.checkpoint import Bundle
from somojax.config import Config
from somojax.utils.logging import get_logger

log = get_logger("evaluate")


def train_fold(cfg: Config, cells: np.ndarray, layers: Sequence[str], fresh: bool) -> dict[str, Bundle]:
    """Trains (or resumes) the fold's cascade on `cells` into `cfg.checkpoint_dir`; {layer: Bundle}."""
    from somojax.train import train

    return train(cfg, layers=list(layers), fresh=fresh, cells=[int(c) for c in cells])


def train_folds(
    cfgs: Mapping[int, Config], cells: Mapping[int, np.ndarray], layers: Sequence[str], fresh: bool, stack_dir: Path
) -> dict[int, dict[str, Bundle]]:
    """Trains (or resumes) the folds' cascades together, each layer one stacked ensemble
    (`somojax.train.train_folds`); {fold: {layer: Bundle}}."""
    from somojax.train.run import train_folds as train_stacked

    return train_stacked(
        cfgs, {k: [int(c) for c in v] for k, v in cells.items()}, stack_dir, layers=list(layers), fresh=fresh
    )


def cascade_predict(
    bundles: Mapping[str, Bundle],
    raw_dynamic: np.ndarray,
    raw_static: np.ndarray,
    dynamic_names: Sequence[str],
    static_names: Sequence[str],
    mode: str = "auto",
) -> dict[str, np.ndarray]:
    """Exact predictions of each layer in `bundles` (upper layers first), [cell, day] in m3 m-3.

    The rollout engine's cascade (`somojax.infer.engine.cascade`), as `somojax predict` and the
    cascade's training inputs compute them: every member de-normalised and clipped at 0, then
    the member mean; layer k's `sm_L1`/`sm_L2` inputs are the upper layers' predictions.

    Args:
      raw_dynamic: [cell, day, D] raw dynamic inputs named `dynamic_names` (the forcing period).
      raw_static: [cell, S] raw statics named `static_names`.

    Returns:
      {layer: [cell, day]}: NaN before the first day with a complete input window (for layer k:
      k·(seq_length − 1) days after the first forcing day when every layer has the same length).
    """
    from somojax.infer import engine

    layers = [l for l in C.LAYERS if l in bundles]
    return engine.cascade_means(bundles, raw_dynamic, raw_static, dynamic_names, static_names, layers, mode)


def spin_up_days(bundles: Mapping[str, Bundle]) -> int:
    """Days of inputs before a day that the deepest layer's exact prediction of it depends on."""
    return sum(b.model.seq_length - 1 for b in bundles.values())


def predict_fold(cfg: Config, bundles: Mapping[str, Bundle], cells: np.ndarray, start: str, end: str) -> xr.DataArray:
    """The fold's cascade at its test cells over [start, end]: [layer, cell, time] (m3 m-3)."""
    from somojax.data.samples import cell_dynamic, cell_static, open_stores

    forcings, statics, _ = open_stores(cfg)
    cells = np.asarray(cells, np.int64)
    names_d, names_s = tuple(cfg.data.dynamic_inputs), tuple(cfg.data.static_inputs)
    days = pd.DatetimeIndex(forcings[C.TIME].values)
    # only the days [start, end] depend on, so a long forcing period is not rolled out in vain
    first = max(int(days.searchsorted(pd.Timestamp(start))) - spin_up_days(bundles), 0)
    last = int(days.searchsorted(pd.Timestamp(end), side="right"))
    days = days[first:last]
    dyn = cell_dynamic(forcings.isel({C.TIME: slice(first, last)}), cells, names_d)
    stat = cell_static(statics, cells, names_s)
    preds = cascade_predict(bundles, dyn, stat, names_d, names_s, cfg.infer.mode)
    layers = [l for l in C.LAYERS if l in preds]
    da = xr.DataArray(
        np.stack([preds[l] for l in layers]),
        dims=(C.LAYER, C.CELL, C.TIME),
        coords={C.LAYER: layers, C.CELL: cells, C.TIME: days},
    )
    da = da.sel({C.TIME: slice(start, end)}).reindex({C.TIME: pd.date_range(start, end, freq="D")})
    for l in layers:
        first = da.sel({C.LAYER: l}).notnull().any(C.CELL)
        if first.any():
            d0 = pd.Timestamp(da[C.TIME].values[int(np.argmax(first.values))]).date()
            if str(d0) > start:
                log.info(
                    "%s: cross-validated series start on %s (the cascade needs %s days of forcing spin-up)",
                    l,
                    d0,
                    "k·(seq_length−1)",
                )
    return da
