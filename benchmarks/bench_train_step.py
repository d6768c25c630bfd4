"""Training-step kernel variants of the EA-LSTM (the design study behind somojax.models.recurrence),
timed round-robin in one process. The benchmark suite itself is `somojax bench` (docs/benchmarks.md).

One member (and optionally an N-member ensemble) at batch B x T days x H hidden, fwd + bwd +
clip + Adam, fp32. Compile time excluded; median of repeats; ratios against the first variant.

    python benchmarks/bench_train_step.py                    # 1 member, paper shapes
    python benchmarks/bench_train_step.py --members 5        # + the 5-member ensemble step
    python benchmarks/bench_train_step.py --variants autodiff vjp vjp-u2 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from somojax.utils.malloc import keep_freed_memory

import jax
import jax.numpy as jnp
import numpy as np
import optax

from somojax.models import ealstm, ensemble
from somojax.models.recurrence import recurrence_vjp

VARIANTS = {
    # name: (kind, kwargs)
    "autodiff": ("autodiff", dict(hoist=False, remat=True, unroll=1)),
    "autodiff-hoist": ("autodiff", dict(hoist=True, remat=False, unroll=1)),
    "vjp": ("vjp", dict(hoist=False, backward_block=8)),
    "vjp-hoist": ("vjp", dict(hoist=True, backward_block=8)),
    "vjp-b16": ("vjp", dict(hoist=False, backward_block=16)),
    "vjp-b32": ("vjp", dict(hoist=False, backward_block=32)),
    "vjp-nobarrier": ("vjp", dict(hoist=False, backward_block=8, split_barrier=False)),
    "vjp-bf16": ("vjp", dict(hoist=False, backward_block=8, compute_dtype="bfloat16")),
    "vjp-split2": ("vjp-split", dict(hoist=False, backward_block=8, parts=2)),
    "vjp-split4": ("vjp-split", dict(hoist=False, backward_block=8, parts=4)),
}


def make_step(kind: str, kw: dict, members: int | None, member_mode: str = "vmap"):
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))

    def fwd(p, xd, xs):
        if kind == "autodiff":
            h = ealstm.recurrence(p, xd, xs, **kw)
        elif kind == "vjp-split":  # independent chains over parts of the batch
            k = {a: b for a, b in kw.items() if a != "parts"}
            n = kw["parts"]
            h = jnp.concatenate([recurrence_vjp(p, a, b, **k) for a, b in zip(jnp.split(xd, n), jnp.split(xs, n))])
        else:
            h = recurrence_vjp(p, xd, xs, **kw)
        return ealstm.head(p, h)[:, 0]

    def one(p, o, xd, xs, y):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((fwd(p, xd, xs) - y) ** 2))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    if members is None:
        return jax.jit(one, donate_argnums=(0, 1)), tx
    if member_mode == "vmap":
        return jax.jit(jax.vmap(one), donate_argnums=(0, 1)), tx

    if member_mode == "seq":  # members one after the other (a data dependency orders them)

        def seq(p, o, xd, xs, y):
            def total(p):
                losses, dep = [], jnp.zeros(())
                for m in range(members):
                    pm, xm, dep = jax.lax.optimization_barrier((jax.tree.map(lambda a: a[m], p), xd[m], dep))
                    l = jnp.mean((fwd(pm, xm, xs[m]) - y[m]) ** 2)
                    losses.append(l)
                    dep = l
                return sum(losses), jnp.stack(losses)

            (_, loss), g = jax.value_and_grad(total, has_aux=True)(p)
            u, o = jax.vmap(tx.update)(g, o, p)
            return optax.apply_updates(p, u), o, loss

        return jax.jit(seq, donate_argnums=(0, 1)), tx

    if member_mode == "stacked":  # one recurrence loop over all members (the engine's default)
        if kind != "vjp":
            raise SystemExit("--ensemble-modes stacked needs a vjp variant")
        skw = {a: b for a, b in kw.items() if a != "backward_block"}  # the stacked default block

        def stacked(p, o, xd, xs, y):
            def total(p):
                h = recurrence_vjp(p, xd, xs, **skw)  # [M, B, 1, H]
                losses = jnp.mean((jax.vmap(ealstm.head)(p, h)[..., 0] - y) ** 2, axis=1)
                return jnp.sum(losses), losses

            (_, loss), g = jax.value_and_grad(total, has_aux=True)(p)
            u, o = jax.vmap(tx.update)(g, o, p)
            return optax.apply_updates(p, u), o, loss

        return jax.jit(stacked, donate_argnums=(0, 1)), tx

    if member_mode == "loop":  # members as independent chains of one graph; update vmapped

        def looped(p, o, xd, xs, y):
            def total(p):
                losses = [
                    jnp.mean((fwd(jax.tree.map(lambda a: a[m], p), xd[m], xs[m]) - y[m]) ** 2) for m in range(members)
                ]
                return sum(losses), jnp.stack(losses)

            (_, loss), g = jax.value_and_grad(total, has_aux=True)(p)
            u, o = jax.vmap(tx.update)(g, o, p)
            return optax.apply_updates(p, u), o, loss

        return jax.jit(looped, donate_argnums=(0, 1)), tx

    def mapped(p, o, xd, xs, y):
        return jax.lax.map(lambda a: one(*a), (p, o, xd, xs, y))

    return jax.jit(mapped, donate_argnums=(0, 1)), tx


def torch_case(B: int, T: int, D: int, S: int, H: int):
    """ealstm_regional's EA-LSTM training step in PyTorch (somojax.bench.peers), same shapes."""
    from somojax.bench.peers import regional_train_step

    step = regional_train_step(B, T, D, S, H)
    return [lambda *_: (None, None, step()), None, None, ()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--members", type=int, default=0, help="also time an N-member step (0: skip)")
    ap.add_argument("--variants", nargs="+", default=["autodiff", "vjp", "vjp-hoist", "vjp-b16"])
    ap.add_argument("--ensemble-variant", default="vjp")
    ap.add_argument(
        "--ensemble-modes", nargs="+", default=["stacked", "loop"], choices=["stacked", "vmap", "loop", "seq", "map"]
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="")
    ap.add_argument("--torch", action="store_true", help="also time ealstm_regional's PyTorch loop (round-robin)")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc malloc at its defaults")
    a = ap.parse_args()
    if not a.default_malloc:
        keep_freed_memory()
    B, T, H, D, S = a.batch, a.days, a.hidden, 6, 10
    rng = np.random.default_rng(0)
    xd = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
    xs = jnp.asarray(rng.standard_normal((B, S)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((B,)), jnp.float32)

    cases = {}
    for name in a.variants:
        kind, kw = VARIANTS[name]
        fn, tx = make_step(kind, kw, None)
        p = ealstm.init_params(jax.random.key(0), D, S, H)
        cases[name] = [fn, p, tx.init(p), (xd, xs, y)]
    if a.members:
        M = a.members
        kind, kw = VARIANTS[a.ensemble_variant]
        for mode in a.ensemble_modes:
            fn, tx = make_step(kind, kw, M, mode)
            p = ensemble.init_ensemble(jax.random.key(0), M, D, S, H)
            batch = tuple(jnp.broadcast_to(v, (M,) + v.shape) + 0 for v in (xd, xs, y))
            cases[f"{a.ensemble_variant} x{M} {mode}"] = [fn, p, jax.vmap(tx.init)(p), batch]

    if a.torch:
        cases["torch (ealstm_regional)"] = torch_case(B, T, D, S, H)

    compile_s = {}
    for name, c in cases.items():
        t0 = time.perf_counter()
        c[1], c[2], loss = c[0](c[1], c[2], *c[3])
        jax.block_until_ready(loss)
        compile_s[name] = time.perf_counter() - t0
    times = {n: [] for n in cases}
    for _ in range(a.repeats):
        for name, c in cases.items():
            t0 = time.perf_counter()
            c[1], c[2], loss = c[0](c[1], c[2], *c[3])
            jax.block_until_ready((c[1], loss))
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[a.variants[0]])
    print(f"B={B} T={T} H={H} D={D} S={S}, {jax.devices()[0].platform}, {a.repeats} repeats round-robin")
    rows = []
    for name in cases:
        m = statistics.median(times[name])
        rows.append({"variant": name, "median_ms": m * 1e3, "ratio": m / base, "first_call_s": compile_s[name]})
        print(f"{name:>22}: {m * 1e3:8.1f} ms  ratio {m / base:5.2f}  (first call {compile_s[name]:.1f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"shape": dict(B=B, T=T, H=H, D=D, S=S), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
