"""The EA-LSTM equations against a NumPy float64 implementation written here."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from somojax.models import ealstm, ensemble


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_ealstm(p, x_d, x_s, last_n):
    """docs/design.md#model, float64, one step at a time. Returns [B, last_n]."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x_d = np.asarray(x_d, np.float64)
    x_s = np.asarray(x_s, np.float64)
    b, t, _ = x_d.shape
    h_size = p["W_hh"].shape[0]
    i = _sigmoid(x_s @ p["W_sh"] + p["b_s"])
    h = np.zeros((b, h_size))
    c = np.zeros((b, h_size))
    outs = []
    for step in range(t):
        gates = h @ p["W_hh"] + x_d[:, step] @ p["W_ih"] + p["b"]
        f, o, g = np.split(gates, 3, axis=1)
        c = _sigmoid(f) * c + i * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outs.append(h @ p["W_fc"][:, 0] + p["b_fc"][0])
    return np.stack(outs, axis=1)[:, t - last_n :]


def random_params(seed, d, s, h, scale=0.3):
    rng = np.random.default_rng(seed)
    shapes = ealstm.param_shapes(d, s, h)
    return {k: (rng.standard_normal(shape) * scale).astype(np.float32) for k, shape in shapes.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("last_n", [1, 7, 40])  # seq-to-one, last n, every step (n = T)
@pytest.mark.parametrize("hoist", [True, False])
def test_forward_matches_numpy_float64(seed, last_n, hoist):
    b, t, d, s, h = 5, 40, 6, 10, 16
    p = random_params(seed, d, s, h)
    rng = np.random.default_rng(100 + seed)
    x_d = rng.standard_normal((b, t, d)).astype(np.float32)
    x_s = rng.standard_normal((b, s)).astype(np.float32)
    want = numpy_ealstm(p, x_d, x_s, last_n)
    got = jax.jit(lambda p, x, y: ealstm.forward(p, x, y, predict_last_n=last_n, hoist=hoist, remat=not hoist))(
        p, x_d, x_s
    )
    assert got.shape == (b, last_n)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_init_follows_ealstm_regional():
    h, d, s = 8, 6, 10
    p = ealstm.init_params(jax.random.key(0), d, s, h, forget_bias=5.0)
    np.testing.assert_array_equal(p["W_hh"], np.tile(np.eye(h), (1, 3)))
    np.testing.assert_array_equal(p["b"][:h], 5.0)
    np.testing.assert_array_equal(p["b"][h:], 0.0)
    np.testing.assert_array_equal(p["b_s"], 0.0)
    # orthogonal: rows of the [6, 24] W_ih are orthonormal, columns of the [10, 8] W_sh too
    w = np.asarray(p["W_ih"], np.float64)
    np.testing.assert_allclose(w @ w.T, np.eye(d), atol=1e-5)
    w = np.asarray(p["W_sh"], np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(h), atol=1e-5)
    assert np.all(np.abs(p["W_fc"]) <= 1 / np.sqrt(h))


def test_dropout_is_inverted_and_keyed():
    hid = jnp.ones((1000, 8))
    a = ealstm.dropout(hid, 0.5, jax.random.key(1), deterministic=False)
    b = ealstm.dropout(hid, 0.5, jax.random.key(2), deterministic=False)
    vals = np.unique(np.asarray(a))
    assert set(vals.tolist()) == {0.0, 2.0}
    assert 0.4 < float(jnp.mean(a == 0)) < 0.6
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(ealstm.dropout(hid, 0.5, None, deterministic=True), hid)


def test_nnx_module_state_is_the_param_dict():
    model = ealstm.EALSTM(6, 10, 16, dropout_rate=0.5, rngs=nnx.Rngs(params=0, dropout=1))
    state = nnx.state(model, nnx.Param)
    assert sorted(state.keys()) == sorted(ealstm.PARAM_NAMES)
    x_d = jnp.ones((3, 12, 6))
    x_s = jnp.ones((3, 10))
    model.eval()
    want = numpy_ealstm(model.params(), x_d, x_s, 1)
    np.testing.assert_allclose(np.asarray(model(x_d, x_s)), want, atol=1e-5)
    model.train()
    y1, y2 = model(x_d, x_s), model(x_d, x_s)
    assert not np.allclose(y1, y2)  # a fresh dropout mask per call


def test_ensemble_members_are_the_split_keys():
    key = jax.random.key(3)
    ens = ensemble.init_ensemble(key, 4, 6, 10, 8)
    assert ens["W_ih"].shape == (4, 6, 24)
    for m, k in enumerate(jax.random.split(key, 4)):
        one = ealstm.init_params(k, 6, 10, 8)
        for name in ealstm.PARAM_NAMES:
            np.testing.assert_array_equal(ens[name][m], one[name])
    assert not np.allclose(ens["W_ih"][0], ens["W_ih"][1])
