"""The benchmarks of `somojax bench`: training step, rollout, Zarr writing, peers, floor, demo.

Each function returns a result dict (rows + ratios), prints a Markdown table and writes JSON to
`cfg.bench.output_dir` (`<name>-<device>-<date>.json` and `-latest.json`). Sizes come from
`cfg.bench` (paper shapes by default: batch 256 × 365 days × H = 128; one cell × 7305 days).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from somojax import constants as C
from somojax.bench import floor, harness
from somojax.config import Config
from somojax.utils.logging import get_logger

log = get_logger("bench")

D, S = len(C.DYNAMIC_INPUTS), len(C.STATIC_INPUTS)
# The full exact product (docs/design.md#inference-semantics): land cells x days x window length x layers x members.
PRODUCT = {"cells": 243_883, "days": 7_305, "layers": 3, "members": 5}


def _peers_available() -> dict[str, bool]:
    import importlib.util

    return {
        "torch": importlib.util.find_spec("torch") is not None,
        "neuralhydrology": importlib.util.find_spec("neuralhydrology") is not None,
    }


def _report(name: str, result: dict, columns, cfg: Config) -> dict:
    result = {"benchmark": name, "machine": harness.machine(), **result}
    if "torch" in sys.modules:  # a PyTorch peer ran in this benchmark: say on which device
        from somojax.bench.peers import peer_device

        result["machine"]["peer_device"] = peer_device()
    path = harness.save(name, result, cfg.bench.output_dir)
    print(
        f"\n## {name} ({result['machine']['cpu'] if result['machine']['jax_backend'] == 'cpu' else result['machine']['device_kind']})\n"
    )
    print(harness.table(result["rows"], columns))
    if result.get("ratios"):
        print("\nratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in result["ratios"].items() if v is not None))
    print(f"\n(written to {path})")
    return result


def _timed_with_floor(fns: dict, shape: tuple[int, int, int], b) -> tuple[dict, dict]:
    """Times `fns` and the matmul floor of `shape` in one round robin (the floor sampled between
    the steps, under the same load), `bench.repeats` rounds. Returns (times of `fns`, floor rate)."""
    floor_fns, flop = floor.matmul_fns(*shape)
    times = harness.round_robin({**fns, **floor_fns}, warmup=b.warmup, repeats=b.repeats)
    rate = floor.rate_from_times({k: times.pop(k) for k in floor_fns}, flop, list(shape))
    return times, rate


def _failures(rows: list[dict]) -> list[str]:
    """The rows' measurement failures, named by variant (a JSON field, and printed)."""
    out = [f"{r['variant']}: {r['measurement_failure']}" for r in rows if r.get("measurement_failure")]
    for line in out:
        print(f"measurement failure: {line}")
    return out


# ----------------------------------------------------------------------------------------
def bench_floor(cfg: Config) -> dict:
    """Matmul rates of the recurrent shapes and of a large square GEMM."""
    from somojax.models.kernel import KernelOptions

    b, h = cfg.bench, cfg.bench.hidden_size
    rows_per_step = KernelOptions().rows(h)  # the exact rollout's product (1536 rows at H = 128)
    shapes = [(b.batch_size, h, 3 * h), (rows_per_step, h + D, 3 * h), (rows_per_step, h, 3 * h), (2048, 2048, 2048)]
    rows = []
    for m, k, n in shapes:
        r = floor.matmul_rate(m, k, n, repeats=b.repeats)
        rows.append(
            {
                "shape": f"[{m}, {k}] x [{k}, {n}]",
                "gflops": r["gflops"],
                "one_device": r["gflops_one_device"],
                "data_parallel": r.get("gflops_data_parallel"),
            }
        )
    cols = [
        ("shape", "matmul (fp32)", "s"),
        ("gflops", "GFLOP/s (best)", ".0f"),
        ("one_device", "one device", ".0f"),
        ("data_parallel", f"rows over {len(jax.local_devices())} devices", ".0f"),
    ]
    return _report("floor", {"rows": rows}, cols, cfg)


# ----------------------------------------------------------------------------------------
def _engine_step(cfg: Config, members: int, devices=None):
    """The training engine's real jitted step (shardings, donation) and a random batch."""
    from somojax import sharding as shd
    from somojax.checkpoint import state_shardings
    from somojax.train.step import (
        BATCH_KEYS,
        init_state,
        make_optimizer,
        make_train_step,
        resolve_ensemble_mode,
        step_options,
    )

    b = cfg.bench
    model = dataclasses.replace(cfg.model, hidden_size=b.hidden_size, seq_length=b.seq_length)
    opts = step_options(model, cfg.train, kernel=cfg.kernel)
    tx = make_optimizer(cfg.train.clip_norm)
    mesh = shd.make_mesh(members, 0, devices)
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: init_state(key, members, D, S, model, tx))
    st_sh = state_shardings(shapes, mesh)
    state = jax.jit(lambda: init_state(key, members, D, S, model, tx), out_shardings=st_sh)()
    bsh = shd.batch_sharding(mesh, per_member=True)
    mode = resolve_ensemble_mode(
        cfg.kernel.ensemble_mode, members, mesh.shape[C.MEMBER_AXIS], opts, mesh.shape[C.DATA_AXIS]
    )
    step = jax.jit(
        make_train_step(opts, tx, shared_batches=False, mode=mode, mesh=mesh),
        in_shardings=(st_sh, {k: bsh for k in BATCH_KEYS}, NamedSharding(mesh, P())),
        out_shardings=(st_sh, NamedSharding(mesh, P())),
        donate_argnums=(0,),
    )
    rng = np.random.default_rng(0)
    B, T = b.batch_size, b.seq_length
    host = {
        "x_d": rng.standard_normal((members, B, T, D)).astype(np.float32),
        "x_s": rng.standard_normal((members, B, S)).astype(np.float32),
        "y": rng.standard_normal((members, B, 1)).astype(np.float32),
        "sigma": rng.uniform(0.01, 0.1, (members, B)).astype(np.float32),
    }
    batch = {k: jax.device_put(v, bsh) for k, v in host.items()}
    lr = jax.device_put(jnp.float32(1e-3), NamedSharding(mesh, P()))
    holder = {"state": state}

    def run():
        holder["state"], m = step(holder["state"], batch, lr)
        jax.block_until_ready(m["loss"])

    return run, mesh


def bench_train(cfg: Config) -> dict:
    """Training step: 1 and 5 members (one jitted step), against the PyTorch peers."""
    b = cfg.bench
    B, T, H = b.batch_size, b.seq_length, b.hidden_size
    times, measured = _timed_with_floor(_train_fns(cfg), (B, H, 3 * H), b)
    rate = measured["gflops"]
    floor_s = floor.train_step_flop(B, T, H) / (rate * 1e9)
    rows = _train_rows(times, floor_s, B, T)
    return _report(
        "train_step",
        {
            "sizes": {"batch": B, "days": T, "hidden": H, "dynamic": D, "static": S},
            "rows": rows,
            "ratios": _train_ratios(times, rows, B, T, H),
            "recurrent_matmul_gflops": rate,
            "matmul_floor": measured,
            "measurement_failures": _failures(rows),
        },
        [
            ("variant", "training step", "s"),
            ("ms", "ms", ".1f"),
            ("iqr_ms", "IQR", ".1f"),
            ("ms_per_member", "ms/member", ".1f"),
            ("samples_per_s", "samples/s", ".0f"),
            ("cell_steps_per_s", "cell-steps/s", ".3g"),
            ("floor_ms", "floor ms", ".1f"),
        ],
        cfg,
    )


def _train_fns(cfg: Config) -> dict:
    """{variant: one training step} of `bench_train`: the engine's step with 1 and 5 members,
    and the PyTorch peers that are installed."""
    b = cfg.bench
    B, T, H = b.batch_size, b.seq_length, b.hidden_size
    fns = {}
    one, _ = _engine_step(cfg, 1)
    five, _ = _engine_step(cfg, 5)
    fns["somojax, 1 member"] = one
    fns["somojax, 5 members (one step)"] = five
    peers = _peers_available()
    if peers["torch"]:
        from somojax.bench import peers as pp

        fns["PyTorch ealstm_regional loop"] = pp.regional_train_step(B, T, D, S, H)
        if peers["neuralhydrology"]:
            fns["neuralhydrology EALSTM"] = pp.neuralhydrology_steps(B, T, D, S, H)[0]
    return fns


def _train_rows(times: dict, floor_s: float, B: int, T: int) -> list[dict]:
    """One row per timed step (ms, spread, per member, samples/s, cell-steps/s), against the
    matmul floor `floor_s` of one member's step, times the members, and its check."""
    rows = []
    for name, t in times.items():
        m = 5 if "5 members" in name else 1
        rows.append(
            {
                "variant": name,
                "ms": t["median_s"] * 1e3,
                "iqr_ms": t["iqr_s"] * 1e3,
                "times_ms": [round(x * 1e3, 1) for x in t["times_s"]],
                "ms_per_member": t["median_s"] * 1e3 / m,
                "samples_per_s": m * B / t["median_s"],
                "cell_steps_per_s": m * B * T / t["median_s"],
                "floor_ms": floor_s * m * 1e3,
                **floor.floor_check(t["median_s"], floor_s * m),
            }
        )
    return rows


def _train_ratios(times: dict, rows: list[dict], B: int, T: int, H: int) -> dict:
    """The ratios `bench_train` reports: 5 members against 1, the step against its floor, and
    the speed-ups against the design anchor (at its shapes) and the peers that ran."""
    ours = times["somojax, 1 member"]["median_s"]
    ratios = {
        "5 members / 1 member (target <= 5)": times["somojax, 5 members (one step)"]["median_s"] / ours,
        "step / matmul floor": rows[0]["floor_ratio"],  # None: a measurement failure, not a ratio
    }
    if (B, T, H) == (256, 365, 128):  # docs/design.md#measured-anchors measured the released code at these shapes
        ratios["speed-up vs the 539 ms anchor of docs/design.md (target >= 2)"] = 0.539 / ours
    for peer in ("PyTorch ealstm_regional loop", "neuralhydrology EALSTM"):
        if peer in times:
            ratios[f"speed-up vs {peer} (target >= 2)"] = times[peer]["median_s"] / ours
    return ratios


def bench_scaling(cfg: Config, device_counts=(1, 2, 4, 8)) -> dict:
    """The 5-member step over 1, 2, 4, 8 devices, one subprocess per count. On a CPU these are
    CPU devices of the same cores: up to one per core they divide the work (data-parallel over
    cores, somojax/utils/devices.py), beyond that they show the sharded path's overhead."""
    from somojax.utils.devices import with_device_count

    rows = []
    for n in device_counts:
        env = dict(os.environ)
        if jax.default_backend() == "cpu":
            env["XLA_FLAGS"] = with_device_count(env.get("XLA_FLAGS", ""), n)
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [
                sys.executable,
                "-m",
                "somojax.bench.scaling",
                "--devices",
                str(n),
                "--json",
                f.name,
                "--batch",
                str(cfg.bench.batch_size),
                "--days",
                str(cfg.bench.seq_length),
                "--hidden",
                str(cfg.bench.hidden_size),
                "--repeats",
                str(cfg.bench.repeats),
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"scaling run with {n} devices failed:\n{out.stderr[-2000:]}")
            rows.append(json.loads(Path(f.name).read_text()))
    base = rows[0]["ms"]
    for r in rows:
        r["relative_time"] = r["ms"] / base
    return _report(
        "train_scaling",
        {"rows": rows},
        [
            ("devices", "devices", "d"),
            ("mesh", "mesh (member, data)", "s"),
            ("ms", "5-member step ms", ".1f"),
            ("relative_time", "vs 1 device", ".2f"),
        ],
        cfg,
    )


# ----------------------------------------------------------------------------------------
def bench_rollout(cfg: Config, chunked_k: int = 30) -> dict:
    """Exact and chunked rollout of one cell × `bench.rollout_days`, and of a tile of cells."""
    from somojax.models.kernel import KernelOptions

    b = cfg.bench
    H, L, days = b.hidden_size, b.seq_length, b.rollout_days
    opts = KernelOptions()  # as `somojax predict` runs by default
    fns, work = _rollout_cases(b, opts, chunked_k)
    times, measured = _timed_with_floor(fns, (opts.rows(H), H + D, 3 * H), b)
    rate = measured["gflops"]
    rows = _rollout_rows(times, work, rate, H)
    exact = times["exact, 1 cell"]["median_s"]
    valid = [r["cell_steps_per_s"] for r in rows if r["variant"].startswith("exact") and r["floor_ratio"] is not None]
    best = max(valid) if valid else None  # a row below its floor measured the load, not the rollout
    product_steps = PRODUCT["cells"] * PRODUCT["days"] * L * PRODUCT["layers"] * PRODUCT["members"]
    ratios = {"exact 1 cell / matmul floor (target <= 1.6)": rows[0]["floor_ratio"]}
    peers = _peers_available()
    if peers["torch"] and days == 7305:
        rows.append(_peer_rollout_row(days, L, H, rows[0]["floor_s"]))
        ratios["speed-up vs SoMo.ml-style PyTorch (target >= 40)"] = rows[-1]["s"] / exact
    ratios["speed-up vs the 46.7 s anchor of docs/design.md"] = 46.7 / exact if days == 7305 else None
    return _report(
        "rollout",
        {
            "sizes": {"hidden": H, "seq_length": L, "days": days, "members": 1, "layers": 1},
            "rows": rows,
            "ratios": ratios,
            "matmul_gflops": rate,
            "matmul_floor": measured,
            "measurement_failures": _failures(rows),
            "full_product": {
                **PRODUCT,
                "cell_steps": product_steps,
                "hours_at_best_measured_rate": product_steps / best / 3600 if best else None,
                "hours_at_matmul_floor": product_steps * floor.cell_step_flop(H) / (rate * 1e9) / 3600,
            },
        },
        [
            ("variant", "rollout (1 member, 1 layer)", "s"),
            ("s", "s", ".2f"),
            ("s_per_cell_20y", "s per cell x 20 y", ".3f"),
            ("cell_steps_per_s", "cell-steps/s", ".3g"),
            ("floor_s", "floor s", ".2f"),
        ],
        cfg,
    )


def _rollout_cases(b, opts, chunked_k: int) -> tuple[dict, dict]:
    """The rollouts `bench_rollout` times, on random inputs and a fresh one-member ensemble.

    Takes `cfg.bench` and the `KernelOptions`; returns ({variant: a function running it
    to completion}, {variant: (cells, days out, cell-steps per output day)}). A tile whose cells
    divide over the local devices is sharded over them, as `somojax predict` does.
    """
    from somojax import sharding as shd
    from somojax.infer import kernels
    from somojax.models import ensemble

    H, L, days = b.hidden_size, b.seq_length, b.rollout_days
    params = ensemble.init_ensemble(jax.random.key(0), 1, D, S, H)
    rng = np.random.default_rng(0)
    cases = {
        "exact, 1 cell": (1, days, "exact", 1),
        f"chunked (k={chunked_k}), 1 cell": (1, days, "chunked", chunked_k),
        "exact, tile of 64 cells x 1 year": (64, 365, "exact", 1),  # cells over the devices
    }
    fns, work = {}, {}
    devices = jax.local_devices()
    for name, (cells, n_out, mode, k) in cases.items():
        x = jnp.asarray(rng.standard_normal((cells, n_out + L - 1, D)), jnp.float32)
        xs = jnp.asarray(rng.standard_normal((cells, S)), jnp.float32)
        if cells % len(devices) == 0 and len(devices) > 1:
            cell_sharding = shd.batch_sharding(shd.make_mesh(1, 0, devices), per_member=False)
            x, xs = jax.device_put(x, cell_sharding), jax.device_put(xs, cell_sharding)
        kw = dict(seq_length=L, mode=mode, last_n=k, kernel=opts)
        fns[name] = lambda x=x, xs=xs, kw=kw: kernels.predict_normalised(params, x, xs, **kw).block_until_ready()
        work[name] = (cells, n_out, kernels.cost_per_output(mode, L, k))
    return fns, work


def _rollout_rows(times: dict, work: dict, rate: float, H: int) -> list[dict]:
    """One row per timed rollout: seconds, seconds per cell over 20 years, cell-steps/s, and the
    matmul floor at `rate` [GFLOP/s] with its check (`floor.floor_check`)."""
    rows = []
    for name, t in times.items():
        cells, n_out, cost = work[name]
        steps = cells * n_out * cost
        floor_s = steps * floor.cell_step_flop(H) / (rate * 1e9)
        rows.append(
            {
                "variant": name,
                "s": t["median_s"],
                "s_per_cell_20y": t["median_s"] / cells * (7305 / n_out),
                "cell_steps_per_s": steps / t["median_s"],
                "floor_s": floor_s,
                **floor.floor_check(t["median_s"], floor_s, "rollout"),
            }
        )
    return rows


def _peer_rollout_row(days: int, L: int, H: int, floor_s: float) -> dict:
    """The row of SoMo.ml-style PyTorch sliding-window inference of one cell over `days`
    (needs torch), timed once, shown against the exact rollout's floor `floor_s`."""
    from somojax.bench import peers as pp

    run = pp.regional_sliding_inference(days, L, D, S, H)
    t = harness.measure(run, warmup=0, repeats=1)
    return {
        "variant": "PyTorch SoMo.ml-style sliding windows, 1 cell",
        "s": t["median_s"],
        "s_per_cell_20y": t["median_s"],
        "cell_steps_per_s": days * L / t["median_s"],
        "floor_s": floor_s,
    }


# ----------------------------------------------------------------------------------------
def bench_zarr(cfg: Config) -> dict:
    """Write throughput of the prediction store layout (sharded Zarr v3, zstd): 2 x 2 tiles of the
    configured shard size (paper: 120 x 120 cells) x 2 time blocks of one shard (720 days)."""
    from somojax.infer import store as pstore

    i = cfg.layout
    n_lat, n_lon, days = 2 * i.shard_lat, 2 * i.shard_lon, 2 * i.shard_time
    layout = _zarr_layout(i)
    rng = np.random.default_rng(0)
    land = rng.random((n_lat, n_lon)) < 0.3
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.zarr"
        pstore.open_or_create(path, layout, {}, "bench", fresh=True)
        n_bytes, wall = _write_store(path, layout, land, rng, i.shard_time)
        stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    rows = [
        {
            "what": f"{len(C.LAYERS)} layers x {days} days x {n_lat} x {n_lon} cells, 2 variables, 30% land",
            "MB": n_bytes / 1e6,
            "s": wall,
            "MB_per_s": n_bytes / 1e6 / wall,
            "compression": n_bytes / stored,
        }
    ]
    return _report(
        "zarr_write",
        {"layout": {"shard": layout.shard, "chunk": layout.chunk}, "rows": rows},
        [
            ("what", "prediction store write", "s"),
            ("MB", "MB (raw)", ".0f"),
            ("s", "s", ".2f"),
            ("MB_per_s", "MB/s", ".0f"),
            ("compression", "compression", ".1f"),
        ],
        cfg,
    )


def _zarr_layout(i):
    """The prediction store layout `bench_zarr` writes, from `cfg.layout`: 2 x 2 shards of cells
    from 30° N, 0° E, 2 shards of days from 2000-01-01, the configured shard and chunk shapes."""
    import pandas as pd

    from somojax import grid
    from somojax.infer import store as pstore

    n_lat, n_lon, days = 2 * i.shard_lat, 2 * i.shard_lon, 2 * i.shard_time
    return pstore.Layout(
        tuple(C.LAYERS),
        pd.date_range("2000-01-01", periods=days, freq="D"),
        grid.lat_centres(30.0, 30.0 + n_lat / 4),
        grid.lon_centres(0.0, n_lon / 4),
        (i.shard_time, i.shard_lat, i.shard_lon),
        (i.chunk_time, i.chunk_lat, i.chunk_lon),
    )


def _write_store(path: Path, layout, land: np.ndarray, rng: np.random.Generator, shard_time: int) -> tuple[int, float]:
    """Writes every tile x time block of `layout` into the store at `path`, each the values drawn
    for the first tile (soil moisture where `land`, NaN elsewhere), cut to the tile's size.

    Returns (bytes written, before compression; seconds the writes took).
    """
    from somojax.infer import store as pstore

    blocks = layout.time_blocks(shard_time)
    tiles = layout.tiles()
    values = {}
    for ys, xs in tiles[:1]:
        shape = (blocks[0].stop - blocks[0].start, ys.stop - ys.start, xs.stop - xs.start)
        a = np.where(land[ys, xs], rng.uniform(0.05, 0.45, shape), np.nan).astype(np.float32)
        values = {v: {l: a for l in layout.layers} for v in pstore.VARIABLES}
    t0 = time.perf_counter()
    n_bytes = 0
    for blk in blocks:
        for tile in tiles:
            n = blk.stop - blk.start
            vals = {
                v: {l: a[:n, : tile[0].stop - tile[0].start, : tile[1].stop - tile[1].start] for l, a in d.items()}
                for v, d in values.items()
            }
            pstore.write_block(path, layout, tile, blk, vals)
            n_bytes += sum(x.nbytes for d in vals.values() for x in d.values())
    return n_bytes, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------
def bench_peer_forward(cfg: Config) -> dict:
    """Forward pass (inference on a training batch) of somojax and neuralhydrology."""
    from somojax.models import ealstm

    b = cfg.bench
    B, T, H = b.batch_size, b.seq_length, b.hidden_size
    p = ealstm.init_params(jax.random.key(0), D, S, H)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, T, D)), jnp.float32)
    xs = jnp.asarray(rng.standard_normal((B, S)), jnp.float32)
    hoist = jax.default_backend() != "cpu"
    fwd = jax.jit(lambda p, x, xs: ealstm.forward(p, x, xs, hoist=hoist))
    fns = {"somojax forward": lambda: fwd(p, x, xs).block_until_ready()}
    if _peers_available()["neuralhydrology"]:
        from somojax.bench import peers as pp

        fns["neuralhydrology EALSTM forward"] = pp.neuralhydrology_steps(B, T, D, S, H)[1]
    times = harness.round_robin(fns, warmup=b.warmup, repeats=b.repeats)
    rows = [{"variant": n, "ms": t["median_s"] * 1e3, "samples_per_s": B / t["median_s"]} for n, t in times.items()]
    ratios = {}
    if "neuralhydrology EALSTM forward" in times:
        ratios["speed-up vs neuralhydrology forward"] = (
            times["neuralhydrology EALSTM forward"]["median_s"] / times["somojax forward"]["median_s"]
        )
    return _report(
        "forward",
        {"sizes": {"batch": B, "days": T, "hidden": H}, "rows": rows, "ratios": ratios},
        [("variant", "forward pass", "s"), ("ms", "ms", ".1f"), ("samples_per_s", "samples/s", ".0f")],
        cfg,
    )


def bench_demo(cfg: Config) -> dict:
    """End-to-end time of `somojax run -c demo` in a temporary work directory (minutes)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "somojax", "run", "-c", "demo", f"workdir={tmp}/demo"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if out.returncode:
            raise RuntimeError(f"somojax run -c demo failed:\n{out.stderr[-3000:]}")
        stages = json.loads((Path(tmp) / "demo" / "run_summary.json").read_text())["stage_seconds"]
    rows = [{"stage": k, "s": v} for k, v in stages.items()] + [{"stage": "total (incl. start-up)", "s": wall}]
    return _report("demo", {"rows": rows}, [("stage", "somojax run -c demo", "s"), ("s", "s", ".1f")], cfg)


BENCHMARKS = {
    "floor": bench_floor,
    "train": bench_train,
    "scaling": bench_scaling,
    "rollout": bench_rollout,
    "forward": bench_peer_forward,
    "zarr": bench_zarr,
    "demo": bench_demo,
}
DEFAULT = ("floor", "train", "rollout", "forward", "zarr", "scaling")
