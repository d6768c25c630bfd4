"""Models: pure functions of parameters and arrays (no training, inference or I/O here)."""

from somojax.models.ealstm import EALSTM, PARAM_NAMES, Params, forward, init_params
from somojax.models.ensemble import ensemble_forward, init_ensemble

__all__ = ["EALSTM", "PARAM_NAMES", "Params", "forward", "init_params", "ensemble_forward", "init_ensemble"]
