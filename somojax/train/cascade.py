"""The cascade: layer k's training inputs `sm_L1`, `sm_L2` are the upper layers' exact predictions.

Layer 2 is trained with the layer-1 ensemble-mean prediction as an extra dynamic input, layer 3
with those of layers 1 and 2 (docs/design.md#the-cascade). The predictions are EXACT seq-to-one predictions:
day e gets its own `seq_length`-day window from a zero state (docs/design.md#inference-semantics), de-normalised with
the upper layer's target statistics and clipped at 0, as the product is. Days without a complete
finite input window are NaN, so the samples that would need them are not used.

`upper_predictions` runs the rollout engine's in-memory cascade (`somojax.infer.engine`) on the
training cells, so the inputs a layer is trained with are exactly those `somojax predict` feeds it.
`exact_rollout` is a compact, independent implementation of the exact mode (the input projection
hoisted for all days, all windows of a cell stepped in parallel, window w reading the contiguous
slice w + t at step t), kept as a cross-check in the tests and used by `somojax.evaluate`.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from somojax import constants as C
from somojax.checkpoint import Bundle
from somojax.models import ealstm
from somojax.utils.logging import get_logger

log = get_logger("train")


@functools.partial(jax.jit, static_argnames=("seq_length",))
def _windows(params, x_d: jax.Array, x_s: jax.Array, seq_length: int) -> jax.Array:
    """One member: predictions of every complete window. x_d [C, days, D] -> [C, days - L + 1]."""
    xw = ealstm.project(params, x_d)  # [C, days, 3H]
    i = ealstm.input_gate(params, x_s)[:, None, :]  # [C, 1, H]
    n_win = x_d.shape[1] - seq_length + 1
    h0 = jnp.zeros((x_d.shape[0], n_win, params["W_hh"].shape[0]), x_d.dtype)

    def step(carry, t):
        h, c = carry
        xw_t = jax.lax.dynamic_slice_in_dim(xw, t, n_win, axis=1)  # window w reads day w + t
        return ealstm.cell(params["W_hh"], i, h, c, xw_t), None

    (h, _), _ = jax.lax.scan(step, (h0, h0), jnp.arange(seq_length))
    return ealstm.head(params, h)


def exact_rollout(
    bundle: Bundle, x_d: np.ndarray, x_s: np.ndarray, block_days: int = 730, cell_block: int = 64
) -> np.ndarray:
    """Ensemble-mean exact predictions of normalised inputs, in the target's raw units.

    Each member's prediction is de-normalised and clipped at 0, then the members are averaged
    (the product's definition, `somojax.infer.engine`).

    Args:
      bundle: the upper layer's model.
      x_d: [C, days, D] normalised dynamic inputs in the bundle's input order.
      x_s: [C, S] normalised statics.
      block_days: output days per pass (bounds memory: C·block·H floats per member).

    Returns:
      [C, days] float32, clipped at 0; NaN for the first L − 1 days and where a window has a
      non-finite input.
    """
    L = bundle.model.seq_length
    n_cells, n_days, _ = x_d.shape
    out = np.full((n_cells, n_days), np.nan, np.float32)
    if n_days < L:
        return out
    mean, std = bundle.stats.target_mean[bundle.layer], bundle.stats.target_std[bundle.layer]
    members = [jax.tree.map(lambda a: jnp.asarray(a[m]), dict(bundle.params)) for m in range(bundle.n_members)]
    for c0 in range(0, n_cells, cell_block):
        xs = jnp.asarray(x_s[c0 : c0 + cell_block])
        for e0 in range(L - 1, n_days, block_days):
            e1 = min(e0 + block_days, n_days)
            xd = jnp.asarray(x_d[c0 : c0 + cell_block, e0 - L + 1 : e1])
            # each member de-normalised and clipped at 0, then the member mean (as the product)
            acc = sum(np.maximum(np.asarray(_windows(p, xd, xs, L), np.float64) * std + mean, 0.0) for p in members)
            out[c0 : c0 + cell_block, e0:e1] = acc / len(members)
    return out


def upper_predictions(
    layer: str,
    bundles: Mapping[str, Bundle],
    raw_dynamic: np.ndarray,
    raw_static: np.ndarray,
    dynamic_names: Sequence[str],
    static_names: Sequence[str],
    mode: str = "auto",
) -> dict[str, np.ndarray]:
    """{`sm_L1`: [C, days], ...}: the inputs `layer` needs from the layers above it.

    Runs the rollout engine's cascade (`somojax.infer.engine.cascade`) on these cells: each
    upper layer on its own input order and statistics, `sm_L1` feeding L2 when layer 3 is
    trained, exactly as `somojax predict` computes them for the product.

    Args:
      bundles: the upper layers' models (`L1`, and `L2` for layer 3).
      raw_dynamic: [C, days, D] raw (not normalised) dynamic inputs named `dynamic_names`.
      raw_static: [C, S] raw statics named `static_names`.
      mode: the inference mode (`infer.mode`; `auto` is `exact` for sequence-to-one models).
    """
    from somojax.infer import engine

    names = C.UPPER_LAYER_INPUTS[layer]
    uppers = [n.removeprefix("sm_") for n in names]
    columns = {n: np.asarray(raw_dynamic[..., k], np.float32) for k, n in enumerate(dynamic_names)}
    statics = {n: np.asarray(raw_static[:, k], np.float32) for k, n in enumerate(static_names)}
    out = engine.cascade({u: bundles[u] for u in uppers}, columns, statics, layers=uppers, mode=mode)
    preds = {}
    for name, upper in zip(names, uppers):
        b = bundles[upper]
        preds[name] = np.asarray(out[upper].mean, np.float32)
        log.info(
            "%s: %s from the %d-member %s ensemble (%s), %d cells x %d days",
            layer,
            name,
            b.n_members,
            upper,
            engine.resolve_mode(b, mode),
            *preds[name].shape,
        )
    return preds
