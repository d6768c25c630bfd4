"""The EA-LSTM recurrence with a hand-written backward pass (`jax.custom_vjp`).

Same equations as `ealstm.recurrence` (docs/design.md#model); the forward values are the same (with the
input projection hoisted) or equal to float32 rounding (not hoisted, see below), and the way
gradients are computed differs. Plain autodiff through `lax.scan` either stores whatever the
transposed step happens to need or (with remat) recomputes the step, and accumulates the weight
gradients inside the reverse loop. Here:

- one member (not stacked), not hoisted (the CPU default), float32: each forward step is ONE product
  [h_{t-1}, x_t, 1] @ [W_hh; W_ih; b] ([B, H+D+1] x [H+D+1, 3H]) instead of h W_hh, x_t W_ih and
  a bias add: the step's last kernel writes h_t next to x_{t+1} and 1, so the input product
  (a K = D matmul, costly per call on XLA:CPU for its size) and the bias add disappear; the backward's weight gradient d[W_hh; W_ih; b] is then one GEMM per block too.
  The sum is the same, rounded in a different order (equal to float32 rounding, tested against
  NumPy float64). With the weight-gradient GEMM in plain NN form (`_rows_product`), one
  member's training step on the CPU is faster than with separate products;
- the forward scan stores, per step t, five [B, H] arrays: σ(f_t), σ(o_t), tanh(g_t), tanh(c_t),
  c_t (separate contiguous arrays: XLA:CPU vectorises column slices of one wide array poorly); c_{t-1} and h_{t-1} = σ(o_{t-1})·tanh(c_{t-1}) are read back
  from step t-1, so the loop never stores its own carry (which costs XLA a copy per step); with
  the fused product each is written by the kernel that computes it (`_forward_residuals`);
- the backward is a reverse `lax.scan` with no transcendental functions: per step it computes
  dc, the gate pre-activation gradients dG_t [B, 3H] and dh_{t-1} = dG_t W_hhᵀ;
- the weight gradients dW_hh = Σ_t h_{t-1}ᵀ dG_t, dW_ih = Σ_t x_tᵀ dG_t and db = Σ_t dG_t are
  products over `block` steps at a time (block·B rows each), outside the step loop: large,
  efficient GEMMs with no [T, B, 3H] gradient tensor in memory (one GEMM of [h_{t-1}, x_t, 1]
  when the forward product is fused).

Members can be stacked on a leading axis (parameters [M, ...], inputs [M, B, ...]): the same
loops then run all members at once (a batched recurrent product per step, every elementwise
kernel once over [M, B, ·], per-member weight-gradient GEMMs per block). XLA:CPU pays a fixed
cost per kernel launch inside a loop (about 30 kernels per time step), which M separate loops
pay M times.

How these choices compare (against autodiff with and without remat, one member and stacks) is
measured by `benchmarks/bench_train_step.py`; the figures are in docs/design.md ("Training
formulation") and docs/training.md.

Residual memory: 5·T·B·H floats per member (239 MB at the paper's shapes), against 2·T·B·H for
autodiff with remat. The gradients equal `jax.grad` of `ealstm.recurrence` to float32 rounding
(tests/test_train_recurrence.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from somojax.models.cell import PRECISIONS as _PRECISIONS
from somojax.models.cell import matmul as _matmul
from somojax.models.cell import sigmoid
from somojax.models.kernel import TRAINING, KernelOptions


def _previous_h(so_a: jax.Array, tc_a: jax.Array, t0, k: int) -> jax.Array:
    """h_{t-1} = σ(o_{t-1})·tanh(c_{t-1}) for t = t0 … t0+k-1 ([k, ...]; h_{-1} = 0).

    Recomputed from two stored residuals instead of storing h as a third: the forward loop then
    writes nothing that is also its carry (no carry copies per step). `t0` is the Python int 0
    for the first block and a traced step ≥ 1 for all others.
    """
    if isinstance(t0, int) and t0 == 0:
        h = so_a[: k - 1] * tc_a[: k - 1]
        return jnp.concatenate([jnp.zeros((1,) + so_a.shape[1:], so_a.dtype), h])
    return jax.lax.dynamic_slice_in_dim(so_a, t0 - 1, k) * jax.lax.dynamic_slice_in_dim(tc_a, t0 - 1, k)


def _rows_product(a: jax.Array, g: jax.Array, stacked: bool, precision, transpose: bool) -> jax.Array:
    """Σ over steps and rows of aᵀ·g for a block: a [k, (M,) B, n], g [k, (M,) B, m] -> [(M,) n, m].

    One GEMM with k·B rows (per member when stacked), not k small products. `transpose` (one
    member): first materialise aᵀ [n, k·B], making it a plain (NN) GEMM; XLA:CPU then runs it
    through YNNPACK instead of its path for a transposed operand, which the training step measured
    faster on one CPU device and on two (`CpuSchedule.transpose_rows`, models/kernel.py).
    """
    if stacked:
        a = jnp.moveaxis(a, 0, 1).reshape(a.shape[1], -1, a.shape[-1])
        g = jnp.moveaxis(g, 0, 1).reshape(g.shape[1], -1, g.shape[-1])
        return jax.lax.dot_general(a, g, (((1,), (1,)), ((0,), (0,))), precision=precision)
    a = a.reshape(-1, a.shape[-1])
    g = g.reshape(-1, g.shape[-1])
    if transpose:  # the barrier keeps XLA from folding the transpose back into the product
        return jax.lax.dot_general(jax.lax.optimization_barrier(a.T), g, (((1,), (0,)), ((), ())), precision=precision)
    return jax.lax.dot_general(a, g, (((0,), (0,)), ((), ())), precision=precision)


@dataclass(frozen=True)
class _Static:
    """The static configuration of one custom-VJP scan: `recurrence_vjp`'s `KernelOptions`, resolved."""

    last_n: int
    hoist: bool
    precision: str | None
    compute_dtype: Any
    block: int
    split_barrier: bool
    transpose_rows: bool


@functools.lru_cache(maxsize=None)
def _make(cfg: _Static):
    """The custom-VJP scan for one static configuration: (W_hh, W_ih, b, i, x[T,B,D]) -> [n, B, H].

    Its pieces are functions of `cfg` and the traced arrays: the forward (`_forward`, with the
    steps of `_step_fn` and `_forward_residuals`) and the backward (`_bwd`, with the steps of
    `_backward_step` and the blocks of `_backward_block`).
    """

    @jax.custom_vjp
    def scan(w_hh, w_ih, b, i, x):
        return _forward(cfg, w_hh, w_ih, b, i, x, keep=False)

    scan.defvjp(functools.partial(_fwd, cfg), functools.partial(_bwd, cfg))
    return scan


def _gates(cfg: _Static, z: jax.Array, hs: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """σ(f), σ(o), tanh(g) from the gate pre-activations z [..., 3H]."""
    parts = (z[..., :hs], z[..., hs : 2 * hs], z[..., 2 * hs :])
    if cfg.split_barrier:  # materialise the three slices once instead of fusing strided reads
        parts = jax.lax.optimization_barrier(parts)
    return sigmoid(parts[0]), sigmoid(parts[1]), jnp.tanh(parts[2])


def _inputs(cfg: _Static, w_ih: jax.Array, b: jax.Array, x: jax.Array) -> jax.Array:
    """The loop's per-step inputs: x W_ih + b for all steps when hoisted, else x itself."""
    # hoisted: one [T·B, D] x [D, 3H] product before the loop; else x_t W_ih + b per step
    return _matmul(x, w_ih, cfg.precision, None) + b if cfg.hoist else x


def _fused(cfg: _Static, w_hh: jax.Array) -> bool:
    """Whether each step is one product [h, x_t, 1] @ [W_hh; W_ih; b] (module docstring).

    Only for one member, not hoisted, float32: with bf16 operands the input product and the bias
    stay in float32, so the separate products are kept there, and for stacked members (a batched
    product per step), where fusing measured 2-6% slower on one CPU device.
    """
    return not cfg.hoist and cfg.compute_dtype is None and w_hh.ndim == 2


def _augmented(w_hh: jax.Array, w_ih: jax.Array, b: jax.Array) -> jax.Array:
    """[W_hh; W_ih; b]: [(M,) H+D+1, 3H], the weights of the fused product [h, x_t, 1] @ W."""
    return jnp.concatenate([w_hh, w_ih, b.reshape(w_hh.shape[:-2] + (1, w_hh.shape[-1]))], axis=-2)


def _with_ones(x: jax.Array) -> jax.Array:
    """[T, ..., D] -> [T, ..., D+1]: the inputs and a column of ones (the bias's input)."""
    return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)


def _step_fn(cfg: _Static, w_hh, w_ih, b, i, hs: int):
    """The forward step (carry, scan input) -> (carry, residuals (σ(f), σ(o), tanh(g), tanh(c), c))."""
    if _fused(cfg, w_hh):
        # carry (a, c) with a = [h_{t-1}, x_t, 1]: the recurrent and input products and the
        # bias as ONE product per step; the step's last kernel writes h_t next to x_{t+1}
        w = _augmented(w_hh, w_ih, b)

        def step(carry, x_next):
            a, c = carry
            sf, so, tg = _gates(cfg, _matmul(a, w, cfg.precision, None), hs)
            c_new = sf * c + i * tg
            tc = jnp.tanh(c_new)
            return (jnp.concatenate([so * tc, x_next], axis=-1), c_new), (sf, so, tg, tc, c_new)

        return step

    def step(carry, x_t):
        h, c = carry
        z = _matmul(h, w_hh, cfg.precision, cfg.compute_dtype)
        z = z + x_t if cfg.hoist else z + (_matmul(x_t, w_ih, cfg.precision, None) + b)
        sf, so, tg = _gates(cfg, z, hs)
        c_new = sf * c + i * tg
        tc = jnp.tanh(c_new)
        return (so * tc, c_new), (sf, so, tg, tc, c_new)

    return step


def _start(fuse: bool, i: jax.Array, x: jax.Array):
    """(initial carry, per-step scan inputs) for the step of `_step_fn`."""
    zeros = jnp.zeros(i.shape, i.dtype)
    if not fuse:
        return (zeros, zeros), x
    xa = _with_ones(x)  # step t reads x_{t+1} (the last step's is never used)
    return (jnp.concatenate([zeros, xa[0]], axis=-1), zeros), jnp.concatenate([xa[1:], xa[:1]])


def _forward_residuals(cfg: _Static, w_hh, w_ih, b, i, a0, xs):
    """The fused step of `_step_fn` for training: ((h_T, c_T), residuals), one member.

    Each residual is written by the kernel that computes it, into a [T, B, H] buffer carried
    by the loop, and read back from there: the optimization barriers keep XLA from computing
    σ(f_t), ..., tanh(c_t) once for the buffer and again for their readers inside the step
    (4 fewer kernels per step, measurably faster for one member's training step).
    c_{t-1} is read from the buffer too, so c is not carried.
    """
    hs = w_hh.shape[-2]
    w = _augmented(w_hh, w_ih, b)
    bufs = tuple(jnp.zeros((xs.shape[0],) + i.shape, i.dtype) for _ in range(5))

    def put(buf, t, v):
        return jax.lax.dynamic_update_index_in_dim(buf, v, t, 0)

    def get(buf, t):
        return jax.lax.dynamic_index_in_dim(buf, t, keepdims=False)

    def step(carry, inp):
        a, (sf_b, so_b, tg_b, tc_b, c_b) = carry
        t, x_next = inp
        z = _matmul(a, w, cfg.precision, None)
        sf_b, so_b, tg_b = jax.lax.optimization_barrier(
            (
                put(sf_b, t, sigmoid(z[..., :hs])),
                put(so_b, t, sigmoid(z[..., hs : 2 * hs])),
                put(tg_b, t, jnp.tanh(z[..., 2 * hs :])),
            )
        )
        c_prev = jnp.where(t > 0, get(c_b, jnp.maximum(t - 1, 0)), 0.0)
        c_b = jax.lax.optimization_barrier(put(c_b, t, get(sf_b, t) * c_prev + i * get(tg_b, t)))
        tc_b = jax.lax.optimization_barrier(put(tc_b, t, jnp.tanh(get(c_b, t))))
        a = jnp.concatenate([get(so_b, t) * get(tc_b, t), x_next], axis=-1)
        return (a, (sf_b, so_b, tg_b, tc_b, c_b)), None

    (a, res), _ = jax.lax.scan(step, (a0, bufs), (jnp.arange(xs.shape[0]), xs))
    return (a[..., :hs], res[4][-1]), res


def _forward(cfg: _Static, w_hh, w_ih, b, i, x, keep: bool):
    """The forward loop: the last `last_n` hidden states [n, B, H], or with `keep` (training)
    ((h_T, c_T), residuals)."""
    hs = w_hh.shape[-2]
    fuse = _fused(cfg, w_hh)
    hidden = lambda carry: carry[0][..., :hs] if fuse else carry[0]  # noqa: E731
    step = _step_fn(cfg, w_hh, w_ih, b, i, hs)
    init, xs = _start(fuse, i, _inputs(cfg, w_ih, b, x))
    if keep and fuse:
        return _forward_residuals(cfg, w_hh, w_ih, b, i, init[0], xs)
    if keep:
        carry, res = jax.lax.scan(step, init, xs)
        return (hidden(carry), carry[1]), res
    t, last_n = x.shape[0], cfg.last_n
    drop = lambda cr, x_t: (step(cr, x_t)[0], None)  # noqa: E731
    carry, _ = jax.lax.scan(drop, init, xs[: t - last_n + 1])
    if last_n == 1:
        return hidden(carry)[None]
    keep_h = lambda cr, x_t: (lambda o: (o, hidden(o)))(step(cr, x_t)[0])  # noqa: E731
    _, hseq = jax.lax.scan(keep_h, carry, xs[t - last_n + 1 :])
    return jnp.concatenate([hidden(carry)[None], hseq])


def _fwd(cfg: _Static, w_hh, w_ih, b, i, x):
    """The custom VJP's forward: (the last `last_n` hidden states, what the backward reads)."""
    (h_last, _), res = _forward(cfg, w_hh, w_ih, b, i, x, keep=True)
    if cfg.last_n == 1:
        out = h_last[None]
    else:
        so, tc = res[1], res[3]
        out = so[-cfg.last_n :] * tc[-cfg.last_n :]  # h_t = σ(o_t) tanh(c_t), as in the step
    return out, (w_hh, w_ih, b, i, x, res)


def _bwd(cfg: _Static, saved, d_out):
    """The custom VJP's backward: gradients of (W_hh, W_ih, b, i, x) from d_out [n, (M,) B, H].

    A reverse loop over blocks of `block` steps (`_backward_block`); the block at step 0 runs
    last, outside the loop, so that its start is the static 0 (`_previous_h`).
    """
    w_hh, w_ih, b, i, x, res = saved
    t_len = x.shape[0]
    hs = w_hh.shape[-2]
    fuse = _fused(cfg, w_hh)
    back = _backward_step(cfg, w_hh, i, res, d_out, t_len)
    zeros = jnp.zeros(i.shape, i.dtype)
    dh0 = d_out[0] if cfg.last_n == 1 else zeros
    d_w = jnp.zeros(w_hh.shape[:-2] + (hs + x.shape[-1] + 1, 3 * hs), w_hh.dtype) if fuse else jnp.zeros_like(w_hh)
    carry = (
        (dh0, zeros, jnp.zeros_like(i)),
        d_w,
        jnp.zeros_like(w_ih),
        jnp.zeros(w_hh.shape[:-2] + (3 * hs,), w_hh.dtype),
        jnp.zeros_like(x),
    )
    k = min(cfg.block, t_len)
    n_blocks, rest = divmod(t_len, k)
    if rest == 0:  # the block at step 0 always runs last, outside the loop (t0 = 0 static)
        n_blocks, rest = n_blocks - 1, k
    run_block = functools.partial(_backward_block, cfg, back, w_hh, w_ih, x, res)
    carry, _ = jax.lax.scan(
        lambda cr, j: (run_block(cr, rest + j * k, k), None), carry, jnp.arange(n_blocks), reverse=True
    )
    carry = run_block(carry, 0, rest)
    (_, _, di), d_w_hh, d_w_ih, d_b, d_x = carry
    if fuse:
        d_w_hh, d_w_ih, d_b = d_w_hh[..., :hs, :], d_w_hh[..., hs:-1, :], d_w_hh[..., -1, :]
    return d_w_hh, d_w_ih, d_b.reshape(b.shape), di, d_x


def _backward_step(cfg: _Static, w_hh, i, res, d_out, t_len: int):
    """The backward step ((dh_t, dc_t, di), t) -> ((dh_{t-1}, dc_{t-1}, di), dG_t [(M,) B, 3H]).

    No transcendental functions: it reads the forward's residuals; the output gradients d_out
    of the last `last_n` steps are added as the loop passes them.
    """
    sf_a, so_a, tg_a, tc_a, c_a = res
    last_n, precision, compute_dtype = cfg.last_n, cfg.precision, cfg.compute_dtype
    w_hh_t = jnp.swapaxes(w_hh, -1, -2)
    first_out = t_len - last_n

    def back(carry, t):
        dh, dc, di = carry
        sf, so, tg, tc = (jax.lax.dynamic_index_in_dim(a, t, keepdims=False) for a in (sf_a, so_a, tg_a, tc_a))
        cp = jax.lax.dynamic_index_in_dim(c_a, jnp.maximum(t - 1, 0), keepdims=False)
        cp = jnp.where(t > 0, cp, jnp.zeros_like(cp))  # c_{t-1}; c_{-1} = 0
        if last_n > 1:
            k = jnp.clip(t - first_out, 0, last_n - 1)
            ext = jax.lax.dynamic_index_in_dim(d_out, k, keepdims=False)
            dh = dh + jnp.where(t >= first_out, ext, jnp.zeros_like(ext))
        dc = dc + dh * so * (1.0 - tc * tc)
        dg = jnp.concatenate(
            [dc * cp * sf * (1.0 - sf), dh * tc * so * (1.0 - so), dc * i * (1.0 - tg * tg)], axis=-1
        )  # [(M,) B, 3H]
        return (_matmul(dg, w_hh_t, precision, compute_dtype), dc * sf, di + dc * tg), dg

    return back


def _backward_block(cfg: _Static, back, w_hh, w_ih, x, res, carry, t0, k: int):
    """The backward over steps t0 … t0+k-1 (`back`, in reverse), then the block's weight
    gradients as products over its k·B rows and its input gradients dx.

    carry: ((dh, dc, di), d_w_hh, d_w_ih, d_b, d_x); with the fused product d_w_hh holds
    d[W_hh; W_ih; b] and d_w_ih, d_b stay zero.
    """
    _, so_a, _, tc_a, _ = res
    hp = _PRECISIONS[cfg.precision]
    stacked = w_hh.ndim == 3  # members stacked on a leading axis: [T, M, B, ...] in the loop
    state, d_w_hh, d_w_ih, d_b, d_x = carry
    state, dg = jax.lax.scan(back, state, t0 + jnp.arange(k), reverse=True)
    h_blk = _previous_h(so_a, tc_a, t0, k)
    x_blk = jax.lax.dynamic_slice_in_dim(x, t0, k)
    if _fused(cfg, w_hh):  # d_w_hh holds d[W_hh; W_ih; b] = Σ [h_{t-1}, x_t, 1]ᵀ dG_t: one GEMM per block
        d_w_hh = d_w_hh + _rows_product(
            jnp.concatenate([h_blk, _with_ones(x_blk)], axis=-1), dg, stacked, hp, cfg.transpose_rows
        )
    else:
        d_w_hh = d_w_hh + _rows_product(h_blk, dg, stacked, hp, cfg.transpose_rows)
        d_w_ih = d_w_ih + _rows_product(x_blk, dg, stacked, hp, cfg.transpose_rows)
        d_b = d_b + (jnp.sum(dg, axis=(0, 2)) if stacked else jnp.sum(dg, axis=(0, 1)))
    d_x_blk = jnp.matmul(dg, jnp.swapaxes(w_ih, -1, -2), precision=hp)
    d_x = jax.lax.dynamic_update_slice_in_dim(d_x, d_x_blk.astype(d_x.dtype), t0, axis=0)
    return state, d_w_hh, d_w_ih, d_b, d_x


def recurrence_vjp(
    params,
    x_d: jax.Array,
    x_s: jax.Array,
    *,
    last_n: int = 1,
    kernel: KernelOptions = TRAINING,
    **changes: Any,
) -> jax.Array:
    """`ealstm.recurrence` with the hand-written backward pass, for one member or a stack.

    Args:
      params: one member's parameters (`W_ih`, `W_hh`, `b`, `W_sh`, `b_s` are used), or M
        members' stacked on a leading axis (`W_hh` [M, H, 3H], ...): then all members run in one
        loop, their recurrent products as one batched product per step and every elementwise
        kernel once over [M, B, H] (fewer, larger kernels than M separate loops).
      x_d: [B, T, D] dynamic inputs ([M, B, T, D] per member, or [B, T, D] shared, when stacked).
      x_s: [B, S] statics ([M, B, S] or [B, S] when stacked).
      last_n: number of final hidden states returned.
      kernel: how it runs (`somojax.models.kernel.KernelOptions`): `hoist` (project all days
        before the loop), `precision` and `compute_dtype` of the recurrent products h W_hh and
        dG W_hhᵀ, `backward_block` (steps per weight-gradient product; None: 8 for one member, 4
        for a stack) and the CPU schedule (`split_barrier`, `transpose_rows`).
      **changes: `KernelOptions` fields to change: `kernel.replace(**changes)`.

    Returns:
      [B, last_n, H] hidden states of the last `last_n` days ([M, B, last_n, H] when stacked).
    """
    kernel = kernel.replace(**changes)
    stacked = params["W_hh"].ndim == 3
    if stacked:
        x_d, x_s = _stacked_inputs(params["W_hh"].shape[0], x_d, x_s)
    t = x_d.shape[-2]
    if not 1 <= last_n <= t:
        raise ValueError(f"last_n={last_n} must lie in 1..{t} (the sequence length)")
    precision = kernel.precision
    block = kernel.backward_block or (4 if stacked else 8)
    b_s, b = params["b_s"], params["b"]
    if stacked:  # [M, 1, n]: broadcast over the batch rows
        b_s, b = b_s[:, None, :], b[:, None, :]
    i = jax.nn.sigmoid(_matmul(x_s, params["W_sh"], precision, None) + b_s)  # cell.input_gate, its bias broadcast
    x = jnp.moveaxis(x_d, -2, 0)  # [T, (M,) B, D]
    cd = None if kernel.compute_dtype is None else jnp.dtype(kernel.compute_dtype)
    sched = kernel.schedule()
    cfg = _Static(
        int(last_n), kernel.resolved_hoist(), precision, cd, int(block), sched.split_barrier, sched.transpose_rows
    )
    out = _make(cfg)(params["W_hh"], params["W_ih"], b, i, x)
    return jnp.moveaxis(out, 0, -2)


def _stacked_inputs(m: int, x_d: jax.Array, x_s: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The inputs of m stacked members, [m, B, ...]: shared inputs [B, ...] broadcast to all."""
    if x_d.ndim == 3:
        x_d = jnp.broadcast_to(x_d, (m,) + x_d.shape)
    if x_s.ndim == 2:
        x_s = jnp.broadcast_to(x_s, (m,) + x_s.shape)
    if x_d.shape[0] != m or x_s.shape[0] != m:
        raise ValueError(f"{m} stacked members but inputs x_d {x_d.shape}, x_s {x_s.shape}")
    return x_d, x_s
