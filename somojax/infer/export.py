"""`somojax export`: the prediction store as CF NetCDF files, one per layer and year.

Named `somojax_<LAYER>_<YYYY>.nc` after SoMo.ml's released `SoMo.ml_v1_<LAYER>_<YYYY>.nc`; each
holds `sm` and `sm_spread` (time, latitude, longitude), zlib-compressed, with the store's CF
attributes and the global attributes users expect (title, source, references, history).
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from somojax import __version__
from somojax import constants as C
from somojax import stores
from somojax.config import Config
from somojax.errors import OutputError, writing
from somojax.infer import store as pstore
from somojax.utils.logging import Progress, get_logger

log = get_logger("infer")


def export_filename(layer: str, year: int) -> str:
    return f"somojax_{layer}_{year}.nc"


def export(cfg: Config) -> list[Path]:
    """Writes one NetCDF file per layer and year of `cfg.predictions_path` to `cfg.export_dir`."""
    path = cfg.predictions_path
    ds = stores.open_store(path, "predictions")
    pstore.check_complete(ds, path)
    out_dir = cfg.export_dir
    with writing("the export directory", out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    years = np.unique(pd.DatetimeIndex(ds[C.TIME].values).year)
    written = []
    history = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} somojax {__version__} export from {path}"
    with Progress(total=len(years) * ds.sizes[C.LAYER], desc="export", unit="file") as prog:
        for layer in ds[C.LAYER].values:
            for year in years:
                part = ds.sel({C.LAYER: layer, C.TIME: str(year)})
                part = part.drop_vars([v for v in ("layer_depth_bounds",) if v in part.variables])
                lo, hi = C.LAYER_BOUNDS_CM[str(layer)]
                part.attrs = {
                    **{k: v for k, v in ds.attrs.items() if k not in ("somojax_fingerprint", "somojax_complete")},  # run bookkeeping
                    "Conventions": "CF-1.8",
                    "title": f"somojax daily soil moisture, layer {layer} ({lo:g}-{hi:g} cm), {year}",
                    "layer": str(layer),
                    "depth_top_m": lo / 100.0,
                    "depth_bottom_m": hi / 100.0,
                    "history": history,
                }
                enc = {v: {"zlib": True, "complevel": 4, "dtype": "float32", "_FillValue": np.float32(np.nan), "chunksizes": (1, part.sizes[C.LAT], part.sizes[C.LON])} for v in (C.SM, C.SM_SPREAD)}
                enc[C.TIME] = {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int32"}
                target = out_dir / export_filename(str(layer), int(year))
                _write_netcdf(part.load(), enc, target)
                written.append(target)
                prog.update(1)
    log.info("exported %d files to %s", len(written), out_dir)
    return written


def _write_netcdf(ds, encoding: dict, target: Path) -> None:
    """Writes under a temporary name and renames: a file named `target` is always complete."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        with writing("the NetCDF export", target):
            ds.to_netcdf(tmp, encoding=encoding, format="NETCDF4")
            os.replace(tmp, target)
    except RuntimeError as e:  # netCDF4/HDF5 report a full disk as "NetCDF: HDF error"
        free = shutil.disk_usage(target.parent).free
        raise OutputError(
            f"cannot write the NetCDF export {target}: {e} ({free / 1e6:.1f} MB free on its disk; a full disk or a file "
            "system without HDF5 file locking are the usual causes: free space, set infer.export_dir elsewhere, or "
            "export HDF5_USE_FILE_LOCKING=FALSE)"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
