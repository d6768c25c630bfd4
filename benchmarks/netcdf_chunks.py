"""Reads of an exported NetCDF year under two chunk layouts: a daily map and a one-cell series.

    python benchmarks/netcdf_chunks.py [--lat 600 --lon 1440 --days 365]

Writes one quasi-global year (600 x 1440 cells, 28 % land like SoMo.ml's domain, the rest NaN)
with the old layout (one chunk per day: [1, 600, 1440]) and with `export.NETCDF_CHUNKS`, then
times, with a cold HDF5 chunk cache each time (the file is reopened), a daily map and one
cell's 365 days, and reports the chunks each read touches. A 20-year series reads 20 such files.
JSON goes to benchmarks/results/netcdf_chunks-<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from somojax.bench.harness import machine
from somojax.infer.export import COMPRESSION, NETCDF_CHUNKS


def synthetic_year(n_lat: int, n_lon: int, n_days: int, seed: int = 0) -> np.ndarray:
    """Smooth seasonal soil moisture on 28 % of the cells (land), NaN elsewhere; float32 [T, Y, X]."""
    rng = np.random.default_rng(seed)
    land = rng.random((n_lat // 10 + 1, n_lon // 10 + 1)) < 0.28
    land = np.kron(land, np.ones((10, 10), bool))[:n_lat, :n_lon]
    base = (0.25 + 0.1 * np.sin(np.linspace(0, 6, n_lon))[None] * np.cos(np.linspace(0, 3, n_lat))[:, None]).astype(
        np.float32
    )
    season = 0.05 * np.sin(np.arange(n_days) / 58.0).astype(np.float32)
    out = np.empty((n_days, n_lat, n_lon), np.float32)
    for t in range(n_days):
        out[t] = np.where(land, base + season[t] + rng.normal(0, 0.005, (n_lat, n_lon)).astype(np.float32), np.nan)
    return out


def write(path: Path, data: np.ndarray, chunks: tuple[int, int, int]) -> float:
    t0 = time.perf_counter()
    n_t, n_y, n_x = data.shape
    ds = xr.Dataset(
        {"sm": (("time", "latitude", "longitude"), data)},
        coords={
            "time": pd.date_range("2001-01-01", periods=n_t),
            "latitude": np.arange(n_y) * 0.25 - 59.875,
            "longitude": np.arange(n_x) * 0.25 - 179.875,
        },
    )
    enc = {
        "sm": {
            **COMPRESSION,
            "_FillValue": np.float32(np.nan),
            "chunksizes": tuple(min(c, n) for c, n in zip(chunks, data.shape)),
        }
    }
    ds.to_netcdf(path, encoding=enc, format="NETCDF4")
    return time.perf_counter() - t0


def timed_read(path: Path, index, repeats: int = 5) -> float:
    best = np.inf
    for _ in range(repeats):
        with netCDF4.Dataset(path) as nc:  # reopened: nothing of the previous read in the chunk cache
            t0 = time.perf_counter()
            nc["sm"][index]
            best = min(best, time.perf_counter() - t0)
    return best


def chunks_touched(shape, chunks, read: str) -> int:
    n_t, n_y, n_x = shape
    c_t, c_y, c_x = (min(c, n) for c, n in zip(chunks, shape))
    if read == "map":
        return -(-n_y // c_y) * -(-n_x // c_x)
    return -(-n_t // c_t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lat", type=int, default=600)
    ap.add_argument("--lon", type=int, default=1440)
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()
    data = synthetic_year(args.lat, args.lon, args.days)
    cell = tuple(int(i) for i in np.argwhere(np.isfinite(data[0]))[len(np.argwhere(np.isfinite(data[0]))) // 2])
    layouts = {"one day per chunk (before)": (1, args.lat, args.lon), "NETCDF_CHUNKS": NETCDF_CHUNKS}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, chunks in layouts.items():
            path = Path(tmp) / "year.nc"
            wrote = write(path, data, chunks)
            rows[name] = {
                "chunks": list(chunks),
                "file_mb": round(path.stat().st_size / 1e6, 1),
                "write_s": round(wrote, 2),
                "map_s": round(timed_read(path, (args.days // 2, slice(None), slice(None))), 4),
                "map_chunks": chunks_touched(data.shape, chunks, "map"),
                "series_one_year_s": round(timed_read(path, (slice(None), cell[0], cell[1])), 4),
                "series_chunks_per_year": chunks_touched(data.shape, chunks, "series"),
            }
            r = rows[name]
            r["series_20_years_s_estimate"] = round(20 * r["series_one_year_s"], 3)
            print(
                f"{name:28s} chunks {chunks}: map {r['map_s'] * 1e3:.1f} ms ({r['map_chunks']} chunks), one-cell year "
                f"{r['series_one_year_s'] * 1e3:.1f} ms ({r['series_chunks_per_year']} chunks); file {r['file_mb']} MB"
            )
    result = {
        "benchmark": "netcdf_chunks",
        "machine": machine(),
        "shape": [args.days, args.lat, args.lon],
        "layouts": rows,
    }
    out = Path(__file__).parent / "results" / f"netcdf_chunks-cpu-{machine()['cpu_cores']}c.json"
    out.write_text(json.dumps(result, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
