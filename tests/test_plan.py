"""`somojax plan`: the rollout's work counted by hand, and wall times from measured rates (a row
below its own matmul floor is a failed measurement and is not used)."""

from __future__ import annotations

import json

import pytest

from somojax.config import load_config
from somojax.errors import ConfigError
from somojax.plan import plan


def _results(tmp_path, rows, hidden=128, gflops=200.0, devices=2, kind="cpu"):
    d = {
        "benchmark": "rollout",
        "machine": {
            "cpu": "test cpu",
            "jax_backend": kind,
            "device_kind": kind,
            "jax_devices": [f"{kind}:{i}" for i in range(devices)],
        },
        "sizes": {"hidden": hidden},
        "rows": rows,
        "matmul_gflops": gflops,
    }
    (tmp_path / f"rollout-{kind}-test.json").write_text(json.dumps(d))
    return str(tmp_path)


ROWS = [
    {"variant": "exact, 1 cell", "s": 2.0, "floor_s": 1.5, "cell_steps_per_s": 1.0e6},
    {"variant": "exact, tile", "s": 1.0, "floor_s": 1.2, "cell_steps_per_s": 9.0e6},  # below its floor: not used
    {"variant": "chunked (k=30), 1 cell", "s": 0.2, "floor_s": 0.1, "cell_steps_per_s": 5.0e5},
]


def test_paper_product_work_and_time(tmp_path, capsys):
    cfg = load_config("paper", [f"workdir={tmp_path}/run"])
    n = 100_000  # at least 4 tiles of shard_lat x shard_lon cells: all 4 devices busy
    assert n / (cfg.layout.shard_lat * cfg.layout.shard_lon) >= 4
    p = plan(cfg, devices=4, cells=n, results_dir=_results(tmp_path, ROWS))
    days = 7305  # 2000-01-01 .. 2019-12-31
    steps = n * days * 3 * 5 * 365.0
    assert p["days"] == days and p["cell_steps"] == steps
    d_in = {"L1": 6, "L2": 7, "L3": 8}  # 6 forcings, plus the upper layers' soil moisture
    assert p["flop"] == sum(n * days * 5 * 365.0 * 2 * 3 * 128 * (d + 128) for d in d_in.values())
    assert p["store_bytes"] == n * days * 3 * 2 * 4
    assert p["rate_cell_steps_per_s_per_device"] == 1.0e6 / 2  # the valid row, per device of the 2
    assert p["wall_seconds"] == pytest.approx(steps / (0.5e6 * 4))
    assert "wall time on 4 cpu device(s)" in capsys.readouterr().out


def test_hidden_size_scales_the_rate_by_flops_and_chunked_uses_its_row(tmp_path):
    cfg = load_config("paper", [f"workdir={tmp_path}/run", "model.hidden_size=64", "model.predict_last_n=30"])
    p = plan(cfg, cells=10, results_dir=_results(tmp_path, ROWS))
    assert p["mode"] == "chunked"
    assert p["cell_steps"] == pytest.approx(10 * 7305 * 3 * 5 * (365 + 29) / 30, rel=1e-12)
    assert p["rate_cell_steps_per_s_per_device"] == pytest.approx(5.0e5 / 2 * (128 / 64) ** 2)


def test_unmeasured_device_is_estimated_from_its_matmul_rate(tmp_path):
    cfg = load_config("paper", [f"workdir={tmp_path}/run"])
    res = _results(tmp_path, ROWS)
    with pytest.raises(ConfigError, match="--device-gflops"):
        plan(cfg, kind="gpu", cells=10, results_dir=res)
    p = plan(cfg, kind="gpu", cells=10, device_gflops=10_000, results_dir=res)
    frac = 1.0e6 * 2 * 3 * 128 * 128 / 1e9 / 200.0  # the CPU rollout's share of its matmul floor
    assert p["rate_cell_steps_per_s_per_device"] == pytest.approx(10_000e9 * frac / (2 * 3 * 128 * 128))
    assert "estimated, not measured" in p["rate_source"]


def test_more_devices_than_tiles_do_not_help(tmp_path):
    cfg = load_config(
        "paper",
        [
            f"workdir={tmp_path}/run",
            "layout.shard_lat=4",
            "layout.shard_lon=4",
            "layout.chunk_lat=4",
            "layout.chunk_lon=4",
        ],
    )
    res = _results(tmp_path, ROWS)
    a = plan(cfg, devices=2, cells=32, results_dir=res)  # 32 cells fill 2 tiles of 16 at most
    b = plan(cfg, devices=8, cells=32, results_dir=res)
    assert a["wall_seconds"] == b["wall_seconds"]


def test_bad_input(tmp_path):
    cfg = load_config("tiny", [f"workdir={tmp_path}/run"])
    with pytest.raises(ConfigError, match="--cells N"):
        plan(cfg, results_dir=_results(tmp_path, ROWS))  # no statics store, not the globe
    with pytest.raises(ConfigError, match="--devices 0"):
        plan(cfg, devices=0, cells=5, results_dir=str(tmp_path))


def test_cli_plan_prints_the_estimate_and_refuses_bad_input_with_exit_2(tmp_path, capsys):
    from somojax.cli import main

    res = _results(tmp_path, ROWS)
    assert (
        main(
            [
                "plan",
                "-c",
                "paper",
                f"workdir={tmp_path}/run",
                f"bench.output_dir={res}",
                "--cells",
                "243883",
                "--devices",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "9.754e+12 cell-steps" in out and "wall time on 2 cpu device(s)" in out
    assert main(["plan", "-c", "paper", f"workdir={tmp_path}/run", f"bench.output_dir={res}", "--cells", "-3"]) == 2
    assert "somojax plan: error: --cells -3" in capsys.readouterr().err
