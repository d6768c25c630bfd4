"""Physical plausibility bounds of every raw input: one table, and the functions that apply it.

Names and `units` attributes say what a file claims; these bounds check what it holds. Each bound
is wide enough for any real value on Earth and narrow enough to catch a wrong unit (°C labelled K,
hPa labelled Pa, mm labelled m), a wrong scale (soil water ×10, fractions in percent) or a fill
value written as data (−9999 without `_FillValue`). docs/reliability.md ("Plausibility bounds")
lists every bound with its reason; tests/test_plausibility.py checks that the page and this table
agree.

What happens to a value outside its bound:

- just below a lower bound by at most the rounding noise of the file format (ERA5's GRIB packing
  writes −1e-7 m of precipitation, −0.003 m3 m-3 of soil water over ice): set to the bound and
  counted;
- otherwise dropped (NaN) and counted per file, variable and reason;
- when more than `WHOLE_VARIABLE_FRACTION[source]` of a file's values of one variable are outside,
  the variable as a whole is wrong: ERA5 and static maps stop `prepare` before anything is written
  (`check_screen`); an ISMN file loses all its values (the archive's other files go on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import xarray as xr

from somojax.errors import InputDataError


@dataclass(frozen=True)
class Bound:
    """The plausible range of one raw variable, in the units somojax reads it in."""

    lo: float
    hi: float
    units: str
    why: str  # the reason for the edges (docs/reliability.md)
    fix: str = ""  # the likely cause when a whole variable lies outside
    noise: float = 0.0  # rounding noise below `lo` that is set to `lo` (accumulations: per hour of time step)
    max_day_mean: float | None = None  # accumulations: the largest plausible mean day total of a region

    @property
    def span(self) -> str:
        return f"{self.lo:g}..{self.hi:g} {self.units}"


ISMN_SM = Bound(
    0.0,
    0.8,
    "m3 m-3",
    "a water content is not negative; 0.8 is above the porosity of mineral soils (ISMN's flag C03 "
    "already removes values above the saturation of the sensor's own soil unless data.quality_flags allows C03)",
    "values in percent (divide by 100) or a fill value written as data",
)

_KELVIN_FIX = "values in °C labelled K (convert with +273.15) or a fill value written as data"
_RADIATION_FIX = (
    "a wrong scale (W m-2 instead of J m-2 per step?) or running totals read with the wrong data.era5_accumulation"
)
_SOIL_WATER_FIX = "values scaled (×10?) or in percent; check the file's scale_factor and units"

ERA5: dict[str, Bound] = {
    "t2m": Bound(
        160.0,
        340.0,
        "K",
        "the coldest 2 m air on record is 184 K (−89 °C, Vostok), the hottest 330 K (57 °C)",
        _KELVIN_FIX,
    ),
    "d2m": Bound(
        150.0,
        320.0,
        "K",
        "a dew point stays below the air temperature; the highest on record is 308 K (35 °C)",
        _KELVIN_FIX,
    ),
    "skt": Bound(
        150.0,
        360.0,
        "K",
        "skin temperatures reach 175 K on the Antarctic plateau and about 353 K (80 °C) in deserts",
        _KELVIN_FIX,
    ),
    "sp": Bound(
        30000.0,
        110000.0,
        "Pa",
        "about 31 kPa on Everest's summit; the highest sea-level pressure on record is 108.4 kPa",
        "values in hPa labelled Pa (multiply by 100)",
    ),
    "tp": Bound(
        0.0,
        2.0,
        "m",
        "the largest day total on record is 1.83 m (La Réunion); GRIB packing rounds hourly totals to about 1e-7 m; "
        "a region's mean day total above 0.05 m would be four times the annual mean of the wettest place on Earth (11.9 m)",
        "values in mm labelled m (divide by 1000), or negative values from running totals read with the wrong data.era5_accumulation",
        noise=1e-6,
        max_day_mean=0.05,
    ),
    "ssr": Bound(
        0.0,
        5.0e7,
        "J m-2",
        "net solar radiation is not negative; a day's top-of-atmosphere insolation stays below 47 MJ m-2",
        _RADIATION_FIX,
        noise=100.0,
    ),
    "ssrd": Bound(
        0.0,
        5.0e7,
        "J m-2",
        "as ssr: downward solar radiation is not negative and stays below a day's top-of-atmosphere insolation",
        _RADIATION_FIX,
        noise=100.0,
    ),
    "str": Bound(
        -4.0e7,
        1.5e7,
        "J m-2",
        "net thermal radiation over a day stays within −460 W m-2 (hot, dry, clear) and +170 W m-2 (warm air over snow)",
        _RADIATION_FIX,
    ),
    **{
        v: Bound(
            0.0,
            1.0,
            "m3 m-3",
            "a volume fraction lies in 0..1 (ERA5's largest saturation is 0.766); ERA5 writes small negatives (−0.003) over ice and coasts",
            _SOIL_WATER_FIX,
            noise=0.01,
        )
        for v in ("swvl1", "swvl2", "swvl3")
    },
}

_FRACTION_FIX = "values in percent (divide by 100), or a fill value such as −9999 over land (a file without _FillValue, or for another land mask)"
STATIC: dict[str, Bound] = {
    "elevation": Bound(
        -11000.0,
        9000.0,
        "m",
        "the Challenger Deep lies at −10,935 m, Everest's summit at 8,849 m",
        "elevation in feet, or a fill value (−32768, −9999) written as data",
    ),
    **{v: Bound(0.0, 1.0, "1", "a soil fraction lies in 0..1", _FRACTION_FIX) for v in ("clay", "sand", "silt")},
    **{
        v: Bound(
            0.05,
            0.95,
            "m3 m-3",
            "no soil holds less than 5% or more than 95% pore space (GLDAS's soil classes span 0.20–0.48)",
            _FRACTION_FIX,
        )
        for v in ("poro_top", "poro_mid")
    },
    "domveg": Bound(
        0.0,
        20.0,
        "1",
        "class numbers of the vegetation schemes GLDAS uses (UMD 0–13, modified IGBP 1–20)",
        "another classification, or a fill value written as data",
    ),
    "land": Bound(0.0, 1.0, "1", "a land fraction or a 0/1 mask", "a mask in percent, or a fill value written as data"),
}

# Values that mean "missing" in the files somojax reads when no `_FillValue` says so: −9999
# (GLDAS), −999 and −99999 (station data), ±32767/−32768 (packed integers), and anything of
# magnitude 1e20 or more (CMIP's 1e20, NetCDF's default fill 9.97e36, infinities).
FILL_VALUES = (-9999.0, -999.0, -99999.0, -32767.0, -32768.0, 32767.0)
FILL_MAGNITUDE = 1e20
FILL_REASON = "fill value (-9999, ±1e20, ...)"

# More than this share of a file's values of one variable outside the bounds: the variable as a
# whole is wrong (a unit, a scale, fill values over whole regions), not a few bad values.
WHOLE_VARIABLE_FRACTION = {
    "ismn": 0.5,  # per file: the file's values are all dropped (other files go on)
    "era5": 0.01,  # per file and variable: prepare stops
    "static": 0.05,  # per map, over land cells: prepare stops
}


def _is_fill(x: np.ndarray, b: Bound) -> np.ndarray:
    """Fill values outside `b` (inside it, −999 is a depth of 999 m or a net radiation)."""
    fill = np.abs(x) >= FILL_MAGNITUDE
    for v in FILL_VALUES:
        if not b.lo <= v <= b.hi:
            fill |= x == v
    return fill


def classify(x: np.ndarray, b: Bound, noise_scale: float = 1.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Masks of the values outside `b`, per reason, and of the rounding noise below `b.lo`
    (NaN is in no mask).

    Args:
      noise_scale: multiplies `b.noise` (hours per time step for accumulations).
    """
    x = np.asarray(x)
    fill = _is_fill(x, b)
    floor = b.lo - b.noise * noise_scale
    reasons = {
        FILL_REASON: fill,
        f"below {b.lo:g} {b.units}": (x < floor) & ~fill,
        f"above {b.hi:g} {b.units}": (x > b.hi) & ~fill,
    }
    return reasons, (x < b.lo) & (x >= floor) & ~fill


def _clean_block(x: np.ndarray, b: Bound, noise_scale: float) -> np.ndarray:
    outside = ~((x >= b.lo) & (x <= b.hi)) & ~np.isnan(x)
    if not outside.any():  # the usual case: one pass, no copy
        return x
    _, noise = classify(x, b, noise_scale)
    out = x.copy()
    out[noise] = b.lo
    out[outside & ~noise] = np.nan
    return out


def clean(x: xr.DataArray, b: Bound, noise_scale: float = 1.0) -> xr.DataArray:
    """`x` with rounding noise set to `b.lo` and every other value outside `b` NaN (lazily,
    block by block, when `x` is a dask array)."""
    data = x.data
    if data.dtype.kind in "iub":  # integers hold no NaN
        data = data.astype(np.float64)
    if hasattr(data, "map_blocks"):
        data = data.map_blocks(_clean_block, b, noise_scale, dtype=data.dtype)
    else:
        data = _clean_block(np.asarray(data), b, noise_scale)
    return x.copy(data=data).assign_attrs(x.attrs)


@dataclass
class Screen:
    """What the bounds found in one variable of one file."""

    source: str
    variable: str
    bound: Bound
    values: int  # values looked at (not NaN)
    dropped: dict[str, int]  # outside the bound, per reason
    set_to_bound: int  # rounding noise set to the bound
    min: float
    mean: float
    max: float
    checked: str = "every value"  # or e.g. "24 of 8,760 time steps"
    day_factor: float = 1.0  # mean value × day_factor = mean day total (accumulations)
    extra: dict = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def fraction(self) -> float:
        return self.n_dropped / self.values if self.values else 0.0

    def report(self) -> dict:
        """The screen as a JSON-able record of the preparation report."""
        out = {
            "file": self.source,
            "variable": self.variable,
            "bounds": self.bound.span,
            "values": self.values,
            "dropped": {k: v for k, v in self.dropped.items() if v},
            "set_to_bound": self.set_to_bound,
            "min": self.min,
            "mean": self.mean,
            "max": self.max,
            "checked": self.checked,
        }
        return {**out, **self.extra}


def _block_terms(x: np.ndarray, b: Bound, noise_scale: float) -> dict[str, float]:
    """The counts and extremes of one block (NaN skipped); reasons only where values lie outside."""
    x = np.asarray(x).ravel()
    nan = np.isnan(x)
    present = x[~nan] if nan.any() else x
    terms = {"values": present.size, "noise": 0, "min": np.inf, "max": -np.inf, "sum": 0.0}
    terms.update({f"reason:{k}": 0 for k in classify(present[:0], b)[0]})
    if not present.size:
        return terms
    terms.update(min=float(present.min()), max=float(present.max()), sum=float(present.sum(dtype=np.float64)))
    outside = present[~((present >= b.lo) & (present <= b.hi))]
    if outside.size:
        reasons, noise = classify(outside, b, noise_scale)
        terms["noise"] = int(noise.sum())
        terms.update({f"reason:{k}": int(m.sum()) for k, m in reasons.items()})
    return terms


def _sum_terms(parts: list[dict[str, float]]) -> dict[str, float]:
    out = dict(parts[0])
    for p in parts[1:]:
        for k, v in p.items():
            out[k] = min(out[k], v) if k == "min" else max(out[k], v) if k == "max" else out[k] + v
    return out


def screen_terms(x: Any, b: Bound, noise_scale: float = 1.0) -> Any:
    """The counts and extremes `screen_from_terms` needs: a dask.delayed for a dask-backed `x`
    (compute many together: one pass over the data), else computed."""
    data = x.data if isinstance(x, xr.DataArray) else x
    if not hasattr(data, "to_delayed"):
        return _block_terms(data, b, noise_scale)
    import dask

    blocks = data.to_delayed().ravel()
    return dask.delayed(_sum_terms)([dask.delayed(_block_terms)(blk, b, noise_scale) for blk in blocks])


def screen_from_terms(terms: Mapping[str, Any], source: str, variable: str, b: Bound, **kw: Any) -> Screen:
    """A `Screen` from computed `screen_terms`."""
    n = int(terms["values"])
    as_float = lambda k: float(terms[k]) if n else math.nan  # noqa: E731
    mean = float(terms["sum"]) / n if n else math.nan
    dropped = {k.split(":", 1)[1]: int(v) for k, v in terms.items() if k.startswith("reason:")}
    return Screen(source, variable, b, n, dropped, int(terms["noise"]), as_float("min"), mean, as_float("max"), **kw)


def screen(x: Any, b: Bound, source: str, variable: str, noise_scale: float = 1.0, **kw: Any) -> Screen:
    """`screen_terms` computed at once (x a NumPy array or a DataArray)."""
    import dask

    terms = dask.compute(screen_terms(x, b, noise_scale))[0]
    return screen_from_terms(terms, source, variable, b, **kw)


def check_screen(s: Screen, source_kind: str, where: str = "", ignore: tuple[str, ...] = ()) -> None:
    """Raises `InputDataError` when the variable as a whole is implausible (see the module docstring).

    Args:
      source_kind: "era5" or "static" (the key of `WHOLE_VARIABLE_FRACTION`).
      where: what the values are, e.g. "on 1,234 land cells" (for the message).
      ignore: reasons that do not count towards the fraction (a land mask's fill values are water).
    """
    b = s.bound
    limit = WHOLE_VARIABLE_FRACTION[source_kind]
    seen = f"min {s.min:.4g}, mean {s.mean:.4g}, max {s.max:.4g}"
    tail = f" Likely {b.fix}. Nothing was written; the bounds and their reasons are in docs/reliability.md (Plausibility bounds)."
    counted = sum(v for k, v in s.dropped.items() if k not in ignore)
    if s.values and counted / s.values > limit:
        top = "; ".join(f"{k}: {v:,}" for k, v in sorted(s.dropped.items(), key=lambda kv: -kv[1]) if v)
        raise InputDataError(
            f"{s.source}: {s.variable!r} is implausible as a whole: {100 * counted / s.values:.1f}% of its {s.values:,} values"
            f"{' ' + where if where else ''} lie outside {b.span} ({top}; {seen}; {s.checked} checked).{tail}"
        )
    if b.max_day_mean is not None and s.values and s.mean * s.day_factor > b.max_day_mean:
        raise InputDataError(
            f"{s.source}: {s.variable!r} is implausible as a whole: its mean day total {s.mean * s.day_factor:.4g} {b.units} exceeds "
            f"{b.max_day_mean:g} {b.units} ({seen} per time step; {s.checked} checked).{tail}"
        )
