"""The ensemble as a batch axis: every parameter carries a leading `member` axis.

Members differ in initialisation and dropout randomness (docs/design.md#ensemble); their mean is the
product and their standard deviation the spread.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from somojax.models import ealstm
from somojax.models.ealstm import Params


def init_ensemble(
    key: jax.Array,
    n_members: int,
    n_dynamic: int,
    n_static: int,
    hidden_size: int,
    forget_bias: float = 5.0,
    dtype: Any = jnp.float32,
) -> Params:
    """N independently initialised members, stacked: each leaf [member, ...].

    Member m is initialised with `jax.random.split(key, n_members)[m]`, so a 1-member run with
    that key starts from exactly the same parameters.
    """
    keys = jax.random.split(key, n_members)
    return jax.vmap(lambda k: ealstm.init_params(k, n_dynamic, n_static, hidden_size, forget_bias, dtype))(keys)


def n_members(params: Params) -> int:
    """The size of the leading member axis."""
    return int(params["W_hh"].shape[0])


def member(params: Params, m: int) -> Params:
    """Member m's parameters (no member axis)."""
    return jax.tree.map(lambda x: x[m], params)


def stack(members: list[Params]) -> Params:
    """Stacks per-member parameter dicts along a new leading member axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


def ensemble_forward(params: Params, x_d: jax.Array, x_s: jax.Array, **kwargs) -> jax.Array:
    """Deterministic predictions of every member on the same inputs.

    x_d [B, T, D], x_s [B, S] -> [member, B, predict_last_n] (normalised units).
    """
    return jax.vmap(lambda p: ealstm.forward(p, x_d, x_s, deterministic=True, **kwargs))(params)
