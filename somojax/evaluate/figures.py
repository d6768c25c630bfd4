"""The paper's validation figures (O & Orth 2021, Figs. 2, 4, 5, 6) with matplotlib (Agg, PNG).

- `fig_target_cells` (Fig. 2): target cells per layer, coloured by data length.
- `fig_metric_boxplots` (Figs. 4, 5, S3–S5): per layer, (left) the metric of the cross-validated
  series over the cells' climate (aridity × temperature), (right) one box per dataset, ranked by
  the median (best on top); box = quartiles, whiskers at the 0.2 and 0.8 quantiles (configurable),
  no fliers.
- `fig_median_map` (Fig. 6a): long-term median of a product per layer.
- `fig_lat_profiles` (Fig. 6b): latitudinal median profiles of all datasets.
- `fig_truth_maps`: on the synthetic Earth, per-cell skill against the truth on every land cell.

Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from somojax import constants as C  # noqa: E402
from somojax.evaluate.metrics import METRICS  # noqa: E402

DPI = 110
# matplotlib >= 3.10 names box plot orientation explicitly (`vert` is deprecated there)
_HORIZONTAL = (
    {"orientation": "horizontal"}
    if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False}
)
LAYER_TITLES = {k: f"{k}: {int(a)}–{int(b)} cm" for k, (a, b) in C.LAYER_BOUNDS_CM.items()}
SM_LABEL = "soil moisture [m³ m⁻³]"


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _extent(lat: np.ndarray, lon: np.ndarray, pad: float = 0.5) -> tuple[float, float, float, float]:
    return (float(np.min(lon)) - pad, float(np.max(lon)) + pad, float(np.min(lat)) - pad, float(np.max(lat)) + pad)


def _land_background(ax: plt.Axes, land: xr.DataArray | None) -> None:
    """Land cells of the run's domain in light grey (there is no coastline dataset offline)."""
    if land is None:
        return
    lat, lon = land[C.LAT].values, land[C.LON].values
    ax.pcolormesh(
        lon,
        lat,
        np.where(np.asarray(land.values) > 0, 1.0, np.nan),
        cmap="Greys",
        vmin=0,
        vmax=4,
        shading="nearest",
        rasterized=True,
    )


def _geo_axes(ax: plt.Axes, title: str, xlabel: bool = True, ylabel: bool = True) -> None:
    ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel("longitude [°E]")
    if ylabel:
        ax.set_ylabel("latitude [°N]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, lw=0.3, alpha=0.5)


# ----------------------------------------------------------------------------------------
# Fig. 2
# ----------------------------------------------------------------------------------------
def fig_target_cells(n_days: xr.DataArray, path: Path, land: xr.DataArray | None = None) -> Path:
    """Target cells per layer coloured by their number of observed days.

    Args:
      n_days: [layer, cell] valid target days, with `latitude`/`longitude` coords on `cell`
        (cells with 0 days are not drawn).
      land: optional land mask [latitude, longitude] drawn as background.
    """
    layers = [str(x) for x in n_days[C.LAYER].values]
    fig, axes = plt.subplots(1, len(layers), figsize=(4.6 * len(layers), 4.2), squeeze=False, layout="constrained")
    lat, lon = n_days[C.LAT].values, n_days[C.LON].values
    vmax = max(float(n_days.max()), 1.0)
    sc = None
    for ax, layer in zip(axes[0], layers):
        v = n_days.sel({C.LAYER: layer}).values
        has = v > 0
        _land_background(ax, land)
        sc = ax.scatter(
            lon[has],
            lat[has],
            c=v[has] / 365.25,
            s=22,
            cmap="viridis",
            vmin=0,
            vmax=vmax / 365.25,
            edgecolors="k",
            linewidths=0.3,
        )
        _geo_axes(ax, f"{LAYER_TITLES.get(layer, layer)} ({int(has.sum())} cells)", ylabel=ax is axes[0, 0])
        if land is None and lat.size:
            x0, x1, y0, y1 = _extent(lat, lon)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
    if sc is not None:
        fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.8, label="data length [years of daily values]")
    fig.suptitle("Target cells (in-situ soil moisture on the 0.25° grid)", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------
# Figs. 4, 5
# ----------------------------------------------------------------------------------------
def _rank_key(values: np.ndarray, better: str) -> float:
    med = float(np.median(values))
    return {"lower": med, "higher": -med, "zero": abs(med)}[better]


def fig_metric_boxplots(
    table: pd.DataFrame,
    metric: str,
    path: Path,
    quantiles: Sequence[float] = (0.2, 0.8),
    primary: str | None = None,
    title: str | None = None,
) -> Path:
    """Per-layer box plots of `metric` per dataset, ranked by median (best on top).

    Args:
      table: one row per (dataset, layer, cell) with a column `metric`; optional `arid` and
        `t2m_c` columns (climate of the cell) for the left panel.
      metric: a key of `METRICS`.
      quantiles: whisker quantiles (the paper: 0.2 and 0.8).
      primary: the dataset shown in the climate panel (the cross-validated series).
    """
    info = METRICS[metric]
    layers = [l for l in C.LAYERS if l in set(table["layer"])]
    has_climate = primary is not None and {"arid", "t2m_c"} <= set(table.columns)
    ncols = 2 if has_climate else 1
    fig, axes = plt.subplots(
        len(layers), ncols, figsize=(5.2 * ncols + 1, 2.6 * max(len(layers), 1) + 0.6), squeeze=False
    )
    lo, hi = sorted(quantiles)
    for row, layer in enumerate(layers):
        sub = table[table["layer"] == layer]
        ax = axes[row, -1]
        _ranked_boxes(ax, sub, metric, (lo, hi), primary)
        if info.better == "zero" or metric in ("r", "anomaly_r", "kge"):
            ax.axvline(0.0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(f"{info.label} [{info.units}]")
        ax.set_title(f"{LAYER_TITLES.get(layer, layer)}: datasets ranked by median", fontsize=9)
        ax.grid(True, axis="x", lw=0.3, alpha=0.5)
        if has_climate:
            _climate_panel(fig, axes[row, 0], sub[sub["dataset"] == primary], metric, primary)
    fig.suptitle(title or f"{info.label} against in-situ targets (whiskers: {lo:g}–{hi:g} quantiles)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _box_stats(sub: pd.DataFrame, metric: str, whiskers: tuple[float, float]) -> tuple[list[dict], list[str]]:
    """Box statistics (matplotlib's `bxp` format plus the ranking key `_k`) of every dataset of
    `sub` that has a finite `metric`, and those datasets' names, in the table's order."""
    better = METRICS[metric].better
    stats, names = [], []
    for name, g in sub.groupby("dataset", sort=False):
        v = g[metric].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            q = np.quantile(v, [whiskers[0], 0.25, 0.5, 0.75, whiskers[1]])
            stats.append(
                {
                    "label": f"{name} (n={v.size})",
                    "whislo": q[0],
                    "q1": q[1],
                    "med": q[2],
                    "q3": q[3],
                    "whishi": q[4],
                    "fliers": [],
                    "_k": _rank_key(v, better),
                }
            )
            names.append(name)
    return stats, names


def _ranked_boxes(
    ax: plt.Axes, sub: pd.DataFrame, metric: str, whiskers: tuple[float, float], primary: str | None
) -> None:
    """One horizontal box per dataset of one layer, the best median on top, `primary` in orange."""
    stats, names = _box_stats(sub, metric, whiskers)
    if not stats:
        ax.text(0.5, 0.5, "no scored cells", ha="center", va="center", transform=ax.transAxes)
        return
    order = sorted(range(len(stats)), key=lambda i: stats[i]["_k"], reverse=True)  # best ends on top
    ordered = [stats[i] for i in order]
    for s in ordered:
        s.pop("_k")
    bp = ax.bxp(ordered, showfliers=False, patch_artist=True, widths=0.6, **_HORIZONTAL)
    for patch, i in zip(bp["boxes"], order):
        patch.set_facecolor("tab:orange" if names[i] == primary else "tab:blue")
        patch.set_alpha(0.6)
    for y, s in enumerate(ordered, start=1):
        ax.annotate(f"{s['med']:.3f}", (s["med"], y + 0.33), ha="center", fontsize=7)


def _climate_panel(fig: plt.Figure, ax: plt.Axes, rows: pd.DataFrame, metric: str, name: str) -> None:
    """`metric` of dataset `name`'s cells (`rows`) over their aridity and mean temperature."""
    info = METRICS[metric]
    p = rows[np.isfinite(rows[metric])]
    arid = p["arid"].to_numpy(np.float64)
    ok = np.isfinite(arid) & (arid > 0)
    sc = ax.scatter(
        arid[ok],
        p["t2m_c"].to_numpy()[ok],
        c=p[metric].to_numpy()[ok],
        cmap="viridis_r" if info.better == "lower" else "viridis",
        s=16,
        edgecolors="k",
        linewidths=0.2,
    )
    ax.set_xscale("log")
    ax.set_xlabel("aridity: net radiation / precipitation [1]")
    ax.set_ylabel("mean 2 m temperature [°C]")
    ax.set_title(f"{name}: {info.label} per cell", fontsize=9)
    fig.colorbar(sc, ax=ax, label=f"{info.label} [{info.units}]")


# ----------------------------------------------------------------------------------------
# Fig. 6
# ----------------------------------------------------------------------------------------
def fig_median_map(median: xr.DataArray, path: Path, title: str, land: xr.DataArray | None = None) -> Path:
    """Maps of a long-term median per layer.

    Args:
      median: [layer, latitude, longitude] (a gridded product), or [layer, cell] with
        `latitude`/`longitude` coords on `cell` (drawn as points).
    """
    layers = [str(x) for x in median[C.LAYER].values]
    fig, axes = plt.subplots(1, len(layers), figsize=(4.6 * len(layers), 4.2), squeeze=False, layout="constrained")
    vals = np.asarray(median.values, np.float64)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = np.quantile(finite, [0.02, 0.98]) if finite.size else (0.0, 0.5)
    im = None
    for ax, layer in zip(axes[0], layers):
        m = median.sel({C.LAYER: layer})
        if C.CELL in m.dims:
            _land_background(ax, land)
            im = ax.scatter(
                m[C.LON].values,
                m[C.LAT].values,
                c=m.values,
                s=22,
                cmap="YlGnBu",
                vmin=vmin,
                vmax=vmax,
                edgecolors="k",
                linewidths=0.3,
            )
        else:
            im = ax.pcolormesh(
                m[C.LON].values,
                m[C.LAT].values,
                m.values,
                cmap="YlGnBu",
                vmin=vmin,
                vmax=vmax,
                shading="nearest",
                rasterized=True,
            )
        _geo_axes(ax, LAYER_TITLES.get(layer, layer), ylabel=ax is axes[0, 0])
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"median {SM_LABEL}")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def fig_lat_profiles(
    profiles: Mapping[str, xr.DataArray], path: Path, title: str = "Latitudinal median profiles"
) -> Path:
    """Latitudinal profiles per layer, one line per dataset.

    Args:
      profiles: dataset name -> [layer, latitude] medians (NaN where a dataset has no cell).
    """
    layers = [l for l in C.LAYERS if any(l in [str(x) for x in p[C.LAYER].values] for p in profiles.values())]
    fig, axes = plt.subplots(
        1, max(len(layers), 1), figsize=(3.6 * max(len(layers), 1), 4.6), squeeze=False, sharey=True
    )
    for ax, layer in zip(axes[0], layers):
        for name, p in profiles.items():
            if layer not in [str(x) for x in p[C.LAYER].values]:
                continue
            v = p.sel({C.LAYER: layer})
            ok = np.isfinite(v.values)
            if ok.any():
                ax.plot(
                    v.values[ok], v[C.LAT].values[ok], marker="o" if ok.sum() < 12 else None, ms=3, lw=1.2, label=name
                )
        ax.set_title(LAYER_TITLES.get(layer, layer), fontsize=10)
        ax.set_xlabel(f"median {SM_LABEL}")
        ax.grid(True, lw=0.3, alpha=0.5)
    axes[0, 0].set_ylabel("latitude [°N]")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, bbox_to_anchor=(0.5, -0.02)
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


# ----------------------------------------------------------------------------------------
# synthetic Earth
# ----------------------------------------------------------------------------------------
def fig_truth_maps(scores: xr.Dataset, metric: str, path: Path) -> Path:
    """Per-land-cell skill against the synthetic truth: one row per dataset, one column per layer.

    Args:
      scores: metrics [dataset, layer, latitude, longitude].
    """
    info = METRICS[metric]
    da = scores[metric]
    names = [str(x) for x in da["dataset"].values]
    layers = [str(x) for x in da[C.LAYER].values]
    fig, axes = plt.subplots(
        len(names), len(layers), figsize=(4.2 * len(layers), 3.6 * len(names)), squeeze=False, layout="constrained"
    )
    vals = np.asarray(da.values, np.float64)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = np.quantile(finite, [0.02, 0.98]) if finite.size else (0.0, 1.0)
    im = None
    for i, name in enumerate(names):
        for j, layer in enumerate(layers):
            m = da.sel(dataset=name, layer=layer)
            ax = axes[i, j]
            im = ax.pcolormesh(
                m[C.LON].values, m[C.LAT].values, m.values, cmap="viridis", vmin=vmin, vmax=vmax, shading="nearest"
            )
            fin = m.values[np.isfinite(m.values)]
            med = float(np.median(fin)) if fin.size else np.nan
            _geo_axes(ax, f"{name}, {layer} (median {med:.3f})", xlabel=i == len(names) - 1, ylabel=j == 0)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label=f"{info.label} vs truth [{info.units}]")
    fig.suptitle(f"{info.label} against the synthetic truth on every land cell", fontsize=11)
    return _save(fig, path)
