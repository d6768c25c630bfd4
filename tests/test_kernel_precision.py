"""Exact mode's float32 precision: on every kernel path, the worst deviation from a NumPy float64
evaluation over 20 years of several cells, with a long-memory EA-LSTM (forget bias 5), is no
worse than 1.2x that of the plain float32 recurrence written in NumPy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from somojax.infer import kernels
from somojax.models.kernel import KernelOptions

H, D, S, L = 16, 6, 10, 365
CELLS, DAYS = 3, 7305  # 20 years of outputs per cell


def long_memory_model(seed: int = 4) -> dict[str, np.ndarray]:
    """ealstm_regional's forget bias of 5 and a contractive recurrence: memory without chaos, so
    the worst case is a property of the arithmetic, not of one ill-conditioned window."""
    r = np.random.default_rng(seed)
    p = {
        "W_ih": r.standard_normal((D, 3 * H)) * 0.3,
        "W_hh": r.standard_normal((H, 3 * H)) * (0.2 / np.sqrt(H)),
        "b": r.standard_normal(3 * H) * 0.1,
        "W_sh": r.standard_normal((S, H)) * 0.5,
        "b_s": r.standard_normal(H) * 0.1,
        "W_fc": r.standard_normal((H, 1)) * 0.5,
        "b_fc": np.zeros(1),
    }
    p["b"][:H] += 5.0
    return p


def inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised daily inputs [C, T, D]: seasons, persistent anomalies (AR(1), 0.98) and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(DAYS + L - 1)
    x = np.stack(
        [np.sin(2 * np.pi * t / 365.25 + k)[None] + 0.5 * rng.standard_normal((CELLS, t.size)) for k in range(D)], -1
    )
    ar = np.zeros_like(x)
    for k in range(1, t.size):
        ar[:, k] = 0.98 * ar[:, k - 1] + 0.2 * rng.standard_normal((CELLS, D))
    return (x + ar).astype(np.float32), rng.standard_normal((CELLS, S)).astype(np.float32)


def numpy_exact(p: dict, x: np.ndarray, xs: np.ndarray, dtype) -> np.ndarray:
    """Every window's prediction [C, DAYS]: in float32 the plain recurrence h·W_hh + x·W_ih + b
    with σ(z) = 1/(1 + e^−z); in float64 the same function (σ = tanh(z/2)/2 + 1/2 and the input
    product done once for all days: exact to ~1e-16, and faster)."""
    w = {k: v.astype(dtype) for k, v in p.items()}
    one, half = dtype(1), dtype(0.5)
    sig = (lambda z: one / (one + np.exp(-z))) if dtype == np.float32 else (lambda z: half * np.tanh(half * z) + half)
    i = np.repeat(sig(xs.astype(dtype) @ w["W_sh"] + w["b_s"]), DAYS, axis=0)  # [C·DAYS, H], rows (cell, window)
    proj = x.astype(np.float64) @ p["W_ih"] + p["b"] if dtype == np.float64 else None
    h = np.zeros((CELLS * DAYS, H), dtype)
    c = np.zeros_like(h)
    for s in range(L):
        if proj is None:
            g = h @ w["W_hh"] + x[:, s : s + DAYS].reshape(CELLS * DAYS, D) @ w["W_ih"] + w["b"]
        else:
            g = h @ w["W_hh"] + proj[:, s : s + DAYS].reshape(CELLS * DAYS, 3 * H)
        c = sig(g[:, :H]) * c + i * np.tanh(g[:, 2 * H :])
        h = sig(g[:, H : 2 * H]) * np.tanh(c)
    return ((h.astype(np.float64) @ p["W_fc"])[:, 0] + p["b_fc"][0]).reshape(CELLS, DAYS)


PATHS = {  # every formulation selectable on CPU: (hoist, member_map)
    "step-wise (CPU default)": (False, True),
    "hoisted": (True, True),
    "hoisted, vmapped members (GPU/TPU default)": (True, False),
}


def deviations() -> dict[str, float]:
    """Worst |y − y_float64| over CELLS × DAYS for NumPy float32 and each kernel path."""
    p, (x, xs) = long_memory_model(), inputs()
    ref = numpy_exact(p, x, xs, np.float64)
    out = {"numpy float32": float(np.abs(numpy_exact(p, x, xs, np.float32) - ref).max())}
    pj = {k: jnp.asarray(v, jnp.float32)[None] for k, v in p.items()}
    for name, (hoist, member_map) in PATHS.items():
        kernel = KernelOptions(hoist=hoist).replace(member_map=member_map)
        y = kernels.predict_normalised(pj, jnp.asarray(x), jnp.asarray(xs), seq_length=L, kernel=kernel)
        out[name] = float(np.abs(np.asarray(y[0], np.float64) - ref).max())
    return out


@pytest.fixture(scope="module")
def measured():
    return deviations()


@pytest.mark.parametrize("path", list(PATHS))
def test_no_kernel_path_is_less_precise_than_plain_float32(measured, path):
    assert measured["numpy float32"] > 1e-6  # the model is sensitive enough to show rounding
    assert measured[path] <= 1.2 * measured["numpy float32"], measured


@pytest.mark.parametrize("mode", ["exact", "chunked"])
@pytest.mark.parametrize("hoist", [False, True])
def test_every_product_of_a_kernel_runs_at_the_requested_precision(mode, hoist):
    """Not only the recurrent one: at JAX's default precision a GPU (TF32) or TPU (bfloat16) would
    round the factors of the input projection, the static gate and the head to 11 or 8 bits. On
    CPU that changes no number, so the lowered program is checked."""
    import re

    p, (x, xs) = long_memory_model(), inputs()
    pj = {k: jnp.stack([jnp.asarray(v, jnp.float32)] * 2) for k, v in p.items()}
    lowered = kernels.predict_normalised.lower(
        pj,
        jnp.asarray(x[:, : L + 40]),
        jnp.asarray(xs),
        seq_length=L,
        mode=mode,
        last_n=1 if mode == "exact" else 5,
        kernel=KernelOptions(hoist=hoist).replace(member_map=False),
    )
    dots = re.findall(r"stablehlo\.dot_general[^\n]*", lowered.as_text())
    assert len(dots) >= 3 + hoist  # recurrent (+ projection), static gate, head
    assert all("precision = [HIGHEST, HIGHEST]" in d for d in dots), [
        re.search(r"precision = \[[^\]]*\]|$", d).group(0) for d in dots
    ]
