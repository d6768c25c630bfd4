"""Raw files -> analysis-ready Zarr stores (xarray/dask; no JAX here).

Readers: `ismn` (ISMN archives), `era5` (CDS NetCDF/GRIB, ARCO Zarr), `statics` (ETOPO1, GLDAS,
land masks). Builders: `forcings` (daily inputs, ERA5 soil moisture on the target layers,
tp/arid), `targets` (the in-situ target steps), `report`. Entry point: `prepare(cfg)`.
"""

from somojax.prepare.core import prepare

__all__ = ["prepare"]
