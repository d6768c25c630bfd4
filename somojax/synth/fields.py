"""Spatial fields of the synthetic Earth: smooth random fields, elevation, soils, vegetation, land.

All fields live on the region's 0.25° cell centres ([lat, lon], latitude increasing), except the
elevation, which is drawn on ETOPO1's 1-arc-minute points so that `prepare` computes the cell
mean and standard deviation from it as it does for the real ETOPO1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from somojax import grid

POINTS_PER_CELL = 15  # 1-arc-minute points per 0.25° cell side


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def unit(f: np.ndarray) -> np.ndarray:
    """Rescales a field to [0, 1]."""
    return (f - f.min()) / (np.ptp(f) + 1e-12)


@dataclass(frozen=True)
class Region:
    """The region: cell centres and ETOPO1-style points."""

    lat: np.ndarray  # [ny] cell-centre latitudes, increasing
    lon: np.ndarray  # [nx] cell-centre longitudes, increasing, -180..180
    south: float
    north: float
    west: float
    east: float

    @classmethod
    def from_edges(cls, lat_range: tuple[float, float], lon_range: tuple[float, float]) -> "Region":
        (s, n), (w, e) = lat_range, lon_range
        return cls(grid.lat_centres(s, n), grid.lon_centres(w, e), s, n, w, e)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.lat.size, self.lon.size)

    def lat2d(self) -> np.ndarray:
        return np.broadcast_to(self.lat[:, None], self.shape)

    def lon2d(self) -> np.ndarray:
        return np.broadcast_to(self.lon[None, :], self.shape)

    def east_fraction(self) -> np.ndarray:
        """0 at the west edge, 1 at the east edge, [ny, nx]."""
        return (self.lon2d() - self.west) / (self.east - self.west)

    def north_fraction(self) -> np.ndarray:
        return (self.lat2d() - self.south) / (self.north - self.south)


@dataclass(frozen=True)
class Statics:
    """Static maps on the cell centres, plus the 1′ elevation points."""

    elev_points: np.ndarray  # [ny·15+1, nx·15+1] elevation at 1′ points [m]
    lat_points: np.ndarray  # [ny·15+1] increasing
    lon_points: np.ndarray  # [nx·15+1] increasing
    elevation: np.ndarray  # [ny, nx] cell mean of the points (as prepare computes it) [m]
    clay: np.ndarray  # fractions 0..1
    sand: np.ndarray
    silt: np.ndarray
    poro_top: np.ndarray  # [m3 m-3]
    poro_mid: np.ndarray
    domveg: np.ndarray  # int, modified IGBP classes 1..20
    land: np.ndarray  # bool


# modified IGBP classes used by GLDAS (subset)
EVERGREEN_NEEDLELEAF, DECIDUOUS_BROADLEAF, MIXED_FOREST = 1, 4, 5
OPEN_SHRUBLAND, WOODY_SAVANNA, GRASSLAND, CROPLAND = 7, 8, 10, 12
WATER = 17


def make_statics(rng: np.random.Generator, region: Region, wetness: np.ndarray) -> Statics:
    """Elevation, soil texture and porosity, vegetation and land mask of the region.

    Args:
      wetness: [ny, nx] 0 (dry) .. 1 (wet) climate index; vegetation follows it.
    """
    ny, nx = region.shape
    n = POINTS_PER_CELL
    elev, lat_p, lon_p = _elevation_points(rng, region)
    # Cell means exactly as prepare computes them: drop the first row and column, 15x15 blocks.
    blocks = elev[1:, 1:].reshape(ny, n, nx, n)
    elevation = blocks.mean(axis=(1, 3), dtype=np.float64)
    sand, clay, silt, poro_top, poro_mid = _soil(rng, wetness, (ny, nx))
    veg = _vegetation(wetness, elevation)
    land = _land(rng, ny, nx)
    veg[~land] = WATER
    return Statics(
        elev_points=elev,
        lat_points=lat_p,
        lon_points=lon_p,
        elevation=elevation,
        clay=clay,
        sand=sand,
        silt=silt,
        poro_top=poro_top,
        poro_mid=poro_mid,
        domveg=veg,
        land=land,
    )


def with_land(st: Statics, wetness: np.ndarray, land: np.ndarray) -> Statics:
    """The statics with another land mask: water where it has none, the vegetation of
    `make_statics` on its land (also on cells the demo's own mask had made water)."""
    veg = _vegetation(wetness, st.elevation)
    veg[~land] = WATER
    return replace(st, land=np.asarray(land, bool), domveg=veg)


def _elevation_points(rng: np.random.Generator, region: Region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Elevation [m] on the 1′ points of the region, ETOPO1-like: a west-to-east slope (plains
    rising to the west), hills, and fine roughness.

    Returns (elevation [ny*15 + 1, nx*15 + 1] float32 >= 0, the points' latitudes, longitudes).
    """
    ny, nx = region.shape
    n = POINTS_PER_CELL
    lat_p = region.south + np.arange(ny * n + 1) / 60.0
    lon_p = region.west + np.arange(nx * n + 1) / 60.0
    ef = (lon_p - region.west) / (region.east - region.west)
    base = 1200.0 - 900.0 * ef[None, :] + 0.0 * lat_p[:, None]
    hills = np.zeros_like(base)
    for _ in range(max(4, ny * nx // 40)):
        cy, cx = rng.uniform(lat_p[0], lat_p[-1]), rng.uniform(lon_p[0], lon_p[-1])
        r = rng.uniform(0.15, 0.8)
        amp = rng.uniform(50.0, 600.0)
        hills += amp * np.exp(-(((lat_p[:, None] - cy) ** 2 + (lon_p[None, :] - cx) ** 2) / (2 * r * r)))
    rough = 25.0 * smooth_noise(rng, base.shape, 2.0)
    elev = np.maximum(base + hills + rough, 0.0).astype(np.float32)
    return elev, lat_p, lon_p


def _soil(rng: np.random.Generator, wetness: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """(sand, clay, silt, top-layer porosity, mid-layer porosity) per cell: sandier where dry,
    more clay where wet, sand + clay <= 0.92, porosity rising with clay. `shape`: (ny, nx)."""
    sand = 0.15 + 0.55 * unit(smooth_noise(rng, shape, 3.0) - 0.8 * wetness)
    clay = 0.08 + 0.35 * unit(smooth_noise(rng, shape, 3.0) + 0.8 * wetness)
    total = sand + clay
    over = total > 0.92
    sand = np.where(over, sand * 0.92 / total, sand)
    clay = np.where(over, clay * 0.92 / total, clay)
    silt = 1.0 - sand - clay
    poro_top = 0.36 + 0.14 * clay / 0.43 - 0.04 * sand + 0.01 * smooth_noise(rng, shape, 2.0)
    poro_mid = poro_top - 0.03 + 0.01 * smooth_noise(rng, shape, 2.0)
    return sand, clay, silt, poro_top, poro_mid


def _vegetation(wetness: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Dominant vegetation class per cell (int32): shrubland, grassland, cropland, deciduous
    forest from dry to wet, mixed forest where a cell stands > 80 m above its 3x3 mean."""
    veg = np.full(elevation.shape, GRASSLAND, np.int32)
    veg[wetness > 0.35] = CROPLAND
    veg[wetness > 0.7] = DECIDUOUS_BROADLEAF
    veg[wetness < 0.15] = OPEN_SHRUBLAND
    rough_hills = (elevation - ndimage.uniform_filter(elevation, 3)) > 80.0
    veg[rough_hills] = MIXED_FOREST
    return veg


def _land(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    """Land mask [ny, nx]: everything except a lake (an ellipse) and, in regions of 12 rows or
    more, a river-like chain of water cells in the southern half."""
    land = np.ones((ny, nx), bool)
    cy, cx = rng.integers(ny // 4, max(ny // 4 + 1, 3 * ny // 4)), rng.integers(nx // 4, max(nx // 4 + 1, 3 * nx // 4))
    ry, rx = max(1.0, ny / 10), max(1.0, nx / 7)
    yy, xx = np.mgrid[0:ny, 0:nx]
    land &= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 > 1.0
    if ny >= 12:
        river_x = np.clip(np.round(nx * 0.7 + np.cumsum(rng.integers(-1, 2, ny))).astype(int), 0, nx - 1)
        land[np.arange(ny // 2, ny), river_x[ny // 2 :]] = False
    return land
