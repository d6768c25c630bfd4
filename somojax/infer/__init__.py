"""Rollout: exact and chunked inference over tiles of cells into the prediction store."""

from __future__ import annotations

from typing import Sequence

from somojax.config import Config
from somojax.infer import points, rollout
from somojax.infer.engine import cascade, layer_predictions
from somojax.infer.export import export
from somojax.infer.rollout import predict_cells

__all__ = ["cascade", "layer_predictions", "export", "predict", "predict_cells"]


def predict(cfg: Config, layers: Sequence[str] | None = None, fresh: bool = False) -> dict:
    """`somojax predict`: the gridded prediction store (`rollout.predict`) or, with
    `infer.region=points`, one NetCDF time-series file per layer (`points.predict_points`).

    Returns:
      The run's summary.
    """
    if cfg.infer.region == "points":
        return points.predict_points(cfg, layers)
    return rollout.predict(cfg, layers, fresh)
