"""Does a dask worker's peak memory in `somojax prepare` grow with the years of hourly ERA5?

For 1 and 4 years of hourly ERA5-like input over a 5°×5° region (441 ERA5 points, every variable
somojax reads), in two layouts:

- `cds`: CDS NetCDF, one file per month (the 2024+ CDS layout: `valid_time`, short names);
- `arco`: one ARCO-ERA5-style Zarr store (long variable names, `time`, one hour per chunk as in
  `gs://gcp-public-data-arco-era5/ar/`),

runs the whole `prepare` (forcings, statics, targets of 6 stations) on a
`distributed.LocalCluster` of 2 single-threaded worker processes (`--scheduler local:2`), and
records each worker's peak resident memory (getrusage, so the import of the libraries is in
it), that of the process that submits the work, and the wall time. Inputs are written and each
preparation runs in a fresh process of its own. Writes benchmarks/results/prepare_memory-cpu-2c.json.

    python benchmarks/prepare_memory.py                    # both layouts, 1 and 4 years
    python benchmarks/prepare_memory.py --layouts cds --years 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from somojax.bench.harness import machine  # noqa: E402
from somojax.config import load_config  # noqa: E402
from somojax.prepare import prepare  # noqa: E402
from somojax.prepare.era5 import LONG_NAMES  # noqa: E402
from somojax.prepare.scheduler import dask_scheduler  # noqa: E402
from tests.test_prepare_factory import (  # noqa: E402
    era5_dataset,
    era5_points,
    hourly_station,
    write_ismn_file,
    write_statics,
)

LAT, LON = (40.0, 45.0), (-100.0, -95.0)
FIRST_YEAR = 2001
STATIC_NAMES = {  # the test factory's file names -> data.* keys
    "etopo": "etopo",
    "gldas_soil": "gldas_soil",
    "gldas_porosity": "gldas_porosity",
    "gldas_vegetation": "gldas_vegetation",
    "land_mask": "land_mask",
}


def write_hourly_era5(folder: Path, years: int, layout: str) -> list[str]:
    """Hourly ERA5-like input for `years` years, one month generated at a time; its paths."""
    lats, lons = era5_points(LAT, LON)
    folder.mkdir(parents=True, exist_ok=True)
    months = pd.date_range(f"{FIRST_YEAR}-01-01", f"{FIRST_YEAR + years - 1}-12-01", freq="MS")
    paths, store = [], folder / "arco.zarr"
    for k, m in enumerate(months):
        # the last month ends with the next day's 00 UTC: the accumulation of the year's last hour
        last = k == len(months) - 1
        hours = pd.date_range(m, m + pd.offsets.MonthBegin(1), freq="h", inclusive="both" if last else "left")
        ds = era5_dataset(hours, lats, lons, seed=k, daily=False)
        if layout == "cds":
            p = folder / f"era5_{m:%Y_%m}.nc"
            ds.to_netcdf(p)
            paths.append(str(p))
            continue
        ds = ds.drop_vars(["expver", "number"]).rename(valid_time="time")
        ds = ds.rename({v: k for k, v in LONG_NAMES.items() if v in ds.data_vars and "_" in k})
        ds = ds.chunk({"time": 1})
        if k == 0:
            ds.to_zarr(store, zarr_format=3, consolidated=True, mode="w")
        else:
            ds.to_zarr(store, zarr_format=3, consolidated=True, append_dim="time")
    return paths or [str(store)]


def write_rest(raw: Path, years: int) -> dict[str, str]:
    """Statics and 6 ISMN stations (3 depths each) for the region; the data.* overrides."""
    statics = write_statics(raw / "static", LAT, LON)
    rng = np.random.default_rng(0)
    end = f"{FIRST_YEAR + years - 1}-12-31"
    for i in range(6):
        la, lo = rng.uniform(*LAT), rng.uniform(*LON)
        for j, depth in enumerate((0.05, 0.20, 0.40)):
            t, v, f = hourly_station(f"{FIRST_YEAR}-03-01", end, seed=10 * i + j)
            write_ismn_file(raw / "ismn", "SYNTH", f"S{i:03d}", la, lo, depth, depth, "Synth-Probe", t, v, f)
    out = {f"data.{key}": str(statics[name]) for name, key in STATIC_NAMES.items() if name in statics}
    out["data.ismn"] = str(raw / "ismn")
    return out


def write_inputs(work: Path, layout: str, years: int) -> tuple[list[str], dict[str, str], float]:
    """The raw inputs of one run: ERA5 paths, the data.* overrides, seconds taken."""
    t0 = time.perf_counter()
    era5 = write_hourly_era5(work / "raw" / "era5", years, layout)
    rest = write_rest(work / "raw", years)
    return era5, rest, time.perf_counter() - t0


def prepare_on_cluster(
    work: Path, era5: list[str], rest: dict[str, str], years: int, extra: Sequence[str] = ()
) -> dict:
    """`prepare` on a 2-worker LocalCluster: wall time, the workers' and this process's peak RSS."""
    end = f"{FIRST_YEAR + years - 1}-12-31"
    overrides = [f"workdir={work}", "data.source=files", f"data.era5=[{','.join(era5)}]"]
    overrides += [f"{k}={v}" for k, v in rest.items()]
    overrides += [f"data.lat_range=[{LAT[0]},{LAT[1]}]", f"data.lon_range=[{LON[0]},{LON[1]}]"]
    overrides += [f"data.forcing_start={FIRST_YEAR}-01-01", f"data.forcing_end={end}"]
    overrides += [f"data.target_start={FIRST_YEAR}-04-01", f"data.target_end={end}"]
    overrides += [f"data.val_start={end[:4]}-09-01", f"data.val_end={end}", "data.min_overlap_days=2"]
    overrides += [f"infer.start={end[:4]}-06-01", f"infer.end={end}"]
    cfg = load_config("tiny", overrides + list(extra))
    with dask_scheduler("local:2") as client:
        t0 = time.perf_counter()
        prepare(cfg)
        wall = time.perf_counter() - t0
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)  # KiB -> GiB
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"prepare_seconds": wall, "worker_peak_rss_gib": sorted(peaks.values()), "client_peak_rss_gib": client_peak}


def in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter, so that each peak RSS is that of one task alone."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def run(root: Path, layout: str, years: int, extra: list[str]) -> dict:
    """One layout and length: the inputs written, then prepared on the cluster (`extra`: more
    config overrides, e.g. layout.forcing_chunk_days=365)."""
    work = root / f"{layout}-{years}y"
    era5, rest, t_write = in_fresh_process(write_inputs, work, layout, years)
    res = in_fresh_process(prepare_on_cluster, work, era5, rest, years, extra)
    era5_bytes = sum(f.stat().st_size for p in era5 for f in (Path(p).rglob("*") if Path(p).is_dir() else [Path(p)]))
    rec = {
        "layout": layout,
        "years": years,
        "overrides": extra,
        "hours": len(pd.date_range(f"{FIRST_YEAR}-01-01", f"{FIRST_YEAR + years - 1}-12-31 23:00", freq="h")),
        "era5_points": int(np.prod([len(a) for a in era5_points(LAT, LON)])),
        "era5_files": len(era5),
        "era5_gib": round(era5_bytes / 2**30, 3),
        "write_input_seconds": round(t_write, 1),
        "prepare_seconds": round(res["prepare_seconds"], 1),
        "worker_peak_rss_gib": [round(v, 3) for v in res["worker_peak_rss_gib"]],
        "client_peak_rss_gib": round(res["client_peak_rss_gib"], 3),
    }
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layouts", default="cds,arco")
    p.add_argument("--years", default="1,4")
    p.add_argument("--root", default="runs/prepare_memory")
    p.add_argument("--out", default="benchmarks/results/prepare_memory-cpu-2c.json")
    p.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. layout.forcing_chunk_days=365")
    a = p.parse_args()
    root = Path(a.root).absolute()
    runs = [run(root, lay, int(y), a.overrides) for lay in a.layouts.split(",") for y in a.years.split(",")]
    out = Path(__file__).resolve().parent.parent / a.out
    out.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "runs": runs}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
