"""ERA5 read in latitude bands (`era5._chunk`, `era5._band_rows`): where the files store rows apart,
prepare's dask chunks are bands of `layout.forcing_chunk_cells` rows, so regrouping them into the
forcing store's time-long chunks holds one band, not the whole map; the stores are unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somojax import constants as C
from somojax import stores
from somojax.config import load_config
from somojax.prepare import era5, prepare


def _field(n_lat: int = 100, n_lon: int = 40, days: int = 30, **encoding) -> xr.DataArray:
    t = pd.date_range("2001-01-01", periods=days, freq="D")
    da = xr.DataArray(
        np.zeros((days, n_lat, n_lon), np.float32),
        dims=(C.TIME, C.LAT, C.LON),
        coords={C.TIME: t, C.LAT: np.linspace(60, 35.25, n_lat), C.LON: np.linspace(0, 9.75, n_lon)},
    )
    da.encoding.update(encoding)
    return da


@pytest.mark.parametrize(
    "encoding, rows",
    [
        ({"chunksizes": (16, 1, 40)}, 24),  # one row per file chunk (the tiled synthetic Earth)
        ({"chunksizes": (16, 5, 40)}, 25),  # whole file chunks: 24 rows rounded up to 5s
        ({"preferred_chunks": {C.TIME: 1, C.LAT: 100, C.LON: 40}}, None),  # whole maps (ARCO-ERA5)
        ({"chunksizes": (1, 100, 40)}, None),  # whole maps per step (NetCDF)
        ({"contiguous": True, "chunksizes": None}, 24),  # any rows read alone
        ({}, None),  # nothing known (GRIB): whole maps
    ],
)
def test_band_rows_follow_the_files_storage(encoding, rows):
    assert era5._band_rows(_field(**encoding), 24) == rows
    assert era5._band_rows(_field(**encoding), None) is None
    assert era5._band_rows(_field(n_lat=20, **encoding), 24) is None  # map smaller than a band


def test_chunks_are_bands_of_whole_days_within_the_byte_target():
    da = era5._chunk(_field(days=400, chunksizes=(16, 1, 40)), target_bytes=24 * 40 * 4 * 100, lat_rows=24)
    assert da.chunksizes[C.LAT] == (24, 24, 24, 24, 4) and set(da.chunksizes[C.LON]) == {40}
    assert da.chunksizes[C.TIME][0] == 100  # 100 band-days fit the target
    whole = era5._chunk(_field(days=400, chunksizes=(1, 100, 40)), target_bytes=24 * 40 * 4 * 100, lat_rows=24)
    assert whole.chunksizes[C.LAT] == (100,) and whole.chunksizes[C.TIME][0] == 24


def test_hourly_bands_keep_whole_days_per_chunk():
    t = pd.date_range("2001-01-01", periods=24 * 10, freq="h")
    da = xr.DataArray(np.zeros((t.size, 100, 40), np.float32), dims=(C.TIME, C.LAT, C.LON), coords={C.TIME: t})
    da.encoding["contiguous"] = True
    out = era5._chunk(da, target_bytes=24 * 40 * 4 * 50, lat_rows=24)
    assert out.chunksizes[C.LAT][0] == 24 and out.chunksizes[C.TIME][0] == 48  # 50 steps -> 2 whole days


@pytest.mark.slow
def test_prepare_in_bands_writes_the_same_stores(tmp_path, monkeypatch):
    from somojax.synth import generate
    from test_prepare_distributed import _arrays, _same_bytes

    over = ["synth.band_deg=1.0", "layout.forcing_chunk_cells=2", "layout.forcing_chunk_days=200"]
    banded = load_config("tiny", [f"workdir={tmp_path}/run", *over])
    generate(banded)  # tiled writer: ERA5 files chunked one row of points at a time
    seen = []
    band_rows = era5._band_rows
    monkeypatch.setattr(era5, "_band_rows", lambda da, n: seen.append(band_rows(da, n)) or seen[-1])
    prepare(banded)
    assert seen and set(seen) == {2}, seen  # every variable was read in bands of 2 rows
    monkeypatch.setattr(era5, "_band_rows", lambda da, n: None)
    whole = load_config("tiny", [f"workdir={tmp_path}/run", f"data.store_dir={tmp_path}/whole", *over])
    prepare(whole)
    for kind in ("forcings", "statics", "targets"):
        a, b = _arrays(stores.store_path(banded.store_dir, kind)), _arrays(stores.store_path(whole.store_dir, kind))
        assert a.keys() == b.keys() and a, kind
        assert not [k for k in a if not _same_bytes(a[k], b[k])], kind
    assert (banded.store_dir / C.STATS_FILE).read_text() == (whole.store_dir / C.STATS_FILE).read_text()
