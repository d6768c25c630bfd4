"""Normalisation statistics: computed on the training cells and period, carried by checkpoints.

`NormStats` holds mean and standard deviation per input variable and of each layer's target, the
cells and period they were computed on, and the variable order. It is written as JSON next to
the stores (`normalization.json`) and inside every checkpoint, so inference needs nothing else
(docs/design.md#conventions).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from somojax.errors import CheckpointError
from somojax.grid import select_cells


@dataclass(frozen=True)
class NormStats:
    """Means and standard deviations used to z-score inputs and targets.

    Attributes:
      mean, std: per variable name (dynamic inputs, statics, upper-layer inputs `sm_L1`...).
      target_mean, target_std: per layer (`L1`...), of the target soil moisture [m3 m-3].
      cells: global cell ids of the training cells the statistics were computed on.
      period: (first day, last day) of the training period, ISO dates.
    """

    mean: Mapping[str, float]
    std: Mapping[str, float]
    target_mean: Mapping[str, float] = field(default_factory=dict)
    target_std: Mapping[str, float] = field(default_factory=dict)
    cells: tuple[int, ...] = ()
    period: tuple[str, str] = ("", "")

    def vector(self, names: tuple[str, ...] | list[str], what: str = "mean") -> np.ndarray:
        """Stats of `names` in that order as float32 [len(names)]; a missing name is an error."""
        table = self.mean if what == "mean" else self.std
        missing = [n for n in names if n not in table]
        if missing:
            raise CheckpointError(f"normalisation statistics have no {what} for {missing}; they cover {sorted(table)}")
        return np.asarray([table[n] for n in names], np.float32)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = dict(self.mean), dict(self.std)
        d["target_mean"], d["target_std"] = dict(self.target_mean), dict(self.target_std)
        d["cells"] = [int(c) for c in self.cells]
        d["period"] = list(self.period)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "normalisation statistics") -> "NormStats":
        try:
            d = json.loads(text)
            return cls(
                mean={k: float(v) for k, v in d["mean"].items()},
                std={k: float(v) for k, v in d["std"].items()},
                target_mean={k: float(v) for k, v in d.get("target_mean", {}).items()},
                target_std={k: float(v) for k, v in d.get("target_std", {}).items()},
                cells=tuple(int(c) for c in d.get("cells", ())),
                period=tuple(d.get("period", ("", ""))),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source} is not a valid statistics file: {e!r}") from None

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NormStats":
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"normalisation statistics {path} do not exist; run `somojax prepare` first")
        return cls.from_json(path.read_text(), source=str(path))


def mean_std(values: np.ndarray, name: str = "variable", min_std: float = 1e-8) -> tuple[float, float]:
    """NaN-aware mean and (population) standard deviation, in float64.

    A constant variable gets std 1 so that z-scoring leaves it at 0 instead of dividing by 0.
    """
    v = np.asarray(values, np.float64)
    n = int(np.sum(np.isfinite(v)))
    if n == 0:
        raise ValueError(f"cannot compute statistics of {name}: no finite value")
    m = float(np.nanmean(v))
    s = float(np.nanstd(v))
    return m, (s if s > min_std else 1.0)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x − mean) / std along the last axis."""
    return (x - mean) / std


def compute_stats(forcings, statics, targets, cells, period) -> NormStats:
    """Normalisation statistics over the given (training) cells and period.

    Args:
      forcings: the forcings store (time, latitude, longitude): mean/std of every dynamic input
        over `cells` × the days of `period`.
      statics: the statics store: mean/std of every static over `cells`.
      targets: the targets store (layer, cell, time): per layer, mean/std of `sm` over `cells`
        × `period` (NaN-aware). The upper-layer inputs `sm_L1`, `sm_L2` (the cascade) get the
        statistics of the targets of L1, L2, as their predictions estimate those.
      cells: global cell ids (`grid.cell_id`).
      period: (first day, last day), ISO dates.

    Returns:
      `NormStats` (float64 means and population stds; a constant variable gets std 1).
    """
    from somojax import constants as C

    cells = np.asarray(sorted({int(c) for c in cells}), np.int64)
    if cells.size == 0:
        raise ValueError("compute_stats needs at least one cell")
    start, end = str(period[0]), str(period[1])
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    f = select_cells(forcings, cells).sel({C.TIME: slice(start, end)})
    if f.sizes[C.TIME] == 0:
        raise ValueError(f"the forcings have no day in {start}..{end}")
    for v in C.DYNAMIC_INPUTS:
        if v in f.data_vars:
            mean[v], std[v] = mean_std(np.asarray(f[v].values), v)
    s = select_cells(statics, cells)
    for v in C.STATIC_INPUTS:
        if v in s.data_vars:
            mean[v], std[v] = mean_std(np.asarray(s[v].values), v)
    tmean: dict[str, float] = {}
    tstd: dict[str, float] = {}
    have = np.isin(targets[C.CELL].values, cells)
    t = targets[C.SM].isel({C.CELL: np.nonzero(have)[0]}).sel({C.TIME: slice(start, end)})
    for layer in t[C.LAYER].values:
        vals = np.asarray(t.sel({C.LAYER: layer}).values)
        if np.isfinite(vals).any():
            tmean[str(layer)], tstd[str(layer)] = mean_std(vals, f"target {layer}")
    for layer, name in (("L1", "sm_L1"), ("L2", "sm_L2")):
        if layer in tmean:
            mean[name], std[name] = tmean[layer], tstd[layer]
    return NormStats(
        mean=mean, std=std, target_mean=tmean, target_std=tstd, cells=tuple(int(c) for c in cells), period=(start, end)
    )
