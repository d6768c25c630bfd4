"""Small learnable data sets for the training-engine tests (not a test module)."""

from __future__ import annotations

import dataclasses

import numpy as np

from somojax.config import Config, load_config
from somojax.train.inputs import ArrayTrainData, WindowArrays


def learnable_arrays(n_cells: int = 12, n_days: int = 160, n_dynamic: int = 3, n_static: int = 2, seed: int = 0, gap_frac: float = 0.2) -> WindowArrays:
    """Targets that an LSTM can learn: a leaky bucket filled by input 0, scaled by a static.

    y_t = a_c · s_t,  s_t = 0.9 s_{t-1} + 0.1 x0_t,  a_c = 1 + 0.5 static0_c; 20% of days missing.
    """
    rng = np.random.default_rng(seed)
    dyn = rng.standard_normal((n_cells, n_days, n_dynamic)).astype(np.float32)
    stat = rng.standard_normal((n_cells, n_static)).astype(np.float32)
    s = np.zeros((n_cells, n_days))
    for t in range(n_days):
        s[:, t] = 0.9 * (s[:, t - 1] if t else 0.0) + 0.1 * dyn[:, t, 0]
    y = (1.0 + 0.5 * stat[:, :1]) * s * 3.0
    y[rng.uniform(size=y.shape) < gap_frac] = np.nan
    sigma = np.nanstd(y, axis=1).astype(np.float32)
    return WindowArrays(dyn, stat, y.astype(np.float32), sigma, np.arange(n_cells) + 1000)


def samples(arrays: WindowArrays, seq_length: int, cells, days) -> np.ndarray:
    """(cell index, end day) of every sample with a valid last target."""
    out = [(c, e) for c in cells for e in days if e >= seq_length - 1 and np.isfinite(arrays.target[c, e])]
    return np.asarray(out, np.int64).reshape(-1, 2)


def tiny_config(tmp_path, **train) -> Config:
    cfg = load_config("tiny", [f"workdir={tmp_path}", "model.hidden_size=8", "model.seq_length=20", "model.dropout=0.1"])
    t = dict(members=2, batch_size=16, epochs=3, max_updates_per_epoch=4, learning_rates=((0, 1e-2),), log_every_steps=2)
    t.update(train)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **t))


def array_data(cfg: Config, arrays: WindowArrays | None = None, val_cells=(10, 11)) -> ArrayTrainData:
    arrays = arrays or learnable_arrays()
    n_cells, n_days = arrays.target.shape
    train_cells = [c for c in range(n_cells) if c not in val_cells]
    L = cfg.model.seq_length
    return ArrayTrainData(
        arrays,
        samples(arrays, L, train_cells, range(n_days)),
        samples(arrays, L, val_cells, range(n_days)),
        seq_length=L,
        predict_last_n=cfg.model.predict_last_n,
        batch_size=cfg.train.batch_size,
        members=cfg.train.members,
        shared_batches=cfg.train.shared_batches,
        seed=cfg.train.seed,
        max_updates_per_epoch=cfg.train.max_updates_per_epoch,
    )
