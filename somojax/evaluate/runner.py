"""`somojax evaluate`: cross-validation, scores of all datasets, figures, report (docs/design.md#cross-validation).

Outputs in `cfg.evaluation_dir`:

| file | what |
|---|---|
| `folds.csv`, `folds.json` | the fold of every target cell |
| `folds/<k>/` | fold k's checkpoints, test predictions and `done.json` (training cells per layer) |
| `folds/stacked/` | the stacked train states of the folds trained together |
| `cv_predictions.zarr` | the cross-validated (SoMo.ml*-style) series `sm` (layer, cell, time) |
| `metrics_cells.csv`, `metrics_cells.nc` | per-cell metrics of every dataset and layer |
| `summary.csv`, `summary_by_group.csv` | median and 0.2/0.8 quantiles per dataset and layer (and group) |
| `verdicts.json` | per layer, whether somojax beats ERA5 in anomaly correlation (higher median and better in most cells) |
| `truth_metrics.nc`, `truth_summary.csv` | synthetic Earth only: skill against the truth |
| `figures/*.png`, `report.html` | the paper's figures and the self-contained report |
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid, stores
from somojax.config import Config
from somojax.errors import StoreError, writing
from somojax.evaluate import figures as F
from somojax.evaluate import metrics as M
from somojax.evaluate import references as R
from somojax.evaluate import scoring as S
from somojax.evaluate import truth as T
from somojax.evaluate.report import ReportInputs, write_report
from somojax.infer import store as pstore
from somojax.utils.logging import get_logger

log = get_logger("evaluate")

OURS = "somojax*"  # the cross-validated series, named after the paper's SoMo.ml*
BASELINE = "ERA5"
PRODUCT = "somojax"  # the prediction store (trained on all cells)


@dataclass
class EvaluationResult:
    """What `evaluate` produced (paths and the main tables)."""

    report: Path
    scores: xr.Dataset  # [dataset, layer, cell]
    table: pd.DataFrame  # one row per (dataset, layer, cell)
    summary: pd.DataFrame
    verdicts: list[dict]
    figures: dict[str, Path] = field(default_factory=dict)
    truth: T.TruthResult | None = None


def evaluate(cfg: Config) -> EvaluationResult:
    """k-fold cross-validation of the cascade, then scores, figures and the report.

    Reads the stores of `cfg.store_dir`, trains `cfg.evaluate.folds` fold cascades into
    `<evaluation_dir>/folds/` (together, one stacked ensemble per layer; resumable), and writes everything listed in this module's docstring.
    """
    from somojax.evaluate.crossval import cross_validate

    targets = stores.open_store(cfg.store_dir, "targets")
    cv = cross_validate(cfg, targets)
    return evaluate_series(cfg, cv, targets=targets)


def _open_optional(path: Path, kind: str) -> xr.Dataset | None:
    if not Path(path).exists():
        return None
    return stores.open_store(path, kind)


def _open_predictions(path: Path) -> xr.Dataset | None:
    """The prediction store when it exists (it is optional); an unfinished one is an error."""
    ds = _open_optional(path, "predictions")
    if ds is None:
        log.info("no prediction store at %s: the report shows the cross-validated series only", path)
        return None
    pstore.check_complete(ds, path)
    return ds


def _period(cfg: Config, targets: xr.Dataset, cv: xr.DataArray | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    t = pd.DatetimeIndex(targets[C.TIME].values)
    lo = max(t[0], pd.Timestamp(cfg.data.target_start))
    hi = min(t[-1], pd.Timestamp(cfg.data.target_end))
    if cv is not None and cv.sizes[C.TIME]:
        tc = pd.DatetimeIndex(cv[C.TIME].values)
        lo, hi = max(lo, tc[0]), min(hi, tc[-1])
    if hi < lo:
        raise StoreError(f"the targets ({t[0].date()}..{t[-1].date()}) and the evaluated series do not share any day")
    return lo, hi


def _lat_bin(lat: np.ndarray, width: float) -> np.ndarray:
    return np.floor(np.asarray(lat, np.float64) / width) * width + width / 2


def _nanmedian_groups(values: np.ndarray, keys: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Median of finite `values` [layer, n] per key in `bins` (NaN where none)."""
    out = np.full((values.shape[0], bins.size), np.nan)
    for j, b in enumerate(bins):  # loop over latitude bands, not days
        sel = values[:, keys == b]
        for i in range(values.shape[0]):
            v = sel[i][np.isfinite(sel[i])]
            if v.size:
                out[i, j] = np.median(v)
    return out


def _profile_da(values: np.ndarray, layers, bins) -> xr.DataArray:
    return xr.DataArray(values, dims=(C.LAYER, C.LAT), coords={C.LAYER: list(layers), C.LAT: bins})


def gridded_median(da: xr.DataArray, land: xr.DataArray, period: tuple, chunk: int = 120) -> xr.DataArray:
    """Long-term median over `period` of a [layer, time, latitude, longitude] product on the land
    cells of `land`'s grid (nearest cell within half a grid step), computed lazily with dask."""
    da = da.sel({C.TIME: slice(*period)})
    tol = grid.HALF_CELL + grid.SLACK  # the grid module's "inside" (grid.nearest_index)
    lat, lon = land[C.LAT], land[C.LON]
    da = da.sel(
        {
            C.LAT: slice(float(lat.min()) - tol, float(lat.max()) + tol),
            C.LON: slice(float(lon.min()) - tol, float(lon.max()) + tol),
        }
    )
    da = da.reindex({C.LAT: lat, C.LON: lon}, method="nearest", tolerance=tol)
    da = da.where(land > 0)
    if da.chunks is not None:
        da = da.chunk({C.TIME: -1, C.LAT: chunk, C.LON: chunk})
    return _median_time(da)


def _median_time(da: xr.DataArray) -> xr.DataArray:
    """Median over time, NaN (without a warning) where a cell has no value (sea, unobserved layer)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return da.median(C.TIME, skipna=True).load()


def lat_profiles(
    gridded: dict[str, xr.DataArray], cells: dict[str, xr.DataArray], width: float
) -> dict[str, xr.DataArray]:
    """Latitudinal median profiles: gridded medians [layer, lat, lon] and per-cell medians
    [layer, cell] (with latitude coords) binned into `width`-degree latitude bands."""
    lats = [g[C.LAT].values for g in gridded.values()] + [c[C.LAT].values for c in cells.values()]
    allb = np.unique(np.concatenate([_lat_bin(l, width) for l in lats])) if lats else np.array([])
    out = {}
    for name, g in gridded.items():
        v = g.values.reshape(g.sizes[C.LAYER], g.sizes[C.LAT], -1)
        keys = _lat_bin(g[C.LAT].values, width)
        rows = np.repeat(keys, v.shape[2])
        out[name] = _profile_da(_nanmedian_groups(v.reshape(v.shape[0], -1), rows, allb), g[C.LAYER].values, allb)
    for name, c in cells.items():
        out[name] = _profile_da(
            _nanmedian_groups(np.asarray(c.values, np.float64), _lat_bin(c[C.LAT].values, width), allb),
            c[C.LAYER].values,
            allb,
        )
    return out


def evaluate_series(
    cfg: Config,
    cv: xr.DataArray | None,
    targets: xr.Dataset | None = None,
    forcings: xr.Dataset | None = None,
    statics: xr.Dataset | None = None,
    predictions: xr.Dataset | None | str = "auto",
    truth: xr.Dataset | None | str = "auto",
) -> EvaluationResult:
    """Scores the cross-validated series `cv` [layer, cell, time] and the references; figures; report.

    Stores not given are opened from `cfg.store_dir` (targets, forcings, statics, truth) and
    `cfg.predictions_path` (predictions); "auto" means: use it when it exists.
    """
    ev = cfg.evaluate
    out = cfg.evaluation_dir
    figdir = out / "figures"
    with writing("the evaluation outputs", out):
        out.mkdir(parents=True, exist_ok=True)
    targets = targets if targets is not None else stores.open_store(cfg.store_dir, "targets")
    forcings = forcings if forcings is not None else stores.open_store(cfg.store_dir, "forcings")
    statics = statics if statics is not None else stores.open_store(cfg.store_dir, "statics")
    if isinstance(predictions, str):
        predictions = _open_predictions(cfg.predictions_path)
    if isinstance(truth, str):
        truth = _open_optional(stores.store_path(cfg.store_dir, "truth"), "truth")
    M.check_window(ev.anomaly_window_days, ev.anomaly_min_count)

    lo, hi = _period(cfg, targets, cv)
    period = (str(lo.date()), str(hi.date()))
    days = pd.date_range(lo, hi, freq="D")
    cells = targets[C.CELL].values
    lat, lon = targets[C.LAT].values.astype(np.float64), targets[C.LON].values.astype(np.float64)
    obs = targets[C.SM].sel({C.TIME: slice(lo, hi)}).load()

    # --- datasets on the target cells and days ----------------------------------------------
    series: dict[str, xr.DataArray] = {}
    described: list[tuple[str, str, str]] = []
    if cv is not None:
        cvp = cv.sel({C.TIME: slice(lo, hi)}).reindex({C.CELL: cells, C.TIME: days}).load()
        series[OURS] = cvp
        described.append(
            (
                OURS,
                ",".join(str(x) for x in cvp[C.LAYER].values),
                f"{cfg.evaluate.folds}-fold cross-validation over target cells",
            )
        )
        for layer in (str(x) for x in cvp[C.LAYER].values):  # score every dataset on the days somojax* is defined
            obs.loc[{C.LAYER: layer}] = obs.sel({C.LAYER: layer}).where(cvp.sel({C.LAYER: layer}).notnull())
    refs = [R.era5_reference(forcings, BASELINE)] + [R.open_reference(s, period[0], period[1]) for s in ev.references]
    for ref in refs:
        if ref.name in series:
            raise StoreError(
                f"two datasets are named {ref.name!r}; name the reference explicitly (name=path in evaluate.references)"
            )
        series[ref.name] = R.sample_cells(ref.data, lat, lon, days, cells).load()
        described.append((ref.name, ",".join(ref.layers), ref.source))

    # --- scores, table, summaries ---------------------------------------------------------
    scores = S.score_datasets(obs, series, ev.anomaly_window_days, ev.anomaly_min_count, ev.common_days)
    climate = S.cell_climate(cells, lat, lon, statics, forcings, period)
    obs_days = obs.notnull().sum(C.TIME)
    table = S.cell_table(scores, climate, obs_days)
    sums = S.summaries(table, ev.quantiles)
    verdicts = S.verdicts(table, OURS, BASELINE) if cv is not None else []

    table.to_csv(out / "metrics_cells.csv", index=False)
    nc = scores.assign_coords(
        {k: (C.CELL, climate.loc[cells, k].to_numpy()) for k in ("continent", "aridity", "temperature")}
    )
    nc = nc.assign_coords(n_obs_days=obs_days)
    for k in ("continent", "aridity", "temperature"):
        nc[k] = nc[k].astype(str)
    nc.attrs.update(
        {"period": f"{period[0]}..{period[1]}", "datasets": ", ".join(series), "somojax_product": "per-cell metrics"}
    )
    nc.to_netcdf(out / "metrics_cells.nc")
    sums["all"].to_csv(out / "summary.csv", index=False)
    groups = {k: v for k, v in sums.items() if k != "all"}
    if groups:
        pd.concat(groups.values(), ignore_index=True).to_csv(out / "summary_by_group.csv", index=False)
    (out / "verdicts.json").write_text(json.dumps(verdicts, indent=1))

    # --- figures --------------------------------------------------------------------------
    land = statics[C.LAND_MASK].load() if C.LAND_MASK in statics else None
    figs: dict[str, tuple[Path, str]] = {}
    n_days_all = targets[C.SM].notnull().sum(C.TIME).load().assign_coords({C.LAT: (C.CELL, lat), C.LON: (C.CELL, lon)})
    figs["fig2"] = (
        F.fig_target_cells(n_days_all, figdir / "fig2_target_cells.png", land),
        "Fig. 2: target cells per layer, coloured by data length.",
    )
    q = tuple(ev.quantiles)
    primary = OURS if cv is not None else None
    for key, metric, cap in (
        ("fig4", "nrmse", "Fig. 4: NRMSE against the in-situ targets"),
        ("fig5", "anomaly_r", "Fig. 5: anomaly correlation against the in-situ targets"),
        ("figS_r", "r", "Correlation against the in-situ targets (cf. Fig. S4)"),
        ("figS_bias", "rel_bias", "Relative bias against the in-situ targets (cf. Fig. S3)"),
    ):
        p = F.fig_metric_boxplots(table, metric, figdir / f"{key}_{metric}.png", q, primary)
        figs[key] = (
            p,
            f"{cap}; left: {OURS} per cell over aridity and temperature; right: datasets ranked by median "
            f"(box: quartiles, whiskers: {q[0]:g}–{q[1]:g} quantiles, no fliers).",
        )
    prof_period = period
    if predictions is not None:
        tp = pd.DatetimeIndex(predictions[C.TIME].values)
        prof_period = (str(tp[0].date()), str(tp[-1].date()))
    if land is not None:
        gridded = {}
        if predictions is not None:
            gridded[PRODUCT] = gridded_median(predictions[C.SM], land, prof_period)
        for ref in refs:
            gridded[ref.name] = gridded_median(ref.data, land, prof_period)
        if truth is not None:
            gridded["truth"] = gridded_median(truth[C.SM_TRUE], land, prof_period)
        cellmed = {}
        if cv is not None:
            cellmed[OURS] = _median_time(series[OURS]).assign_coords({C.LAT: (C.CELL, lat)})
        cellmed["in situ (targets)"] = _median_time(targets[C.SM].sel({C.TIME: slice(lo, hi)})).assign_coords(
            {C.LAT: (C.CELL, lat)}
        )
        extent = float(land[C.LAT].max() - land[C.LAT].min())
        width = 0.25 if extent <= 10 else 1.0
        profiles = lat_profiles(gridded, cellmed, width)
        if PRODUCT in gridded:
            m6, what = gridded[PRODUCT], f"{PRODUCT} prediction store"
        elif cv is not None:
            m6, what = (
                cellmed[OURS].assign_coords({C.LON: (C.CELL, lon)}),
                f"{OURS} (cross-validated, target cells only)",
            )
        else:
            m6, what = gridded[BASELINE], BASELINE
        figs["fig6a"] = (
            F.fig_median_map(
                m6,
                figdir / "fig6a_median_map.png",
                f"Long-term median soil moisture: {what}, {prof_period[0]}..{prof_period[1]}",
                land,
            ),
            f"Fig. 6a: long-term median of {what}.",
        )
        figs["fig6b"] = (
            F.fig_lat_profiles(
                profiles,
                figdir / "fig6b_lat_profiles.png",
                f"Latitudinal median profiles ({width:g}° bands, land cells)",
            ),
            f"Fig. 6b: latitudinal median profiles of all datasets over {prof_period[0]}..{prof_period[1]} ({width:g}° latitude bands).",
        )

    # --- synthetic Earth: the truth -------------------------------------------------------
    truth_res, truth_figs = None, {}
    if truth is not None:
        truth_res = _score_truth(
            cfg, truth, forcings, statics, predictions, series.get(OURS), lat, lon, cells, (lo, hi)
        )
        if truth_res.grid_scores is not None:
            truth_res.grid_scores.to_netcdf(out / "truth_metrics.nc")
            p = F.fig_truth_maps(truth_res.grid_scores, "anomaly_r", figdir / "truth_anomaly_r_maps.png")
            truth_figs["truth_anom"] = (p, "Anomaly correlation against the synthetic truth on every land cell.")
            p = F.fig_truth_maps(truth_res.grid_scores, "r", figdir / "truth_r_maps.png")
            truth_figs["truth_r"] = (p, "Correlation against the synthetic truth on every land cell.")
        truth_res.table.to_csv(out / "truth_metrics_cells.csv", index=False)
        truth_res.summary.to_csv(out / "truth_summary.csv", index=False)

    # --- report ---------------------------------------------------------------------------
    n_cells = {l: int((obs_days.sel({C.LAYER: l}) > 0).sum()) for l in (str(x) for x in obs[C.LAYER].values)}
    protocol = [
        f"{ev.folds}-fold cross-validation over target cells (fold_seed {ev.fold_seed}); folds are assigned per cell across layers, "
        "and each fold trains the whole cascade L1→L2→L3 on the other folds' cells, so a test cell is unseen by every model "
        "that feeds its prediction (also through the upper-layer inputs). The folds train together, each layer one stacked "
        "ensemble of folds x members, each fold with its own data, validation, schedule and best checkpoint.",
        f"{OURS} beats {BASELINE} in a layer when its median anomaly r is higher and it is better in more than half of the cells.",
        f"Evaluation period {period[0]}..{period[1]}; target cells with data: "
        + ", ".join(f"{k} {v}" for k, v in n_cells.items())
        + ".",
        f"All datasets are scored on the days where {OURS} is defined and the target has a value"
        + (
            "; only days where every dataset has a value (evaluate.common_days)."
            if ev.common_days
            else "; each on its own pair-wise complete days."
        ),
        f"Anomalies: centred {ev.anomaly_window_days}-day window, at least {ev.anomaly_min_count} values.",
        "References are sampled at the nearest grid cell of each target cell (0.25° cell centres).",
        f"The prediction store ({PRODUCT}, trained on all cells) is not scored at the target cells (it saw them); it appears in Fig. 6"
        + (" and in the synthetic-truth section." if truth is not None else "."),
    ]
    files = {
        "per-cell metrics (CSV)": out / "metrics_cells.csv",
        "per-cell metrics (NetCDF)": out / "metrics_cells.nc",
        "summary (CSV)": out / "summary.csv",
        "fold assignment": out / "folds.csv",
        "cross-validated series (Zarr)": out / "cv_predictions.zarr",
    }
    files = {k: v for k, v in files.items() if Path(v).exists()}
    synthetic = cfg.data.source == "synthetic"
    notes = []
    if synthetic:
        notes.append("Synthetic Earth: 'ERA5' is the synthetic ERA5-like reanalysis, a degraded model of the truth.")
    report = write_report(
        ReportInputs(
            title=f"somojax evaluation: {cfg.name}",
            run_name=cfg.name,
            period=period,
            summary=sums["all"],
            group_summaries=groups,
            verdicts=verdicts,
            figures=figs,
            files=files,
            ours=OURS,
            baseline=BASELINE,
            quantiles=q,
            protocol=protocol,
            datasets=described,
            truth=truth_res,
            truth_figures=truth_figs,
            notes=notes,
        ),
        out / "report.html",
    )
    for v in verdicts:
        log.info("%s", v["sentence"])
    log.info("report: %s", report)
    return EvaluationResult(
        report=report,
        scores=scores,
        table=table,
        summary=sums["all"],
        verdicts=verdicts,
        figures={k: v[0] for k, v in {**figs, **truth_figs}.items()},
        truth=truth_res,
    )


def _score_truth(cfg, truth, forcings, statics, predictions, cv, lat, lon, cells, period) -> T.TruthResult:
    ev = cfg.evaluate
    era = forcings[C.SM_ERA5]
    if predictions is not None:
        return T.score_truth_grid(
            truth[C.SM_TRUE],
            {PRODUCT: predictions[C.SM], BASELINE: era},
            statics[C.LAND_MASK],
            PRODUCT,
            BASELINE,
            ev.anomaly_window_days,
            ev.anomaly_min_count,
            tuple(ev.quantiles),
        )
    if cv is None:
        raise StoreError("no prediction store and no cross-validated series to score against the truth")
    days = cv[C.TIME].values
    era_c = R.sample_cells(era, lat, lon, days, cells).load()
    era_c = era_c.sel({C.LAYER: list(cv[C.LAYER].values)}).where(cv.notnull())  # same cells and days as somojax*
    return T.score_truth_cells(
        truth[C.SM_TRUE],
        {OURS: cv, BASELINE: era_c},
        lat,
        lon,
        cells,
        OURS,
        BASELINE,
        ev.anomaly_window_days,
        ev.anomaly_min_count,
        tuple(ev.quantiles),
    )
