"""The three ways one step runs the members (stacked, loop, vmap) train every member alike.

The stacked mode assembles the loss itself (one recurrence for all members, then dropout, head and
NSE* per member), so it is checked against the other two, and its first loss against a NumPy
float64 EA-LSTM, in the settings the 5-vs-1-member engine test does not cover: several output
days, dropout, NSE*, shared and per-member batches.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from somojax.config import load_config
from somojax.train.step import init_state, make_optimizer, make_train_step, resolve_ensemble_mode, step_options
from tests.test_ealstm import numpy_ealstm

M, B, T, D, S, H = 3, 6, 12, 5, 4, 8


def _setup(last_n: int, dropout: float, loss: str):
    cfg = load_config("tiny")
    model = dataclasses.replace(cfg.model, hidden_size=H, seq_length=T, predict_last_n=last_n, dropout=dropout)
    train = dataclasses.replace(cfg.train, loss=loss)
    opts = step_options(model, train)
    tx = make_optimizer(1.0)
    state = init_state(jax.random.key(3), M, D, S, model, tx)
    return opts, tx, state


def _batches(shared: bool, last_n: int, n: int = 2):
    rng = np.random.default_rng(11)
    lead = () if shared else (M,)
    out = []
    for _ in range(n):
        y = rng.standard_normal(lead + (B, last_n)).astype(np.float32)
        y[..., 0, -1] = np.nan  # a missing target is masked, not zero-filled
        out.append(
            {
                "x_d": rng.standard_normal(lead + (B, T, D)).astype(np.float32),
                "x_s": rng.standard_normal(lead + (B, S)).astype(np.float32),
                "y": y,
                "sigma": rng.uniform(0.05, 0.3, lead + (B,)).astype(np.float32),
            }
        )
    return out


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("last_n,dropout,loss", [(1, 0.4, "nse"), (4, 0.0, "nse"), (4, 0.3, "mse")])
def test_stacked_loop_and_vmap_give_the_same_members(shared, last_n, dropout, loss):
    opts, tx, state0 = _setup(last_n, dropout, loss)
    batches = _batches(shared, last_n)
    results = {}
    for mode in ("stacked", "loop", "vmap"):
        step = jax.jit(make_train_step(opts, tx, shared_batches=shared, mode=mode))
        state, losses, norms = jax.tree.map(jnp.copy, state0), [], []
        for b in batches:
            state, m = step(state, b, jnp.float32(1e-2))
            losses.append(np.asarray(m["loss"]))
            norms.append(np.asarray(m["grad_norm"]))
        results[mode] = (jax.device_get(state["params"]), np.stack(losses), np.stack(norms))
    ref_params, ref_loss, ref_norm = results["loop"]
    assert np.all(np.isfinite(ref_loss))
    for mode in ("stacked", "vmap"):
        params, loss, norm = results[mode]
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=mode)
        np.testing.assert_allclose(norm, ref_norm, rtol=1e-5, err_msg=mode)
        # stacked members keep separate input products, one member fuses them into the recurrent
        # one (somojax.models.recurrence): the same sums in another order. Adam divides by |g|, so
        # a weight whose gradient nearly cancels moves by up to ~1e-4 differently after two steps
        # of 1e-2; a member mixed up with another would move by ~1e-2.
        for k, v in params.items():
            np.testing.assert_allclose(v, ref_params[k], rtol=1e-5, atol=1e-4, err_msg=f"{mode} {k}")
    # the members really differ, and the step really changed them
    assert not np.allclose(ref_params["W_ih"][0], ref_params["W_ih"][1])
    assert not np.allclose(ref_params["W_hh"], jax.device_get(state0["params"]["W_hh"]))


def test_stacked_first_loss_matches_numpy_float64():
    last_n = 3
    opts, tx, state = _setup(last_n, 0.0, "nse")
    b = _batches(False, last_n, 1)[0]
    _, m = jax.jit(make_train_step(opts, tx, shared_batches=False, mode="stacked"))(state, b, jnp.float32(1e-2))
    params = jax.device_get(state["params"])
    for k in range(M):
        p = {name: np.asarray(v[k], np.float64) for name, v in params.items()}
        pred = numpy_ealstm(p, b["x_d"][k].astype(np.float64), b["x_s"][k].astype(np.float64), last_n)
        w = 1.0 / (b["sigma"][k][:, None].astype(np.float64) + opts.nse_eps) ** 2
        terms = w * (pred - b["y"][k]) ** 2
        want = np.nanmean(terms)  # NaN targets are left out of sum and count
        np.testing.assert_allclose(float(m["loss"][k]), want, rtol=1e-5)


def test_auto_mode_and_the_stacked_requirement():
    opts, tx, _ = _setup(1, 0.0, "nse")
    assert resolve_ensemble_mode("auto", 1, 1, opts) == "loop"
    assert resolve_ensemble_mode("auto", 5, 1, opts) == "stacked"
    assert resolve_ensemble_mode("vmap", 5, 1, opts) == "vmap"
    # batch split over one CPU device per core: separate chains measured faster
    assert resolve_ensemble_mode("auto", 5, 1, opts, data_axis=2, backend="cpu") == "loop"
    assert resolve_ensemble_mode("auto", 5, 1, opts, data_axis=2, backend="gpu") == "stacked"
    autodiff = dataclasses.replace(opts, kernel=opts.kernel.replace(custom_vjp=False))
    assert resolve_ensemble_mode("auto", 5, 1, autodiff) == "loop"
    assert resolve_ensemble_mode("auto", 4, 4, autodiff) == "vmap"
    with pytest.raises(ValueError, match="hand-written backward"):
        make_train_step(autodiff, tx, shared_batches=False, mode="stacked")
    with pytest.raises(ValueError, match="ensemble mode"):
        make_train_step(opts, tx, shared_batches=False, mode="sequential")
