"""Daily weather of the synthetic Earth on cell centres: seasons, storms, climate gradients.

Temperature follows latitude, elevation and a seasonal cycle, with spatially coherent synoptic
anomalies (AR(1) in time). Precipitation comes from storms — Gaussian footprints with random
centres, sizes and gamma-distributed intensities, more frequent in summer — rescaled per cell to
a mean annual total that grows from west (dry) to east (wet). Radiation is the FAO-56
extraterrestrial radiation damped by cloudiness; net longwave follows FAO-56 too; dew point,
pressure and skin temperature follow from the rest.

The "ERA5-like" reanalysis weather (`degrade`) is this weather with realistic errors: storms
missed, invented, displaced and mis-sized, a wet and warm bias, smoothed radiation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, signal

from somojax.synth.fields import Region

STEFAN_BOLTZMANN = 4.903e-9  # MJ K-4 m-2 day-1
SOLAR_CONSTANT = 0.0820  # MJ m-2 min-1


@dataclass
class Weather:
    """Daily fields [day, lat, lon] (float64) in ERA5 units where ERA5 has the variable."""

    days: pd.DatetimeIndex
    tp: np.ndarray  # precipitation [mm day-1]
    t2m: np.ndarray  # [K]
    d2m: np.ndarray  # [K]
    sp: np.ndarray  # [Pa]
    ssrd: np.ndarray  # [MJ m-2 day-1]
    ssr: np.ndarray  # [MJ m-2 day-1]
    str: np.ndarray  # net longwave, negative upward [MJ m-2 day-1]
    skt: np.ndarray  # [K]


@dataclass(frozen=True)
class Storms:
    """Storm catalogue: [day, k] arrays, intensity 0 for unused slots."""

    lat: np.ndarray
    lon: np.ndarray
    radius: np.ndarray  # [degrees]
    intensity: np.ndarray  # [mm day-1] at the centre


def extraterrestrial_radiation(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """FAO-56 eq. 21: daily extraterrestrial radiation Ra [MJ m-2 day-1], [day, lat]."""
    phi = np.deg2rad(lat)[None, :]
    j = doy[:, None].astype(np.float64)
    dr = 1 + 0.033 * np.cos(2 * np.pi * j / 365)
    delta = 0.409 * np.sin(2 * np.pi * j / 365 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    return (
        24
        * 60
        / np.pi
        * SOLAR_CONSTANT
        * dr
        * (ws * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(ws))
    )


def draw_storms(rng: np.random.Generator, region: Region, days: pd.DatetimeIndex, per_day: float = 2.5) -> Storms:
    """A storm catalogue; the rate peaks in early summer (×1.6) and dips in winter (×0.5)."""
    doy = days.day_of_year.values
    rate = per_day * (1.05 + 0.55 * np.cos(2 * np.pi * (doy - 170) / 365.25))
    n = rng.poisson(rate)
    k = max(1, int(n.max()))
    slot = np.arange(k)[None, :] < n[:, None]
    pad = 2.0  # storms may sit outside the region and reach into it
    lat = rng.uniform(region.south - pad, region.north + pad, (days.size, k))
    lon = rng.uniform(region.west - pad, region.east + pad, (days.size, k))
    radius = rng.uniform(0.4, 2.2, (days.size, k))
    intensity = np.where(slot, rng.gamma(0.9, 18.0, (days.size, k)), 0.0)
    return Storms(lat, lon, radius, intensity)


def storm_field(storms: Storms, region: Region, chunk: int = 256) -> np.ndarray:
    """Precipitation of a storm catalogue on the cell centres [day, lat, lon], chunked over days."""
    nd = storms.lat.shape[0]
    out = np.empty((nd,) + region.shape)
    la, lo = region.lat[None, None, :, None], region.lon[None, None, None, :]
    for d0 in range(0, nd, chunk):
        s = slice(d0, d0 + chunk)
        d2 = (storms.lat[s][..., None, None] - la) ** 2 + (storms.lon[s][..., None, None] - lo) ** 2
        out[s] = np.sum(
            storms.intensity[s][..., None, None] * np.exp(-d2 / (2 * storms.radius[s][..., None, None] ** 2)), axis=1
        )
    return out


def ar1(
    rng: np.random.Generator, shape: tuple[int, int, int], phi: float, sigma: float, spatial_sigma: float
) -> np.ndarray:
    """AR(1) anomalies in time with spatially smooth innovations, stationary std `sigma`."""
    eps = ndimage.gaussian_filter(rng.standard_normal(shape), (0, spatial_sigma, spatial_sigma), mode="reflect")
    eps /= eps.std() + 1e-12
    x = signal.lfilter([1.0], [1.0, -phi], eps, axis=0)
    return x * sigma * np.sqrt(1 - phi * phi)


def temperature_climate(region: Region, elevation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The demo's mid-latitude climate: (annual mean [K], seasonal amplitude [K]) per cell,
    colder north and higher, the seasonal amplitude growing northwards."""
    lat2 = region.lat2d()
    t_mean = 289.0 - 0.75 * (lat2 - 35.0) - 0.0065 * (elevation - 400.0)
    return t_mean, 11.0 + 0.35 * (lat2 - 35.0)


def global_climate(region: Region, elevation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A climate for any latitude: (annual mean [K], signed seasonal amplitude [K]) per cell.

    The demo's linear fit to latitude would give 360 K at 60°S; this follows zonal means of the
    real Earth instead (about 300 K at the equator, 273 K at 60°, 246 K at 85°) and flips the
    season south of the equator.
    """
    lat2 = region.lat2d()
    t_mean = 300.0 - 0.0075 * lat2**2 - 0.0065 * (elevation - 400.0)
    return t_mean, np.sign(lat2) * (1.0 + 0.3 * np.abs(lat2))


def annual_precip_target(region: Region) -> np.ndarray:
    """Mean annual precipitation [mm year-1]: 350 at the west edge to 1100 at the east edge."""
    return 350.0 + 750.0 * region.east_fraction()


def make_weather(
    rng: np.random.Generator,
    region: Region,
    days: pd.DatetimeIndex,
    elevation: np.ndarray,
    albedo: np.ndarray,
    temperature: tuple[np.ndarray, np.ndarray] | None = None,
    storm_rate: float = 1.0,
) -> tuple[Weather, Storms, np.ndarray]:
    """The true weather. Returns (weather, storm catalogue, per-cell precipitation scale).

    Args:
      temperature: (annual mean [K], signed seasonal amplitude [K]) per cell; default: the
        mid-latitude climate of the demo (`temperature_climate`).
      storm_rate: multiplies the storms per day (a larger region needs more to keep their density).
    """
    shape = (days.size,) + region.shape
    doy = days.day_of_year.values
    t_mean, amp = temperature if temperature is not None else temperature_climate(region, elevation)
    season = -np.cos(2 * np.pi * (doy - 18) / 365.25)[:, None, None]
    t2m = t_mean[None] + amp[None] * season + ar1(rng, shape, 0.75, 3.5, 6.0)

    storms = draw_storms(rng, region, days, per_day=2.5 * storm_rate)
    raw = storm_field(storms, region)
    years = days.size / 365.25
    scale = annual_precip_target(region) / np.maximum(raw.sum(axis=0) / years, 1e-6)
    tp = raw * scale[None]
    tp = np.where(tp < 0.1, 0.0, tp)  # trace amounts are dry days

    cloud = np.clip(1 - np.exp(-tp / 6.0) + 0.12 * ar1(rng, shape, 0.5, 1.0, 4.0), 0.0, 1.0)
    ra = extraterrestrial_radiation(region.lat, doy)[:, :, None]
    ssrd = ra * (0.75 - 0.45 * cloud)
    ssr = ssrd * (1 - albedo[None])
    wet = region.east_fraction()[None]
    dep = np.clip(9.0 - 6.0 * wet - 5.0 * cloud + ar1(rng, shape, 0.6, 1.5, 4.0), 0.3, None)
    d2m = t2m - dep
    ea = 0.6108 * np.exp(17.27 * (d2m - 273.15) / (d2m - 273.15 + 237.3))  # kPa
    rso = 0.75 * ra
    # polar night has no clear-sky radiation to compare with: count it as clear (ratio 1)
    clear = np.clip(np.divide(ssrd, rso, out=np.ones_like(ssrd), where=rso > 0), 0.3, 1.0)
    strn = -STEFAN_BOLTZMANN * t2m**4 * (0.34 - 0.14 * np.sqrt(ea)) * (1.35 * clear - 0.35)
    sp = 101325.0 * np.exp(-elevation[None] / 8434.0) + 600.0 * ar1(rng, shape, 0.8, 1.0, 10.0)
    skt = t2m + 0.25 * (ssr + strn) - 1.5
    w = Weather(days, tp, t2m, d2m, sp, ssrd, ssr, strn, skt)
    return w, storms, scale


def degrade(
    rng: np.random.Generator,
    region: Region,
    truth: Weather,
    storms: Storms,
    scale: np.ndarray,
    elevation: np.ndarray,
    albedo: np.ndarray,
    storm_rate: float = 1.0,
) -> Weather:
    """The reanalysis' view of the weather: the truth with realistic, correlated errors.

    25% of storms missed, spurious storms at 25% of the true rate, centres displaced by ~0.4°,
    sizes and intensities off by ~30%, precipitation 10% too wet; temperature +0.6 K with its
    own synoptic noise; radiation smoothed over 3 days (clouds in the wrong place).
    """
    keep = rng.random(storms.intensity.shape) > 0.25
    jitter = lambda a, s: a + rng.normal(0.0, s, a.shape)  # noqa: E731
    kept = Storms(
        jitter(storms.lat, 0.4),
        jitter(storms.lon, 0.4),
        storms.radius * rng.lognormal(0.0, 0.3, storms.radius.shape),
        storms.intensity * keep * rng.lognormal(0.0, 0.3, storms.intensity.shape),
    )
    spurious = draw_storms(rng, region, truth.days, per_day=0.6 * storm_rate)
    tp = (storm_field(kept, region) + storm_field(spurious, region)) * scale[None] * 1.1
    tp = np.where(tp < 0.1, 0.0, tp)
    shape = truth.tp.shape
    t2m = truth.t2m + 0.6 + ar1(rng, shape, 0.5, 1.0, 4.0)
    smooth3 = lambda a: ndimage.uniform_filter1d(a, 3, axis=0, mode="nearest")  # noqa: E731
    ssrd = smooth3(truth.ssrd)
    ssr = ssrd * (1 - albedo[None])
    d2m = np.minimum(truth.d2m + 0.6 + ar1(rng, shape, 0.5, 0.8, 4.0), t2m - 0.1)
    strn = smooth3(truth.str)
    sp = truth.sp + 80.0 * ar1(rng, shape, 0.5, 1.0, 4.0)
    skt = t2m + 0.25 * (ssr + strn) - 1.5
    return Weather(truth.days, tp, t2m, d2m, sp, ssrd, ssr, strn, skt)
