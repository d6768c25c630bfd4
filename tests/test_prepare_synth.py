"""`prepare` on the synthetic Earth's raw layout (the contract with `somojax synth`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import somojax.synth
from somojax import constants as C
from somojax import stores
from somojax.cli import main
from somojax.config import load_config
from somojax.prepare import prepare
from somojax.prepare.core import SYNTH_LAYOUT

from test_prepare_factory import hourly_station, write_era5_daily, write_ismn_file, write_statics


def _contract_raw(cfg) -> None:
    """Raw files laid out as `somojax synth` writes them, from the test factories."""
    raw = cfg.raw_dir
    lat, lon = cfg.synth.lat_range, cfg.synth.lon_range
    write_era5_daily(raw / "era5", cfg.synth.start, cfg.synth.end, lat, lon)
    paths = write_statics(raw / "static", lat, lon)
    for key, name in SYNTH_LAYOUT.items():
        if key in paths:
            paths[key].rename(raw / name)
    rng = np.random.default_rng(0)
    for i in range(4):
        la, lo = rng.uniform(lat[0], lat[1]), rng.uniform(lon[0], lon[1])
        for j, depth in enumerate((0.05, 0.20, 0.40)):
            t, v, f = hourly_station(cfg.synth.station_start, cfg.synth.end, seed=10 * i + j)
            write_ismn_file(raw / "ismn", "SYNTH", f"S{i:03d}", la, lo, depth, depth, "Synth-Probe", t, v, f)


def test_prepare_reads_the_synthetic_layout(tmp_path):
    cfg = load_config("tiny", [f"workdir={tmp_path}"])
    assert cfg.data.source == "synthetic"
    _contract_raw(cfg)
    report = prepare(cfg)
    assert report["inputs"]["ismn"] == str(cfg.raw_dir / "ismn")
    t = stores.open_store(cfg.store_dir, "targets")
    assert t.sizes[C.CELL] >= 1
    assert all(p.startswith("SYNTH/") for row in t["provenance"].values for p in row if p)
    assert report["targets"]["cells"]["L1"]["series"] == 4


def test_prepare_without_synthetic_earth_says_run_synth(tmp_path):
    from somojax.errors import InputDataError

    cfg = load_config("tiny", [f"workdir={tmp_path}"])
    with pytest.raises(InputDataError, match="run `somojax synth` first"):
        prepare(cfg)


@pytest.mark.skipif(not hasattr(somojax.synth, "generate"), reason="somojax.synth.generate is not written yet")
def test_synth_then_prepare_end_to_end(tmp_path):
    assert main(["synth", "-c", "tiny", f"workdir={tmp_path}"]) == 0
    assert main(["prepare", "-c", "tiny", f"workdir={tmp_path}"]) == 0
    store_dir = tmp_path / "stores"
    for kind in ("forcings", "statics", "targets"):
        stores.open_store(store_dir, kind)
    report = json.loads((store_dir / C.PREPARE_REPORT).read_text())
    assert report["targets"]["steps"][0]["step"] == "region"
    assert sum(c["cells"] for c in report["targets"]["cells"].values()) > 0
    assert (store_dir / "prepare_report.md").exists() and (store_dir / C.STATS_FILE).exists()
