"""Units and names of raw input variables: normalised spelling, accepted units, conversions, and
the long and CMIP-style names the ERA5 reader maps to ERA5 short names.

Raw files spell units many ways (`J m**-2`, `J m-2`, `J/m^2`). `normalize_units` reduces a string
to a canonical spelling; `check_units` raises `InputDataError` when a variable's `units`
attribute is not one we accept, naming the file, the variable, the units found and expected. We
never guess a conversion from values: wrong units (a temperature in °C, precipitation in mm where
ERA5 writes m) are an error the user fixes, not something we silently rescale.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from somojax.errors import ConfigError, InputDataError

# Canonical ERA5 units (normalised spelling) of every ERA5 short name somojax reads.
ERA5_UNITS: dict[str, tuple[str, ...]] = {
    "t2m": ("K",),
    "d2m": ("K",),
    "skt": ("K",),
    "sp": ("Pa",),
    "tp": ("m",),  # hourly amount or day total, metres of water
    "ssr": ("J m-2",),
    "str": ("J m-2",),
    "ssrd": ("J m-2",),
    "swvl1": ("m3 m-3",),
    "swvl2": ("m3 m-3",),
    "swvl3": ("m3 m-3",),
    "lsm": ("1", "0 - 1", "(0 - 1)", "(0,1)", "0-1", ""),
}

# ARCO-ERA5 / CDS long names -> short names
LONG_NAMES: dict[str, str] = {
    "2m_temperature": "t2m",
    "2m_dewpoint_temperature": "d2m",
    "total_precipitation": "tp",
    "surface_pressure": "sp",
    "surface_net_solar_radiation": "ssr",
    "surface_net_thermal_radiation": "str",
    "surface_solar_radiation_downwards": "ssrd",
    "skin_temperature": "skt",
    "volumetric_soil_water_layer_1": "swvl1",
    "volumetric_soil_water_layer_2": "swvl2",
    "volumetric_soil_water_layer_3": "swvl3",
    "land_sea_mask": "lsm",
    # GRIB short names as some tools write them
    "2t": "t2m",
    "2d": "d2m",
}

# CMIP-style names -> (short name, {units: factor to ERA5 units per second of time step or 1})
# "flux" conversions multiply by the time step in seconds (mean rate -> amount over the step).
CMIP_NAMES: dict[str, tuple[str, str]] = {
    "tas": ("t2m", "state"),
    "tdps": ("d2m", "state"),
    "ps": ("sp", "state"),
    "ts": ("skt", "state"),
    "pr": ("tp", "precip_flux"),
    "rss": ("ssr", "energy_flux"),
    "rls": ("str", "energy_flux"),
    "rsds": ("ssrd", "energy_flux"),
}

# the units CMIP-style mean fluxes must have (converted to ERA5 amounts per time step)
CMIP_FLUX_UNITS = {"precip_flux": "kg m-2 s-1", "energy_flux": "W m-2"}

_SYNONYMS = {
    "kelvin": "K",
    "degk": "K",
    "pascal": "Pa",
    "metre": "m",
    "meter": "m",
    "metres": "m",
    "meters": "m",
    "m of water equivalent": "m",
    "jm-2": "J m-2",
    "m3/m3": "m3 m-3",
    "m^3/m^3": "m3 m-3",
    "m3m-3": "m3 m-3",
    "-": "1",
    "fraction": "1",
    "dimensionless": "1",
}


def normalize_units(units: str | None) -> str:
    """A canonical spelling: `J m**-2` -> `J m-2`, `m**3 m**-3` -> `m3 m-3`, `J/m^2` -> `J m-2`."""
    if units is None:
        return ""
    u = str(units).strip()
    low = u.lower()
    if low in _SYNONYMS:
        return _SYNONYMS[low]
    u = u.replace("**", "").replace("^", "")
    # "a/b^n" -> "a b-n" (only the simple one-slash form)
    if "/" in u and u.count("/") == 1:
        num, den = u.split("/")
        den_parts = []
        for part in den.split():
            m = re.fullmatch(r"([A-Za-z]+)(-?\d*)", part)
            if not m:
                den_parts = None
                break
            exp = int(m.group(2)) if m.group(2) else 1
            den_parts.append(f"{m.group(1)}{-exp}")
        if den_parts is not None:
            u = " ".join([num.strip()] + den_parts)
    u = " ".join(u.split())
    return _SYNONYMS.get(u.lower(), u)


def check_units(var: str, units: str | None, accepted: tuple[str, ...], source: str) -> str:
    """Checks a `units` attribute against the accepted spellings; returns the normalised units.

    Wrong units raise `InputDataError`; so do missing ones, unless the variable is dimensionless
    ("" accepted). The ERA5 reader gives variables without units the unit stated in `data.units`
    before they get here (`era5._with_stated_units`).
    """
    if units is None or str(units).strip() == "":
        if "" in accepted:
            return ""
        raise InputDataError(
            f"{source}: variable {var!r} has no 'units' attribute (expected {accepted[0]!r}); state it in data.units or add it to the file"
        )
    norm = normalize_units(units)
    if norm in accepted or (norm == "1" and "1" in accepted):
        return norm
    hint = ""
    if accepted == ("K",) and norm.lower() in ("degc", "c", "°c", "deg c", "celsius", "degrees_celsius"):
        hint = " (convert with +273.15)"
    elif accepted == ("m",) and norm.lower() in ("mm", "kg m-2"):
        hint = " (ERA5 writes precipitation in metres of water; divide by 1000)"
    raise InputDataError(
        f"{source}: variable {var!r} has units {units!r}, expected {' or '.join(repr(a) for a in accepted if a)}"
        f"{hint}. Fix the file's units (or the data) and run again."
    )


def stated_units(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """`data.units` checked: {variable name as the files spell it: unit} for variables whose
    files have no `units` attribute.

    A name must be one the ERA5 reader knows (short, ARCO long or CMIP-style; long names are
    mapped to short ones) and the unit one somojax reads that variable in: stating a unit
    confirms what the values are, it converts nothing. Raises `ConfigError` naming `data.units`.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = {}
    for name, unit in items:
        short = LONG_NAMES.get(name, name)
        if short in ERA5_UNITS:
            accepted = ERA5_UNITS[short]
        elif short in CMIP_NAMES:
            target, kind = CMIP_NAMES[short]
            accepted = ERA5_UNITS[target] if kind == "state" else (CMIP_FLUX_UNITS[kind],)
        else:
            known = sorted(set(ERA5_UNITS) | set(CMIP_NAMES))
            raise ConfigError(
                f"data.units: {name!r} is not an input variable somojax reads; known names: {', '.join(known)} (or their ARCO long names)"
            )
        if normalize_units(unit) not in accepted:
            raise ConfigError(
                f"data.units: {name}: {unit!r} is not a unit somojax reads {name} in (expected {' or '.join(repr(a) for a in accepted if a)}); "
                "data.units states the unit of values as they are, it does not convert: convert the file instead"
            )
        out[short] = str(unit)
    return out
