"""Rollout: exact and chunked inference over tiles of cells into the prediction store."""

from somojax.infer.engine import cascade, layer_predictions
from somojax.infer.export import export
from somojax.infer.rollout import predict, predict_cells

__all__ = ["cascade", "layer_predictions", "export", "predict", "predict_cells"]
