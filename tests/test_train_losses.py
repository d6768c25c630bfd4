"""NSE* and MSE over valid targets against NumPy float64; NaN targets never leak into gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from somojax.models import losses


def _data(seed=0, b=7, n=3, frac_nan=0.3):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((b, n))
    y = rng.standard_normal((b, n))
    y[rng.uniform(size=y.shape) < frac_nan] = np.nan
    sigma = rng.uniform(0.01, 0.2, size=b)
    return pred, y, sigma


def test_nse_star_matches_numpy_float64():
    pred, y, sigma = _data()
    ok = np.isfinite(y)
    want = np.sum(((pred - np.nan_to_num(y)) ** 2 / (sigma[:, None] + 0.1) ** 2)[ok]) / ok.sum()
    got = losses.nse_star(
        jnp.asarray(pred, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(sigma, jnp.float32), 0.1
    )
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_mse_matches_numpy_float64():
    pred, y, _ = _data(1)
    want = np.nanmean((pred - y) ** 2)
    got = losses.mse(jnp.asarray(pred, jnp.float32), jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_nan_targets_are_masked_not_zero_filled():
    pred, y, sigma = _data(2)
    y0 = np.where(np.isfinite(y), y, 0.0)  # what zero-filling would score
    a = float(losses.mse(jnp.asarray(pred), jnp.asarray(y)))
    b = float(losses.mse(jnp.asarray(pred), jnp.asarray(y0)))
    assert a != b
    # changing a prediction where the target is missing changes nothing
    pred2 = pred.copy()
    pred2[~np.isfinite(y)] += 100.0
    assert float(losses.nse_star(jnp.asarray(pred2), jnp.asarray(y), jnp.asarray(sigma))) == float(
        losses.nse_star(jnp.asarray(pred), jnp.asarray(y), jnp.asarray(sigma))
    )


def test_gradients_are_finite_and_zero_at_missing_targets():
    pred, y, sigma = _data(3)
    g = jax.grad(lambda p: losses.nse_star(p, jnp.asarray(y), jnp.asarray(sigma)))(jnp.asarray(pred))
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    assert np.all(g[~np.isfinite(y)] == 0.0)
    ok = np.isfinite(y)
    want = 2 * (pred - np.nan_to_num(y)) / (sigma[:, None] + 0.1) ** 2 / ok.sum()
    np.testing.assert_allclose(g[ok], want[ok], rtol=1e-5)


def test_all_missing_gives_zero_loss_and_gradient():
    y = jnp.full((4, 2), jnp.nan)
    v, g = jax.value_and_grad(lambda p: losses.mse(p, y))(jnp.ones((4, 2)))
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)


def test_masked_sums_add_up_over_batches():
    pred, y, sigma = _data(4, b=10)
    w = losses.nse_weight(jnp.asarray(sigma), 0.1)
    s, n = losses.masked_sums(jnp.asarray(pred), jnp.asarray(y), w)
    s1, n1 = losses.masked_sums(jnp.asarray(pred[:6]), jnp.asarray(y[:6]), w[:6])
    s2, n2 = losses.masked_sums(jnp.asarray(pred[6:]), jnp.asarray(y[6:]), w[6:])
    np.testing.assert_allclose(float(s), float(s1 + s2), rtol=1e-6)
    assert float(n) == float(n1 + n2)
