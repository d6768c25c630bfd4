"""The evaluation report: one self-contained HTML page (figures embedded as base64 PNG).

A single file can be mailed, attached to a paper review or opened from a cluster's scratch space
without the figure folder; the PNGs are also kept in `figures/` and the numbers in CSV/NetCDF
next to the report.
"""

from __future__ import annotations

import base64
import datetime
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from somojax import __version__
from somojax import constants as C
from somojax.config import EvaluateConfig
from somojax.evaluate.metrics import METRICS

# docs/design.md#cross-validation: the paper's 5-fold CV, median over cells (from its figure data)
PAPER_NUMBERS = pd.DataFrame(
    [
        ("L1", 2214, 0.724, 0.668, 0.591, 0.544),
        ("L2", 1820, 0.736, 0.637, 0.526, 0.477),
        ("L3", 1199, 0.679, 0.421, 0.365, 0.170),
    ],
    columns=["layer", "cells", "SoMo.ml* r", "ERA5 r", "SoMo.ml* anomaly r", "ERA5 anomaly r"],
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
.verdict{font-size:1.05em;padding:.4em .8em;margin:.3em 0;border-left:4px solid #888;background:#f7f7f7}
.beats{border-color:#2a8a2a}.notbeats{border-color:#c0392b}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#555}
.small{font-size:.88em;color:#555}code{background:#f3f3f3;padding:0 3px}
"""


def metric_definitions(anomaly_window_days: int, anomaly_min_count: int) -> str:
    """The report's metric definitions, with the anomaly window the scores were computed with."""
    half = anomaly_window_days // 2
    return (
        "<h2>Metric definitions</h2><ul>"
        "<li>NRMSE = RMSE / mean(obs) (O &amp; Orth 2021); relative bias = (mean(sim) − mean(obs)) / mean(obs).</li>"
        "<li>r: Pearson correlation; anomaly r: correlation of short-term anomalies, value minus the mean of the centred "
        f"window [d−{half}, d+{half}] when it holds ≥ {anomaly_min_count} values, both series restricted to the days "
        "both have (Albergel et al. 2013; Dorigo et al. 2015; O &amp; Orth 2021).</li>"
        "<li>ubRMSE = sqrt(RMSE² − bias²) (Entekhabi et al. 2010); KGE = 1 − sqrt((r−1)² + (α−1)² + (β−1)²) (Gupta et al. 2009).</li>"
        "<li>All metrics per cell over the pair-wise complete days; summaries are the median and quantiles over cells.</li></ul>"
    )


@dataclass
class ReportInputs:
    """Everything the report shows."""

    title: str
    run_name: str
    period: tuple[str, str]
    summary: pd.DataFrame  # summarize(..., by=None)
    group_summaries: Mapping[str, pd.DataFrame]  # by -> summarize(..., by=by)
    verdicts: Sequence[dict]
    figures: Mapping[str, tuple[Path, str]]  # key -> (png, caption)
    files: Mapping[str, Path]  # label -> path (linked relative to the report)
    ours: str
    baseline: str
    quantiles: tuple[float, float] = (0.2, 0.8)
    protocol: Sequence[str] = ()
    datasets: Sequence[tuple[str, str, str]] = ()  # name, layers, source
    truth: object | None = None  # TruthResult
    truth_figures: Mapping[str, tuple[Path, str]] = field(default_factory=dict)
    notes: Sequence[str] = ()
    # the scores' anomaly window and its least count (`evaluate.*`)
    anomaly_window_days: int = EvaluateConfig.anomaly_window_days
    anomaly_min_count: int = EvaluateConfig.anomaly_min_count


def _esc(x) -> str:
    return html.escape(str(x))


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}"/>'
        f"<figcaption>{_esc(caption)} <span class='small'>({_esc(Path(path).name)})</span></figcaption></figure>"
    )


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "–" if not np.isfinite(v) else f"{v:.3f}"
    return _esc(v)


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def metric_table(
    summary: pd.DataFrame, layer: str, quantiles: Sequence[float], dataset_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows: datasets; columns: `<metric> median [q20, q80]` and the number of cells, for one layer."""
    q = [c for c in summary.columns if c.startswith("q")]
    sub = summary[summary["layer"] == layer]
    rows = []
    names = list(dict.fromkeys(sub["dataset"]))
    if dataset_order:
        names = [n for n in dataset_order if n in names] + [n for n in names if n not in dataset_order]
    for name in names:
        d = sub[sub["dataset"] == name].set_index("metric")
        row = {"dataset": name, "cells": int(d["n_cells"].max()) if len(d) else 0}
        for m in METRICS:
            if m in d.index:
                row[METRICS[m].label] = f"{d.loc[m, 'median']:.3f} [{d.loc[m, q[0]]:.3f}, {d.loc[m, q[1]]:.3f}]"
            else:
                row[METRICS[m].label] = "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _group_table(gs: pd.DataFrame, metric: str, datasets: Sequence[str]) -> pd.DataFrame:
    sub = gs[(gs["metric"] == metric) & (gs["dataset"].isin(datasets))]
    if sub.empty:
        return pd.DataFrame()
    sub = sub.assign(value=[f"{m:.3f} (n={n})" for m, n in zip(sub["median"], sub["n_cells"])])
    t = sub.pivot_table(index=["layer", "group"], columns="dataset", values="value", aggfunc="first").reset_index()
    return t[["layer", "group"] + [d for d in datasets if d in t.columns]]


def _verdict_table(verdicts: Sequence[dict], ours: str, baseline: str) -> str:
    """The verdicts' numbers: medians, the share of cells where `ours` is better, the verdict."""
    rows = [
        (
            v["layer"],
            v["n_cells"],
            v["median_ours"],
            v["median_baseline"],
            f"{100 * v['share_better']:.0f}%" if np.isfinite(v["share_better"]) else "–",
            {True: "yes", False: "no"}.get(v.get("beats"), "–"),
        )
        for v in verdicts
    ]
    cols = ["layer", "cells", f"median {ours}", f"median {baseline}", f"cells where {ours} is better", "beats"]
    return _table(pd.DataFrame(rows, columns=cols)) + (
        f"<p class='small'>{_esc(ours)} beats {_esc(baseline)} in a layer when its median is higher and it is better "
        "in more than half of the cells both are scored on.</p>"
    )


def write_report(inp: ReportInputs, path: Path) -> Path:
    """Writes the HTML report to `path` and returns it; each section is a function of its own."""
    path = Path(path)
    parts = [
        *_head(inp),
        *_verdict_section(inp),
        *_protocol_and_datasets(inp),
        *_skill_section(inp),
        *_figure_section(inp),
        *_truth_section(inp),
        *_group_section(inp),
        *_notes_and_files(inp, path),
        metric_definitions(inp.anomaly_window_days, inp.anomaly_min_count),
        "</body></html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


def _head(inp: ReportInputs) -> list[str]:
    """The document's head, title and the line naming the run, the period and the version."""
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(inp.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(inp.title)}</h1>",
        f"<p class='small'>run <code>{_esc(inp.run_name)}</code> · evaluation period {_esc(inp.period[0])} to {_esc(inp.period[1])} · "
        f"somojax {_esc(__version__)} · written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
    ]


def _verdict_section(inp: ReportInputs) -> list[str]:
    """One sentence per layer's verdict (marked with data-layer and data-beats) and their numbers."""
    parts = ["<h2>Verdict: anomaly correlation against the in-situ targets</h2>"]
    for v in inp.verdicts:
        cls = "beats" if v.get("beats") else "notbeats"
        parts.append(
            f"<p class='verdict {cls}' data-layer='{_esc(v['layer'])}' data-beats='{str(v.get('beats')).lower()}'>{_esc(v['sentence'])}</p>"
        )
    if inp.verdicts:
        parts.append(_verdict_table(inp.verdicts, inp.ours, inp.baseline))
    else:
        parts.append(f"<p>No layer has cells scored for both {_esc(inp.ours)} and {_esc(inp.baseline)}.</p>")
    return parts


def _protocol_and_datasets(inp: ReportInputs) -> list[str]:
    """The protocol as a list and the datasets as a table, each when given."""
    parts = []
    if inp.protocol:
        parts.append("<h2>Protocol</h2><ul>" + "".join(f"<li>{_esc(p)}</li>" for p in inp.protocol) + "</ul>")
    if inp.datasets:
        parts.append(
            "<h2>Datasets</h2>" + _table(pd.DataFrame(list(inp.datasets), columns=["dataset", "layers", "source"]))
        )
    return parts


def _skill_section(inp: ReportInputs) -> list[str]:
    """Per layer, every dataset's metrics (median and quantiles over cells); then the paper's numbers."""
    qlo, qhi = inp.quantiles
    parts = [f"<h2>Skill per layer (median over cells [{qlo:g}, {qhi:g} quantiles])</h2>"]
    for layer in C.LAYERS:
        t = metric_table(inp.summary, layer, inp.quantiles, [inp.ours, inp.baseline])
        if not t.empty:
            lo, hi = C.LAYER_BOUNDS_CM[layer]
            parts.append(f"<h3>{layer} ({lo:g}–{hi:g} cm)</h3>" + _table(t))
    parts.append(
        "<h3>For orientation: the paper (real ISMN data, 5-fold CV, median over cells)</h3>"
        + _table(PAPER_NUMBERS)
        + "<p class='small'>O &amp; Orth (2021), from the data of their Figs. 4–5 (docs/design.md, Cross-validation). On the synthetic Earth "
        "these numbers are not expected to be matched; they show what a run on real data should approach.</p>"
    )
    return parts


def _figure_section(inp: ReportInputs) -> list[str]:
    """The figures, embedded, in the order of `inp.figures`."""
    if not inp.figures:
        return []
    return ["<h2>Figures</h2>"] + [_img(p, cap) for p, cap in inp.figures.values()]


def _truth_section(inp: ReportInputs) -> list[str]:
    """The synthetic Earth's skill against the truth: verdicts, tables per layer, figures."""
    tr = inp.truth
    if tr is None:
        return []
    parts = [
        f"<h2>Synthetic Earth: skill against the known truth ({_esc(tr.scope)})</h2>",
        f"<p>Period {_esc(tr.period[0])} to {_esc(tr.period[1])}; cells per layer: "
        + ", ".join(f"{_esc(k)}: {v}" for k, v in tr.n_cells.items())
        + ". The truth is the soil model itself, not rescaled to ERA5 as the targets are, so NRMSE and bias include "
        "that rescaling; r and anomaly r do not.</p>",
    ]
    for v in tr.verdicts:
        cls = "beats" if v.get("beats") else "notbeats"
        parts.append(
            f"<p class='verdict {cls}' data-truth-layer='{_esc(v['layer'])}'>Against the truth: {_esc(v['sentence'])}</p>"
        )
    for layer in C.LAYERS:
        t = metric_table(tr.summary, layer, inp.quantiles, None)
        if not t.empty:
            parts.append(f"<h3>{layer} against the truth</h3>" + _table(t))
    return parts + [_img(p, cap) for p, cap in inp.truth_figures.values()]


def _group_section(inp: ReportInputs) -> list[str]:
    """Median anomaly r and NRMSE per continent and climate class, one folded table each."""
    if not inp.group_summaries:
        return []
    parts = ["<h2>By continent and climate class (median anomaly r and NRMSE, cells in brackets)</h2>"]
    for by, gs in inp.group_summaries.items():
        datasets = list(dict.fromkeys([inp.ours, inp.baseline] + list(gs["dataset"].unique())))
        for metric in ("anomaly_r", "nrmse"):
            t = _group_table(gs, metric, datasets)
            if not t.empty:
                parts.append(
                    f"<details><summary>{_esc(METRICS[metric].label)} by {_esc(by)}</summary>{_table(t)}</details>"
                )
    return parts


def _notes_and_files(inp: ReportInputs, path: Path) -> list[str]:
    """The notes, and the output files linked relative to the report at `path`."""
    parts = []
    if inp.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in inp.notes) + "</ul>")
    if inp.files:
        parts.append("<h2>Files</h2><ul>")
        for label, p in inp.files.items():
            try:
                rel = Path(p).resolve().relative_to(path.parent.resolve())
            except ValueError:
                rel = Path(p)
            parts.append(f"<li><a href='{_esc(rel.as_posix())}'>{_esc(rel.as_posix())}</a>: {_esc(label)}</li>")
        parts.append("</ul>")
    return parts
