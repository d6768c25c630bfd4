"""What the training loop reads: a protocol, and an in-memory implementation of it.

The loop needs (`TrainData`):
- `train_iterator()`: an endless iterator of training batches (reshuffled every pass over the
  samples, deterministic for a seed) with `get_state()`/`set_state()` for checkpoints;
- `val_batches()`: the validation samples in a fixed order, as batches of exactly `batch_size`
  (the last one padded with NaN targets, which the loss masks), shared by all members;
- `steps_per_epoch`, and the sample counts for logging.

A batch is a dict of NumPy arrays: `x_d` [B, T, D] (or [M, B, T, D] with per-member batches),
`x_s` [B, S], `y` [B, n] normalised targets with NaN, `sigma` [B] (σ_c of the sample's cell, raw
units), `cell` [B], `day` [B].

`ArrayTrainData` implements it over arrays in memory (or memory-mapped): normalised dynamic inputs
[cell, day, D], statics [cell, S], normalised targets [cell, day], σ [cell], and tables of valid
(cell index, end day) samples. Windows are cut on access; nothing is materialised per sample.
The sample tables and the arrays come from `somojax.data` for real stores; tests build them
directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import grain
import numpy as np

from somojax.errors import ConfigError


class TrainData(Protocol):
    steps_per_epoch: int
    n_train: int
    n_val: int

    def train_iterator(self) -> Iterator[dict]: ...

    def val_batches(self) -> Iterable[dict]: ...


@dataclass(frozen=True)
class WindowArrays:
    """Model-ready arrays of one layer.

    Attributes:
      dynamic: [cell, day, D] float32, normalised (upper-layer inputs last).
      static: [cell, S] float32, normalised.
      target: [cell, day] float32, normalised, NaN where missing.
      sigma: [cell] float32, standard deviation of the raw target per cell (training period).
      cells: [cell] global cell ids.
      first_day: the date of day index 0 (ISO).
    """

    dynamic: np.ndarray
    static: np.ndarray
    target: np.ndarray
    sigma: np.ndarray
    cells: np.ndarray
    first_day: str = ""


def window(arrays: WindowArrays, cell: int, end: int, seq_length: int, last_n: int) -> dict:
    """The sample ending on day index `end` of cell index `cell` (inputs end..end-L+1)."""
    return {
        "x_d": np.asarray(arrays.dynamic[cell, end - seq_length + 1 : end + 1], np.float32),
        "x_s": np.asarray(arrays.static[cell], np.float32),
        "y": np.asarray(arrays.target[cell, end - last_n + 1 : end + 1], np.float32),
        "sigma": np.float32(arrays.sigma[cell]),
        "cell": np.int64(arrays.cells[cell]),
        "day": np.int32(end),
    }


def windows(arrays: WindowArrays, cells: np.ndarray, ends: np.ndarray, seq_length: int, last_n: int) -> dict:
    """The samples (cells[b], ends[b]) as one batch, gathered with one fancy index per array."""
    cells = np.asarray(cells, np.int64)
    ends = np.asarray(ends, np.int64)
    days = ends[:, None] + np.arange(1 - seq_length, 1)[None, :]  # [B, L]
    tdays = ends[:, None] + np.arange(1 - last_n, 1)[None, :]  # [B, n]
    return {
        "x_d": np.asarray(arrays.dynamic[cells[:, None], days], np.float32),
        "x_s": np.asarray(arrays.static[cells], np.float32),
        "y": np.asarray(arrays.target[cells[:, None], tdays], np.float32),
        "sigma": np.asarray(arrays.sigma[cells], np.float32),
        "cell": np.asarray(arrays.cells[cells], np.int64),
        "day": ends.astype(np.int32),
    }


class ArrayTrainData:
    """`TrainData` over in-memory arrays with grain.

    Args:
      arrays: the layer's `WindowArrays`.
      train_samples, val_samples: [n, 2] int arrays of (cell index, end-day index).
      seq_length, predict_last_n: window length and number of targets per sample.
      batch_size: samples per member per step.
      members: number of ensemble members; with `shared_batches=False` each step takes
        `members * batch_size` consecutive shuffled samples, member m the m-th block.
      seed: shuffling seed (each pass over the samples is reshuffled from it).
      max_updates_per_epoch: caps `steps_per_epoch`.
    """

    def __init__(
        self,
        arrays: WindowArrays,
        train_samples: np.ndarray,
        val_samples: np.ndarray,
        *,
        seq_length: int,
        predict_last_n: int,
        batch_size: int,
        members: int,
        shared_batches: bool,
        seed: int,
        max_updates_per_epoch: int | None = None,
    ):
        self.arrays = arrays
        self.train_samples = np.asarray(train_samples, np.int64).reshape(-1, 2)
        self.val_samples = np.asarray(val_samples, np.int64).reshape(-1, 2)
        self.seq, self.last_n = seq_length, predict_last_n
        self.batch_size, self.members, self.shared = batch_size, members, shared_batches
        self.seed = seed
        self.n_train, self.n_val = len(self.train_samples), len(self.val_samples)
        per_step = batch_size * (1 if shared_batches else members)
        full = self.n_train // per_step
        if full == 0:
            raise ConfigError(
                f"{self.n_train} training samples do not fill one step of {per_step} samples "
                f"(train.batch_size={batch_size}{'' if shared_batches else f' x {members} members'}): "
                "lower train.batch_size"
                + ("" if shared_batches else ", set train.shared_batches=true")
                + " or widen the target period or region (data.target_start/end, data.lat_range/lon_range)"
            )
        self.steps_per_epoch = min(full, max_updates_per_epoch) if max_updates_per_epoch else full

    def train_iterator(self) -> Iterator[dict]:
        per_step = self.batch_size * (1 if self.shared else self.members)
        m, b = (1 if self.shared else self.members), self.batch_size
        shape = (lambda a: a) if self.shared else (lambda a: a.reshape((m, b) + a.shape[1:]))
        samples, arrays, seq, last_n = self.train_samples, self.arrays, self.seq, self.last_n

        def gather(idx: np.ndarray) -> dict:
            s = samples[idx]
            return {k: shape(v) for k, v in windows(arrays, s[:, 0], s[:, 1], seq, last_n).items()}

        # grain shuffles sample indices (reshuffled each pass, state = position); windows are
        # gathered per batch
        ds = (
            grain.MapDataset.range(self.n_train)
            .shuffle(seed=self.seed)
            .repeat()
            .batch(per_step, drop_remainder=True, batch_fn=lambda xs: np.asarray(xs, np.int64))
            .map(gather)
        )
        return iter(ds.to_iter_dataset())

    def val_batches(self) -> Iterator[dict]:
        b = self.batch_size
        for start in range(0, self.n_val, b):
            s = self.val_samples[start : start + b]
            batch = windows(self.arrays, s[:, 0], s[:, 1], self.seq, self.last_n)
            pad = b - len(s)
            if pad:
                batch = {k: _pad(k, v, pad) for k, v in batch.items()}
            yield batch


def _pad(key: str, v: np.ndarray, n: int) -> np.ndarray:
    fill = np.nan if key in ("y", "sigma") else 0
    return np.concatenate([v, np.full((n,) + v.shape[1:], fill, v.dtype)])
