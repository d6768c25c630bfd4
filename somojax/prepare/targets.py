"""Targets from ISMN: every step of docs/design.md#targets, each counted in the report.

1. region: stations outside the configured region are not used (their files are not read);
   read: a sensor's files are concatenated in time (a duplicated time stamp keeps the first value;
   a line that does not parse is counted and skipped).
2. quality flag: keep a value only if its ISMN flag is allowed (`data.quality_flags`, default
   `G`). Combined flags such as `D03,D05` are allowed only if every part is.
   physical bounds: values outside 0..0.8 m3 m-3 are dropped whatever their flag (`bounds.py`);
   a file mostly outside loses all its values.
3. daily mean: the mean of a UTC day's kept values, only for days with at least
   `data.min_values_per_day` values.
4. target period: days outside `data.target_start..target_end` are not used.
5. sensor length: a sensor with fewer than `data.min_days_per_sensor` daily values is dropped.
6. layer selection: the depth of a sensor is the middle of its depth range
   ((depth_from + depth_to)/2; 0–0.19 m -> 9.5 cm). Layers are L1 [0, 10] cm, L2 (10, 30] cm,
   L3 (30, 50] cm (a sensor exactly on a boundary belongs to the upper layer). Per station and
   layer, the sensor at the layer's mid-depth (5/20/40 cm) is taken, else the one closest to it
   within the layer; ties go to the sensor with more daily values, then to the name.
7. rescaling: x' = μ_E + (x − μ_x)·σ_E/σ_x with the mean and (population) standard deviation of
   the series and of ERA5 soil moisture of that layer in the station's cell over the days both
   have. Fewer than `min_overlap_days` common days, or a constant series, skips the series.
8. gridding: series of one layer in one 0.25° cell are averaged day by day (mean of the series
   that have the day); `n_series` and `provenance` record what went into each cell.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax import grid
from somojax.config import DataConfig
from somojax.prepare.bounds import ISMN_SM, WHOLE_VARIABLE_FRACTION, Bound, classify, screen
from somojax.prepare.ismn import IsmnScan, SensorFile
from somojax.prepare.report import Ledger
from somojax.stores import cf_attrs, grid_coord_attrs


# ----------------------------------------------------------------------------------------
# single steps (pure functions; each has a hand-computed unit test)
# ----------------------------------------------------------------------------------------
def flags_allowed(flags: Sequence[str] | np.ndarray, allowed: Iterable[str]) -> np.ndarray:
    """True where every comma-separated part of the flag is in `allowed` ("D03,D05" needs both)."""
    allowed = {a.strip() for a in allowed}
    codes, uniq = pd.factorize(np.asarray(flags, dtype=object), use_na_sentinel=False)
    ok = np.array(
        [isinstance(u, str) and u.strip() != "" and all(p.strip() in allowed for p in u.split(",")) for u in uniq], bool
    )
    return ok[codes] if len(uniq) else np.zeros(0, bool)


def quality_filter(values: pd.DataFrame, allowed: Iterable[str]) -> tuple[pd.DataFrame, Counter]:
    """Keeps values with an allowed ISMN flag and a finite value.

    Returns:
      (kept values, dropped values per reason: "flag <F>" per flag, "not a number").
    """
    ok = flags_allowed(values["ismn_flag"].to_numpy(), allowed)
    reasons = Counter({f"flag {k}": int(v) for k, v in values.loc[~ok, "ismn_flag"].value_counts().items()})
    kept = values[ok]
    finite = np.isfinite(kept["sm"].to_numpy())
    if not finite.all():
        reasons["not a number"] = int((~finite).sum())
        kept = kept[finite]
    return kept, reasons


def daily_means(values: pd.DataFrame, min_values: int) -> tuple[pd.Series, int]:
    """Mean per UTC day of days with at least `min_values` values.

    Returns:
      (daily means indexed by day [datetime64, midnight], number of values dropped on days
      with too few values).
    """
    if values.empty:
        return pd.Series([], index=pd.DatetimeIndex([], name="time"), dtype=np.float64), 0
    day = values.index.floor("D")
    g = values["sm"].groupby(day)
    n = g.size()
    m = g.mean()
    keep = n >= min_values
    out = m[keep].astype(np.float64)
    out.index = pd.DatetimeIndex(out.index, name="time")
    return out, int(n[~keep].sum())


def clip_period(daily: pd.Series, start: str, end: str) -> tuple[pd.Series, int]:
    """Days within start..end (inclusive); returns (kept, number dropped)."""
    inside = (daily.index >= pd.Timestamp(start)) & (daily.index <= pd.Timestamp(end))
    return daily[inside], int((~inside).sum())


def sensor_depth_cm(depth_from_m: float, depth_to_m: float) -> float:
    """Depth of a sensor [cm]: the middle of its depth range (a point sensor: its depth)."""
    return 50.0 * (float(depth_from_m) + float(depth_to_m))


def layer_of(depth_cm: float) -> str | None:
    """The target layer holding a sensor depth: L1 [0, 10], L2 (10, 30], L3 (30, 50] cm."""
    for layer in C.LAYERS:
        top, bottom = C.LAYER_BOUNDS_CM[layer]
        if (top < depth_cm or (top == 0.0 and depth_cm >= 0.0)) and depth_cm <= bottom + 1e-9:
            return layer
    return None


def rescale(
    x: pd.Series, ref: pd.Series, min_overlap: int = DataConfig.min_overlap_days
) -> tuple[pd.Series | None, str | None, dict]:
    """Rescales a daily series to the mean and standard deviation of a reference series.

    x' = μ_E + (x − μ_x)·σ_E/σ_x, with μ, σ (ddof=0) of both over the days both have.

    Returns:
      (rescaled series or None, reason it was skipped or None, stats dict).
    """
    both = pd.concat([x.rename("x"), ref.rename("e")], axis=1, join="inner").dropna()
    n = len(both)
    stats = {"overlap_days": n}
    if n == 0:
        return None, "no overlap with ERA5 soil moisture of the cell (no common day)", stats
    if n < min_overlap:
        return None, f"only {n} day(s) overlap with ERA5 soil moisture of the cell (need {min_overlap})", stats
    mx, sx = float(both["x"].mean()), float(both["x"].std(ddof=0))
    me, se = float(both["e"].mean()), float(both["e"].std(ddof=0))
    stats.update(mu_x=mx, sigma_x=sx, mu_era5=me, sigma_era5=se)
    if not sx > 1e-9:
        return None, f"constant series (σ = {sx:.3g} over {n} overlapping days)", stats
    if not se > 1e-9:
        return None, f"ERA5 soil moisture of the cell is constant (σ = {se:.3g}) over the overlap", stats
    return me + (x - mx) * (se / sx), None, stats


def _category(reason: str) -> str:
    """The countable part of a rescaling skip reason (without the numbers)."""
    if reason.startswith("only "):
        return "too few days overlap with ERA5 soil moisture of the cell"
    return reason.split(" (")[0]


def select_layers(candidates: Sequence["SensorSeries"]) -> tuple[dict[tuple, "SensorSeries"], dict[tuple, str]]:
    """Picks per (network, station, layer) the sensor closest to the layer's mid-depth.

    Returns:
      ({(network, station, layer): chosen sensor}, {sensor key: reason} for sensors not chosen
      for any layer).
    """
    by_slot: dict[tuple, list[SensorSeries]] = {}
    reasons: dict[tuple, str] = {}
    for s in candidates:
        layer = layer_of(s.depth_cm)
        if layer is None:
            reasons[s.key] = (
                "deeper than the deepest layer (50 cm)",
                f"depth {s.depth_cm:g} cm is below the deepest layer (50 cm)",
            )
            continue
        by_slot.setdefault((s.network, s.station, layer), []).append(s)
    chosen = {}
    for slot, group in by_slot.items():
        mid = C.LAYER_MID_CM[slot[2]]
        group = sorted(group, key=lambda s: (round(abs(s.depth_cm - mid), 6), -len(s.daily), s.label))
        chosen[slot] = group[0]
        for s in group[1:]:
            reasons[s.key] = (
                f"not selected for {slot[2]} (another sensor of the station is closer to {mid:g} cm or has more days)",
                f"not selected for {slot[2]}: {group[0].label} at {group[0].depth_cm:g} cm is closer to the mid-depth "
                f"{mid:g} cm" + (" or has more days" if abs(group[0].depth_cm - s.depth_cm) < 1e-9 else ""),
            )
    return chosen, reasons


# ----------------------------------------------------------------------------------------
# the builder
# ----------------------------------------------------------------------------------------
@dataclass
class SensorSeries:
    """A sensor's daily series and what we know about it."""

    key: tuple
    label: str
    network: str
    station: str
    latitude: float
    longitude: float
    depth_from: float
    depth_to: float
    sensor: str
    daily: pd.Series

    @property
    def depth_cm(self) -> float:
        return sensor_depth_cm(self.depth_from, self.depth_to)

    @property
    def cell(self) -> int:
        return int(grid.cell_id(self.latitude, self.longitude))


@dataclass(frozen=True)
class TargetRules:
    """The target-preparation settings (from `cfg.data`; the defaults are the config's own)."""

    start: str
    end: str
    lat_range: tuple[float, float]
    lon_range: tuple[float, float]
    quality_flags: tuple[str, ...] = DataConfig.quality_flags
    min_values_per_day: int = DataConfig.min_values_per_day
    min_days_per_sensor: int = DataConfig.min_days_per_sensor
    min_overlap_days: int = DataConfig.min_overlap_days

    @classmethod
    def from_config(cls, d: DataConfig) -> "TargetRules":
        """The rules of a config's `data` section."""
        return cls(
            d.target_start,
            d.target_end,
            tuple(d.lat_range),
            tuple(d.lon_range),
            tuple(d.quality_flags),
            d.min_values_per_day,
            d.min_days_per_sensor,
            d.min_overlap_days,
        )


def _in_region(lat: float, lon: float, rules: TargetRules) -> bool:
    lon = ((lon + 180.0) % 360.0) - 180.0
    return rules.lat_range[0] <= lat < rules.lat_range[1] and rules.lon_range[0] <= lon < rules.lon_range[1]


@dataclass
class SensorOutcome:
    """What steps 1–5 did to one sensor (computed in a worker process when reading in parallel)."""

    key: tuple
    label: str
    meta: SensorFile
    problems: list
    stage: str  # the step that dropped the sensor, or "kept"
    reason: object = None  # str or (category, detail)
    n_lines: int = 0  # value lines in the files
    n_garbage: int = 0  # lines that did not parse
    n_dup: int = 0  # duplicated time stamps dropped
    n_flag: int = 0  # values with an allowed flag
    flag_reasons: Counter | None = None
    n_plausible: int = 0  # values inside the physical bounds
    bound_reasons: Counter | None = None
    implausible: list | None = None  # per file with values outside the bounds: counts and min/mean/max
    few: int = 0  # values on days with too few values
    n_days: int = 0  # daily values
    n_out: int = 0  # days outside the target period
    daily: pd.Series | None = None  # the daily series in the target period (stage != "read")


def physical_filter(
    values: pd.DataFrame, files: Sequence[str], bound: Bound = ISMN_SM
) -> tuple[pd.DataFrame, Counter, list[dict]]:
    """Drops values outside the physical bounds of soil moisture (`bounds.ISMN_SM`).

    A file with more than `WHOLE_VARIABLE_FRACTION["ismn"]` of its values outside loses all of
    them: that is a wrong unit or a fill-value series, and its in-range remainder is no data.

    Args:
      values: columns `sm` and `file` (index into `files`).
      files: where each file is, for the report.

    Returns:
      (kept values, dropped values per reason, one record per file with values outside: the
      counts per reason and min/mean/max of its values).
    """
    x = values["sm"].to_numpy(np.float64)
    which = values["file"].to_numpy()
    reasons, _ = classify(x, bound)
    bad = np.logical_or.reduce(list(reasons.values()))
    keep = ~bad
    counts: Counter = Counter()
    records = []
    for i in np.unique(which[bad]):
        mine = which == i
        s = screen(x[mine], bound, files[int(i)], "soil moisture")
        counts.update({k: v for k, v in s.dropped.items() if v})
        rec = s.report()
        if s.fraction > WHOLE_VARIABLE_FRACTION["ismn"]:
            rest = mine & ~bad
            keep &= ~mine
            counts[
                f"rest of a file with > {WHOLE_VARIABLE_FRACTION['ismn']:.0%} of its values outside {bound.span}"
            ] += int(rest.sum())
            rec["whole file dropped"] = f"{s.fraction:.0%} of its values lie outside {bound.span}: likely {bound.fix}"
        records.append(rec)
    return values[keep], counts, records


def process_sensor(members: list[SensorFile], rules: TargetRules) -> SensorOutcome:
    """Steps read, quality flag, physical bounds, daily mean, target period and sensor length
    for one sensor."""
    from somojax.prepare.ismn import read_sensor

    sf = members[0]
    sv = read_sensor(members)
    out = SensorOutcome(sf.key, sf.label, sf, sv.problems, "kept")
    out.n_lines, out.n_garbage, out.n_dup = sv.lines, sv.unparseable, sv.duplicates
    if sv.values is None:
        out.stage, out.reason = (
            "read",
            ("no readable values", "no readable values (" + "; ".join(p["reason"] for p in sv.problems)[:300] + ")"),
        )
        return out
    kept, why = quality_filter(sv.values, rules.quality_flags)
    out.flag_reasons, out.n_flag = why, len(kept)
    if kept.empty:
        out.stage, out.reason = "flag", f"no value with an allowed flag {list(rules.quality_flags)}"
        return out
    kept, out.bound_reasons, out.implausible = physical_filter(kept, [m.where for m in members])
    out.n_plausible = len(kept)
    if kept.empty:
        out.stage, out.reason = "bounds", f"no value inside the physical bounds {ISMN_SM.span}"
        return out
    daily, out.few = daily_means(kept, rules.min_values_per_day)
    out.n_days = len(daily)
    if daily.empty:
        out.stage, out.reason = "daily", f"no day with ≥ {rules.min_values_per_day} values"
        return out
    daily, out.n_out = clip_period(daily, rules.start, rules.end)
    out.daily = daily
    if daily.empty:
        out.stage, out.reason = "period", f"no day in the target period {rules.start}..{rules.end}"
        return out
    if len(daily) < rules.min_days_per_sensor:
        out.stage = "length"
        out.reason = (
            f"fewer than {rules.min_days_per_sensor} daily values",
            f"{len(daily)} daily values < {rules.min_days_per_sensor}",
        )
    return out


def _process_chunk(args: tuple[list[list[SensorFile]], TargetRules]) -> list[SensorOutcome]:
    groups, rules = args
    return [process_sensor(g, rules) for g in groups]


def _outcomes(groups: list[list[SensorFile]], rules: TargetRules, workers: int) -> Iterable[SensorOutcome]:
    if workers <= 1 or len(groups) < 2:
        for g in groups:
            yield process_sensor(g, rules)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from somojax.utils.logging import get_logger

    # spawn, not fork: the calling process may hold JAX/XLA threads (somojax run)
    size = max(1, min(32, len(groups) // (4 * workers)))
    batches = [(groups[i : i + size], rules) for i in range(0, len(groups), size)]
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            results = [o for res in ex.map(_process_chunk, batches) for o in res]
    except BrokenProcessPool as e:  # e.g. a calling script without `if __name__ == "__main__":`
        get_logger("prepare").warning("parallel ISMN reading failed (%s); reading in this process instead", e)
        results = [process_sensor(g, rules) for g in groups]
    yield from results


_STAGES = ("read", "flag", "bounds", "daily", "period", "length", "kept")


@dataclass
class _Tally:
    """The sensors' outcomes summed per step, for the ledger."""

    alive: dict[str, list[tuple]] = field(default_factory=lambda: {k: [] for k in _STAGES})  # passed each step
    reasons: dict[str, dict[tuple, object]] = field(default_factory=lambda: {k: {} for k in _STAGES})
    tot: Counter = field(default_factory=Counter)
    flag_reasons: Counter = field(default_factory=Counter)
    bound_reasons: Counter = field(default_factory=Counter)

    def add(self, o: SensorOutcome) -> None:
        """Counts one sensor's outcome `o` in."""
        if o.stage != "kept":
            self.reasons[o.stage][o.key] = o.reason
        passed = _STAGES[: _STAGES.index(o.stage)] if o.stage != "kept" else _STAGES
        for st in passed:
            self.alive[st].append(o.key)
        tot = self.tot
        tot["lines"] += o.n_lines
        tot["garbage"] += o.n_garbage
        tot["dup"] += o.n_dup
        tot["flag"] += o.n_flag
        self.flag_reasons.update(o.flag_reasons or {})
        tot["plausible"] += o.n_plausible
        self.bound_reasons.update(o.bound_reasons or {})
        tot["few"] += o.few
        tot["days"] += o.n_days
        tot["out"] += o.n_out
        if o.stage in ("length", "kept"):
            tot["in_period"] += len(o.daily)
        if o.stage == "length":
            tot["short"] += len(o.daily)


def _region_step(groups: list[list[SensorFile]], rules: TargetRules, ledger: Ledger, labels: dict) -> list:
    """Records the ledger step "region" over the sensors `groups` (one list of files per sensor);
    returns the groups whose station lies inside the region."""
    all_keys = [g[0].key for g in groups]
    inside = [g for g in groups if _in_region(g[0].latitude, g[0].longitude, rules)]
    region_reasons = {
        g[0].key: (
            "station outside the region",
            f"station at ({g[0].latitude:g}, {g[0].longitude:g}) is outside the region {rules.lat_range}×{rules.lon_range}",
        )
        for g in groups
        if not _in_region(g[0].latitude, g[0].longitude, rules)
    }
    n_files = sum(len(g) for g in groups)
    ledger.step(
        "region",
        "files",
        n_files,
        sum(len(g) for g in inside),
        {"station outside the region (not read)": n_files - sum(len(g) for g in inside)},
        all_keys,
        [g[0].key for g in inside],
        region_reasons,
        labels,
    )
    return inside


def _sensor_series(o: SensorOutcome) -> SensorSeries:
    """The daily series of a kept sensor's outcome `o`, with its metadata."""
    m = o.meta
    return SensorSeries(
        o.key, o.label, m.network, m.station, m.latitude, m.longitude, m.depth_from, m.depth_to, m.sensor, o.daily
    )


def _value_steps(ledger: Ledger, tally: _Tally, region_keys: list, labels: dict) -> None:
    """Records the ledger steps counted in values: read, quality flag, physical bounds."""
    tot, alive, reasons = tally.tot, tally.alive, tally.reasons
    n_read = tot["lines"] - tot["garbage"] - tot["dup"]
    read_reasons = {"unparseable line": tot["garbage"], "duplicated time stamp": tot["dup"]}
    ledger.step(
        "read", "values", tot["lines"], n_read, read_reasons, region_keys, alive["read"], reasons["read"], labels
    )
    ledger.step(
        "quality flag",
        "values",
        n_read,
        tot["flag"],
        tally.flag_reasons,
        alive["read"],
        alive["flag"],
        reasons["flag"],
        labels,
    )
    ledger.step(
        "physical bounds",
        "values",
        tot["flag"],
        tot["plausible"],
        tally.bound_reasons,
        alive["flag"],
        alive["bounds"],
        reasons["bounds"],
        labels,
    )


def _day_steps(ledger: Ledger, tally: _Tally, rules: TargetRules, labels: dict) -> None:
    """Records the ledger steps from the daily means on: daily mean, target period, sensor length."""
    tot, alive, reasons = tally.tot, tally.alive, tally.reasons
    ledger.step(
        "daily mean",
        "values",
        tot["plausible"],
        tot["plausible"] - tot["few"],
        {f"on days with < {rules.min_values_per_day} values": tot["few"]},
        alive["bounds"],
        alive["daily"],
        reasons["daily"],
        labels,
    )
    ledger.step(
        "target period",
        "days",
        tot["days"],
        tot["days"] - tot["out"],
        {"outside the target period": tot["out"]},
        alive["daily"],
        alive["period"],
        reasons["period"],
        labels,
    )
    ledger.step(
        "sensor length",
        "days",
        tot["in_period"],
        tot["in_period"] - tot["short"],
        {f"sensors with < {rules.min_days_per_sensor} days": tot["short"]},
        alive["period"],
        alive["length"],
        reasons["length"],
        labels,
    )


def daily_series(
    scan: IsmnScan, rules: TargetRules, ledger: Ledger, workers: int = 1
) -> tuple[list[SensorSeries], list[dict], list[dict]]:
    """Steps region, read, quality flag, physical bounds, daily mean, target period, sensor length.

    Args:
      workers: processes reading and reducing sensor files in parallel (1: in this process).

    Returns:
      (the surviving sensors' daily series, file problems met while reading values (unreadable
      files, unparseable lines, duplicated time stamps), one record per file with values outside
      the physical bounds).
    """
    from somojax.prepare.ismn import group_sensors

    groups = group_sensors(scan)
    labels = {g[0].key: g[0].label for g in groups}
    inside = _region_step(groups, rules, ledger, labels)
    tally = _Tally()
    problems: list[dict] = []
    implausible: list[dict] = []
    out: list[SensorSeries] = []
    for o in _outcomes(inside, rules, workers):
        problems += o.problems
        implausible += o.implausible or []
        tally.add(o)
        if o.stage == "kept":
            out.append(_sensor_series(o))
    _value_steps(ledger, tally, [g[0].key for g in inside], labels)
    _day_steps(ledger, tally, rules, labels)
    return out, problems, implausible


@dataclass
class Series:
    """A selected (station, layer) series on its way to a cell."""

    key: tuple  # (network, station, layer)
    layer: str
    sensor: SensorSeries
    values: pd.Series

    @property
    def label(self) -> str:
        return f"{self.sensor.label} ({self.layer})"


def build_targets(
    scan: IsmnScan,
    era5_sm: Callable[[np.ndarray], xr.DataArray],
    rules: TargetRules,
    ledger: Ledger | None = None,
    workers: int = 1,
) -> tuple[xr.Dataset, Ledger, dict]:
    """All target steps: ISMN scan -> the targets store's dataset.

    Args:
      scan: `ismn.scan_ismn` output.
      era5_sm: function of global cell ids [n] returning ERA5 soil moisture on the target layers
        as (layer, cell, time) over (at least) the target period, for the rescaling.
      rules: the settings.
      workers: processes for reading the ISMN files (steps 1–5).

    Returns:
      (dataset with `sm` (layer, cell, time), `n_series`, `provenance`; the ledger; info).
    """
    ledger = ledger or Ledger()
    sensors, problems, implausible = daily_series(scan, rules, ledger, workers)
    series = _selected_series(sensors, ledger)
    kept_series, rescale_stats = _rescaled_series(series, _era5_reference(era5_sm, series, rules), rules, ledger)
    ds = _gridded(
        kept_series, pd.date_range(rules.start, rules.end, freq="D"), {s.key: s.label for s in series}, ledger
    )
    info = {
        "file_problems": problems,
        "implausible_values": implausible,
        "rescaling": rescale_stats,
        "cell_days_with_value": int(np.isfinite(ds[C.SM].values).sum()),
    }
    return ds, ledger, info


def _selected_series(sensors: Sequence[SensorSeries], ledger: Ledger) -> list[Series]:
    """Step 6: the series of the sensors `select_layers` chooses, one per (network, station, layer),
    in slot order; the days of the others are counted in `ledger` as not selected."""
    chosen, not_chosen = select_layers(sensors)
    used = {s.key for s in chosen.values()}
    ledger.step(
        "layer selection",
        "days",
        sum(len(s.daily) for s in sensors),
        sum(len(s.daily) for s in sensors if s.key in used),
        {"sensor not selected": sum(len(s.daily) for s in sensors if s.key not in used)},
        [s.key for s in sensors],
        used,
        not_chosen,
        {s.key: s.label for s in sensors},
    )
    return [Series(slot, slot[2], s, s.daily) for slot, s in sorted(chosen.items())]


def _era5_reference(
    era5_sm: Callable[[np.ndarray], xr.DataArray], series: Sequence[Series], rules: TargetRules
) -> dict[tuple[str, int], pd.Series]:
    """ERA5 soil moisture over the target period by (layer, global cell id), for the cells of
    `series` (`era5_sm` is not called when there is none)."""
    cells = np.array(sorted({s.sensor.cell for s in series}), np.int64)
    if not cells.size:
        return {}
    ref = era5_sm(cells).sel({C.TIME: slice(rules.start, rules.end)}).transpose(C.LAYER, C.CELL, C.TIME)
    arr = np.asarray(ref.values, np.float64)
    rdays = pd.DatetimeIndex(ref[C.TIME].values)
    return {
        (str(layer), int(c)): pd.Series(arr[li, ci], index=rdays)
        for li, layer in enumerate(ref[C.LAYER].values)
        for ci, c in enumerate(cells)
    }


def _rescaled_series(
    series: Sequence[Series], reference: Mapping[tuple[str, int], pd.Series], rules: TargetRules, ledger: Ledger
) -> tuple[list[Series], dict[str, dict]]:
    """Step 7: each series rescaled to the ERA5 `reference` of its cell and layer (`rescale`);
    returns (the rescaled series, `rescale`'s statistics by series label). Series without a
    reference or that cannot be rescaled are counted in `ledger` with the reason."""
    kept_series: list[Series] = []
    skip_reasons: dict[tuple, str] = {}
    rescale_stats: dict[str, dict] = {}
    for s in series:
        r = reference.get((s.layer, s.sensor.cell))
        if r is None:
            skip_reasons[s.key] = "no ERA5 soil moisture for the cell"
            continue
        y, why, st = rescale(s.values, r, rules.min_overlap_days)
        rescale_stats[s.label] = st
        if y is None:
            skip_reasons[s.key] = (_category(why), why)
            continue
        kept_series.append(Series(s.key, s.layer, s.sensor, y))
    ledger.step(
        "rescaling",
        "days",
        sum(len(s.values) for s in series),
        sum(len(s.values) for s in kept_series),
        {"series skipped": sum(len(s.values) for s in series if s.key in skip_reasons)},
        [s.key for s in series],
        [s.key for s in kept_series],
        skip_reasons,
        {s.key: s.label for s in series},
        what="series",
    )
    return kept_series, rescale_stats


def _gridded(
    series: Sequence[Series], days: pd.DatetimeIndex, labels: Mapping[tuple, str], ledger: Ledger
) -> xr.Dataset:
    """Step 8: `series` gridded and averaged per cell over `days` (`grid_series`); every series
    is kept (recorded in `ledger`, with the series' `labels`)."""
    ds = grid_series(series, days)
    ledger.step(
        "gridding",
        "days",
        sum(len(s.values) for s in series),
        sum(len(s.values) for s in series),
        {},
        [s.key for s in series],
        [s.key for s in series],
        {},
        labels,
        what="series",
    )
    return ds


def grid_series(series: Sequence[Series], days: pd.DatetimeIndex) -> xr.Dataset:
    """Averages series per (layer, cell) day by day; the targets store's dataset.

    Returns:
      Dataset with `sm` (layer, cell, time) float32 [m3 m-3] (NaN where no series has the day),
      `n_series` (layer, cell), `provenance` (layer, cell), coords `cell`, `latitude`,
      `longitude` on `cell`. All three layers are present (a layer without series is all NaN).
    """
    cells = np.array(sorted({s.sensor.cell for s in series}), np.int64)
    col = {int(c): i for i, c in enumerate(cells)}
    nl, nc, nt = len(C.LAYERS), cells.size, len(days)
    total = np.zeros((nl, nc, nt), np.float64)
    count = np.zeros((nl, nc, nt), np.int32)
    n_series = np.zeros((nl, nc), np.int32)
    prov: list[list[list[str]]] = [[[] for _ in range(nc)] for _ in range(nl)]
    for s in series:
        li, ci = C.LAYERS.index(s.layer), col[s.sensor.cell]
        v = s.values.reindex(days).to_numpy(np.float64)
        ok = np.isfinite(v)
        total[li, ci, ok] += v[ok]
        count[li, ci, ok] += 1
        n_series[li, ci] += 1
        prov[li][ci].append(s.sensor.label)
    with np.errstate(invalid="ignore", divide="ignore"):
        sm = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
    lat, lon = grid.cell_centre(cells) if nc else (np.zeros(0), np.zeros(0))
    provenance = np.array([["; ".join(sorted(p)) for p in row] for row in prov], dtype=object).reshape(nl, nc)
    ds = xr.Dataset(
        {
            C.SM: (
                (C.LAYER, C.CELL, C.TIME),
                sm,
                {**cf_attrs(C.SM), "long_name": "in-situ soil moisture rescaled to ERA5, cell mean"},
            ),
            "n_series": (
                (C.LAYER, C.CELL),
                n_series,
                {"long_name": "number of station series averaged in the cell", "units": "1"},
            ),
            "provenance": ((C.LAYER, C.CELL), provenance, {"long_name": "network/station/sensor@depth of each series"}),
        },
        coords={
            C.LAYER: (C.LAYER, np.array(C.LAYERS, dtype=object), grid_coord_attrs()[C.LAYER]),
            C.CELL: (C.CELL, cells, {"long_name": "global 0.25 deg cell id (row * 1440 + col from -89.875, -179.875)"}),
            C.TIME: (C.TIME, days.values.astype("datetime64[ns]"), {"long_name": "UTC day", "standard_name": "time"}),
            C.LAT: (C.CELL, lat, grid_coord_attrs()[C.LAT]),
            C.LON: (C.CELL, lon, grid_coord_attrs()[C.LON]),
        },
    )
    return ds


def drop_cells(ds: xr.Dataset, bad: Mapping[int, str], ledger: Ledger) -> xr.Dataset:
    """Removes target cells whose model inputs are incomplete, counting them in the ledger."""
    cells = ds[C.CELL].values
    keep = np.array([int(c) not in bad for c in cells], bool)
    vals = np.isfinite(ds[C.SM].values)
    before = [(int(c),) for c in cells]
    after = [(int(c),) for c, k in zip(cells, keep) if k]
    reasons = Counter()
    for i, (c, k) in enumerate(zip(cells, keep)):
        if not k:
            r = bad[int(c)]
            reasons[r[0] if isinstance(r, tuple) else r] += int(vals[:, i].sum())
    ledger.step(
        "inputs complete",
        "cell-days",
        int(vals.sum()),
        int(vals[:, keep].sum()),
        reasons,
        before,
        after,
        {(int(c),): bad[int(c)] for c in cells if int(c) in bad},
        {(int(c),): f"cell {int(c)}" for c in cells},
        what="cells",
    )
    return ds.isel({C.CELL: keep})
