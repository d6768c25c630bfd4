"""Skill metrics of a simulated soil-moisture series against observations, per cell.

Every metric is a small, NaN-aware xarray function of `obs` and `sim` that reduces along `dim`
(`time` by default) and uses only the *pair-wise complete* days, i.e. the days where both `obs`
and `sim` are finite. Inputs of any shape broadcast against each other (e.g. `[layer, cell,
time]`); outputs have the same dims without `dim`. Everything is computed in float64 from sums
and counts, so an empty or constant series gives NaN without a RuntimeWarning. dask-backed
inputs stay lazy.

Notation: o_t observed and s_t simulated value on the N pair-wise complete days t; ō and s̄
their means over those days; σ_o and σ_s their population standard deviations.

References
  O, S. & Orth, R. (2021). Global soil moisture data derived through machine learning trained
    with in-situ measurements. Sci. Data 8, 170. doi:10.1038/s41597-021-00964-1 (SoMo.ml).
  Entekhabi, D., Reichle, R. H., Koster, R. D. & Crow, W. T. (2010). Performance metrics for soil
    moisture retrievals and application requirements. J. Hydrometeorol. 11, 832–840.
    doi:10.1175/2010JHM1223.1
  Gupta, H. V., Kling, H., Yilmaz, K. K. & Martinez, G. F. (2009). Decomposition of the mean
    squared error and NSE performance criteria. J. Hydrol. 377, 80–91.
    doi:10.1016/j.jhydrol.2009.08.003
  Albergel, C. et al. (2013). Skill and global trend analysis of soil moisture from reanalyses and
    microwave remote sensing. J. Hydrometeorol. 14, 1259–1277. doi:10.1175/JHM-D-12-0161.1
  Dorigo, W. et al. (2015). Evaluation of the ESA CCI soil moisture product using ground-based
    observations. Remote Sens. Environ. 162, 380–395. doi:10.1016/j.rse.2014.07.023
  Gruber, A. et al. (2020). Validation practices for satellite soil moisture retrievals: What are
    (the) errors? Remote Sens. Environ. 244, 111806. doi:10.1016/j.rse.2020.111806
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from somojax import constants as C
from somojax.errors import ConfigError

DIM = C.TIME


# ----------------------------------------------------------------------------------------
# NaN-aware building blocks (sums and counts; no warnings on empty slices)
# ----------------------------------------------------------------------------------------
def _f64(x: xr.DataArray) -> xr.DataArray:
    return x.astype(np.float64) if x.dtype != np.float64 else x


def _paired(obs: xr.DataArray, sim: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """(obs, sim, valid) with both series NaN wherever either is missing."""
    obs, sim = _f64(obs), _f64(sim)
    valid = obs.notnull() & sim.notnull()
    return obs.where(valid), sim.where(valid), valid


def _safe_div(num: xr.DataArray, den: xr.DataArray) -> xr.DataArray:
    """num / den, NaN where den is 0 or NaN (without a division warning)."""
    return num / den.where(den != 0)


def _mean(x: xr.DataArray, valid: xr.DataArray, dim: str) -> xr.DataArray:
    return _safe_div(x.where(valid, 0.0).sum(dim), valid.sum(dim))


def _moments(obs: xr.DataArray, sim: xr.DataArray, dim: str):
    """Pair-wise means, population variances, covariance and count."""
    o, s, valid = _paired(obs, sim)
    n = valid.sum(dim)
    mo, ms = _mean(o, valid, dim), _mean(s, valid, dim)
    do, ds = (o - mo).where(valid, 0.0), (s - ms).where(valid, 0.0)
    nn = n.where(n > 0)
    vo, vs, cov = (do * do).sum(dim) / nn, (ds * ds).sum(dim) / nn, (do * ds).sum(dim) / nn
    return mo, ms, vo, vs, cov, n


# ----------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------
def n_days(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Number of pair-wise complete days N (both `obs` and `sim` finite)."""
    return (obs.notnull() & sim.notnull()).sum(dim)


def rmse(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Root-mean-square error, RMSE = sqrt( (1/N) Σ_t (s_t − o_t)² )  [units of the data].

    Citation: Entekhabi et al. (2010), eq. 1.
    """
    o, s, valid = _paired(obs, sim)
    return np.sqrt(_mean((s - o) ** 2, valid, dim))


def nrmse(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Normalised RMSE, NRMSE = RMSE / ō  [1]: the RMSE divided by the mean of the observations.

    NaN where ō = 0. Citation: O & Orth (2021), Technical Validation ("NRMSE is defined as the
    RMSE divided by the means of ground truth").
    """
    o, s, valid = _paired(obs, sim)
    return _safe_div(np.sqrt(_mean((s - o) ** 2, valid, dim)), _mean(o, valid, dim))


def rel_bias(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Relative bias, (s̄ − ō) / ō  [1]; positive when `sim` is wetter than the observations.

    Citation: O & Orth (2021), Supplementary Fig. S3 (relative biases of SoMo.ml* and references).
    """
    o, s, valid = _paired(obs, sim)
    mo = _mean(o, valid, dim)
    return _safe_div(_mean(s, valid, dim) - mo, mo)


def pearson_r(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Pearson correlation, r = Σ(o_t − ō)(s_t − s̄) / sqrt( Σ(o_t − ō)² Σ(s_t − s̄)² )  [1].

    NaN with fewer than two pair-wise complete days or a constant series. Citation: O & Orth
    (2021) (correlation coefficient); Entekhabi et al. (2010), eq. 4.
    """
    _, _, vo, vs, cov, _ = _moments(obs, sim, dim)
    return _safe_div(cov, np.sqrt(vo * vs))


def ubrmse(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Unbiased RMSE, ubRMSE = sqrt( (1/N) Σ_t [(s_t − s̄) − (o_t − ō)]² ) = sqrt(RMSE² − bias²).

    [units of the data]. Computed from the centred differences, so it is never the square root of
    a slightly negative number. Citation: Entekhabi et al. (2010), eq. 6.
    """
    o, s, valid = _paired(obs, sim)
    d = s - o
    dm = _mean(d, valid, dim)
    return np.sqrt(_mean((d - dm) ** 2, valid, dim))


def kge(obs: xr.DataArray, sim: xr.DataArray, dim: str = DIM) -> xr.DataArray:
    """Kling–Gupta efficiency, KGE = 1 − sqrt( (r − 1)² + (α − 1)² + (β − 1)² )  [1].

    α = σ_s / σ_o (variability ratio), β = s̄ / ō (bias ratio), r the Pearson correlation; 1 is
    perfect. NaN where r, α or β is undefined. Citation: Gupta et al. (2009), eq. 9.
    """
    mo, ms, vo, vs, cov, _ = _moments(obs, sim, dim)
    r = _safe_div(cov, np.sqrt(vo * vs))
    alpha = _safe_div(np.sqrt(vs), np.sqrt(vo))
    beta = _safe_div(ms, mo)
    return 1.0 - np.sqrt((r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2)


# ----------------------------------------------------------------------------------------
# short-term anomalies
# ----------------------------------------------------------------------------------------
def check_window(window_days: int, min_count: int) -> None:
    """Raises `ConfigError` unless the anomaly window is odd and positive and `min_count` fits in it."""
    if window_days < 1 or window_days % 2 == 0:
        raise ConfigError(
            f"evaluate.anomaly_window_days={window_days}: must be an odd number of days (a centred "
            "window [d−k, d+k] has 2k+1 days; the paper uses 35)"
        )
    if not 1 <= min_count <= window_days:
        raise ConfigError(f"evaluate.anomaly_min_count={min_count}: must lie in 1..anomaly_window_days={window_days}")


def _anomalies_np(a: np.ndarray, half: int, min_count: int) -> np.ndarray:
    """Anomalies along the last axis via cumulative sums (float64 sums, int64 counts).

    The series is padded with `half` empty days on both sides, so that every window sum is a
    difference of two cumulative sums taken with plain slices, and windows at the ends of the
    series automatically hold only the days that exist.
    """
    a = np.asarray(a, np.float64)
    t = a.shape[-1]
    valid = np.isfinite(a)
    pad = [(0, 0)] * (a.ndim - 1) + [(half + 1, half)]  # one extra leading zero: cs[..., 0] = 0
    cs = np.cumsum(np.pad(np.where(valid, a, 0.0), pad), axis=-1)
    cn = np.cumsum(np.pad(valid, pad), axis=-1, dtype=np.int64)
    w = 2 * half + 1
    total = cs[..., w : w + t] - cs[..., :t]  # window [d − half, d + half] ∩ series
    count = cn[..., w : w + t] - cn[..., :t]
    ok = valid & (count >= min_count)
    mean = np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0)
    return np.where(ok, a - mean, np.nan)


def anomalies(x: xr.DataArray, window_days: int = 35, min_count: int = 10, dim: str = DIM) -> xr.DataArray:
    """Short-term anomalies: x_d − mean{x_t : t ∈ [d − k, d + k], x_t finite}, k = window_days // 2.

    The anomaly of day d is defined when x_d is finite and the centred window holds at least
    `min_count` finite values; otherwise NaN. Near the ends of the series the window is cut at the
    first/last day (it then holds fewer days, and the same `min_count` applies). `dim` must be a
    regular daily axis. Computed with cumulative sums (no loop over days).

    Citation: O & Orth (2021), Technical Validation: P = [d − 17, d + 17], at least 10 values;
    after Albergel et al. (2013) and Dorigo et al. (2015).
    """
    check_window(window_days, min_count)
    if dim in x.coords and np.issubdtype(x[dim].dtype, np.datetime64) and x.sizes[dim] > 1:
        steps = np.diff(x[dim].values).astype("timedelta64[s]")
        if not np.all(steps == np.timedelta64(86400, "s")):
            raise ValueError(f"anomalies need consecutive days along {dim!r}; reindex to a daily axis first")
    out = xr.apply_ufunc(
        _anomalies_np,
        x,
        input_core_dims=[[dim]],
        output_core_dims=[[dim]],
        kwargs={"half": window_days // 2, "min_count": min_count},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"allow_rechunk": True},
    )
    return out.transpose(*x.dims)


def anomaly_correlation(
    obs: xr.DataArray, sim: xr.DataArray, window_days: int = 35, min_count: int = 10, dim: str = DIM
) -> xr.DataArray:
    """Anomaly correlation: Pearson r of the short-term anomalies of obs and sim  [1].

    Both series are first restricted to the pair-wise complete days; the anomalies of each are
    then computed from its own values on those days only (`anomalies`), and r is taken over the
    days where both anomalies are defined. Because both series then share the same missing days,
    their windows hold the same days, so a gap in the observations cannot make the two anomaly
    series differ in what they average over (temporal matching before computing anomalies, as
    recommended by Gruber et al. 2020).

    Citation: O & Orth (2021), Fig. 5; Albergel et al. (2013); Dorigo et al. (2015).
    """
    o, s, _ = _paired(obs, sim)
    return pearson_r(anomalies(o, window_days, min_count, dim), anomalies(s, window_days, min_count, dim), dim)


# ----------------------------------------------------------------------------------------
# the metric table
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    """How a metric is named, labelled and ranked (`better`: lower, higher, or zero = |x| lower)."""

    name: str
    label: str
    units: str
    better: str


METRICS: dict[str, MetricInfo] = {
    "nrmse": MetricInfo("nrmse", "NRMSE", "1", "lower"),
    "rel_bias": MetricInfo("rel_bias", "relative bias", "1", "zero"),
    "r": MetricInfo("r", "Pearson r", "1", "higher"),
    "anomaly_r": MetricInfo("anomaly_r", "anomaly r", "1", "higher"),
    "ubrmse": MetricInfo("ubrmse", "ubRMSE", "m3 m-3", "lower"),
    "kge": MetricInfo("kge", "KGE", "1", "higher"),
}


def score(
    obs: xr.DataArray, sim: xr.DataArray, window_days: int = 35, min_count: int = 10, dim: str = DIM
) -> xr.Dataset:
    """All metrics of `METRICS` plus `n_days`, as one Dataset with the dims of obs/sim minus `dim`."""
    o, s, _ = _paired(obs, sim)
    out = xr.Dataset(
        {
            "n_days": n_days(o, s, dim),
            "nrmse": nrmse(o, s, dim),
            "rel_bias": rel_bias(o, s, dim),
            "r": pearson_r(o, s, dim),
            "anomaly_r": anomaly_correlation(o, s, window_days, min_count, dim),
            "ubrmse": ubrmse(o, s, dim),
            "kge": kge(o, s, dim),
        }
    )
    for k, info in METRICS.items():
        out[k].attrs.update({"long_name": info.label, "units": info.units})
    out["n_days"].attrs.update({"long_name": "pair-wise complete days", "units": "day"})
    out["anomaly_r"].attrs.update({"window_days": window_days, "min_count": min_count})
    return out
