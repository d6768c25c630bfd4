"""`somojax prepare`: raw ISMN + ERA5 + static maps -> analysis-ready Zarr stores and a report.

Order: check the configured periods and `data.units` -> open and check every input before
anything is written (ERA5 lazily, with its physical bounds checked over every value; ETOPO1,
GLDAS and the land mask; the ISMN archive's metadata) -> write, into a staging folder: forcings
(chunk by chunk), statics (with tp/arid from the written forcings), targets (ISMN, rescaled to
the written ERA5 soil moisture), normalisation statistics -> move the stores into place together
-> report. A failure at any point leaves the store directory as it was (`_Staging`).
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from somojax import constants as C
from somojax import stores
from somojax.config import Config
from somojax.errors import ConfigError, InputDataError, SomojaxError, writing
from somojax.normalization import compute_stats
from somojax.prepare import checks
from somojax.prepare.bounds import STATIC as STATIC_BOUNDS
from somojax.prepare.bounds import check_screen
from somojax.prepare.bounds import clean as bounds_clean
from somojax.prepare.era5 import FORCING_VARS, SM_VARS, clean_era5, expand_paths, read_era5, require, screen_era5
from somojax.prepare.forcings import INPUT_SOURCES, build_forcings, long_term_statics, region_bbox
from somojax.prepare.ismn import IsmnScan, scan_ismn
from somojax.prepare.report import Ledger, summary_lines, write_report
from somojax.prepare.scheduler import dask_scheduler
from somojax.prepare.statics import build_statics, read_etopo, read_gldas, read_land_mask, screen_static
from somojax.prepare.targets import TargetRules, build_targets, drop_cells
from somojax.prepare.units import stated_units
from somojax.utils.logging import get_logger

log = get_logger("prepare")

# file names the synthetic Earth writes under <workdir>/raw (its contract with `prepare`)
SYNTH_LAYOUT = {
    "ismn": "ismn",
    "era5": "era5/era5_*.nc",
    "etopo": "static/etopo1_1arcmin.nc",
    "gldas_soil": "static/GLDASp4_soilfraction_025d.nc4",
    "gldas_porosity": "static/GLDASp4_porosity_025d.nc4",
    "gldas_vegetation": "static/GLDASp4_domveg_025d.nc4",
    "land_mask": "static/GLDASp4_landmask_025d.nc4",
}


@dataclass
class Inputs:
    """The raw files one preparation reads."""

    ismn: str
    era5: list[str]
    era5_sm: list[str] = field(default_factory=list)
    etopo: str = ""
    gldas_soil: str = ""
    gldas_porosity: str = ""
    gldas_vegetation: str = ""
    land_mask: str = ""


def resolve_inputs(cfg: Config) -> Inputs:
    """Where the raw inputs are: the `data` section, or the synthetic Earth's files."""
    d = cfg.data
    if d.source == "synthetic":
        raw = cfg.raw_dir
        if not raw.exists():
            raise InputDataError(
                f"no synthetic Earth under {raw}; run `somojax synth` first (or set data.source=files)"
            )
        p = {k: str(raw / v) for k, v in SYNTH_LAYOUT.items()}
        return Inputs(
            p["ismn"],
            [p["era5"]],
            [],
            p["etopo"],
            p["gldas_soil"],
            p["gldas_porosity"],
            p["gldas_vegetation"],
            p["land_mask"],
        )
    missing = [k for k in ("ismn", "etopo", "gldas_soil", "gldas_porosity", "gldas_vegetation") if not getattr(d, k)]
    if not d.era5:
        missing.insert(1, "era5")
    if missing:
        raise InputDataError(
            f"data.source=files but {', '.join('data.' + m for m in missing)} {'is' if len(missing) == 1 else 'are'} not set; "
            "give the paths in the config or as overrides (see docs/real-data.md)"
        )
    return Inputs(
        d.ismn, list(d.era5), list(d.era5_sm), d.etopo, d.gldas_soil, d.gldas_porosity, d.gldas_vegetation, d.land_mask
    )


def _encoding(ds: xr.Dataset, chunks: dict[str, int]) -> dict:
    from zarr.codecs import ZstdCodec

    enc = {}
    for v in ds.data_vars:
        c = tuple(min(chunks.get(d, ds.sizes[d]), ds.sizes[d]) or 1 for d in ds[v].dims)
        e = {"chunks": c}
        if ds[v].dtype.kind == "f" or ds[v].dtype.kind == "i":
            e["compressors"] = (ZstdCodec(level=1),)
        enc[v] = e
    return enc


def _rechunk(ds: xr.Dataset, chunks: dict[str, int]) -> xr.Dataset:
    """Dask chunks equal to the Zarr chunks (string variables stay in memory: Zarr writes them
    as variable-length UTF-8, which needs their values)."""
    out = ds.chunk({d: min(chunks.get(d, ds.sizes[d]), ds.sizes[d]) or 1 for d in ds.dims})
    for v in ds.variables:
        if ds[v].dtype.kind in "OUS":
            out[v] = ds[v].astype(object).compute() if v in ds.data_vars else out[v]
    return out


def _land_mask(inputs: Inputs, cfg: Config) -> tuple[xr.DataArray, str]:
    """The land mask, and where it came from (data.land_mask, else a GLDAS mask variable, else
    the cells where GLDAS soil fractions are defined)."""
    d = cfg.data
    if inputs.land_mask:
        return read_land_mask(inputs.land_mask, d.lat_range, d.lon_range), inputs.land_mask
    for path in (inputs.gldas_soil, inputs.gldas_porosity, inputs.gldas_vegetation):
        try:
            return read_land_mask(path, d.lat_range, d.lon_range), path
        except InputDataError:
            continue
    clay = bounds_clean(
        read_gldas(inputs.gldas_soil, ["clay"], d.lat_range, d.lon_range)["clay"], STATIC_BOUNDS["clay"]
    )
    land = (
        clay.notnull()
        .astype(np.float32)
        .assign_attrs(
            long_name="land mask (1 land, 0 water)", units="1", derived_from="cells with GLDAS soil fractions"
        )
    )
    return land, f"cells with GLDAS soil fractions in {inputs.gldas_soil}"


def prepare(cfg: Config, scheduler: str | None = None) -> dict:
    """Builds forcings.zarr, statics.zarr, targets.zarr, normalization.json and the report.

    `scheduler`: where the dask graphs run (`somojax/prepare/scheduler.py`: local[:N], an
    address, a scheduler file, slurm:N); default dask's threads in this process.

    Every input is opened and checked first (names, units, physical bounds, a damaged archive);
    only then are the stores written, into a staging folder inside the store directory, and
    moved into place together at the end (`_Staging`): a run that fails or is interrupted leaves
    the previous stores as they were.

    Returns:
      The preparation report (also written as `prepare_report.json` and `.md`; when preparation
      fails on bad input, the report so far is written with the error before it is raised).
    """
    report: dict = {}
    try:
        with dask_scheduler(scheduler):
            return _prepare(cfg, report)
    except SomojaxError as e:
        if report:
            report["error"] = str(e)
            _write_error_report(report, cfg.store_dir / C.PREPARE_REPORT)
        raise


def _write_error_report(report: dict, path) -> None:
    """Writes the report of a failed run, if the store directory takes it (the error itself
    may be that it does not)."""
    try:
        write_report(report, path)
    except OSError as e:
        log.warning("could not write the preparation report %s: %s", path, e)


class _Staging:
    """The stores of one run, written under `<store_dir>/.prepare-<id>/` and moved into the store
    directory together by `publish`; on any failure the staging folder is removed and the store
    directory keeps what it had.

    Leftover staging folders of an interrupted run (kill -9) are removed when the next run
    starts: one `prepare` per store directory at a time.
    """

    NAMES = (C.FORCINGS_STORE, C.STATICS_STORE, C.STATS_FILE, C.TARGETS_STORE)  # moved in this order

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / f".prepare-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "_Staging":
        with writing("the store directory", self.out_dir):
            for old in self.out_dir.glob(".prepare-*") if self.out_dir.is_dir() else ():
                shutil.rmtree(old, ignore_errors=True)
            self.dir.mkdir(parents=True)
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, kind: str) -> Path:
        return stores.store_path(self.dir, kind)

    def publish(self) -> None:
        """Replaces the stores in the store directory by the staged ones: the old ones go first
        (targets first), the new ones come in with targets last, so a crash in between leaves a
        directory without targets (which every later stage refuses) rather than a mixture."""
        with writing("the stores", self.out_dir):
            for name in reversed(self.NAMES):
                old = self.out_dir / name
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.exists():
                    old.unlink()
            for name in self.NAMES:
                os.replace(self.dir / name, self.out_dir / name)


def _prepare(cfg: Config, report: dict) -> dict:
    t0 = time.perf_counter()
    d = cfg.data
    checks.check_periods(d.forcing_start, d.forcing_end, d.target_start, d.target_end)
    checks.check_spinup(d.forcing_start, d.target_start, cfg.train.layers, cfg.model.seq_length)
    stated = stated_units(d.units)
    inputs = resolve_inputs(cfg)
    _start_report(cfg, inputs, report)

    # ---- 1. open and check every input; nothing is written yet ------------------------
    era5, files = _open_era5(inputs, d, stated, report)
    forc = build_forcings(
        era5, d.forcing_start, d.forcing_end, d.lat_range, d.lon_range, d.dynamic_inputs, d.era5_accumulation
    )
    etopo, gldas, land, land_src = _open_statics(inputs, cfg, report)
    log.info("reading ISMN archive %s", inputs.ismn)
    scan = scan_ismn(inputs.ismn)
    report["ismn"] = {
        "archive": inputs.ismn,
        "files": len(scan.files),
        "skipped_files": scan.skipped,
        "other_variables": scan.other_variables,
    }

    # ---- 2. write the stores (staged), then move them into place together --------------
    with _Staging(cfg.store_dir) as stage:
        forc = _write_forcings(forc, stage, d, cfg.layout, files, report)
        stat = _write_statics(forc, etopo, gldas, land, land_src, stage, d, report)
        _forcing_gaps(forc, stat, d, report)
        targ = _write_targets(scan, forc, stat, stage, d, report)
        stats = compute_stats(forc, stat, targ, targ[C.CELL].values, (d.target_start, d.target_end))
        with writing("the normalisation statistics", stage.dir / C.STATS_FILE):
            stats.save(stage.dir / C.STATS_FILE)
        report["normalization"] = {
            "file": str(cfg.store_dir / C.STATS_FILE),
            "cells": len(stats.cells),
            "period": list(stats.period),
            "mean": dict(stats.mean),
            "std": dict(stats.std),
            "target_mean": dict(stats.target_mean),
            "target_std": dict(stats.target_std),
        }
        report["targets"]["stations_kept"] = _stations(targ)
        stage.publish()

    report["run"]["seconds"] = round(time.perf_counter() - t0, 2)
    report["run"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    with writing("the preparation report", cfg.store_dir / C.PREPARE_REPORT):
        _, mp = write_report(report, cfg.store_dir / C.PREPARE_REPORT)
    for line in summary_lines(report):
        log.info("%s", line)
    log.info("prepared in %.1f s; report %s", report["run"]["seconds"], mp)
    return report


def _start_report(cfg: Config, inputs: Inputs, report: dict) -> None:
    """The report's run, inputs, settings and checks; the spin-up of the prediction period is a
    warning here (inference checks it again)."""
    d = cfg.data
    report.update(
        {
            "run": {"name": cfg.name, "source": d.source, "store_dir": str(cfg.store_dir)},
            "inputs": asdict(inputs),
            "settings": {
                k: getattr(d, k)
                for k in (
                    "forcing_start",
                    "forcing_end",
                    "target_start",
                    "target_end",
                    "lat_range",
                    "lon_range",
                    "quality_flags",
                    "min_values_per_day",
                    "min_days_per_sensor",
                    "min_overlap_days",
                    "era5_accumulation",
                    "units",
                    "era5_check_steps",
                    "dynamic_inputs",
                    "static_inputs",
                )
            },
            "checks": {},
            "plausibility": {"era5": [], "statics": []},
        }
    )
    try:
        checks.check_spinup(
            d.forcing_start, cfg.infer.start, cfg.train.layers, cfg.model.seq_length, "prediction period (infer.start)"
        )
        report["checks"]["spinup_prediction_period"] = "ok"
    except ConfigError as e:
        report["checks"]["spinup_prediction_period"] = str(e)
        log.warning("%s", e)
    report["checks"]["spinup_target_period"] = "ok"


def _open_era5(inputs: Inputs, d, stated: dict[str, str], report: dict) -> tuple[dict[str, xr.DataArray], list[str]]:
    """ERA5 opened lazily, the needed variables present, every file and variable inside its
    physical bounds (else `InputDataError` before anything is written); the bounds applied."""
    log.info("reading ERA5 (%s)", ", ".join(inputs.era5 + inputs.era5_sm)[:200])
    files = expand_paths(inputs.era5, "data.era5") + (
        expand_paths(inputs.era5_sm, "data.era5_sm") if inputs.era5_sm else []
    )
    era5 = read_era5(
        files,
        FORCING_VARS + SM_VARS,
        bbox=region_bbox(d.lat_range, d.lon_range),
        period=(d.forcing_start, d.forcing_end),
        stated_units=stated,
    )
    need = sorted(
        {v for x in d.dynamic_inputs for v in INPUT_SOURCES[x]} | set(SM_VARS), key=(FORCING_VARS + SM_VARS).index
    )
    require(era5, need, files)
    era5 = {v: era5[v] for v in need}
    log.info(
        "checking ERA5 against the physical bounds (%s)",
        "every value" if not d.era5_check_steps else f"{d.era5_check_steps} time steps per file",
    )
    screens = screen_era5(era5, d.era5_accumulation, d.era5_check_steps)
    report["plausibility"]["era5"] = [s.report() for s in screens]
    for s in screens:
        check_screen(s, "era5")
    return clean_era5(era5, d.era5_accumulation), files


def _open_statics(inputs: Inputs, cfg: Config, report: dict) -> tuple[dict, dict, xr.DataArray, str]:
    """ETOPO1 (cell statistics computed), GLDAS maps and the land mask, each inside its physical
    bounds on land (else `InputDataError` before anything is written); the bounds applied."""
    d = cfg.data
    log.info("statics: ETOPO1, GLDAS, land mask")
    etopo, escreen = read_etopo(inputs.etopo, d.lat_range, d.lon_range)
    check_screen(escreen, "static")
    gldas = {}
    gldas.update(read_gldas(inputs.gldas_soil, ["clay", "sand", "silt"], d.lat_range, d.lon_range, "data.gldas_soil"))
    gldas.update(
        read_gldas(inputs.gldas_porosity, ["poro_top", "poro_mid"], d.lat_range, d.lon_range, "data.gldas_porosity")
    )
    gldas.update(read_gldas(inputs.gldas_vegetation, ["domveg"], d.lat_range, d.lon_range, "data.gldas_vegetation"))
    land, land_src = _land_mask(inputs, cfg)
    screens = [escreen]
    n_land = int((land > 0.5).sum())
    for name in list(gldas):
        gldas[name], s = screen_static(gldas[name], name, land)
        check_screen(s, "static", where=f"on the {n_land:,} land cells")
        screens.append(s)
    report["plausibility"]["statics"] = [s.report() for s in screens]
    return etopo, gldas, land, land_src


def _write_forcings(forc: xr.Dataset, stage: _Staging, d, layout, files: list[str], report: dict) -> xr.Dataset:
    c = layout
    fchunks = {C.TIME: c.forcing_chunk_days, C.LAT: c.forcing_chunk_cells, C.LON: c.forcing_chunk_cells, C.LAYER: 1}
    final = stores.store_path(stage.out_dir, "forcings")
    log.info("writing %s: %s days x %s x %s cells", final, forc.sizes[C.TIME], forc.sizes[C.LAT], forc.sizes[C.LON])
    tf = time.perf_counter()
    try:
        with writing("the forcings store", final):
            stores.write_store(_rechunk(forc, fchunks), stage.path("forcings"), "forcings", _encoding(forc, fchunks))
    except RuntimeError as e:  # netCDF4's error for a damaged chunk the sampled check did not read
        raise InputDataError(
            f"reading ERA5 failed while the forcings were written ({str(e)[:200]}): a file is damaged; "
            "data.era5_check_steps=0 reads every value first and names it"
        ) from None
    forc = stores.open_store(stage.path("forcings"), "forcings", list(d.dynamic_inputs) + [C.SM_ERA5])
    report["forcings"] = {
        "store": str(final),
        "days": int(forc.sizes[C.TIME]),
        "cells": [int(forc.sizes[C.LAT]), int(forc.sizes[C.LON])],
        "variables": list(forc.data_vars),
        "era5_files": files,
        "chunks": {v: list(forc[v].encoding.get("chunks", ())) for v in forc.data_vars},
        "seconds": round(time.perf_counter() - tf, 2),
    }
    return forc


def _write_statics(forc, etopo, gldas, land, land_src, stage: _Staging, d, report: dict) -> xr.Dataset:
    log.info("statics: tp/arid over %s..%s", d.target_start, d.target_end)
    climate, clim_info = long_term_statics(forc, d.target_start, d.target_end, d.arid_min_precip)
    stat, stat_info = build_statics(etopo, gldas, climate.compute(), land, d.static_inputs)
    final = stores.store_path(stage.out_dir, "statics")
    with writing("the statics store", final):
        stores.write_store(_rechunk(stat, {}), stage.path("statics"), "statics", _encoding(stat, {}))
    report["statics"] = {"store": str(final), "land_mask": land_src, **stat_info, "long_term": clim_info}
    return stores.open_store(stage.path("statics"), "statics")


def _forcing_gaps(forc: xr.Dataset, stat: xr.Dataset, d, report: dict) -> None:
    """NaN cell-days of the forcings over land, per variable (nothing is filled)."""
    land_da = xr.DataArray(stat[C.LAND_MASK].values > 0.5, dims=(C.LAT, C.LON))
    names = list(d.dynamic_inputs) + [C.SM_ERA5]
    counts = dask.compute(*[(forc[v].isnull() & land_da).sum() for v in names])
    report["forcings"]["land_cell_days_missing"] = {v: int(n) for v, n in zip(names, counts)}


def _write_targets(scan: IsmnScan, forc: xr.Dataset, stat: xr.Dataset, stage: _Staging, d, report: dict) -> xr.Dataset:
    rules = TargetRules.from_config(d)

    def era5_sm(cells: np.ndarray) -> xr.DataArray:
        from somojax.grid import select_cells as _cell_points

        pts = _cell_points(forc[[C.SM_ERA5]], cells)[C.SM_ERA5].sel({C.TIME: slice(d.target_start, d.target_end)})
        return pts.assign_coords({C.CELL: cells}).compute()

    ledger = Ledger()
    report["targets"] = {"steps": ledger.steps, "dropped": ledger.dropped}
    # large archives are read by several processes (each sensor's files, flags and daily means)
    workers = min(os.cpu_count() or 1, 8) if len(scan.files) >= PARALLEL_FILES else 1
    targ, ledger, tinfo = build_targets(scan, era5_sm, rules, ledger, workers)
    bad = _incomplete_cells(targ[C.CELL].values, forc, stat, d.dynamic_inputs, d.static_inputs)
    targ = drop_cells(targ, bad, ledger)
    report["targets"] = {"steps": ledger.steps, "dropped": ledger.dropped, **tinfo}
    if targ.sizes[C.CELL] == 0:
        raise InputDataError(
            f"no target cell left after preparation of {report['ismn']['archive']}: see the steps in {stage.out_dir / C.PREPARE_REPORT}"
            + _first_steps_summary(ledger)
        )
    final = stores.store_path(stage.out_dir, "targets")
    tchunks = {C.LAYER: 1, C.CELL: 256, C.TIME: targ.sizes[C.TIME]}
    with writing("the targets store", final):
        stores.write_store(_rechunk(targ, tchunks), stage.path("targets"), "targets", _encoding(targ, tchunks))
    targ = stores.open_store(stage.path("targets"), "targets")
    cells_info = {}
    for layer in C.LAYERS:
        ns = targ["n_series"].sel({C.LAYER: layer}).values
        cells_info[layer] = {
            "cells": int((ns > 0).sum()),
            "series": int(ns.sum()),
            "values": int(np.isfinite(targ[C.SM].sel({C.LAYER: layer}).values).sum()),
        }
    report["targets"] = {
        "store": str(final),
        "steps": ledger.steps,
        "cells": cells_info,
        "dropped": ledger.dropped,
        **{k: tinfo[k] for k in ("file_problems", "implausible_values", "rescaling")},
    }
    return targ


def _stations(targ: xr.Dataset) -> int:
    """Stations with at least one series in the targets (provenance entries are network/station/...)."""
    series = [p for cell in targ["provenance"].values.ravel() for p in str(cell).split("; ") if p]
    return len({tuple(p.split("/")[:2]) for p in series})


PARALLEL_FILES = 500  # ISMN archives with at least this many soil-moisture files are read in parallel


def _incomplete_cells(
    cells: np.ndarray, forc: xr.Dataset, stat: xr.Dataset, dynamic: tuple[str, ...], static: tuple[str, ...]
) -> dict[int, tuple[str, str]]:
    """Target cells whose statics or forcings have missing values, with the reason."""
    from somojax.grid import select_cells as _cell_points

    if len(cells) == 0:
        return {}
    bad: dict[int, str] = {}
    s = _cell_points(stat[list(static)], cells).compute()
    f = _cell_points(forc[list(dynamic)], cells).compute()
    for i, c in enumerate(cells):
        miss_s = [v for v in static if not np.isfinite(float(s[v].values[i]))]
        miss_f = {v: int(np.isnan(f[v].values[:, i]).sum()) for v in dynamic}
        miss_f = {k: n for k, n in miss_f.items() if n}
        parts = []
        if miss_s:
            parts.append(f"statics missing: {', '.join(miss_s)}")
        if miss_f:
            parts.append("forcings missing on " + ", ".join(f"{k}: {n} days" for k, n in miss_f.items()))
        if parts:
            cat = " and ".join(x for x, on in (("statics missing", miss_s), ("forcings missing", miss_f)) if on)
            bad[int(c)] = (cat, "; ".join(parts))
    return bad


def _first_steps_summary(ledger: Ledger) -> str:
    s = "; ".join(f"{st['step']}: {st['values_kept']:,} {st['unit']} kept" for st in ledger.steps)
    return f" ({s})"
