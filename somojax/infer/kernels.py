"""Inference kernels: `exact` (every output day its own window) and `chunked` (stride k).

Both take the normalised inputs of a batch of cells over an input period and one member's
parameters, and return normalised predictions; de-normalisation, clipping and the ensemble
statistics happen in `somojax.infer.engine`.

`exact` (docs/design.md#inference-semantics): output day w (w = 0 .. W−1) is predicted from its own window of L days,
input days w .. w+L−1, from a zero state. The input projection x·W_ih + b can be computed ONCE for
all days ([C, T, 3H], T = W + L − 1) — or, the default on CPU, the raw days are multiplied inside
the step (see `predict_normalised`); then all windows of a cell are stepped together: at step s
window w reads day w + s, so the step's input is the contiguous slice `x[:, s : s + W]` —
nothing of shape [W, L, D] is ever built. The windows axis is processed in chunks (about
`rows_per_step` cells × windows per step) so that the recurrent state and the step's gates stay
in cache; the per-step work is one [rows, H (+D)] × [H (+D), 3H] matmul. Cost: L cell-steps per
output.

`chunked` (models trained with `predict_last_n = k`): windows of L days with stride k; window j
covers input days j·k + k − 1 .. j·k + k + L − 2 and gives its last k outputs, i.e. output days
w = j·k .. j·k + k − 1 in the indexing of `exact` (output w is input day w + L − 1).
Cost: (L + k − 1)/k cell-steps per output. Exact for such models, NOT for sequence-to-one ones.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp

from somojax.models import cell
from somojax.models.kernel import KernelOptions

Params = Mapping[str, jax.Array]


def _stepper(params: Params, i: jax.Array, hoisted: bool, precision: str | None):
    """The recurrent step on one step's inputs.

    hoisted: the inputs are projected days x·W_ih + b [..., 3H];
    otherwise raw days x [..., D], multiplied inside the step in ONE matmul with the state:
    [h, x] @ [[W_hh], [W_ih]] + b.
    """
    w_hh = params["W_hh"]
    if hoisted:
        return lambda h, c, xw: cell.next_state(i, c, cell.matmul(h, w_hh, precision, None) + xw)
    w_cat = jnp.concatenate([w_hh, params["W_ih"]], axis=0)  # [H + D, 3H]
    b = params["b"]
    return lambda h, c, x: cell.next_state(
        i, c, cell.matmul(jnp.concatenate([h, x], axis=-1), w_cat, precision, None) + b
    )


def exact_windows(
    params: Params,
    src: jax.Array,
    i: jax.Array,
    seq_length: int,
    rows_per_step: int,
    hoisted: bool = False,
    precision: str | None = "highest",
    unroll: int = 1,
) -> jax.Array:
    """Exact seq-to-one predictions of every complete window.

    Args:
      params: one member's parameters.
      src: [C, T, 3H] projected days x·W_ih + b (hoisted) or [C, T, D] normalised days.
      i: [C, H] static input gate.
      seq_length: L.
      rows_per_step: windows × cells stepped together per pass (cache blocking); the window
        chunk is rows_per_step // C.

    Returns:
      [C, T − L + 1] normalised predictions; output w is the window ending on day w + L − 1.
    """
    c, t, _ = src.shape
    hs = params["W_hh"].shape[0]
    n_win = t - seq_length + 1
    # equal chunks of about rows_per_step // C windows (little padding)
    n_chunks = math.ceil(n_win / max(1, min(rows_per_step // c, n_win)))
    wc = math.ceil(n_win / n_chunks)
    pad = n_chunks * wc - n_win
    if pad:
        src = jnp.pad(src, ((0, 0), (0, pad), (0, 0)))
    # 2-D state [C·wc, H]: row (cell, window) — plain GEMMs, no batch dimension.
    step = _stepper(params, jnp.repeat(i, wc, axis=0), hoisted, precision)
    g = src.shape[-1]

    def one_chunk(k):
        w0 = k * wc
        zeros = jnp.zeros((c * wc, hs), src.dtype)

        def body(carry, s):
            x_s = jax.lax.dynamic_slice_in_dim(src, w0 + s, wc, axis=1)  # window w reads day w + s
            return step(*carry, x_s.reshape(c * wc, g)), None

        (h, _), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(seq_length), unroll=unroll)
        return cell.head(params, h, precision).reshape(c, wc)

    y = jax.lax.map(one_chunk, jnp.arange(n_chunks))  # [n_chunks, C, wc]
    return jnp.moveaxis(y, 0, 1).reshape(c, n_chunks * wc)[:, :n_win]


def chunked_windows(
    params: Params,
    src: jax.Array,
    i: jax.Array,
    seq_length: int,
    last_n: int,
    hoisted: bool = False,
    precision: str | None = "highest",
    unroll: int = 1,
) -> jax.Array:
    """Predictions of windows with stride k = `last_n`, each giving its last k outputs.

    Args:
      src: [C, T, 3H] projected or [C, T, D] raw normalised days (see `exact_windows`); i: [C, H].

    Returns:
      [C, T − L + 1] normalised predictions aligned like `exact_windows` (output w is day
      w + L − 1), from ceil((T − L + 1)/k) windows.
    """
    c, t, g = src.shape
    hs = params["W_hh"].shape[0]
    k = last_n
    n_out = t - seq_length + 1
    n_win = math.ceil(n_out / k)
    # Window j reads day (k − 1) + j·k + s at step s. With the first k − 1 days dropped, the days
    # padded to (n_win + q_max)·k and reshaped to [C, blocks, k, g], that day is block
    # j + s // k, row s % k. Padded days only reach outputs beyond n_out (they are causal).
    q_max = math.ceil(seq_length / k)
    total = (n_win + q_max) * k
    src = src[:, k - 1 :]
    src = jnp.pad(src, ((0, 0), (0, total - src.shape[1]), (0, 0))).reshape(c, n_win + q_max, k, g)
    step = _stepper(params, i[:, None, :], hoisted, precision)

    def read(s):
        q, r = s // k, s % k
        return jax.lax.dynamic_slice(src, (0, q, r, 0), (c, n_win, 1, g))[:, :, 0, :]

    def body(carry, s):
        h, cc = step(*carry, read(s))
        return (h, cc), h

    zeros = jnp.zeros((c, n_win, hs), src.dtype)
    carry, _ = jax.lax.scan(
        lambda cr, s: (body(cr, s)[0], None), (zeros, zeros), jnp.arange(seq_length - k), unroll=unroll
    )
    _, hseq = jax.lax.scan(body, carry, jnp.arange(seq_length - k, seq_length), unroll=unroll)  # [k, C, J, H]
    y = cell.head(params, hseq, precision)  # [k, C, J]
    return jnp.transpose(y, (1, 2, 0)).reshape(c, n_win * k)[:, :n_out]


@functools.partial(jax.jit, static_argnames=("seq_length", "mode", "last_n", "kernel"))
def predict_normalised(
    params: Params,
    x_d: jax.Array,
    x_s: jax.Array,
    *,
    seq_length: int,
    mode: str = "exact",
    last_n: int = 1,
    kernel: KernelOptions = KernelOptions(),
) -> jax.Array:
    """Every member's normalised predictions for every complete window.

    Args:
      params: ensemble parameters, leaves [M, ...].
      x_d: [C, T, D] normalised dynamic inputs (finite: the caller replaces missing values and
        masks the affected windows).
      x_s: [C, S] normalised statics.
      mode: "exact" or "chunked" (stride `last_n`).
      kernel: how it runs (`somojax.models.kernel.KernelOptions`; the default resolves per
        backend). `hoist`: project every day once (x·W_ih + b, [C, T, 3H]) before stepping, or
        multiply the raw days inside each step together with the state; both are exact, and on
        the CPU the step-wise form moves 3H/D times less memory per step (docs/inference.md).
        `cpu.member_map`: the members one after another (`lax.map`; less memory) or vectorised
        (`vmap`; batched matmuls, for accelerators). `rows_per_step`, `precision`, `unroll`.

    Returns:
      [M, C, T − L + 1].
    """
    hoist, precision, unroll = kernel.resolved_hoist(), kernel.precision, kernel.unroll
    rows = kernel.rows(params["W_hh"].shape[-2])

    def one(p):
        # every product at the kernel's precision, not only the recurrent one (models/cell.py)
        src = cell.project(p, x_d, precision) if hoist else x_d
        i = cell.input_gate(p, x_s, precision)
        if mode == "exact":
            return exact_windows(p, src, i, seq_length, rows, hoist, precision, unroll)
        return chunked_windows(p, src, i, seq_length, last_n, hoist, precision, unroll)

    if kernel.schedule().member_map:
        return jax.lax.map(one, dict(params))
    return jax.vmap(one)(dict(params))


def cost_per_output(mode: str, seq_length: int, last_n: int = 1) -> float:
    """Cell-steps per output day and member: L (exact) or (L + k − 1)/k (chunked)."""
    if mode == "exact":
        return float(seq_length)
    return (seq_length + last_n - 1) / last_n
