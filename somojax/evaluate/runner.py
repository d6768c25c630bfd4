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
from somojax.config import Config, EvaluateConfig
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


Figures = dict[str, tuple[Path, str]]  # key -> (png, caption), in the report's order


@dataclass
class InputStores:
    """The stores the evaluation reads; the prediction store and the truth are optional."""

    targets: xr.Dataset
    forcings: xr.Dataset
    statics: xr.Dataset
    predictions: xr.Dataset | None
    truth: xr.Dataset | None


@dataclass
class Aligned:
    """Every scored dataset on the target cells and the evaluation days."""

    span: tuple[pd.Timestamp, pd.Timestamp]  # first and last evaluation day
    cells: np.ndarray
    lat: np.ndarray  # float64 [cell]
    lon: np.ndarray
    obs: xr.DataArray  # targets [layer, cell, time] over `span`, on the days somojax* is defined
    series: dict[str, xr.DataArray]  # dataset name -> [layer, cell, time] on `cells` and the days of `span`
    described: list[tuple[str, str, str]]  # name, layers, source: the report's dataset table
    refs: list[R.Reference]  # ERA5 and the references, gridded
    ours: xr.DataArray | None = None  # the cross-validated series (also `series[OURS]`), None when not given

    @property
    def period(self) -> tuple[str, str]:
        """The evaluation period as ISO dates."""
        return str(self.span[0].date()), str(self.span[1].date())


@dataclass
class Scored:
    """The scores of every dataset and what is derived from them."""

    scores: xr.Dataset  # [dataset, layer, cell]
    climate: pd.DataFrame  # `scoring.cell_climate`, indexed by cell
    obs_days: xr.DataArray  # [layer, cell] observed days in the evaluation period
    table: pd.DataFrame  # one row per (dataset, layer, cell) that has a target
    summaries: dict[str, pd.DataFrame]  # `scoring.summaries`: "all" and one per grouping
    verdicts: list[dict]  # `scoring.verdicts` of OURS against BASELINE; empty without OURS

    @property
    def groups(self) -> dict[str, pd.DataFrame]:
        """The summaries per grouping (continent, climate classes), without the overall one."""
        return {k: v for k, v in self.summaries.items() if k != "all"}


@dataclass
class TruthOutputs:
    """The synthetic Earth's section: skill against the truth and its figures."""

    result: T.TruthResult
    figures: Figures


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
    `cfg.predictions_path` (predictions); "auto" means: use it when it exists. The steps, each a
    function of its own: `open_stores`, `align`, `score`, `write_tables`, `draw_figures`,
    `score_truth` (synthetic Earth only) and `write_evaluation_report`.
    """
    out = cfg.evaluation_dir
    with writing("the evaluation outputs", out):
        out.mkdir(parents=True, exist_ok=True)
    st = open_stores(cfg, targets, forcings, statics, predictions, truth)
    M.check_window(cfg.evaluate.anomaly_window_days, cfg.evaluate.anomaly_min_count)
    al = align(cfg, cv, st)
    sc = score(cfg.evaluate, al, st.statics, st.forcings)
    write_tables(out, al, sc)
    figs = draw_figures(cfg, st, al, sc)
    tr = score_truth(cfg, st, al) if st.truth is not None else None
    report = write_evaluation_report(cfg, st, al, sc, figs, tr)
    for v in sc.verdicts:
        log.info("%s", v["sentence"])
    log.info("report: %s", report)
    return EvaluationResult(
        report=report,
        scores=sc.scores,
        table=sc.table,
        summary=sc.summaries["all"],
        verdicts=sc.verdicts,
        figures={k: v[0] for k, v in {**figs, **(tr.figures if tr else {})}.items()},
        truth=tr.result if tr else None,
    )


def open_stores(
    cfg: Config,
    targets: xr.Dataset | None,
    forcings: xr.Dataset | None,
    statics: xr.Dataset | None,
    predictions: xr.Dataset | None | str,
    truth: xr.Dataset | None | str,
) -> InputStores:
    """The given stores, the others opened from `cfg` (predictions and truth "auto": when they exist)."""
    targets = targets if targets is not None else stores.open_store(cfg.store_dir, "targets")
    forcings = forcings if forcings is not None else stores.open_store(cfg.store_dir, "forcings")
    statics = statics if statics is not None else stores.open_store(cfg.store_dir, "statics")
    if isinstance(predictions, str):
        predictions = _open_predictions(cfg.predictions_path)
    if isinstance(truth, str):
        truth = _open_optional(stores.store_path(cfg.store_dir, "truth"), "truth")
    return InputStores(targets, forcings, statics, predictions, truth)


def align(cfg: Config, cv: xr.DataArray | None, st: InputStores) -> Aligned:
    """The targets, `cv` and the references (ERA5 first) on the target cells and the evaluation days.

    The targets keep only the days where `cv` is defined, so every dataset is scored on them.
    """
    lo, hi = _period(cfg, st.targets, cv)
    period = (str(lo.date()), str(hi.date()))
    days = pd.date_range(lo, hi, freq="D")
    cells = st.targets[C.CELL].values
    lat, lon = st.targets[C.LAT].values.astype(np.float64), st.targets[C.LON].values.astype(np.float64)
    obs = st.targets[C.SM].sel({C.TIME: slice(lo, hi)}).load()
    ours = None
    series: dict[str, xr.DataArray] = {}
    described: list[tuple[str, str, str]] = []
    if cv is not None:
        ours = cv.sel({C.TIME: slice(lo, hi)}).reindex({C.CELL: cells, C.TIME: days}).load()
        series[OURS] = ours
        layers = [str(x) for x in ours[C.LAYER].values]
        described.append((OURS, ",".join(layers), f"{cfg.evaluate.folds}-fold cross-validation over target cells"))
        for layer in layers:
            obs.loc[{C.LAYER: layer}] = obs.sel({C.LAYER: layer}).where(ours.sel({C.LAYER: layer}).notnull())
    refs = [R.era5_reference(st.forcings, BASELINE)]
    refs += [R.open_reference(s, period[0], period[1]) for s in cfg.evaluate.references]
    for ref in refs:
        if ref.name in series:
            raise StoreError(
                f"two datasets are named {ref.name!r}; name the reference explicitly (name=path in evaluate.references)"
            )
        series[ref.name] = R.sample_cells(ref.data, lat, lon, days, cells).load()
        described.append((ref.name, ",".join(ref.layers), ref.source))
    return Aligned((lo, hi), cells, lat, lon, obs, series, described, refs, ours)


def score(ev: EvaluateConfig, al: Aligned, statics: xr.Dataset | None, forcings: xr.Dataset | None) -> Scored:
    """Per-cell metrics of every dataset and layer against the targets, the per-cell table with each
    cell's climate (from `statics` and `forcings`), its summaries and, with OURS, the verdicts."""
    scores = S.score_datasets(al.obs, al.series, ev.anomaly_window_days, ev.anomaly_min_count, ev.common_days)
    climate = S.cell_climate(al.cells, al.lat, al.lon, statics, forcings, al.period)
    obs_days = al.obs.notnull().sum(C.TIME)
    table = S.cell_table(scores, climate, obs_days)
    verdicts = S.verdicts(table, OURS, BASELINE) if al.ours is not None else []
    return Scored(scores, climate, obs_days, table, S.summaries(table, ev.quantiles), verdicts)


def write_tables(out: Path, al: Aligned, sc: Scored) -> None:
    """Writes metrics_cells.csv and .nc, summary.csv, summary_by_group.csv (when grouped) and
    verdicts.json into `out`."""
    sc.table.to_csv(out / "metrics_cells.csv", index=False)
    classes = ("continent", "aridity", "temperature")
    nc = sc.scores.assign_coords({k: (C.CELL, sc.climate.loc[al.cells, k].to_numpy()) for k in classes})
    nc = nc.assign_coords(n_obs_days=sc.obs_days)
    for k in classes:
        nc[k] = nc[k].astype(str)
    period = al.period
    nc.attrs.update(
        {"period": f"{period[0]}..{period[1]}", "datasets": ", ".join(al.series), "somojax_product": "per-cell metrics"}
    )
    nc.to_netcdf(out / "metrics_cells.nc")
    sc.summaries["all"].to_csv(out / "summary.csv", index=False)
    if sc.groups:
        pd.concat(sc.groups.values(), ignore_index=True).to_csv(out / "summary_by_group.csv", index=False)
    (out / "verdicts.json").write_text(json.dumps(sc.verdicts, indent=1))


def draw_figures(cfg: Config, st: InputStores, al: Aligned, sc: Scored) -> Figures:
    """Fig. 2, the metric box plots (Figs. 4, 5, S3, S4) and, with a land mask, Figs. 6a and 6b."""
    figdir = cfg.evaluation_dir / "figures"
    land = st.statics[C.LAND_MASK].load() if C.LAND_MASK in st.statics else None
    n_days = (
        st.targets[C.SM].notnull().sum(C.TIME).load().assign_coords({C.LAT: (C.CELL, al.lat), C.LON: (C.CELL, al.lon)})
    )
    figs = {
        "fig2": (
            F.fig_target_cells(n_days, figdir / "fig2_target_cells.png", land),
            "Fig. 2: target cells per layer, coloured by data length.",
        )
    }
    q = tuple(cfg.evaluate.quantiles)
    primary = OURS if al.ours is not None else None
    for key, metric, cap in (
        ("fig4", "nrmse", "Fig. 4: NRMSE against the in-situ targets"),
        ("fig5", "anomaly_r", "Fig. 5: anomaly correlation against the in-situ targets"),
        ("figS_r", "r", "Correlation against the in-situ targets (cf. Fig. S4)"),
        ("figS_bias", "rel_bias", "Relative bias against the in-situ targets (cf. Fig. S3)"),
    ):
        figs[key] = (
            F.fig_metric_boxplots(sc.table, metric, figdir / f"{key}_{metric}.png", q, primary),
            f"{cap}; left: {OURS} per cell over aridity and temperature; right: datasets ranked by median "
            f"(box: quartiles, whiskers: {q[0]:g}–{q[1]:g} quantiles, no fliers).",
        )
    if land is not None:
        figs.update(_median_figures(st, al, land, figdir))
    return figs


def _median_figures(st: InputStores, al: Aligned, land: xr.DataArray, figdir: Path) -> Figures:
    """Figs. 6a (map of the long-term median) and 6b (latitudinal median profiles of all datasets),
    over the prediction store's period when there is one, else the evaluation period."""
    period = al.period
    if st.predictions is not None:
        tp = pd.DatetimeIndex(st.predictions[C.TIME].values)
        period = (str(tp[0].date()), str(tp[-1].date()))
    gridded = {}
    if st.predictions is not None:
        gridded[PRODUCT] = gridded_median(st.predictions[C.SM], land, period)
    for ref in al.refs:
        gridded[ref.name] = gridded_median(ref.data, land, period)
    if st.truth is not None:
        gridded["truth"] = gridded_median(st.truth[C.SM_TRUE], land, period)
    cellmed = {}
    if al.ours is not None:
        cellmed[OURS] = _median_time(al.ours).assign_coords({C.LAT: (C.CELL, al.lat)})
    in_situ = st.targets[C.SM].sel({C.TIME: slice(*al.span)})
    cellmed["in situ (targets)"] = _median_time(in_situ).assign_coords({C.LAT: (C.CELL, al.lat)})
    width = 0.25 if float(land[C.LAT].max() - land[C.LAT].min()) <= 10 else 1.0
    if PRODUCT in gridded:
        m6, what = gridded[PRODUCT], f"{PRODUCT} prediction store"
    elif al.ours is not None:
        m6, what = (
            cellmed[OURS].assign_coords({C.LON: (C.CELL, al.lon)}),
            f"{OURS} (cross-validated, target cells only)",
        )
    else:
        m6, what = gridded[BASELINE], BASELINE
    title = f"Long-term median soil moisture: {what}, {period[0]}..{period[1]}"
    profiles = lat_profiles(gridded, cellmed, width)
    profiles_title = f"Latitudinal median profiles ({width:g}° bands, land cells)"
    return {
        "fig6a": (
            F.fig_median_map(m6, figdir / "fig6a_median_map.png", title, land),
            f"Fig. 6a: long-term median of {what}.",
        ),
        "fig6b": (
            F.fig_lat_profiles(profiles, figdir / "fig6b_lat_profiles.png", profiles_title),
            f"Fig. 6b: latitudinal median profiles of all datasets over {period[0]}..{period[1]} ({width:g}° latitude bands).",
        ),
    }


def score_truth(cfg: Config, st: InputStores, al: Aligned) -> TruthOutputs:
    """The synthetic Earth: skill against `st.truth` (on every land cell with a prediction store,
    else at the target cells), written to truth_*.csv (and truth_metrics.nc with its maps)."""
    out, figdir = cfg.evaluation_dir, cfg.evaluation_dir / "figures"
    result = _truth_result(cfg.evaluate, st, al.series.get(OURS), al)
    figs: Figures = {}
    if result.grid_scores is not None:
        result.grid_scores.to_netcdf(out / "truth_metrics.nc")
        p = F.fig_truth_maps(result.grid_scores, "anomaly_r", figdir / "truth_anomaly_r_maps.png")
        figs["truth_anom"] = (p, "Anomaly correlation against the synthetic truth on every land cell.")
        p = F.fig_truth_maps(result.grid_scores, "r", figdir / "truth_r_maps.png")
        figs["truth_r"] = (p, "Correlation against the synthetic truth on every land cell.")
    result.table.to_csv(out / "truth_metrics_cells.csv", index=False)
    result.summary.to_csv(out / "truth_summary.csv", index=False)
    return TruthOutputs(result, figs)


def _truth_result(ev: EvaluateConfig, st: InputStores, cv: xr.DataArray | None, al: Aligned) -> T.TruthResult:
    """The prediction store and ERA5 against the truth on every land cell; without a prediction
    store, `cv` and ERA5 at the target cells, on the days `cv` is defined."""
    era = st.forcings[C.SM_ERA5]
    window, quantiles = (ev.anomaly_window_days, ev.anomaly_min_count), tuple(ev.quantiles)
    if st.predictions is not None:
        truth, land = st.truth[C.SM_TRUE], st.statics[C.LAND_MASK]
        sims = {PRODUCT: st.predictions[C.SM], BASELINE: era}
        return T.score_truth_grid(truth, sims, land, PRODUCT, BASELINE, *window, quantiles)
    if cv is None:
        raise StoreError("no prediction store and no cross-validated series to score against the truth")
    era_c = R.sample_cells(era, al.lat, al.lon, cv[C.TIME].values, al.cells).load()
    era_c = era_c.sel({C.LAYER: list(cv[C.LAYER].values)}).where(cv.notnull())  # same cells and days as somojax*
    sims = {OURS: cv, BASELINE: era_c}
    return T.score_truth_cells(st.truth[C.SM_TRUE], sims, al.lat, al.lon, al.cells, OURS, BASELINE, *window, quantiles)


def write_evaluation_report(
    cfg: Config, st: InputStores, al: Aligned, sc: Scored, figs: Figures, truth: TruthOutputs | None
) -> Path:
    """Writes report.html (`report.write_report`) into the evaluation folder and returns its path;
    it links the output files that exist by now."""
    out = cfg.evaluation_dir
    files = {
        "per-cell metrics (CSV)": out / "metrics_cells.csv",
        "per-cell metrics (NetCDF)": out / "metrics_cells.nc",
        "summary (CSV)": out / "summary.csv",
        "fold assignment": out / "folds.csv",
        "cross-validated series (Zarr)": out / "cv_predictions.zarr",
    }
    notes = []
    if cfg.data.source == "synthetic":
        notes.append("Synthetic Earth: 'ERA5' is the synthetic ERA5-like reanalysis, a degraded model of the truth.")
    inputs = ReportInputs(
        title=f"somojax evaluation: {cfg.name}",
        run_name=cfg.name,
        period=al.period,
        summary=sc.summaries["all"],
        group_summaries=sc.groups,
        verdicts=sc.verdicts,
        figures=figs,
        files={k: v for k, v in files.items() if Path(v).exists()},
        ours=OURS,
        baseline=BASELINE,
        quantiles=tuple(cfg.evaluate.quantiles),
        protocol=_protocol(cfg.evaluate, al, sc, st.truth is not None),
        datasets=al.described,
        truth=truth.result if truth else None,
        truth_figures=truth.figures if truth else {},
        notes=notes,
        anomaly_window_days=cfg.evaluate.anomaly_window_days,
        anomaly_min_count=cfg.evaluate.anomaly_min_count,
    )
    return write_report(inputs, out / "report.html")


def _protocol(ev: EvaluateConfig, al: Aligned, sc: Scored, has_truth: bool) -> list[str]:
    """The report's protocol section: how the series were made and scored."""
    layers = [str(x) for x in al.obs[C.LAYER].values]
    n_cells = {l: int((sc.obs_days.sel({C.LAYER: l}) > 0).sum()) for l in layers}
    period = al.period
    return [
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
        + (" and in the synthetic-truth section." if has_truth else "."),
    ]
