"""The 0.25° globe through the real CLI: synth, prepare, train, predict (issue 14).

A synthetic world on the real ERA5 land mask (`synth.land_mask`, tiles of `synth.band_deg`),
prepared, then a paper-size L1 model (H = 128, 365-day windows, one member, a handful of
updates: a throughput run, accuracy is irrelevant) rolled out in exact mode for 31 days over
every land cell; a second one with `predict_last_n` rolled out in chunked mode for a year; and
the 5-member 3-layer cascade (chunked models) on one bbox tile. Every stage is a
`python -m somojax.cli <command>` child; the driver records its wall time and peak RSS (the
child and its descendants, polled), store sizes, land cells and cell-steps, and writes
benchmarks/results/globe-<machine>.json.

    python benchmarks/globe.py                                # the globe (-60..90°N): hours
    python benchmarks/globe.py --lat-range 45 50 --tag reduced  # one 5° band: minutes

Stages run in order; `--stages` picks some (a later stage needs the earlier ones' outputs in
the same --workdir). The cascade needs 3 × 364 days of forcing before its first output day,
hence the 4-year world.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parent.parent
MASK = "/work/shared/data/era5/era5_landmask_0.25.nc"
CONFIG = "demo"  # the synthetic-data config; the overrides below make the model paper-size
STAGES = (
    "synth",
    "prepare",
    "train_exact",
    "predict_exact",
    "train_chunked",
    "predict_chunked",
    "train_cascade",
    "predict_cascade",
)
START, STATION_START = "1999-06-01", "2000-06-01"  # targets in northern summer (frozen soil is flagged)
WARMUP_DAYS = 3 * 364  # L3 of the cascade needs 3 x (365 - 1) days of forcing before its first day


def period(args) -> dict[str, str]:
    """The dates of every stage: the world from START to --end; targets, the exact rollout and
    the cascade at its end (after the cascade's warm-up), the chunked rollout over its last year."""
    day = lambda t: t.strftime("%Y-%m-%d")  # noqa: E731
    end = pd.Timestamp(args.end)
    first = pd.Timestamp(START) + pd.Timedelta(days=WARMUP_DAYS)
    if end - first < pd.Timedelta(days=args.exact_days + 9):
        raise SystemExit(f"--end {args.end}: the period needs {args.exact_days + 10} days after {day(first)}")
    return {
        "end": day(end),
        "target_start": day(first),
        "val_start": day(end - pd.Timedelta(days=9)),
        "out_start": day(end - pd.Timedelta(days=args.exact_days - 1)),
        "year_start": day(end - pd.Timedelta(days=364)),
        "min_days": str(min(60, (end - first).days // 2)),
    }


MODEL = ["model.hidden_size=128", "model.seq_length=365", "train.batch_size=256", "train.patience=null"]


def world(args) -> list[str]:
    """Overrides of the world (synth + data): the latitude band asked for, every longitude."""
    lat, d = f"[{args.lat_range[0]},{args.lat_range[1]}]", period(args)
    return [
        f"synth.lat_range={lat}",
        "synth.lon_range=[-180,180]",
        f"synth.land_mask={args.mask}",
        f"synth.band_deg={args.band_deg}",
        f"synth.n_stations={args.stations}",
        f"synth.start={START}",
        f"synth.end={d['end']}",
        f"synth.station_start={STATION_START}",
        f"data.lat_range={lat}",
        "data.lon_range=[-180,180]",
        f"data.forcing_start={START}",
        f"data.forcing_end={d['end']}",
        f"data.target_start={d['target_start']}",
        f"data.target_end={d['end']}",
        f"data.val_start={d['val_start']}",
        f"data.val_end={d['end']}",
        f"data.min_days_per_sensor={d['min_days']}",
        f"data.min_overlap_days={d['min_days']}",
    ]


def stage_overrides(stage: str, args, root: Path) -> tuple[Path, list[str]]:
    """(workdir, overrides) of one stage; the models share the world's stores."""
    stores = [f"data.store_dir={root / 'world' / 'stores'}"]
    updates = [f"train.max_updates={args.updates}", f"train.validate_every_updates={args.updates}"]
    d = period(args)
    exact_days = [f"infer.start={d['out_start']}", f"infer.end={d['end']}"]
    if stage in ("synth", "prepare"):
        return root / "world", [f"layout.forcing_chunk_days={args.chunk_days}"] if args.chunk_days else []
    if stage.endswith("_exact"):
        return root / "exact", stores + updates + [
            "train.members=1",
            "train.layers=[L1]",
            "infer.mode=exact",
            *exact_days,
        ]
    chunk = [f"model.predict_last_n={args.chunk}"]
    if stage.endswith("_chunked"):
        year = [f"infer.start={d['year_start']}", f"infer.end={d['end']}", "infer.mode=chunked"]
        return root / "chunked", stores + updates + chunk + ["train.members=1", "train.layers=[L1]", *year]
    s, n, w, e = args.cascade_bbox
    tile = ["infer.region=bbox", f"infer.bbox=[{s},{n},{w},{e}]", "infer.mode=chunked", *exact_days]
    return root / "cascade", stores + updates + chunk + [
        "train.members=5",
        "train.batch_size=64",
        "train.layers=[L1,L2,L3]",
        *tile,
    ]


class PeakRss(threading.Thread):
    """Polls the RSS of a process and its descendants; `peak` is the largest sum seen [bytes]."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.proc, self.every, self.peak, self.done = psutil.Process(pid), every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self.done.wait(self.every)


def cpu_seconds() -> float:
    """User + system CPU time of the finished children so far (on shared cores the wall time
    also counts the time others held them, or had the stage paused)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_stage(stage: str, args, root: Path, log: Path) -> dict:
    """Runs one CLI command; returns its wall time and peak RSS."""
    workdir, extra = stage_overrides(stage, args, root)
    command = stage.split("_")[0]
    if command == "predict":  # a fresh rollout, not the resumption of a finished one
        shutil.rmtree(workdir / "predictions.zarr", ignore_errors=True)
    cmd = [sys.executable, "-m", "somojax.cli", command, "-c", CONFIG, f"workdir={workdir}"]
    cmd += world(args) + MODEL + extra
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        child = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        poll = PeakRss(child.pid)
        poll.start()
        rc = child.wait()
        poll.done.set()
        wall = time.perf_counter() - t0
    if rc:
        raise SystemExit(f"stage {stage} failed with exit code {rc}; see {log}")
    return {
        "stage": stage,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_seconds() - cpu0, 1),
        "peak_rss_gib": round(poll.peak / 2**30, 3),
        "workdir": str(workdir),
    }


def size_gib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30, 3) if path.exists() else 0.0


def prediction_summary(workdir: Path) -> dict:
    """What `predict` recorded in its store: cells, days, cell-steps, throughput."""
    meta = json.loads((workdir / "predictions.zarr" / "zarr.json").read_text())
    summary = meta.get("attributes", {}).get("somojax_summary", {})
    summary = json.loads(summary) if isinstance(summary, str) else summary
    keep = (
        "cells",
        "days",
        "layers",
        "modes",
        "members",
        "cell_steps_this_run",
        "cell_steps_per_second",
        "wall_seconds",
    )
    return {k: summary[k] for k in keep if k in summary} | {"store_gib": size_gib(workdir / "predictions.zarr")}


def machine() -> dict:
    return {
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lat-range", type=float, nargs=2, default=(-60.0, 90.0), help="south, north edges [°N]")
    p.add_argument("--band-deg", type=float, default=5.0, help="synth.band_deg: band height and tile size")
    p.add_argument("--stations", type=int, default=300)
    p.add_argument("--exact-days", type=int, default=31, help="output days of the exact rollout and the cascade")
    p.add_argument("--end", default="2002-07-10", help=f"last day of the world (from {START})")
    p.add_argument("--chunk", type=int, default=30, help="model.predict_last_n of the chunked models")
    p.add_argument("--updates", type=int, default=3, help="training updates per layer")
    p.add_argument("--cascade-bbox", type=float, nargs=4, default=(45.0, 50.0, 0.0, 25.0), help="S N W E of the tile")
    p.add_argument("--mask", default=MASK)
    p.add_argument(
        "--chunk-days", type=int, default=0, help="layout.forcing_chunk_days of the forcings (0: the config's)"
    )
    p.add_argument("--workdir", default="/tmp/somojax-globe")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--tag", default="", help="suffix of the result file (e.g. reduced)")
    args = p.parse_args()
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    log = root / "globe.log"
    out = REPO / "benchmarks" / "results" / f"globe{'-' + args.tag if args.tag else ''}-cpu-{os.cpu_count()}c.json"
    result = json.loads(out.read_text()) if out.exists() else {"benchmark": "globe", "stages": {}}
    result.update({"machine": machine(), "args": {k: v for k, v in vars(args).items()}})
    for stage in STAGES:
        if stage not in args.stages:
            continue
        row = run_stage(stage, args, root, log)
        if stage.startswith("predict"):
            row |= prediction_summary(Path(row["workdir"]))
        result["stages"][stage] = row
        print(json.dumps(row), flush=True)
        result |= summarize(root, result["stages"])
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def summarize(root: Path, stages: dict) -> dict:
    """Land cells, store sizes and the largest peak RSS of the stages so far."""
    manifest = root / "world" / "raw" / "synth_manifest.json"
    m = json.loads(manifest.read_text()) if manifest.exists() else {}
    stores = root / "world" / "stores"
    return {
        "land_cells": m.get("cells", {}).get("land"),
        "grid": [m.get("cells", {}).get("lat"), m.get("cells", {}).get("lon")],
        "days": m.get("days"),
        "peak_rss_gib": max((s["peak_rss_gib"] for s in stages.values()), default=None),
        "children_max_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
        "sizes_gib": {
            "raw_era5": size_gib(root / "world" / "raw" / "era5"),
            "raw_static": size_gib(root / "world" / "raw" / "static"),
            **{d.name: size_gib(d) for d in sorted(stores.glob("*.zarr"))},
        },
    }


if __name__ == "__main__":
    main()
