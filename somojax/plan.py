"""`somojax plan`: what a rollout costs before it runs: work, bytes, memory and wall time.

Work counts the recurrent cell-steps of the configured product (cells × output days × layers ×
members × steps per output: L in exact mode, (L + k − 1)/k chunked), its FLOPs (the input and
recurrent products, 2·3H·(D + H) per cell-step) and the bytes the store receives (sm and
sm_spread, float32, before compression). Memory per device is what one device pass holds
(`layout.tile_cells`, `layout.time_block_days` plus the spin-up; the rollout's own formula).

Wall time comes from measured rates in the benchmark results (`somojax bench --only rollout`,
JSON in bench.output_dir), scaled from the measured hidden size by the FLOP ratio. A row whose
time is below its own matmul floor is a failed measurement and is not used. Devices without a
measurement (a GPU or TPU on this project's CPU-only machines) get an estimate: the device's
matmul rate (`--device-gflops`, from its spec sheet or `somojax bench --only floor` there) ×
the fraction of the matmul floor the CPU rollout reaches. The estimate says which it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from somojax import constants as C
from somojax.config import Config
from somojax.errors import ConfigError
from somojax.infer.kernels import cost_per_output

GLOBAL_LAND_CELLS = 243_883  # land cells of the 0.25° grid in SoMo.ml's product


@dataclass(frozen=True)
class Rate:
    """Cell-steps per second of one device at hidden size `hidden`, and where it comes from."""

    cell_steps_per_s: float
    hidden: int
    source: str
    matmul_fraction: float | None = None  # achieved FLOP rate / matmul floor


def cell_step_flop(hidden: int, inputs: int) -> float:
    """FLOPs of one cell-step: the input and recurrent products into the three gates."""
    return 2.0 * 3 * hidden * (inputs + hidden)


def n_inputs(cfg: Config, layer: str) -> int:
    return len(cfg.data.dynamic_inputs) + len(C.UPPER_LAYER_INPUTS[layer])


def mode_of(cfg: Config) -> str:
    k = cfg.model.predict_last_n
    if cfg.infer.mode == "auto":
        return "exact" if k == 1 else "chunked"
    return cfg.infer.mode


def count_cells(cfg: Config, cells: int | None) -> tuple[int, str]:
    """Cells to predict: given, else counted in the statics store, else the global product's."""
    if cells is not None:
        if cells < 1:
            raise ConfigError(f"--cells {cells}: expected a positive cell count")
        return cells, "--cells"
    from somojax import stores

    if stores.store_path(cfg.store_dir, "statics").exists():
        from somojax.infer.rollout import region_mask

        statics = stores.open_store(cfg.store_dir, "statics", variables=())
        return int(
            region_mask(cfg, statics)[2].sum()
        ), f"infer.region={cfg.infer.region} in the statics store {cfg.store_dir}"
    s, n, w, e = cfg.infer.bbox
    if s <= -90 and n >= 90 and e - w >= 360:
        return GLOBAL_LAND_CELLS, "the global 0.25° land mask (no statics store yet)"
    raise ConfigError(
        f"no statics store in {cfg.store_dir} to count the cells of infer.bbox={list(cfg.infer.bbox)}: give --cells N or run `somojax prepare`"
    )


def work(cfg: Config, cells: int) -> dict:
    """Cell-steps, FLOPs and store bytes of the configured rollout."""
    days = (pd.Timestamp(cfg.infer.end) - pd.Timestamp(cfg.infer.start)).days + 1
    mode, m, h = mode_of(cfg), cfg.train.members, cfg.model.hidden_size
    per_cell_day = cost_per_output(mode, cfg.model.seq_length, cfg.model.predict_last_n) * m
    layers = list(cfg.train.layers)
    steps = {l: cells * days * per_cell_day for l in layers}
    flop = sum(steps[l] * cell_step_flop(h, n_inputs(cfg, l)) for l in layers)
    return {
        "cells": cells,
        "days": days,
        "layers": layers,
        "members": m,
        "mode": mode,
        "cell_steps": sum(steps.values()),
        "flop": flop,
        "store_bytes": cells * days * len(layers) * 2 * 4,
    }


def memory_per_device(cfg: Config) -> float:
    """Bytes one device pass holds (the rollout's `_cell_batch` bound, float32, copies ×2)."""
    h, m = cfg.model.hidden_size, cfg.train.members
    d = max(n_inputs(cfg, l) for l in cfg.train.layers)
    spin = (cfg.model.seq_length - 1) * len(cfg.train.layers)  # the cascade's spin-up, at most
    n_in_days = cfg.layout.time_block_days + spin
    per_cell = n_in_days * 4 * 2 * (d + 3 * h + 3 * (m + 2))
    batch = min(
        cfg.layout.tile_cells,
        cfg.layout.shard_lat * cfg.layout.shard_lon,
        max(1, int(cfg.layout.memory_budget_gb * 1e9 // per_cell)),
    )
    return batch * per_cell


def measured_rate(results_dir: Path, mode: str, kind: str) -> Rate | None:
    """The best valid measured rollout rate per device of `kind` in mode `mode`, or None."""
    best = None
    for f in sorted(Path(results_dir).glob("rollout-*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        mach = d.get("machine", {})
        if mach.get("device_kind", mach.get("jax_backend")) != kind and mach.get("jax_backend") != kind:
            continue
        devices = max(1, len(mach.get("jax_devices", [])) or 1)
        for row in d.get("rows", []):
            v = row.get("variant", "")
            if not v.startswith(mode) or row.get("s", 0) < row.get(
                "floor_s", 0
            ):  # below its floor: a failed measurement
                continue
            rate = row["cell_steps_per_s"] / devices
            gflops = d.get("matmul_gflops")  # the machine's recurrent-product floor
            frac = row["cell_steps_per_s"] * cell_step_flop(d["sizes"]["hidden"], 0) / 1e9 / gflops if gflops else None
            if best is None or rate > best.cell_steps_per_s:
                best = Rate(
                    rate, d["sizes"]["hidden"], f"{f.name}: {v!r} on {mach.get('cpu', kind)} ({devices} devices)", frac
                )
    return best


def rate_for(cfg: Config, kind: str, results_dir: Path, device_gflops: float | None) -> Rate:
    """The rate per device at the config's hidden size: measured, or estimated for a device
    without a measurement (needs `device_gflops`)."""
    mode, h = mode_of(cfg), cfg.model.hidden_size
    got = measured_rate(results_dir, mode, kind)
    if got is not None and device_gflops is None:
        scale = cell_step_flop(got.hidden, 0) / cell_step_flop(h, 0)
        return Rate(
            got.cell_steps_per_s * scale, h, f"measured: {got.source}, scaled from H={got.hidden}", got.matmul_fraction
        )
    cpu = measured_rate(results_dir, mode, "cpu")
    if device_gflops is None or cpu is None or cpu.matmul_fraction is None:
        raise ConfigError(
            f"no measured {mode} rollout rate for {kind} in {results_dir}: give --device-gflops (the device's float32 matmul "
            f"GFLOP/s, e.g. from `somojax bench --only floor` on it), or measure one with `somojax bench --only rollout`"
        )
    per_step = cell_step_flop(h, 0)  # the recurrent product the floor measures
    return Rate(
        device_gflops * 1e9 * cpu.matmul_fraction / per_step,
        h,
        f"estimated, not measured: {device_gflops:g} GFLOP/s × "
        f"{cpu.matmul_fraction:.2f} (the fraction of the matmul floor the CPU rollout reaches)",
        cpu.matmul_fraction,
    )


def plan(
    cfg: Config,
    devices: int = 1,
    kind: str = "cpu",
    cells: int | None = None,
    device_gflops: float | None = None,
    results_dir: str | None = None,
) -> dict:
    """Prints and returns the work, memory and expected wall time of the configured rollout."""
    if devices < 1:
        raise ConfigError(f"--devices {devices}: expected at least 1")
    n, where = count_cells(cfg, cells)
    w = work(cfg, n)
    rate = rate_for(cfg, kind, Path(results_dir or cfg.bench.output_dir), device_gflops)
    tiles = math.ceil(n / (cfg.layout.shard_lat * cfg.layout.shard_lon))  # at least; land tiles of a real grid are more
    used = min(devices, tiles)  # one tile is never split over processes
    seconds = w["cell_steps"] / (rate.cell_steps_per_s * used)
    out = {
        **w,
        "cells_from": where,
        "devices": devices,
        "kind": kind,
        "memory_per_device_bytes": memory_per_device(cfg),
        "rate_cell_steps_per_s_per_device": rate.cell_steps_per_s,
        "rate_source": rate.source,
        "wall_seconds": seconds,
    }
    for line in describe(out, used):
        print(line)
    return out


def describe(p: dict, used: int) -> list[str]:
    hours = p["wall_seconds"] / 3600
    return [
        f"rollout: {p['cells']:,} cells ({p['cells_from']}) x {p['days']:,} days x layers {', '.join(p['layers'])} x {p['members']} members, {p['mode']} mode",
        f"work: {p['cell_steps']:.4g} cell-steps, {p['flop']:.4g} FLOP; store: {p['store_bytes'] / 1e9:.3g} GB before compression",
        f"memory per device pass: {p['memory_per_device_bytes'] / 1e9:.3g} GB (layout.tile_cells, layout.time_block_days, layout.memory_budget_gb)",
        f"rate: {p['rate_cell_steps_per_s_per_device']:.4g} cell-steps/s per {p['kind']} device ({p['rate_source']})",
        f"wall time on {p['devices']} {p['kind']} device(s){'' if used == p['devices'] else f' ({used} busy: one tile per device at most)'}: "
        f"{hours:.3g} h ({hours / 24:.3g} days)",
    ]
