"""Checkpoints: everything inference needs lives next to the weights (STYLE.md §8).

A layer's checkpoint directory (`<workdir>/checkpoints/<layer>/`) is written by training (orbax)
or by `somojax import-torch`. `Bundle` is what the rollout engine and evaluation consume: the
ensemble parameters, the model settings, the normalisation statistics and the exact input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from somojax.config import ModelConfig
from somojax.normalization import NormStats


@dataclass(frozen=True)
class Bundle:
    """A trained (or imported) layer model, ready for inference.

    Attributes:
      layer: `L1`, `L2` or `L3`.
      params: ensemble parameters, each leaf [member, ...] (see `somojax.models.ealstm`).
      model: the model settings it was trained with (hidden size, seq_length, predict_last_n ...).
      stats: normalisation statistics (inputs and this layer's target).
      dynamic_inputs: column order of the dynamic inputs, upper-layer inputs (`sm_L1`...) last.
      static_inputs: column order of the static inputs.
      config: the resolved run config (as a dict) the model was trained with, for provenance.
    """

    layer: str
    params: Mapping[str, Any]
    model: ModelConfig
    stats: NormStats
    dynamic_inputs: tuple[str, ...]
    static_inputs: tuple[str, ...]
    config: Mapping[str, Any] | None = None

    @property
    def n_members(self) -> int:
        return int(self.params["W_hh"].shape[0])
