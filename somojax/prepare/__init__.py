"""Raw files -> analysis-ready Zarr stores (xarray/dask; no JAX here)."""
