"""The hand-written backward pass of the EA-LSTM against jax.grad of the plain recurrence and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params

from somojax.models import ealstm
from somojax.models.recurrence import recurrence_vjp


def _params(seed, d, s, h, scale=0.3):
    rng = np.random.default_rng(seed)
    return {
        k: jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)
        for k, shape in ealstm.param_shapes(d, s, h).items()
    }


def _numpy_grads(p, x_d, x_s, w):
    """d/dθ Σ w·h_T of the EA-LSTM, float64, by central finite differences of a NumPy forward."""
    from tests.test_ealstm import _sigmoid

    def hidden(q):
        i = _sigmoid(x_s @ q["W_sh"] + q["b_s"])
        h = np.zeros((x_d.shape[0], q["W_hh"].shape[0]))
        c = np.zeros_like(h)
        for t in range(x_d.shape[1]):
            f, o, g = np.split(h @ q["W_hh"] + x_d[:, t] @ q["W_ih"] + q["b"], 3, axis=1)
            c = _sigmoid(f) * c + i * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        return np.sum(h * w)

    q = {k: np.asarray(v, np.float64) for k, v in p.items()}
    out = {}
    for k in ("W_hh", "W_ih", "b", "W_sh", "b_s"):
        g = np.zeros_like(q[k])
        for idx in np.ndindex(q[k].shape):
            old = q[k][idx]
            q[k][idx] = old + 1e-6
            up = hidden(q)
            q[k][idx] = old - 1e-6
            down = hidden(q)
            q[k][idx] = old
            g[idx] = (up - down) / 2e-6
        out[k] = g
    return out


@pytest.mark.parametrize(
    "last_n,hoist,block",
    # seq-to-one / last n / every step; blocks that leave a remainder, divide T, exceed T
    [(1, False, 8), (1, True, 23), (5, False, 5), (5, True, 64), (23, False, 8), (23, True, 4)],
)
def test_grads_match_autodiff(last_n, hoist, block):
    b, t, d, s, h = 4, 23, 6, 10, 12
    p = _params(0, d, s, h)
    rng = np.random.default_rng(1)
    x_d = jnp.asarray(rng.standard_normal((b, t, d)), jnp.float32)
    x_s = jnp.asarray(rng.standard_normal((b, s)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((b, last_n, h)), jnp.float32)

    def plain(p, x):
        return jnp.sum(ealstm.recurrence(p, x, x_s, last_n=last_n, hoist=False) * w)

    def custom(p, x):
        return jnp.sum(recurrence_vjp(p, x, x_s, last_n=last_n, hoist=hoist, backward_block=block) * w)

    v1, (g1, gx1) = jax.jit(jax.value_and_grad(plain, argnums=(0, 1)))(p, x_d)
    v2, (g2, gx2) = jax.jit(jax.value_and_grad(custom, argnums=(0, 1)))(p, x_d)
    if hoist:
        assert float(v1) == float(v2)  # same forward operations: identical values
    else:  # one product [h, x_t, 1] @ [W_hh; W_ih; b]: the same sums, rounded in another order
        np.testing.assert_allclose(float(v2), float(v1), rtol=1e-6)
    for k in ("W_hh", "W_ih", "b", "W_sh", "b_s"):
        scale = float(jnp.max(jnp.abs(g1[k])))
        np.testing.assert_allclose(np.asarray(g2[k]), np.asarray(g1[k]), atol=1e-5 * max(scale, 1.0), rtol=0, err_msg=k)
    np.testing.assert_allclose(np.asarray(gx2), np.asarray(gx1), atol=1e-5, rtol=0)


def _scan_dots(jaxpr) -> list[int]:
    """Number of dot_general equations in the body of every scan of `jaxpr`, outermost first."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            body = eqn.params["jaxpr"].jaxpr
            out.append(sum(e.primitive.name == "dot_general" for e in body.eqns))
            out.extend(_scan_dots(body))
        else:  # e.g. the custom_vjp call around the scan
            for sub in jaxprs_in_params(eqn.params):
                out.extend(_scan_dots(sub))
    return out


@pytest.mark.parametrize("hoist,compute_dtype,dots", [(False, None, 1), (True, None, 1), (False, "bfloat16", 2)])
def test_forward_step_matmuls(hoist, compute_dtype, dots):
    """Not hoisted in float32, a forward step is ONE product [h, x_t, 1] @ [W_hh; W_ih; b]
    (the input product and bias add fused into the recurrent one); bf16 operands keep x_t W_ih
    separate (in float32)."""
    p = _params(0, 6, 10, 8)
    x_d, x_s = jnp.zeros((4, 9, 6)), jnp.zeros((4, 10))
    jaxpr = jax.make_jaxpr(lambda p: recurrence_vjp(p, x_d, x_s, hoist=hoist, compute_dtype=compute_dtype))(p)
    assert _scan_dots(jaxpr.jaxpr) == [dots]


def test_grads_match_numpy_float64_finite_differences():
    b, t, d, s, h = 3, 9, 2, 3, 4
    p = _params(2, d, s, h, scale=0.5)
    rng = np.random.default_rng(3)
    x_d = rng.standard_normal((b, t, d))
    x_s = rng.standard_normal((b, s))
    w = rng.standard_normal((b, h))
    g = jax.grad(
        lambda p: jnp.sum(
            recurrence_vjp(p, jnp.asarray(x_d, jnp.float32), jnp.asarray(x_s, jnp.float32), backward_block=4)[:, 0] * w
        )
    )(p)
    want = _numpy_grads(p, x_d, x_s, w)
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(g[k]), v, atol=2e-5, rtol=1e-4, err_msg=k)


def test_forward_through_ealstm_switch_is_the_same_model():
    p = _params(4, 6, 10, 8)
    rng = np.random.default_rng(5)
    x_d = jnp.asarray(rng.standard_normal((5, 17, 6)), jnp.float32)
    x_s = jnp.asarray(rng.standard_normal((5, 10)), jnp.float32)
    for n in (1, 4):
        for hoist in (False, True):
            a = ealstm.forward(p, x_d, x_s, predict_last_n=n, hoist=hoist)
            b = ealstm.forward(p, x_d, x_s, predict_last_n=n, custom_vjp=True, hoist=hoist)
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_vmapped_over_members_equals_each_member():
    """The ensemble step vmaps the custom VJP over members: gradients must not mix members."""
    ps = [_params(10 + m, 6, 10, 8) for m in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *ps)
    rng = np.random.default_rng(6)
    x_d = jnp.asarray(rng.standard_normal((3, 4, 11, 6)), jnp.float32)
    x_s = jnp.asarray(rng.standard_normal((3, 4, 10)), jnp.float32)

    def loss(p, xd, xs):
        return jnp.sum(recurrence_vjp(p, xd, xs, backward_block=4) ** 2)

    gv = jax.jit(jax.vmap(jax.grad(loss)))(stacked, x_d, x_s)
    one = jax.jit(jax.grad(loss))
    for m in range(3):
        gm = one(ps[m], x_d[m], x_s[m])
        for k in ("W_hh", "W_ih", "b", "W_sh", "b_s"):
            np.testing.assert_allclose(np.asarray(gv[k][m]), np.asarray(gm[k]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("last_n,hoist", [(1, False), (3, True), (11, False)])
def test_stacked_members_equal_each_member(last_n, hoist):
    """Members stacked on a leading axis run in one loop: outputs and gradients per member equal
    the member's own (un-stacked) ones, for per-member and for shared inputs."""
    ps = [_params(20 + m, 6, 10, 8) for m in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *ps)
    rng = np.random.default_rng(7)
    x_d = jnp.asarray(rng.standard_normal((3, 4, 11, 6)), jnp.float32)
    x_s = jnp.asarray(rng.standard_normal((3, 4, 10)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 4, last_n, 8)), jnp.float32)

    def loss(p, xd, xs, w):
        return jnp.sum(recurrence_vjp(p, xd, xs, last_n=last_n, hoist=hoist, backward_block=4) * w)

    for shared in (False, True):
        xd, xs = (x_d[0], x_s[0]) if shared else (x_d, x_s)
        out = jax.jit(lambda p: recurrence_vjp(p, xd, xs, last_n=last_n, hoist=hoist))(stacked)
        g = jax.jit(jax.grad(loss))(stacked, xd, xs, w)
        assert out.shape == (3, 4, last_n, 8)
        for m in range(3):
            xm, sm = (x_d[0], x_s[0]) if shared else (x_d[m], x_s[m])
            ref = recurrence_vjp(ps[m], xm, sm, last_n=last_n, hoist=hoist)
            np.testing.assert_allclose(np.asarray(out[m]), np.asarray(ref), atol=1e-6, rtol=1e-5)
            gm = jax.grad(loss)(ps[m], xm, sm, w[m])
            for k in ("W_hh", "W_ih", "b", "W_sh", "b_s"):
                np.testing.assert_allclose(
                    np.asarray(g[k][m]), np.asarray(gm[k]), atol=1e-6, rtol=1e-5, err_msg=f"{k} {m}"
                )


def test_stacked_members_must_match_the_inputs():
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[_params(m, 6, 10, 8) for m in range(3)])
    with pytest.raises(ValueError, match="3 stacked members"):
        recurrence_vjp(stacked, jnp.zeros((2, 4, 5, 6)), jnp.zeros((2, 4, 10)))


def test_rejects_bad_last_n():
    p = _params(0, 6, 10, 8)
    with pytest.raises(ValueError, match="last_n"):
        recurrence_vjp(p, jnp.zeros((2, 5, 6)), jnp.zeros((2, 10)), last_n=6)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])  # the engine's resolved options per backend
@pytest.mark.parametrize("last_n", [1, 6, 15])
def test_engine_forward_matches_numpy_float64(backend, last_n):
    import dataclasses

    from somojax.config import load_config
    from somojax.train.step import member_loss, step_options
    from tests.test_ealstm import numpy_ealstm, random_params

    cfg = load_config("tiny")
    model = dataclasses.replace(cfg.model, predict_last_n=last_n, dropout=0.0)
    opts = step_options(model, cfg.train, backend=backend)
    assert opts.kernel.custom_vjp and opts.kernel.hoist == (backend == "gpu")
    p = random_params(7, 6, 10, 8)
    rng = np.random.default_rng(8)
    x_d = rng.standard_normal((4, 15, 6)).astype(np.float32)
    x_s = rng.standard_normal((4, 10)).astype(np.float32)
    y = rng.standard_normal((4, last_n)).astype(np.float32)
    sigma = rng.uniform(0.05, 0.3, 4).astype(np.float32)
    want = numpy_ealstm(p, x_d, x_s, last_n)
    got = ealstm.forward(p, x_d, x_s, **opts.model_kwargs())
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
    s, n = member_loss(p, {"x_d": x_d, "x_s": x_s, "y": y, "sigma": sigma}, None, opts)
    nse = np.mean((want - y) ** 2 / (sigma[:, None] + 0.1) ** 2)
    np.testing.assert_allclose(float(s) / float(n), nse, rtol=1e-5)
