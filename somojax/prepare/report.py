"""The preparation report: what was read, kept and dropped at each step, and why.

`Ledger` records the target builder's steps: per step the values (sub-daily values, then daily
values), sensors and stations that went in, were kept and were dropped, with the reason of each
drop. `write_report` writes the whole report as JSON (`prepare_report.json`, for programs) and
Markdown (`prepare_report.md`, for people).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np


def _station(key: Hashable) -> Hashable:
    """Sensor keys are (network, station, ...): the station is the first two parts."""
    return tuple(key[:2]) if isinstance(key, tuple) else key


@dataclass
class Ledger:
    """Counts of the target builder, step by step (nothing dropped without a reason)."""

    steps: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # one entry per dropped sensor / series

    def step(
        self,
        name: str,
        unit: str,
        values_in: int,
        values_kept: int,
        value_reasons: Mapping[str, int],
        before: Iterable[Hashable],
        after: Iterable[Hashable],
        reasons: Mapping[Hashable, str] | None = None,
        labels: Mapping[Hashable, str] | None = None,
        what: str = "sensors",
    ) -> dict:
        """Records one step.

        Args:
          name: the step, e.g. "quality flag".
          unit: what `values_*` count ("values" sub-daily, "days" daily values).
          values_in, values_kept: totals before and after the step.
          value_reasons: dropped values per reason (must add up to in − kept).
          before, after: sensor (or series) keys alive before and after the step.
          reasons: why each dropped key was dropped (keys in before − after): a string, or a
            (category, detail) pair — categories are counted, details listed.
          labels: readable name of each key, for the list of dropped items.
          what: "sensors" or "series" (station-layer series after layer selection).
        """
        before, after = set(before), set(after)
        why, dropped = _dropped_keys(name, what, before - after, dict(reasons or {}), labels or {})
        self.dropped += dropped
        values_dropped = _values_dropped(values_in, values_kept, value_reasons)
        rec = {
            "step": name,
            "what": what,
            "unit": unit,
            "values_in": int(values_in),
            "values_kept": int(values_kept),
            "values_dropped": values_dropped,
            what + "_in": len(before),
            what + "_kept": len(after),
            what + "_dropped": dict(why),
        }
        if what in ("sensors", "series"):
            st_before = {_station(k) for k in before}
            st_after = {_station(k) for k in after}
            rec.update(
                stations_in=len(st_before), stations_kept=len(st_after), stations_dropped=len(st_before - st_after)
            )
        self.steps.append(rec)
        return rec


def _dropped_keys(
    step: str, what: str, gone: set[Hashable], reasons: Mapping[Hashable, Any], labels: Mapping[Hashable, str]
) -> tuple[Counter, list[dict]]:
    """The keys dropped at a step, with their reasons (see `Ledger.step`).

    Returns (the count of each reason category, one entry {step, what, id, reason} per dropped
    key in key order, `reason` the detail); a key without a reason had "no values left".
    """

    # a reason is a string, or (category for the counts, detail for the list of dropped items)
    def split(k):
        r = reasons.get(k, "no values left")
        return (r[0], r[1]) if isinstance(r, tuple) else (r, r)

    why = Counter(split(k)[0] for k in gone)
    entries = [
        {
            "step": step,
            "what": {"series": "series"}.get(what, what.rstrip("s")),
            "id": labels.get(k, str(k)),
            "reason": split(k)[1],
        }
        for k in sorted(gone, key=str)
    ]
    return why, entries


def _values_dropped(values_in: int, values_kept: int, value_reasons: Mapping[str, int]) -> dict[str, int]:
    """The nonzero dropped values per reason; a shortfall against in − kept is recorded as
    "other (bookkeeping difference)", so that every value has a reason."""
    vr = {k: int(v) for k, v in value_reasons.items() if v}
    accounted = sum(vr.values())
    if accounted != values_in - values_kept:
        vr["other (bookkeeping difference)"] = values_in - values_kept - accounted
    return vr


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (Path, os.PathLike)):
        return str(x)
    return x


def _fmt_reasons(d: Mapping[str, int], limit: int = 6) -> str:
    if not d:
        return "–"
    items = sorted(d.items(), key=lambda kv: -kv[1])
    s = "; ".join(f"{k}: {v:,}" for k, v in items[:limit])
    if len(items) > limit:
        s += f"; … {len(items) - limit} more"
    return s


def markdown(report: Mapping[str, Any]) -> str:
    """A readable summary of the report."""
    out = ["# somojax preparation report", ""]
    out += _run_markdown(report.get("run", {}))
    out += _ismn_markdown(report.get("ismn", {}))
    tg = report.get("targets", {})
    out += _steps_markdown(tg.get("steps", []))
    if tg.get("cells"):
        out += ["## Target cells", "", "| layer | cells | series | days with a value |", "|---|---:|---:|---:|"]
        for layer, c in tg["cells"].items():
            out.append(f"| {layer} | {c['cells']:,} | {c['series']:,} | {c['values']:,} |")
        out.append("")
    out += _problems_markdown(report)
    out += _dropped_markdown(tg.get("dropped", []))
    for sec in ("forcings", "statics", "normalization", "checks"):
        if sec in report:
            out += [
                f"## {sec.capitalize()}",
                "",
                "```json",
                json.dumps(_jsonable(report[sec]), indent=1)[:4000],
                "```",
                "",
            ]
    return "\n".join(out)


def _run_markdown(meta: Mapping[str, Any]) -> list[str]:
    """The run's lines (name, source, stores, time) of the report's `run` section; none without."""
    if not meta:
        return []
    return [
        f"- run: `{meta.get('name')}`, source `{meta.get('source')}`, written {meta.get('finished')}",
        f"- stores: `{meta.get('store_dir')}`",
        f"- time: {meta.get('seconds', 0):.1f} s",
        "",
    ]


def _ismn_markdown(ismn: Mapping[str, Any]) -> list[str]:
    """The ISMN archive section's lines (files read, skipped with the first 20 reasons, files of
    other variables) from the report's `ismn` section; none without."""
    if not ismn:
        return []
    out = ["## ISMN archive", ""]
    out.append(f"- archive: `{ismn.get('archive')}`")
    out.append(
        f"- soil-moisture files read: {ismn.get('files', 0):,}; unreadable files skipped: {len(ismn.get('skipped_files', []))}"
    )
    if ismn.get("other_variables"):
        out.append(f"- files of other variables not used: {ismn['other_variables']}")
    for s in ismn.get("skipped_files", [])[:20]:
        out.append(f"  - skipped `{s['file']}`: {s['reason']}")
    out.append("")
    return out


def _steps_markdown(steps: Iterable[Mapping[str, Any]]) -> list[str]:
    """The table of the target builder's steps (`Ledger.steps`), one row a step; none without."""
    if not steps:
        return []
    out = [
        "## Targets, step by step",
        "",
        "| step | unit | in | kept | dropped (reason: count) | sensors / series / cells in → kept | dropped (reason: count) | stations in → kept |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for s in steps:
        what = s.get("what", "sensors")
        stations = f"{s['stations_in']:,} → {s['stations_kept']:,}" if "stations_in" in s else "–"
        out.append(
            f"| {s['step']} | {s['unit']} | {s['values_in']:,} | {s['values_kept']:,} | {_fmt_reasons(s['values_dropped'])} | "
            f"{s[what + '_in']:,} → {s[what + '_kept']:,} {what} | {_fmt_reasons(s[what + '_dropped'])} | {stations} |"
        )
    out.append("")
    return out


def _dropped_markdown(dropped: Sequence[Mapping[str, Any]], limit: int = 40) -> list[str]:
    """The list of the first `limit` dropped sensors and series (`Ledger.dropped`); none without."""
    if not dropped:
        return []
    out = [f"## Dropped sensors and series ({len(dropped):,}; all in the JSON report)", ""]
    for d in dropped[:limit]:
        out.append(f"- {d['step']}: {d['what']} `{d['id']}`: {d['reason']}")
    if len(dropped) > limit:
        out.append(f"- … {len(dropped) - limit:,} more in prepare_report.json")
    out.append("")
    return out


def _problems_markdown(report: Mapping[str, Any], limit: int = 20) -> list[str]:
    """Values outside the physical bounds (ISMN files, ERA5 and static variables) and problems
    met while reading ISMN values (unparseable lines, unreadable files, duplicated times)."""
    tg = report.get("targets", {})
    out = []
    screens = [s for kind in ("era5", "statics") for s in report.get("plausibility", {}).get(kind, [])]
    flagged = [s for s in screens if s.get("dropped") or s.get("set_to_bound") or s.get("dropped off land")]
    if screens:
        out += [
            "## Physical bounds of ERA5 and the static maps",
            "",
            f"{len(screens):,} file variables checked; {len(flagged):,} with values outside their bounds (docs/reliability.md).",
            "",
        ]
        if flagged:
            out += [
                "| file | variable | bounds | values | dropped (reason: count) | rounding noise set to the bound | min / mean / max |",
                "|---|---|---|---:|---|---:|---|",
            ]
            for s in flagged[:limit]:
                dropped = dict(
                    s.get("dropped", {}), **({"off land": s["dropped off land"]} if s.get("dropped off land") else {})
                )
                out.append(
                    f"| `{s['file']}` | {s['variable']} | {s['bounds']} | {s['values']:,} | {_fmt_reasons(dropped)} | "
                    f"{s.get('set_to_bound', 0):,} | {s['min']:.4g} / {s['mean']:.4g} / {s['max']:.4g} |"
                )
        out.append("")
    bad = tg.get("implausible_values", [])
    if bad:
        out += [f"## ISMN files with values outside the physical bounds ({len(bad):,})", ""]
        for r in bad[:limit]:
            whole = f" — {r['whole file dropped']}" if "whole file dropped" in r else ""
            out.append(
                f"- `{r['file']}`: {_fmt_reasons(r['dropped'])} of {r['values']:,} values (min {r['min']:.4g}, max {r['max']:.4g}){whole}"
            )
        out.append("")
    problems = tg.get("file_problems", [])
    if problems:
        out += [f"## Problems met while reading ISMN values ({len(problems):,})", ""]
        out += [f"- `{p['file']}`: {p['reason']}" for p in problems[:limit]]
        if len(problems) > limit:
            out.append(f"- … {len(problems) - limit:,} more in prepare_report.json")
        out.append("")
    return out


def _merged(steps: Iterable[Mapping[str, Any]], key: str) -> Counter:
    total: Counter = Counter()
    for s in steps:
        total.update(s.get(key, {}))
    return total


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The console summary of a preparation: ISMN files, sensors, stations and cells kept and
    dropped with the top reasons, and the values outside the physical bounds."""
    ismn, tg = report.get("ismn", {}), report.get("targets", {})
    steps = tg.get("steps", [])
    by = {s["step"]: s for s in steps}
    if not by:
        return []
    read = by.get("read", {}).get("values_dropped", {})
    region = by.get("region", {})
    garbage_files = sum(1 for p in tg.get("file_problems", []) if "do not parse" in p["reason"])
    lines = [
        f"ISMN files: {ismn.get('files', 0) + len(ismn.get('skipped_files', [])):,} of soil moisture, "
        f"{len(ismn.get('skipped_files', [])):,} unreadable (skipped), {region.get('values_in', 0) - region.get('values_kept', 0):,} outside the region, "
        f"{region.get('values_kept', 0):,} read ({read.get('unparseable line', 0):,} unparseable lines skipped in {garbage_files:,} files); "
        f"{sum(ismn.get('other_variables', {}).values()):,} files of other variables"
    ]
    sensor_steps = [s for s in steps if s.get("what") == "sensors"]
    first, last = sensor_steps[0], sensor_steps[-1]
    top = _fmt_reasons(_merged(sensor_steps, "sensors_dropped"), 3)
    lines.append(f"sensors: {first['sensors_in']:,} -> {last['sensors_kept']:,} kept (dropped: {top})")
    series = [s for s in steps if s.get("what") == "series"]
    if series:
        lines.append(
            f"series: {series[0]['series_in']:,} -> {series[-1]['series_kept']:,} kept (dropped: {_fmt_reasons(_merged(series, 'series_dropped'), 3)})"
        )
    lines.append(f"stations: {first['stations_in']:,} -> {tg.get('stations_kept', '?')} with targets")
    lines.append(_bounds_line(report))
    cells = tg.get("cells", {})
    if cells:
        per_layer = ", ".join(f"{k}: {v['cells']}" for k, v in cells.items())
        lines.append(f"target cells: {by.get('inputs complete', {}).get('cells_kept', '?')} ({per_layer})")
    return lines


def _bounds_line(report: Mapping[str, Any]) -> str:
    tg, pl = report.get("targets", {}), report.get("plausibility", {})
    ismn = sum(sum(s["values_dropped"].values()) for s in tg.get("steps", []) if s["step"] == "physical bounds")
    era5 = sum(sum(s.get("dropped", {}).values()) for s in pl.get("era5", []))
    noise = sum(s.get("set_to_bound", 0) for s in pl.get("era5", []))
    stat = sum(sum(s.get("dropped", {}).values()) + s.get("dropped off land", 0) for s in pl.get("statics", []))
    return (
        f"outside the physical bounds: ISMN {ismn:,} values in {len(tg.get('implausible_values', [])):,} files; "
        f"ERA5 {era5:,} values dropped, {noise:,} rounding-noise values set to the bound; statics {stat:,} values"
    )


def write_report(report: Mapping[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Writes the report as JSON and, next to it, as Markdown (same stem, `.md`); atomically."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path = json_path.with_suffix(".md")
    for path, text in ((json_path, json.dumps(_jsonable(report), indent=1)), (md_path, markdown(report))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return json_path, md_path
