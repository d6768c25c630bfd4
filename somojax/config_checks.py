"""Value rules of every configuration field, checked by `load_config` (`check_config`).

`RULES` has one entry per field, keyed `section.key` (top-level fields by their name): a `Rule`
(what values are allowed), or a string saying why the field needs no rule beyond its type (the
type — integer, enum, list length — is already checked while the config is built). `RELATIONS`
holds the rules that involve several fields (periods ordered, shards multiples of chunks).
A new config field needs an entry here; tests/test_config.py fails until it has one.

A broken rule raises `ConfigError` naming the key, where its value came from (a file, a
command-line override or the default), the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from somojax import constants as C
from somojax.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A value rule: `ok(value)` says whether the value is allowed, `allowed` says what is."""

    ok: Callable[[Any], bool]
    allowed: str


# ----------------------------------------------------------------------------------------
# rule factories
# ----------------------------------------------------------------------------------------
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int, hi: int | None = None, what: str = "") -> Rule:
    """An integer in lo..hi (inclusive)."""
    span = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    return Rule(lambda v: v >= lo and (hi is None or v <= hi), span + (f" ({what})" if what else ""))


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False, what: str = ""
) -> Rule:
    """A finite number in the interval given; `*_open` excludes the edge."""

    def ok(v):
        if not _finite(v):
            return False
        above = lo is None or (v > lo if lo_open else v >= lo)
        below = hi is None or (v < hi if hi_open else v <= hi)
        return above and below

    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    text = "a finite number" + (" " + " and ".join(parts) if parts else "")
    return Rule(ok, text + (f" ({what})" if what else ""))


def optional(rule: Rule) -> Rule:
    """None (null in YAML) or what `rule` allows."""
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.allowed}")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _is_date(v: Any) -> bool:
    if not isinstance(v, str) or not _DATE.fullmatch(v):
        return False
    try:
        datetime.date.fromisoformat(v)
    except ValueError:  # 2001-02-30, 2001-13-01
        return False
    return True


DATE = Rule(_is_date, "a calendar date YYYY-MM-DD that exists (e.g. 2001-02-28)")


def edges(lo: float, hi: float, what: str) -> Rule:
    """A (first, second) pair of edges in lo..hi with first < second."""
    return Rule(
        lambda v: all(_finite(x) and lo <= x <= hi for x in v) and v[0] < v[1],
        f"two {what} edges in {lo:g}..{hi:g}, the first edge must be smaller than the second",
    )


def _bbox_ok(v: tuple) -> bool:
    s, n, w, e = v
    return edges(-90, 90, "").ok((s, n)) and edges(-180, 180, "").ok((w, e))


BBOX = Rule(_bbox_ok, "[south, north, west, east] edges with -90 <= south < north <= 90 and -180 <= west < east <= 180")


def names(allowed: tuple[str, ...] | None = None, what: str = "names") -> Rule:
    """A non-empty list of distinct non-empty strings (from `allowed`, when given)."""
    text = f"a non-empty list of distinct {what}" + (f" from {list(allowed)}" if allowed else "")
    return Rule(
        lambda v: len(v) > 0 and len(set(v)) == len(v) and all(x and (not allowed or x in allowed) for x in v), text
    )


def _schedule_ok(v: tuple) -> bool:
    epochs = [e for e, _ in v]
    return (
        len(v) > 0
        and epochs[0] == 0
        and all(a < b for a, b in zip(epochs, epochs[1:]))
        and all(_finite(r) and r > 0 for _, r in v)
    )


SCHEDULE = Rule(
    _schedule_ok,
    "a non-empty list of [first epoch, learning rate] pairs: the first epoch 0, epochs increasing, rates finite and > 0 "
    "(e.g. [[0, 1.0e-3], [10, 5.0e-4]])",
)
QUANTILES = Rule(
    lambda v: all(_finite(q) for q in v) and 0 <= v[0] < v[1] <= 1,
    "two quantiles 0 <= low < high <= 1 (e.g. [0.2, 0.8])",
)
SEED = integer(0, 2**32 - 1, "a random seed")
POSITIVE = integer(1)


def _run_name_ok(v: str) -> bool:
    return bool(v.strip()) and not any(c in v for c in "/\\")


def _workdir_ok(v: str) -> bool:
    if not v.strip():
        return False
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
    except ValueError:  # an unmatched brace
        return False
    return all(f == "name" for f in fields)


DIVIDES_24 = Rule(
    lambda v: 1 <= v <= 24 and 24 % v == 0, "1, 2, 3, 4, 6, 8, 12 or 24 (the sampling interval must divide 24)"
)

PATH = "a path or empty (the default location); checked where it is read or written"
ENUM = "one of the listed values; checked against the field's type"
FLAG = "true or false; checked against the field's type"

RULES: dict[str, Rule | str] = {
    # --- top level ------------------------------------------------------------------------
    "name": Rule(_run_name_ok, "a non-empty run name without / or \\"),
    "workdir": Rule(_workdir_ok, "a non-empty path; the only placeholder allowed is {name}"),
    "seed": SEED,
    # --- synth ------------------------------------------------------------------------------
    "synth.lat_range": edges(-90, 90, "latitude"),
    "synth.lon_range": edges(-180, 180, "longitude"),
    "synth.start": DATE,
    "synth.end": DATE,
    "synth.station_start": DATE,
    "synth.n_stations": POSITIVE,
    "synth.hours_per_obs": DIVIDES_24,
    "synth.seed": SEED,
    "synth.land_mask": PATH,
    "synth.band_deg": Rule(
        lambda v: _finite(v) and v >= 0 and abs(v * 4 - round(v * 4)) < 1e-9,
        "0 (the region in one piece) or a positive multiple of 0.25 (degrees per band and tile)",
    ),
    # --- data -------------------------------------------------------------------------------
    "data.source": ENUM,
    "data.ismn": PATH,
    "data.era5": "paths or globs; checked by `somojax prepare`, which names what it cannot read",
    "data.era5_sm": "paths or globs; checked by `somojax prepare`, which names what it cannot read",
    "data.etopo": PATH,
    "data.gldas_soil": PATH,
    "data.gldas_porosity": PATH,
    "data.gldas_vegetation": PATH,
    "data.land_mask": PATH,
    "data.store_dir": PATH,
    "data.forcing_start": DATE,
    "data.forcing_end": DATE,
    "data.target_start": DATE,
    "data.target_end": DATE,
    "data.lat_range": edges(-90, 90, "latitude"),
    "data.lon_range": edges(-180, 180, "longitude"),
    "data.quality_flags": names(what="ISMN quality flags (e.g. [G] or [G, M])"),
    "data.min_values_per_day": POSITIVE,
    "data.min_days_per_sensor": POSITIVE,
    "data.min_overlap_days": integer(2, what="a rescaling needs at least two common days"),
    "data.era5_accumulation": ENUM,
    "data.units": Rule(
        lambda v: (
            isinstance(v, tuple)
            and all(
                isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p) for p in v
            )
        ),
        "a mapping of ERA5 variable names to units, e.g. {t2m: K, tp: m} (names and units are checked by `somojax prepare`)",
    ),
    "data.era5_check_steps": integer(0, what="0: every value; N: N time steps per ERA5 file"),
    "data.arid_min_precip": number(0, lo_open=True, what="mm/year; the aridity divides by it"),
    "data.dynamic_inputs": names(what="forcing variable names"),
    "data.static_inputs": names(what="static variable names"),
    "data.split": ENUM,
    "data.val_fraction": number(0, 1, lo_open=True, hi_open=True, what="the share of target cells held out"),
    "data.val_start": DATE,
    "data.val_end": DATE,
    "data.split_seed": SEED,
    # --- model ------------------------------------------------------------------------------
    "model.hidden_size": integer(1, what="the LSTM state size; the paper uses 128"),
    "model.forget_bias": number(),
    "model.dropout": number(0, 1, hi_open=True, what="a probability; 1 would drop everything"),
    "model.seq_length": integer(1, what="days per input window; the paper uses 365"),
    "model.predict_last_n": POSITIVE,
    "model.dtype": ENUM,
    "model.matmul_precision": ENUM,
    # --- train ------------------------------------------------------------------------------
    "train.layers": names(C.LAYERS, "layers"),
    "train.members": integer(1, what="the ensemble size"),
    "train.shared_batches": FLAG,
    "train.batch_size": POSITIVE,
    "train.epochs": POSITIVE,
    "train.learning_rates": SCHEDULE,
    "train.clip_norm": number(0, what="0: no gradient clipping"),
    "train.max_updates_per_epoch": optional(POSITIVE),
    "train.loss": ENUM,
    "train.nse_eps": number(0, lo_open=True, what="the NSE weight divides by sigma + eps"),
    "train.nse_sigma_units": ENUM,
    "train.lr_schedule": ENUM,
    "train.learning_rate": number(0, 1, lo_open=True, what="the first rate of plateau/cosine"),
    "train.max_updates": optional(POSITIVE),
    "train.min_updates": integer(0, what="no early stop before this many updates"),
    "train.validate_every_updates": optional(POSITIVE),
    "train.patience": optional(POSITIVE),
    "train.min_improvement": number(0, 1, hi_open=True, what="relative decrease that counts as an improvement"),
    "train.lr_decay": number(0, 1, lo_open=True, hi_open=True, what="the plateau rate is multiplied by it"),
    "train.lr_patience": POSITIVE,
    "train.min_lr": number(0, 1, what="the plateau floor and the cosine end"),
    "train.warmup_updates": integer(0, what="cosine warm-up"),
    "train.keep_checkpoints": POSITIVE,
    "train.checkpoint_every_steps": optional(POSITIVE),
    "train.log_every_steps": POSITIVE,
    "train.seed": SEED,
    # --- infer ------------------------------------------------------------------------------
    "infer.mode": ENUM,
    "infer.start": DATE,
    "infer.end": DATE,
    "infer.region": ENUM,
    "infer.bbox": BBOX,
    "infer.cells_file": "a CSV path; read (and each row checked) by `somojax predict` when infer.region=cells",
    "infer.points_file": "a CSV or ISMN archive path; read (and each row checked) by `somojax predict` when infer.region=points",
    "infer.forcing_tables": "a folder of SoMo.ml forcing tables; read (each file checked) by `somojax predict` when infer.region=points",
    "infer.statics_table": "a SoMo.ml statics table; read (each row checked) by `somojax predict` with infer.forcing_tables",
    "infer.output": PATH,
    "infer.export_dir": PATH,
    "infer.institution": "free text for the exported files' ACDD `institution` attribute (empty: unknown)",
    "infer.license": "free text for the exported files' ACDD `license` attribute (an SPDX id or a URL)",
    # --- evaluate ---------------------------------------------------------------------------
    "evaluate.folds": integer(2, what="cross-validation needs at least 2 folds"),
    "evaluate.fold_seed": SEED,
    "evaluate.anomaly_window_days": Rule(
        lambda v: v >= 1 and v % 2 == 1, "an odd number of days >= 1 (a centred window; the paper uses 35)"
    ),
    "evaluate.anomaly_min_count": POSITIVE,
    "evaluate.quantiles": QUANTILES,
    "evaluate.references": "paths (or name=path specs); checked by `somojax evaluate`, which names what it cannot read",
    "evaluate.output_dir": PATH,
    "evaluate.common_days": FLAG,
    # --- bench ------------------------------------------------------------------------------
    "bench.repeats": POSITIVE,
    "bench.warmup": integer(0),
    "bench.batch_size": POSITIVE,
    "bench.seq_length": POSITIVE,
    "bench.hidden_size": POSITIVE,
    "bench.rollout_days": POSITIVE,
    "bench.output_dir": PATH,
    # --- kernel -----------------------------------------------------------------------------
    "kernel.hoist": ENUM,
    "kernel.backward": ENUM,
    "kernel.remat": FLAG,
    "kernel.unroll": POSITIVE,
    "kernel.ensemble_mode": ENUM,
    "kernel.rows_per_step": integer(0, what="0: automatic"),
    # --- layout -----------------------------------------------------------------------------
    "layout.cpu_devices": integer(0, what="0: one device per usable core"),
    "layout.mesh_member_size": integer(0, what="0: as many devices as divide the member count"),
    "layout.tile_cells": POSITIVE,
    "layout.time_block_days": POSITIVE,
    "layout.memory_budget_gb": number(0, lo_open=True),
    "layout.shard_time": POSITIVE,
    "layout.shard_lat": POSITIVE,
    "layout.shard_lon": POSITIVE,
    "layout.chunk_time": POSITIVE,
    "layout.chunk_lat": POSITIVE,
    "layout.chunk_lon": POSITIVE,
    "layout.forcing_chunk_days": POSITIVE,
    "layout.forcing_chunk_cells": POSITIVE,
}


# ----------------------------------------------------------------------------------------
# rules across fields: (keys, holds(values...), what must hold)
# ----------------------------------------------------------------------------------------
def _ordered(a: str, b: str) -> bool:
    return a <= b  # ISO dates, already checked to be dates, order as strings


def _inside(a0: str, a1: str, b0: str, b1: str) -> bool:
    return b0 <= a0 and a1 <= b1


RELATIONS: list[tuple[tuple[str, ...], Callable[..., bool], str]] = [
    (("synth.start", "synth.end"), _ordered, "the synthetic period must not end before it starts"),
    (
        ("synth.station_start", "synth.start", "synth.end"),
        lambda s, a, b: a <= s < b,
        "synth.station_start must lie within synth.start..synth.end",
    ),
    (("data.forcing_start", "data.forcing_end"), _ordered, "the forcing period must not end before it starts"),
    (("data.target_start", "data.target_end"), _ordered, "the target period must not end before it starts"),
    (
        ("data.target_start", "data.target_end", "data.forcing_start", "data.forcing_end"),
        _inside,
        "the target period must lie inside the forcing period (the models read the forcing of every target day)",
    ),
    (("data.val_start", "data.val_end"), _ordered, "the validation period must not end before it starts"),
    (
        ("data.split", "data.val_start", "data.val_end", "data.target_start", "data.target_end"),
        lambda split, v0, v1, t0, t1: split != "period" or _inside(v0, v1, t0, t1),
        "with data.split=period the validation period must lie inside the target period",
    ),
    (
        ("train.lr_schedule", "train.max_updates"),
        lambda sched, n: sched == "paper" or n is not None,
        "train.max_updates (the budget in updates) must be set for lr_schedule plateau or cosine",
    ),
    (
        ("train.min_lr", "train.learning_rate"),
        lambda lo, lr: lo <= lr,
        "train.min_lr must not exceed train.learning_rate",
    ),
    (
        ("train.lr_schedule", "train.warmup_updates", "train.max_updates"),
        lambda sched, w, n: sched != "cosine" or w < n,
        "train.warmup_updates must be smaller than train.max_updates",
    ),
    (
        ("model.predict_last_n", "model.seq_length"),
        lambda k, n: k <= n,
        "model.predict_last_n must not exceed model.seq_length",
    ),
    (("infer.start", "infer.end"), _ordered, "the prediction period must not end before it starts"),
    (
        ("infer.region", "infer.cells_file"),
        lambda region, path: region != "cells" or bool(path.strip()),
        "infer.region=cells needs infer.cells_file (a CSV with latitude, longitude columns)",
    ),
    (
        ("infer.region", "infer.points_file", "infer.forcing_tables"),
        lambda region, points, tables: region != "points" or bool(points.strip() or tables.strip()),
        "infer.region=points needs infer.points_file (a CSV with latitude, longitude columns, or an ISMN archive) or infer.forcing_tables",
    ),
    (
        ("infer.forcing_tables", "infer.statics_table"),
        lambda tables, statics: not tables.strip() or bool(statics.strip()),
        "infer.forcing_tables needs infer.statics_table (SoMo.ml's global_attri.dat: one row of statics per cell)",
    ),
    *[
        (
            (f"layout.shard_{d}", f"layout.chunk_{d}"),
            lambda s, c: s % c == 0,
            f"layout.shard_{d} must be a multiple of layout.chunk_{d}",
        )
        for d in ("time", "lat", "lon")
    ],
    (
        ("evaluate.anomaly_min_count", "evaluate.anomaly_window_days"),
        lambda n, w: n <= w,
        "evaluate.anomaly_min_count must not exceed evaluate.anomaly_window_days",
    ),
]


# ----------------------------------------------------------------------------------------
# checking
# ----------------------------------------------------------------------------------------
def field_keys(cfg: Any) -> list[str]:
    """Every field of a `Config` as `section.key` (top-level fields by name)."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            keys.append(f.name)
    return keys


def value_of(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _shown(value: Any) -> Any:
    """A value as it is written in YAML (tuples as lists)."""
    return [_shown(v) for v in value] if isinstance(value, tuple) else value


def _where(key: str, sources: Mapping[str, str]) -> str:
    return sources.get(key, "the default")


def check_config(cfg: Any, sources: Mapping[str, str]) -> None:
    """Raises `ConfigError` for the first field or relation of `cfg` whose rule fails.

    Args:
      cfg: a built `Config`.
      sources: where each key's value came from (`config <file>`, `command-line override
        'k=v'`); keys not listed have their default.
    """
    for key in field_keys(cfg):
        rule = RULES.get(key)
        if rule is None:
            raise ConfigError(
                f"{key} has no value rule in somojax/config_checks.py RULES (a bug: every field needs one)"
            )
        value = value_of(cfg, key)
        if isinstance(rule, Rule) and not rule.ok(value):
            raise ConfigError(f"{key}={_shown(value)!r} (from {_where(key, sources)}): must be {rule.allowed}")
    for keys, holds, text in RELATIONS:
        values = [value_of(cfg, k) for k in keys]
        if not holds(*values):
            seen = ", ".join(f"{k}={_shown(v)!r} (from {_where(k, sources)})" for k, v in zip(keys, values))
            raise ConfigError(f"{text}; found {seen}")
