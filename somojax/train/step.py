"""The ensemble train and evaluation steps: pure functions, jitted by the caller (docs/design.md#conventions).

Train state (a plain pytree; every leaf but `step` carries the leading `member` axis):

    params     {W_ih [M, D, 3H], W_hh [M, H, 3H], ...}        (somojax.models.ealstm layout)
    opt_state  optax state of clip_by_global_norm + scale_by_adam, per member
    rng        [M, 2] uint32: member m's dropout key (raw key data, checkpointable)
    step       int32 scalar: updates done

One step updates all members: `jax.vmap` over the member axis of a per-member step whose
gradient clipping, Adam moments and learning-rate scaling all live INSIDE the vmap, so members
never couple (clipping a stacked pytree would compute one norm over all members, docs/design.md#ensemble).
Member m's dropout key at step s is `fold_in(rng[m], s)`: a resumed run draws the same masks,
and member m of an N-member run draws what a 1-member run with key rng[m] draws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from somojax import constants as C
from somojax.config import KernelConfig, ModelConfig, TrainConfig
from somojax.models import ealstm, ensemble, losses
from somojax.models.kernel import TRAINING, KernelOptions, train_kernel
from somojax.models.recurrence import recurrence_vjp

BATCH_KEYS = ("x_d", "x_s", "y", "sigma")  # what the step reads from a batch
ENSEMBLE_MODES = ("vmap", "loop", "stacked")


@dataclass(frozen=True)
class StepOptions:
    """Static settings of the step (hashable: part of what jit compiles): what the step trains
    (loss, dropout, outputs per window) and how its recurrence runs (`kernel`)."""

    predict_last_n: int = 1
    dropout: float = 0.0
    loss: str = "nse"  # "nse" (NSE*) or "mse"
    nse_eps: float = 0.1
    sigma_scale: float = 1.0  # σ_c is multiplied by this (1/target std for normalised units)
    kernel: KernelOptions = TRAINING

    def model_kwargs(self) -> dict[str, Any]:
        """The keywords of `ealstm.forward` (without dropout) for the model this step trains."""
        return dict(predict_last_n=self.predict_last_n, kernel=self.kernel)


def step_options(
    model: ModelConfig,
    train: TrainConfig,
    target_std: float = 1.0,
    backend: str | None = None,
    kernel: KernelConfig = KernelConfig(),
) -> StepOptions:
    """Resolves the config into `StepOptions`; `kernel:`'s `auto` choices for `backend` (default:
    JAX's), see `somojax.models.kernel.train_kernel`."""
    sigma_scale = 1.0 if train.nse_sigma_units == "raw" else 1.0 / float(target_std)
    return StepOptions(
        predict_last_n=model.predict_last_n,
        dropout=model.dropout,
        loss=train.loss,
        nse_eps=train.nse_eps,
        sigma_scale=sigma_scale,
        kernel=train_kernel(kernel, model, backend),
    )


def make_optimizer(clip_norm: float) -> optax.GradientTransformation:
    """Per-member global-norm clipping then Adam; the learning rate is applied by the step.

    `optax.adam(lr)` is `scale_by_adam` followed by scaling with −lr; taking lr as a step argument
    lets the schedule (`somojax.train.schedule`) change it without recompiling.
    """
    parts = [optax.scale_by_adam()]
    if clip_norm and clip_norm > 0:
        parts.insert(0, optax.clip_by_global_norm(clip_norm))
    return optax.chain(*parts)


def init_state(
    key: jax.Array,
    n_members: int,
    n_dynamic: int,
    n_static: int,
    model: ModelConfig,
    tx: optax.GradientTransformation,
) -> dict:
    """A fresh train state. `key` splits into the init key and the dropout key.

    Member m is initialised with `split(init_key, n_members)[m]` (see `ensemble.init_ensemble`)
    and its dropout key is `split(dropout_key, n_members)[m]`.
    """
    init_key, drop_key = jax.random.split(key)
    params = ensemble.init_ensemble(init_key, n_members, n_dynamic, n_static, model.hidden_size, model.forget_bias)
    return {
        "params": params,
        "opt_state": jax.vmap(tx.init)(params),
        "rng": jax.random.key_data(jax.random.split(drop_key, n_members)),
        "step": jnp.zeros((), jnp.int32),
    }


def member_loss(
    params: Mapping, batch: Mapping, key: jax.Array | None, opts: StepOptions, mesh: Mesh | None = None
) -> tuple[jax.Array, jax.Array]:
    """(Σ loss terms, number of valid targets) of one member on one batch [B, ...].

    With `key=None` dropout is off (validation). `mesh`: see `data_parallel_recurrence`.
    """
    h = data_parallel_recurrence(opts, mesh, stacked=False, shared_batches=True)(params, batch["x_d"], batch["x_s"])
    return hidden_loss(params, h, batch, key, opts)


def data_parallel_recurrence(opts: StepOptions, mesh: Mesh | None, *, stacked: bool, shared_batches: bool):
    """fn(params, x_d, x_s) -> hidden states: the EA-LSTM recurrence, each device on its own rows.

    Without a mesh (or on one device) this is `ealstm.recurrence`. On a mesh with several devices
    and the hand-written backward pass, the recurrence runs under `jax.shard_map`: each device
    steps its own batch rows (and, `stacked`, its own members) through the whole time loop, and
    the parameters' gradients are summed over `data` once, after the backward loop. Left to the
    automatic partitioner, the backward loop gathered activations and all-reduced partial
    weight gradients on every block of steps: 2 devices took longer than one
    (docs/training.md, "Devices"). Values are the same; sums differ only in rounding order.
    """
    rec = functools.partial(
        recurrence_vjp if stacked else ealstm.recurrence, last_n=opts.predict_last_n, kernel=opts.kernel
    )
    if mesh is None or mesh.size == 1 or not opts.kernel.custom_vjp:
        return rec
    d = C.DATA_AXIS
    if stacked:  # params [M, ...]; inputs [M, B, ...] or shared [B, ...]; out [M, B, n, H]
        m = C.MEMBER_AXIS
        x_spec = P(d) if shared_batches else P(m, d)
        return jax.shard_map(rec, mesh=mesh, in_specs=(P(m), x_spec, x_spec), out_specs=P(m, d), check_vma=False)
    return jax.shard_map(rec, mesh=mesh, in_specs=(P(), P(d), P(d)), out_specs=P(d), check_vma=False)


def hidden_loss(
    params: Mapping, h: jax.Array, batch: Mapping, key: jax.Array | None, opts: StepOptions
) -> tuple[jax.Array, jax.Array]:
    """`member_loss` from the recurrence's hidden states h [B, n, H]: dropout, head, loss sums."""
    pred = ealstm.head(params, ealstm.dropout(h, opts.dropout, key, deterministic=key is None), opts.kernel.precision)
    weight = None
    if opts.loss == "nse":
        weight = losses.nse_weight(batch["sigma"] * opts.sigma_scale, opts.nse_eps)
    return losses.masked_sums(pred, batch["y"], weight)


def _member_key(rng: jax.Array, step: jax.Array) -> jax.Array:
    """Member m's dropout key at `step`: fold_in(rng[m], step) (module docstring)."""
    return jax.random.fold_in(jax.random.wrap_key_data(rng), step)


def member_update(params, opt_state, rng, step, batch, lr, *, opts: StepOptions, tx: optax.GradientTransformation):
    """One member's update. Returns (params, opt_state, loss, gradient norm)."""
    key = _member_key(rng, step)

    def loss_fn(p):
        s, n = member_loss(p, batch, key, opts)
        return s / jnp.maximum(n, 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)


def batch_axes(batch: Mapping, shared: bool) -> dict:
    """vmap axes of a batch: None (shared by all members) or 0 (per-member [M, B, ...])."""
    return {k: (None if shared else 0) for k in batch}


def resolve_ensemble_mode(
    requested: str, members: int, member_axis: int, opts: StepOptions, data_axis: int = 1, backend: str | None = None
) -> str:
    """The ensemble mode `auto` stands for, or `requested` itself.

    auto: one member -> "loop" (a plain step); several with the hand-written backward pass ->
    "stacked" (all members in one loop: fewest kernel launches, fastest measured on one CPU
    device), except on a CPU whose batch is split over several devices (one per core), where
    "loop" measured faster (docs/training.md, "Devices");
    without it, "loop" when every device holds all members (mesh member axis 1), else "vmap".
    """
    if requested != "auto":
        return requested
    if members == 1:
        return "loop"
    if opts.kernel.custom_vjp:
        if data_axis > 1 and (backend or jax.default_backend()) == "cpu":
            return "loop"
        return "stacked"
    return "loop" if member_axis == 1 else "vmap"


def make_train_step(
    opts: StepOptions,
    tx: optax.GradientTransformation,
    shared_batches: bool,
    mode: str = "vmap",
    mesh: Mesh | None = None,
):
    """fn(state, batch, lr) -> (state, {"loss": [M], "grad_norm": [M]}); batch holds BATCH_KEYS.

    `lr` is one rate for every member ([]) or member m's rate ([M]): the folds of a stacked
    cross-validation each follow their own schedule (`somojax.train.groups`).

    mode "vmap": the whole member update is vmapped (members as a batch axis of every op).
    mode "loop": the members' forward and backward passes are independent chains of one graph,
    then clipping and Adam are vmapped. mode "stacked" (needs the
    hand-written backward pass): one recurrence loop over all members stacked on a leading axis
    (`recurrence_vjp` with stacked parameters: a batched recurrent product and each elementwise
    kernel once per time step for all members), the head, dropout and loss vmapped per member.
    All give each member exactly its own gradient, clipping and Adam state; any mode works on
    any mesh (the member axis may be sharded). Given the `mesh` the step is compiled for, the
    `loop` and `stacked` recurrences run data-parallel under `shard_map`
    (`data_parallel_recurrence`); `vmap` is left to the automatic partitioner.
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble mode {mode!r}: expected one of {ENSEMBLE_MODES}")
    if mode == "stacked" and not opts.kernel.custom_vjp:
        raise ValueError(
            "ensemble mode 'stacked' needs the hand-written backward pass (kernel.backward: auto or custom)"
        )
    if mode == "vmap":
        return _vmapped_step(opts, tx, shared_batches)
    if mode == "loop":
        return _looped_step(opts, tx, shared_batches, mesh)
    return _stacked_step(opts, tx, shared_batches, mesh)


def _vmapped_step(opts: StepOptions, tx: optax.GradientTransformation, shared_batches: bool):
    """The train step of mode "vmap" (`make_train_step`): `member_update` vmapped over members."""

    def vmapped(state: dict, batch: dict, lr: jax.Array) -> tuple[dict, dict]:
        batch = {k: batch[k] for k in BATCH_KEYS}
        upd = jax.vmap(
            lambda p, o, r, b, l: member_update(p, o, r, state["step"], b, l, opts=opts, tx=tx),
            in_axes=(0, 0, 0, batch_axes(batch, shared_batches), 0),
        )
        params, opt_state, loss, gnorm = upd(
            state["params"], state["opt_state"], state["rng"], batch, member_rates(lr, state)
        )
        return _next_state(state, params, opt_state), {"loss": loss, "grad_norm": gnorm}

    return vmapped


def _looped_step(opts: StepOptions, tx: optax.GradientTransformation, shared_batches: bool, mesh: Mesh | None):
    """The train step of mode "loop" (`make_train_step`): one loss chain per member, summed."""

    def looped(state: dict, batch: dict, lr: jax.Array) -> tuple[dict, dict]:
        batch = {k: batch[k] for k in BATCH_KEYS}
        n = state["rng"].shape[0]

        def total(params):
            losses = []
            for m in range(n):
                key = _member_key(state["rng"][m], state["step"])
                b = batch if shared_batches else {k: v[m] for k, v in batch.items()}
                s, c = member_loss(jax.tree.map(lambda a: a[m], params), b, key, opts, mesh)
                losses.append(s / jnp.maximum(c, 1.0))
            losses = jnp.stack(losses)
            return jnp.sum(losses), losses

        return _update_members(state, total, lr, tx)

    return looped


def _stacked_step(opts: StepOptions, tx: optax.GradientTransformation, shared_batches: bool, mesh: Mesh | None):
    """The train step of mode "stacked" (`make_train_step`): one recurrence loop for all members."""

    def stacked(state: dict, batch: dict, lr: jax.Array) -> tuple[dict, dict]:
        batch = {k: batch[k] for k in BATCH_KEYS}
        keys = jax.vmap(lambda r: _member_key(r, state["step"]))(state["rng"])
        rec = data_parallel_recurrence(opts, mesh, stacked=True, shared_batches=shared_batches)

        def total(params):
            # every member's recurrence in one loop (members stacked), then per-member head + loss
            h = rec(params, batch["x_d"], batch["x_s"])  # [M, B, n, H]

            def one(p, h_m, key, b):
                s, c = hidden_loss(p, h_m, b, key, opts)
                return s / jnp.maximum(c, 1.0)

            loss = jax.vmap(one, in_axes=(0, 0, 0, batch_axes(batch, shared_batches)))(params, h, keys, batch)
            return jnp.sum(loss), loss

        return _update_members(state, total, lr, tx)

    return stacked


def _update_members(state: dict, total, lr: jax.Array, tx: optax.GradientTransformation) -> tuple[dict, dict]:
    """The step after the gradient of `total(params) -> (Σ member losses, losses [M])`.

    Clipping and Adam are vmapped over members (`_apply`). Returns (state, metrics).
    """
    (_, loss), grads = jax.value_and_grad(total, has_aux=True)(state["params"])
    params, opt_state, gnorm = jax.vmap(lambda p, o, g, l: _apply(p, o, g, l, tx))(
        state["params"], state["opt_state"], grads, member_rates(lr, state)
    )
    return _next_state(state, params, opt_state), {"loss": loss, "grad_norm": gnorm}


def _next_state(state: dict, params, opt_state) -> dict:
    """The train state after one update to `params` and `opt_state`."""
    return {"params": params, "opt_state": opt_state, "rng": state["rng"], "step": state["step"] + 1}


def member_rates(lr: jax.Array, state: Mapping) -> jax.Array:
    """The learning rate of every member, [M], from one rate [] or per-member rates [M]."""
    return jnp.broadcast_to(jnp.asarray(lr, jnp.float32), state["rng"].shape[:1])


def _apply(p, o, g, lr, tx):
    """Clipping + Adam of one member, then the learning rate. Returns (params, opt_state, |g|)."""
    u, o = tx.update(g, o, p)
    u = jax.tree.map(lambda x: (-lr * x).astype(x.dtype), u)
    return optax.apply_updates(p, u), o, optax.tree.norm(g)


def make_eval_step(opts: StepOptions):
    """fn(params, batch) -> sums for the validation loss of every member and of the ensemble mean.

    The batch is shared by all members ([B, ...]); dropout is off. Returns
    {"sum": [M], "count": [M], "mean_sum": [], "mean_count": []}; the loss is sum / count.
    """

    def eval_step(params: dict, batch: dict) -> dict:
        batch = {k: batch[k] for k in BATCH_KEYS}
        pred = jax.vmap(
            lambda p: ealstm.forward(p, batch["x_d"], batch["x_s"], deterministic=True, **opts.model_kwargs())
        )(params)  # [M, B, n]
        weight = None
        if opts.loss == "nse":
            weight = losses.nse_weight(batch["sigma"] * opts.sigma_scale, opts.nse_eps)
        s, n = jax.vmap(lambda p: losses.masked_sums(p, batch["y"], weight))(pred)
        ms, mn = losses.masked_sums(jnp.mean(pred, axis=0), batch["y"], weight)
        return {"sum": s, "count": n, "mean_sum": ms, "mean_count": mn}

    return eval_step
