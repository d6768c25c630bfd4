"""Checks of the configured periods before any data is read (fail fast, say what to change)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from somojax import constants as C
from somojax.errors import ConfigError


def spinup_days(layer: str, seq_length: int) -> int:
    """Days of forcing layer `layer` needs before its first output day: k·(seq_length − 1).

    Layer k's window reads layer k−1's prediction, which itself needs a full window, and so on.
    """
    k = C.LAYERS.index(layer) + 1
    return k * (int(seq_length) - 1)


def check_spinup(
    forcing_start: str,
    period_start: str,
    layers: Sequence[str],
    seq_length: int,
    what: str = "target period (data.target_start)",
) -> None:
    """Raises `ConfigError` if the forcing starts too late for any of `layers` to have full
    windows from `period_start` on; the message says how many days are missing and for which layer."""
    f0, p0 = pd.Timestamp(forcing_start), pd.Timestamp(period_start)
    have = (p0 - f0).days
    worst = max(layers, key=lambda layer: spinup_days(layer, seq_length)) if layers else None
    if worst is None:
        return
    need = spinup_days(worst, seq_length)
    if have < need:
        latest = (p0 - pd.Timedelta(days=need)).date().isoformat()
        raise ConfigError(
            f"forcings shorter than the spin-up: layer {worst} needs {need} days of forcing before the first day of "
            f"the {what} {p0.date()} ({C.LAYERS.index(worst) + 1}·(model.seq_length−1) = "
            f"{C.LAYERS.index(worst) + 1}·{seq_length - 1}), but data.forcing_start is {f0.date()} ({have} days before): "
            f"{need - have} days are missing. Set data.forcing_start to {latest} or earlier, or start the period later."
        )


def check_periods(forcing_start: str, forcing_end: str, target_start: str, target_end: str) -> None:
    """The forcing period must be ordered and cover the target period."""
    fs, fe, ts, te = (pd.Timestamp(x) for x in (forcing_start, forcing_end, target_start, target_end))
    if fe < fs:
        raise ConfigError(f"data.forcing_end {fe.date()} is before data.forcing_start {fs.date()}")
    if te < ts:
        raise ConfigError(f"data.target_end {te.date()} is before data.target_start {ts.date()}")
    if ts < fs or te > fe:
        raise ConfigError(
            f"the target period {ts.date()}..{te.date()} must lie inside the forcing period {fs.date()}..{fe.date()} "
            "(rescaling and the statics tp/arid use ERA5 over the target period)"
        )
