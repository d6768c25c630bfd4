"""Training losses over valid targets only (docs/design.md#loss).

Targets may be NaN (missing observation days inside a `predict_last_n` window, or padding of the
last validation batch). They are masked, never zero-filled: the squared error is taken of
`where(valid, ŷ − y, 0)`, so neither the loss nor its gradient sees a NaN.

NSE* (Kratzert et al. 2019, eq. 3; ealstm_regional `NSELoss`):
    NSE* = 1/N Σ_valid (ŷ − y)² / (σ_c + ε)²
with σ_c the standard deviation of the target in the sample's cell over the training period and
ε = 0.1. Errors are in normalised target units; σ_c is in raw target units as in ealstm_regional
(the default) or in normalised units (`train.nse_sigma_units`), converted by the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sums(pred: jax.Array, y: jax.Array, weight: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(Σ_valid w·(ŷ − y)², number of valid targets).

    Args:
      pred: [B, n] predictions; y: [B, n] targets with NaN where missing.
      weight: [B] per-sample weight (1/(σ_c+ε)² for NSE*), or None for 1.

    Returns:
      Two float32 scalars, so that sums over batches (or devices) give an exact overall mean.
    """
    valid = jnp.isfinite(y)
    err = jnp.where(valid, pred - jnp.where(valid, y, 0.0), 0.0)
    sq = err * err
    if weight is not None:
        sq = sq * weight[:, None]
    return jnp.sum(sq), jnp.sum(valid.astype(sq.dtype))


def nse_weight(sigma: jax.Array, eps: float) -> jax.Array:
    """1/(σ_c + ε)² per sample; σ_c [B]. A NaN σ_c (padding) gets weight 0."""
    w = 1.0 / (sigma + eps) ** 2
    return jnp.where(jnp.isfinite(w), w, 0.0)


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error over valid targets (0 when there are none). pred, y: [B, n]."""
    s, n = masked_sums(pred, y)
    return s / jnp.maximum(n, 1.0)


def nse_star(pred: jax.Array, y: jax.Array, sigma: jax.Array, eps: float = 0.1) -> jax.Array:
    """NSE* over valid targets (0 when there are none). pred, y: [B, n]; sigma: [B]."""
    s, n = masked_sums(pred, y, nse_weight(sigma, eps))
    return s / jnp.maximum(n, 1.0)
