"""Inference kernels: `exact` (every output day its own window) and `chunked` (stride k).

Both take the normalised inputs of a batch of cells over an input period and one member's
parameters, and return normalised predictions; de-normalisation, clipping and the ensemble
statistics happen in `somojax.infer.engine`.

`exact` (DESIGN.md §2): output day w (w = 0 .. W−1) is predicted from its own window of L days,
input days w .. w+L−1, from a zero state. The input projection x·W_ih + b is computed ONCE for
all days ([C, T, 3H], T = W + L − 1); then all windows of a cell are stepped together: at step s
window w reads projected day w + s, so the step's input is the contiguous slice
`xw[:, s : s + W]` — nothing of shape [W, L, D] is ever built. The windows axis is processed in
chunks of `window_chunk` so that the recurrent state and the step's gates stay in cache; the
per-step work is one [C·chunk, H] × [H, 3H] matmul. Cost: L cell-steps per output.

`chunked` (models trained with `predict_last_n = k`): windows of L days with stride k; window j
covers input days j·k + k − 1 .. j·k + k + L − 2 and gives its last k outputs, i.e. output days
w = j·k .. j·k + k − 1 in the indexing of `exact` (output w is input day w + L − 1).
Cost: (L + k − 1)/k cell-steps per output. Exact for such models, NOT for sequence-to-one ones.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from somojax.models import ealstm

Params = Mapping[str, jax.Array]


def _gates_step(params: Params, i: jax.Array, precision: str | None):
    w_hh = params["W_hh"]

    def step(h, c, xw):
        return ealstm.cell(w_hh, i, h, c, xw, precision)

    return step


def exact_windows(params: Params, xw: jax.Array, i: jax.Array, seq_length: int, window_chunk: int = 512, precision: str | None = "highest", unroll: int = 1) -> jax.Array:
    """Exact seq-to-one predictions of every complete window.

    Args:
      params: one member's parameters.
      xw: [C, T, 3H] projected inputs x·W_ih + b of T consecutive days.
      i: [C, H] static input gate.
      seq_length: L.
      window_chunk: windows stepped together per pass (cache blocking).

    Returns:
      [C, T − L + 1] normalised predictions; output w is the window ending on day w + L − 1.
    """
    c, t, g3 = xw.shape
    hs = g3 // 3
    n_win = t - seq_length + 1
    wc = max(1, min(window_chunk, n_win))
    n_chunks = math.ceil(n_win / wc)
    pad = n_chunks * wc - n_win
    if pad:
        xw = jnp.pad(xw, ((0, 0), (0, pad), (0, 0)))
    step = _gates_step(params, i[:, None, :], precision)

    def one_chunk(k):
        w0 = k * wc
        zeros = jnp.zeros((c, wc, hs), xw.dtype)

        def body(carry, s):
            h, cc = carry
            x_s = jax.lax.dynamic_slice_in_dim(xw, w0 + s, wc, axis=1)  # window w reads day w + s
            return step(h, cc, x_s), None

        (h, _), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(seq_length), unroll=unroll)
        return ealstm.head(params, h)  # [C, wc]

    y = jax.lax.map(one_chunk, jnp.arange(n_chunks))  # [n_chunks, C, wc]
    return jnp.moveaxis(y, 0, 1).reshape(c, n_chunks * wc)[:, :n_win]


def chunked_windows(params: Params, xw: jax.Array, i: jax.Array, seq_length: int, last_n: int, precision: str | None = "highest", unroll: int = 1) -> jax.Array:
    """Predictions of windows with stride k = `last_n`, each giving its last k outputs.

    Args:
      xw: [C, T, 3H] projected inputs; i: [C, H].

    Returns:
      [C, T − L + 1] normalised predictions aligned like `exact_windows` (output w is day
      w + L − 1), from ceil((T − L + 1)/k) windows.
    """
    c, t, g3 = xw.shape
    hs = g3 // 3
    k = last_n
    n_out = t - seq_length + 1
    n_win = math.ceil(n_out / k)
    # Window j reads day (k − 1) + j·k + s at step s. With the first k − 1 days dropped, xw
    # padded to (n_win + q_max)·k days and reshaped to [C, blocks, k, 3H], that day is block
    # j + s // k, row s % k. Padded days only reach outputs beyond n_out (they are causal).
    q_max = math.ceil(seq_length / k)
    total = (n_win + q_max) * k
    xw = xw[:, k - 1 :]
    xw = jnp.pad(xw, ((0, 0), (0, total - xw.shape[1]), (0, 0))).reshape(c, n_win + q_max, k, g3)
    step = _gates_step(params, i[:, None, :], precision)

    def read(s):
        q, r = s // k, s % k
        blk = jax.lax.dynamic_slice(xw, (0, q, r, 0), (c, n_win, 1, g3))
        return blk[:, :, 0, :]

    def body(carry, s):
        h, cc = carry
        h, cc = step(h, cc, read(s))
        return (h, cc), h

    zeros = jnp.zeros((c, n_win, hs), xw.dtype)
    carry, _ = jax.lax.scan(lambda cr, s: (body(cr, s)[0], None), (zeros, zeros), jnp.arange(seq_length - k), unroll=unroll)
    _, hseq = jax.lax.scan(body, carry, jnp.arange(seq_length - k, seq_length), unroll=unroll)  # [k, C, J, H]
    y = ealstm.head(params, hseq)  # [k, C, J]
    return jnp.transpose(y, (1, 2, 0)).reshape(c, n_win * k)[:, :n_out]


@functools.partial(jax.jit, static_argnames=("seq_length", "mode", "last_n", "window_chunk", "precision", "unroll", "member_map"))
def predict_normalised(
    params: Params,
    x_d: jax.Array,
    x_s: jax.Array,
    *,
    seq_length: int,
    mode: str = "exact",
    last_n: int = 1,
    window_chunk: int = 512,
    precision: str | None = "highest",
    unroll: int = 1,
    member_map: bool = True,
) -> jax.Array:
    """Every member's normalised predictions for every complete window.

    Args:
      params: ensemble parameters, leaves [M, ...].
      x_d: [C, T, D] normalised dynamic inputs (finite: the caller replaces missing values and
        masks the affected windows).
      x_s: [C, S] normalised statics.
      mode: "exact" or "chunked" (stride `last_n`).
      member_map: members one after another (`lax.map`; less memory, faster on CPU) or
        vectorised (`vmap`; batched matmuls, for accelerators).

    Returns:
      [M, C, T − L + 1].
    """

    def one(p):
        xw = ealstm.project(p, x_d)  # hoisted: every day's projection, shared by L windows
        i = ealstm.input_gate(p, x_s)
        if mode == "exact":
            return exact_windows(p, xw, i, seq_length, window_chunk, precision, unroll)
        return chunked_windows(p, xw, i, seq_length, last_n, precision, unroll)

    if member_map:
        return jax.lax.map(one, dict(params))
    return jax.vmap(one)(dict(params))


def cost_per_output(mode: str, seq_length: int, last_n: int = 1) -> float:
    """Cell-steps per output day and member: L (exact) or (L + k − 1)/k (chunked)."""
    if mode == "exact":
        return float(seq_length)
    return (seq_length + last_n - 1) / last_n
