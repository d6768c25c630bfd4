"""Pieces of the EA-LSTM cell shared by the model, the training recurrence and the inference kernels.

`somojax.models.ealstm` (the model), `somojax.models.recurrence` (the recurrence with its
hand-written backward pass) and `somojax.infer.kernels` all import these from here, so that the
precision policy, the gate nonlinearity, the products outside the recurrence (input gate, input
projection, head) and the state update are defined once and no module of the model imports
another in a cycle (docs/design.md#model).

Every product takes the model's `precision`: at JAX's default precision the factors of a float32
product are rounded to 11 significant bits (TF32, recent NVIDIA GPUs) or 8 (one bfloat16 pass,
TPUs) instead of 24, an error far above float32 rounding in the projection, the input gate or the
head as much as in the recurrent product (docs/inference.md, "Precision"). On CPU float32
products are float32 at every precision, so the setting changes nothing there.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

# `model.matmul_precision` -> the precision of the recurrent products; None: JAX's default
PRECISIONS = {
    "default": jax.lax.Precision.DEFAULT,
    "high": jax.lax.Precision.HIGH,
    "highest": jax.lax.Precision.HIGHEST,
    None: None,
}


def matmul(a: jax.Array, b: jax.Array, precision: str | None, compute_dtype: Any) -> jax.Array:
    """a @ b with the configured precision; bf16 operands accumulate in float32.

    With `compute_dtype` (e.g. bfloat16) other than `a`'s dtype, both operands are cast to it and
    the product is accumulated in float32, then returned in `a`'s dtype: parameters and state stay
    float32, only the multiplication is cheaper.
    """
    if compute_dtype is not None and jnp.dtype(compute_dtype) != a.dtype:
        out = jnp.matmul(
            a.astype(compute_dtype),
            b.astype(compute_dtype),
            precision=PRECISIONS[precision],
            preferred_element_type=jnp.float32,
        )
        return out.astype(a.dtype)
    return jnp.matmul(a, b, precision=PRECISIONS[precision])


def sigmoid(x: jax.Array) -> jax.Array:
    """σ(x) = ½·tanh(x/2) + ½: the same function, faster than `jax.nn.sigmoid` under XLA:CPU
    (9–15% per recurrent step measured; one tanh instead of exp and a division)."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def input_gate(params: Mapping[str, jax.Array], x_s: jax.Array, precision: str | None = None) -> jax.Array:
    """Static input gate i = σ(x_s W_sh + b_s).  x_s [..., S] -> [..., H]."""
    return jax.nn.sigmoid(matmul(x_s, params["W_sh"], precision, None) + params["b_s"])


def project(params: Mapping[str, jax.Array], x_d: jax.Array, precision: str | None = None) -> jax.Array:
    """Input projection x W_ih + b for all days at once.  x_d [..., D] -> [..., 3H]."""
    return matmul(x_d, params["W_ih"], precision, None) + params["b"]


def head(params: Mapping[str, jax.Array], h: jax.Array, precision: str | None = None) -> jax.Array:
    """Linear head y = h W_fc + b_fc.  h [..., H] -> [...]."""
    return (matmul(h, params["W_fc"], precision, None) + params["b_fc"])[..., 0]


def next_state(i: jax.Array, c: jax.Array, gates: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(h, c) of a step from its gate pre-activations [..., 3H] (order f, o, g), for inference.

    Keeps c − σ(−z_f)·c instead of σ(z_f)·c: with forget gates near 1 (a forget bias of 5 gives
    σ = 0.993) the error of σ(z_f) multiplies c at every step and persists for ~1/(1 − σ) steps,
    so a gate error of a few ulp of 1 grows over a 365-day window; the complement
    σ(−z_f) = 1/(1 + e^{z_f}) is small and has a small relative error, and c − σ(−z_f)·c loses
    nothing near 1. Same function, same cost (an exp and a division for a tanh); measured in
    docs/inference.md ("Precision"). Training keeps σ(z_f)·c (`somojax.models.ealstm.cell`),
    whose gate values the hand-written backward pass reuses.
    """
    hs = c.shape[-1]
    forget_complement = 1.0 / (1.0 + jnp.exp(gates[..., :hs]))  # 0 for z_f -> +inf, 1 for -inf: no NaN
    c = (c - forget_complement * c) + i * jnp.tanh(gates[..., 2 * hs :])
    h = sigmoid(gates[..., hs : 2 * hs]) * jnp.tanh(c)
    return h, c
