"""The Entity-Aware LSTM (Kratzert et al. 2019, HESS 23, 5089) as SoMo.ml v1 implements it.

Inputs are row vectors and weights are input-major (`x @ W`), gate order f, o, g
(docs/design.md#model):

    i       = σ(x_s W_sh + b_s)                          once per sequence   [B, H]
    f, o, g = split3(h_{t-1} W_hh + x_t W_ih + b)                            [B, 3H]
    c_t     = σ(f) ⊙ c_{t-1} + i ⊙ tanh(g);   h_t = σ(o) ⊙ tanh(c_t);   h_0 = c_0 = 0
    y       = dropout(h) W_fc + b_fc                                         [B, n]

The equations are pure functions of a parameter dict (`Params`), so that training (vmapped over
ensemble members, sharded), exact-window inference and the PyTorch importer all share them.
`EALSTM` wraps the same functions as a Flax NNX module whose state is exactly that dict.

Parameter layout (ealstm_regional / SoMo.ml v1 names in brackets):
    W_ih [D, 3H] (lstm.weight_ih)   W_hh [H, 3H] (lstm.weight_hh)   b [3H] (lstm.bias)
    W_sh [S, H]  (lstm.weight_sh)   b_s [H] (lstm.bias_s)
    W_fc [H, 1]  (fc.weight.T)      b_fc [1] (fc.bias)
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

# input_gate, project and head are the model's own functions, defined beside the cell's other
# pieces (models/cell.py) so that the inference kernels use the very same ones
from somojax.models.cell import head, input_gate, matmul, project, sigmoid
from somojax.models.kernel import REFERENCE, KernelOptions
from somojax.models.recurrence import recurrence_vjp

Params = dict[str, jax.Array]
PARAM_NAMES = ("W_ih", "W_hh", "b", "W_sh", "b_s", "W_fc", "b_fc")


def param_shapes(n_dynamic: int, n_static: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one member's parameters."""
    d, s, h = n_dynamic, n_static, hidden_size
    return {
        "W_ih": (d, 3 * h),
        "W_hh": (h, 3 * h),
        "b": (3 * h,),
        "W_sh": (s, h),
        "b_s": (h,),
        "W_fc": (h, 1),
        "b_fc": (1,),
    }


def init_params(
    key: jax.Array,
    n_dynamic: int,
    n_static: int,
    hidden_size: int,
    forget_bias: float = 5.0,
    dtype: Any = jnp.float32,
) -> Params:
    """Initialises one member as ealstm_regional does.

    W_ih and W_sh orthogonal, W_hh three identity blocks, biases 0 except the forget-gate bias,
    and the head as PyTorch's default `nn.Linear` init (uniform ±1/√H).
    """
    k_ih, k_sh, k_fw, k_fb = jax.random.split(key, 4)
    h = hidden_size
    ortho = jax.nn.initializers.orthogonal()
    bound = 1.0 / jnp.sqrt(h)
    b = jnp.zeros((3 * h,), dtype).at[:h].set(forget_bias)
    return {
        "W_ih": ortho(k_ih, (n_dynamic, 3 * h), dtype),
        "W_hh": jnp.tile(jnp.eye(h, dtype=dtype), (1, 3)),
        "b": b,
        "W_sh": ortho(k_sh, (n_static, h), dtype),
        "b_s": jnp.zeros((h,), dtype),
        "W_fc": jax.random.uniform(k_fw, (h, 1), dtype, -bound, bound),
        "b_fc": jax.random.uniform(k_fb, (1,), dtype, -bound, bound),
    }


def cell(
    w_hh: jax.Array,
    i: jax.Array,
    h: jax.Array,
    c: jax.Array,
    xw: jax.Array,
    precision: str | None = "highest",
    compute_dtype: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """One EA-LSTM step given the projected input xw = x_t W_ih + b.

    Args:
      w_hh: [H, 3H] recurrent weights.
      i: [..., H] static input gate.
      h, c: [..., H] previous state.
      xw: [..., 3H] projected input of this step.
      precision: matmul precision of h @ W_hh ("default", "high", "highest").
      compute_dtype: operand dtype of h @ W_hh (e.g. bfloat16); accumulation stays float32.

    Returns:
      (h, c) of this step.
    """
    gates = xw + matmul(h, w_hh, precision, compute_dtype)
    hs = h.shape[-1]
    f, o, g = gates[..., :hs], gates[..., hs : 2 * hs], gates[..., 2 * hs :]
    c = sigmoid(f) * c + i * jnp.tanh(g)
    h = sigmoid(o) * jnp.tanh(c)
    return h, c


def recurrence(
    params: Mapping[str, jax.Array],
    x_d: jax.Array,
    x_s: jax.Array,
    *,
    last_n: int = 1,
    kernel: KernelOptions = REFERENCE,
    **changes: Any,
) -> jax.Array:
    """Runs the EA-LSTM over whole sequences from a zero state.

    Args:
      params: one member's parameters.
      x_d: [B, T, D] dynamic inputs (normalised).
      x_s: [B, S] static inputs (normalised).
      last_n: number of final hidden states to return.
      kernel: how the recurrence runs (`somojax.models.kernel`): hoisted projection or not,
        precision, the hand-written backward pass (`custom_vjp`, then `remat` and `unroll` do
        not apply) or autodiff through `lax.scan`. Default: the model's own formulation.
      **changes: `KernelOptions` fields to change (`hoist=False`): `kernel.replace(**changes)`.

    Returns:
      [B, last_n, H] hidden states of the last `last_n` days.
    """
    kernel = kernel.replace(**changes)
    if kernel.custom_vjp:
        return recurrence_vjp(params, x_d, x_s, last_n=last_n, kernel=kernel)
    precision, compute_dtype, unroll = kernel.precision, kernel.compute_dtype, kernel.unroll
    b, t, _ = x_d.shape
    hs = params["W_hh"].shape[0]
    i = input_gate(params, x_s, precision)
    step, xs = _scan_step(params, x_d, i, kernel.resolved_hoist(), precision, compute_dtype)
    if kernel.remat:
        step = jax.checkpoint(step)
    zeros = jnp.zeros((b, hs), x_d.dtype)
    if last_n == 1:
        (h, _), _ = jax.lax.scan(lambda cr, x: (step(cr, x)[0], None), (zeros, zeros), xs, unroll=unroll)
        return h[:, None, :]
    if last_n > t:
        raise ValueError(f"last_n={last_n} exceeds the sequence length {t}")
    # Days before the last n are run without collecting outputs.
    carry, _ = jax.lax.scan(lambda cr, x: (step(cr, x)[0], None), (zeros, zeros), xs[: t - last_n], unroll=unroll)
    _, hseq = jax.lax.scan(step, carry, xs[t - last_n :], unroll=unroll)
    return jnp.swapaxes(hseq, 0, 1)  # [B, n, H]


def _scan_step(params: Mapping[str, jax.Array], x_d: jax.Array, i: jax.Array, hoist: bool, precision, compute_dtype):
    """(step, xs): the scan step ((h, c), xs_t) -> ((h, c), h) of `recurrence` and its inputs xs.

    Hoisted, xs [T, B, 3H] is x W_ih + b for all days; else xs [T, B, D] is x_d itself and each
    step computes x_t W_ih + b.
    """
    w_hh = params["W_hh"]
    if hoist:
        xs = jnp.swapaxes(project(params, x_d, precision), 0, 1)  # [T, B, 3H]

        def step(carry, xw_t):
            h, c = cell(w_hh, i, *carry, xw_t, precision, compute_dtype)
            return (h, c), h

    else:
        xs = jnp.swapaxes(x_d, 0, 1)  # [T, B, D]
        w_ih, bias = params["W_ih"], params["b"]

        def step(carry, x_t):
            h, c = cell(w_hh, i, *carry, matmul(x_t, w_ih, precision, None) + bias, precision, compute_dtype)
            return (h, c), h

    return step, xs


def dropout(h: jax.Array, rate: float, key: jax.Array | None, deterministic: bool) -> jax.Array:
    """Inverted dropout as `torch.nn.Dropout` (kept units scaled by 1/(1-rate))."""
    if deterministic or rate == 0.0:
        return h
    if key is None:
        raise ValueError("dropout needs a key when not deterministic")
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0).astype(h.dtype)


def forward(
    params: Mapping[str, jax.Array],
    x_d: jax.Array,
    x_s: jax.Array,
    *,
    predict_last_n: int = 1,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    deterministic: bool = True,
    kernel: KernelOptions = REFERENCE,
    **changes: Any,
) -> jax.Array:
    """EA-LSTM predictions in normalised target units.

    Args:
      x_d: [B, T, D] normalised dynamic inputs; x_s: [B, S] normalised statics.
      predict_last_n: 1 for sequence-to-one, n for the last n days of the window.
      kernel, **changes: how the recurrence runs (see `recurrence`).

    Returns:
      [B, predict_last_n] predictions for the last `predict_last_n` days.
    """
    kernel = kernel.replace(**changes)
    h = recurrence(params, x_d, x_s, last_n=predict_last_n, kernel=kernel)
    h = dropout(h, dropout_rate, dropout_key, deterministic)
    return head(params, h, kernel.precision)


class EALSTM(nnx.Module):
    """Flax NNX module of the EA-LSTM; its `nnx.state` holds exactly `PARAM_NAMES`.

    Example:
      model = EALSTM(6, 10, 128, rngs=nnx.Rngs(params=0, dropout=1))
      y = model(x_d, x_s)                 # [B, predict_last_n], dropout active in train mode
      params = model.params()             # plain dict for the functional engine
    """

    def __init__(
        self,
        n_dynamic: int,
        n_static: int,
        hidden_size: int,
        *,
        forget_bias: float = 5.0,
        dropout_rate: float = 0.5,
        predict_last_n: int = 1,
        rngs: nnx.Rngs,
    ):
        p = init_params(rngs.params(), n_dynamic, n_static, hidden_size, forget_bias)
        for name in PARAM_NAMES:
            setattr(self, name, nnx.Param(p[name]))
        self.dropout_rate = dropout_rate
        self.predict_last_n = predict_last_n
        self.rngs = rngs
        self.deterministic = False

    def params(self) -> Params:
        """The parameters as a plain dict (shared with the functional engine)."""
        return {name: getattr(self, name)[...] for name in PARAM_NAMES}

    def load_params(self, params: Mapping[str, jax.Array]) -> None:
        """Sets the parameters from a plain dict of matching shapes."""
        for name in PARAM_NAMES:
            cur = getattr(self, name)
            if tuple(cur.shape) != tuple(params[name].shape):
                raise ValueError(f"{name}: shape {tuple(params[name].shape)} != {tuple(cur.shape)}")
            cur[...] = jnp.asarray(params[name], cur.dtype)

    def __call__(self, x_d: jax.Array, x_s: jax.Array) -> jax.Array:
        deterministic = self.deterministic or self.dropout_rate == 0.0
        key = None if deterministic else self.rngs.dropout()
        return forward(
            self.params(),
            x_d,
            x_s,
            predict_last_n=self.predict_last_n,
            dropout_rate=self.dropout_rate,
            dropout_key=key,
            deterministic=deterministic,
        )
