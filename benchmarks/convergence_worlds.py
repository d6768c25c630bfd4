"""Does the default training budget converge on worlds that are not the demo's?

For each synthetic world (configs/region.yaml, the config a user starts a new region from, with only the region, periods and station count
changed — what a user does with their own data), runs the real CLI: `somojax synth`, `prepare`,
then `train` + `predict` once with the config's defaults and once per extra variant (a
hand-tuned longer training given as overrides), and scores every layer's prediction and the
ERA5-like baseline against the synthetic truth on all land cells (median anomaly correlation,
share of cells where somojax is better). Writes one JSON to benchmarks/results/.

    python benchmarks/convergence_worlds.py                      # both worlds, default + long
    python benchmarks/convergence_worlds.py --worlds small --variants default

Each world takes minutes on 2 CPU cores; this is a study, not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Worlds differ from the demo (120 stations, 6 years, 6°x6°) in size: fewer stations and a shorter
# record, and more stations with a longer record. Only region, periods and stations are set.
WORLDS: dict[str, list[str]] = {
    "small": [
        "synth.lat_range=[35.0,39.0]",
        "synth.lon_range=[-90.0,-85.0]",
        "synth.n_stations=25",
        "synth.seed=11",
        "synth.start=2000-01-01",
        "synth.end=2003-12-31",
        "synth.station_start=2000-10-01",
        "data.lat_range=[35.0,39.0]",
        "data.lon_range=[-90.0,-85.0]",
        "data.forcing_start=2000-01-01",
        "data.forcing_end=2003-12-31",
        "data.target_start=2000-10-01",
        "data.target_end=2003-12-31",
        "data.val_start=2003-01-01",
        "data.val_end=2003-12-31",
        "infer.start=2002-01-01",
        "infer.end=2003-12-31",
    ],
    "large": [
        "synth.lat_range=[44.0,52.0]",
        "synth.lon_range=[0.0,8.0]",
        "synth.n_stations=150",
        "synth.seed=7",
        "synth.start=1999-01-01",
        "synth.end=2008-12-31",
        "synth.station_start=1999-10-01",
        "data.lat_range=[44.0,52.0]",
        "data.lon_range=[0.0,8.0]",
        "data.forcing_start=1999-01-01",
        "data.forcing_end=2008-12-31",
        "data.target_start=1999-10-01",
        "data.target_end=2008-12-31",
        "data.val_start=2008-01-01",
        "data.val_end=2008-12-31",
        "infer.start=2007-01-01",
        "infer.end=2008-12-31",
    ],
}

# A hand-tuned longer training: twice the default budget and patience, half the batch, a slower
# decay of the learning rate.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "long": ["train.max_updates=24000", "train.patience=20", "train.lr_patience=6", "train.min_lr=1.0e-6"],
    # the previous default of configs/region.yaml, kept to show what half the patience costs
    "short": ["train.max_updates=6000", "train.patience=5", "train.lr_patience=2", "train.min_lr=1.0e-4"],
}
CONFIG = "region"  # the config a user starts a new region from (configs/region.yaml)


def somojax(command: str, workdir: Path, overrides: list[str], log: Path) -> float:
    """Runs one `somojax` command on `CONFIG`; returns its wall time [s]."""
    cmd = [sys.executable, "-m", "somojax.cli", command, "-c", CONFIG, f"workdir={workdir}", *overrides]
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if rc:
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {rc}; see {log}")
    return time.perf_counter() - t0


def score(store_dir: Path, predictions: Path) -> list[dict]:
    """somojax and the ERA5-like baseline against the truth on every land cell, per layer."""
    import xarray as xr

    from somojax import constants as C
    from somojax.evaluate.truth import score_truth_grid

    truth = xr.open_zarr(store_dir / "truth.zarr")[C.SM_TRUE]
    era = xr.open_zarr(store_dir / "forcings.zarr")[C.SM_ERA5]
    land = xr.open_zarr(store_dir / "statics.zarr")[C.LAND_MASK]
    pred = xr.open_zarr(predictions)[C.SM]
    res = score_truth_grid(truth, {"somojax": pred, "era5": era}, land, "somojax", "era5")
    return [
        {k: v[k] for k in ("layer", "n_cells", "median_ours", "median_baseline", "share_better", "beats")}
        for v in res.verdicts
    ]


def train_summaries(workdir: Path) -> dict:
    """What each layer's training reported about its stop (summary.json next to the checkpoints)."""
    out = {}
    for f in sorted((workdir / "checkpoints").glob("*/summary.json")):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def run_world(name: str, variants: list[str], root: Path) -> dict:
    world = root / name
    world.mkdir(parents=True, exist_ok=True)
    log = world / "commands.log"
    base = WORLDS[name]
    rec: dict = {"overrides": base, "seconds": {}}
    rec["seconds"]["synth"] = somojax("synth", world, base, log)
    rec["seconds"]["prepare"] = somojax("prepare", world, base, log)
    for v in variants:
        wd = world / v
        ov = base + VARIANTS[v] + [f"data.store_dir={world / 'stores'}"]
        t_train = somojax("train", wd, ov + ["--fresh"], log)
        t_pred = somojax("predict", wd, ov + ["--fresh"], log)
        rec[v] = {
            "overrides": VARIANTS[v],
            "train_seconds": round(t_train, 1),
            "predict_seconds": round(t_pred, 1),
            "verdicts": score(world / "stores", wd / "predictions.zarr"),
            "training": train_summaries(wd),
        }
        print(name, v, json.dumps(rec[v]["verdicts"]), flush=True)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default=",".join(WORLDS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--root", default="runs/worlds", help="working directory of the worlds")
    p.add_argument("--out", default="benchmarks/results/convergence_worlds-cpu-2c.json")
    a = p.parse_args()
    root = Path(a.root).absolute()
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip(),
        "worlds": {w: run_world(w, a.variants.split(","), root) for w in a.worlds.split(",")},
    }
    out = REPO / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
