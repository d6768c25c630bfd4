"""The benchmark suite: the PyTorch peers compute the same EA-LSTM as somojax (NumPy float64
reference), the floor's FLOP counts, the harness's results files. Speed itself is measured by
`somojax bench`, never asserted here."""

import json

import jax
import numpy as np
import pytest

from somojax.bench import floor, harness, run_benchmarks
from somojax.config import load_config
from somojax.errors import ConfigError
from tests.test_ealstm import numpy_ealstm, random_params

D, S, H, T, B = 6, 10, 8, 40, 5


def _data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, D)).astype(np.float32), rng.standard_normal((B, S)).astype(np.float32)


@pytest.mark.torch
def test_regional_peer_is_the_same_ealstm():
    import torch

    from somojax.bench import peers

    p = random_params(0, D, S, H)
    x_d, x_s = _data()
    model = peers.regional_model(D, S, H).eval()
    peers.load_params(model, p)
    with torch.no_grad():
        got = model(torch.as_tensor(x_d), torch.as_tensor(x_s)).numpy()[:, 0]
    np.testing.assert_allclose(got, numpy_ealstm(p, x_d, x_s, 1)[:, 0], atol=1e-5)


@pytest.mark.torch
def test_neuralhydrology_peer_is_the_same_ealstm():
    pytest.importorskip("neuralhydrology")
    import torch

    from somojax.bench import peers

    p = random_params(2, D, S, H)
    x_d, x_s = _data(3)
    model, names = peers.neuralhydrology_model(D, S, H, T)
    model.eval()
    peers.load_neuralhydrology_params(model, p)
    with torch.no_grad():
        got = model(peers.neuralhydrology_inputs(x_d, x_s, names))["y_hat"].numpy()[..., 0]
    np.testing.assert_allclose(got, numpy_ealstm(p, x_d, x_s, T), atol=1e-5)


@pytest.mark.torch
def test_sliding_window_peer_predicts_every_day():
    from somojax.bench import peers

    out = peers.regional_sliding_inference(days=50, seq_length=20, n_dynamic=D, n_static=S, hidden=H, batch=16)()
    assert out.shape == (50, 1) and np.isfinite(out).all()


def test_flop_counts():
    assert (
        floor.cell_step_flop(128) == 2 * 128 * 384 == 98_304
    )  # docs/design.md#inference-semantics: 98 kFLOP per cell-step
    assert floor.train_step_flop(256, 365, 128) == 3 * floor.cell_step_flop(128) * 256 * 365


def test_matmul_rate_counts_the_work():
    r = floor.matmul_rate(64, 16, 48, repeats=1, target_flop=1e7)
    assert r["shape"] == [64, 16, 48]
    assert r["matmuls_per_call"] == int(1e7 / (2 * 64 * 16 * 48))
    assert 0.01 < r["gflops"] < 1e5


def test_chain_is_the_matmul_sum():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    got = floor._chain(jax.numpy.asarray(x, np.float32), jax.numpy.asarray(w, np.float32), 3)
    want = sum((x * (1.0 + 1e-7 * i)) @ w for i in range(3))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_round_robin_interleaves_and_reports():
    calls = []
    res = harness.round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls[2:] == ["a", "b"] * 3
    assert set(res) == {"a", "b"} and all(r["repeats"] == 3 and r["median_s"] >= 0 for r in res.values())


def test_table_formats_columns():
    t = harness.table([{"n": "x", "v": 1.234}, {"n": "y"}], [("n", "name", "s"), ("v", "value", ".1f")])
    assert t.splitlines() == ["| name | value |", "|---|---:|", "| x | 1.2 |", "| y | – |"]


def test_unknown_benchmark_is_an_error():
    with pytest.raises(ConfigError, match="nope"):
        run_benchmarks(load_config("tiny"), only=["nope"])


def test_suite_writes_results(tmp_path, capsys):
    cfg = load_config("tiny", [f"bench.output_dir={tmp_path}"])
    res = run_benchmarks(cfg, only=["rollout", "zarr"])
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files == sorted([f"rollout-{harness.device_tag()}.json", f"zarr_write-{harness.device_tag()}.json"])
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["machine"]["jax_backend"] == "cpu" and saved["sizes"]["hidden"] == 8
    variants = [r["variant"] for r in saved["rows"]]
    assert variants[:3] == ["exact, 1 cell", "chunked (k=30), 1 cell", "exact, tile of 64 cells x 1 year"]
    # the extrapolation is the cell-step count of docs/design.md#inference-semantics (with the configured window length)
    assert saved["full_product"]["cell_steps"] == 243_883 * 7_305 * 30 * 3 * 5
    assert res["zarr"]["rows"][0]["MB"] > 0
    assert "| rollout (1 member, 1 layer) |" in capsys.readouterr().out


def _fake_times(**min_s):
    """harness.round_robin's answer for samples v, 2v, 3v of each function (median 2v, best v)."""
    return {
        k: {"median_s": 2 * v, "iqr_s": v, "min_s": v, "first_call_s": v, "repeats": 3, "times_s": [v, 2 * v, 3 * v]}
        for k, v in min_s.items()
    }


def test_floor_is_the_fastest_sample_of_either_way():
    times = _fake_times(**{floor.ONE: 0.5, floor.SPLIT: 0.25})
    r = floor.rate_from_times(times, 1e9, [10, 10, 10])
    assert r["gflops_one_device"] == pytest.approx(2.0) and r["gflops_data_parallel"] == pytest.approx(4.0)
    assert r["gflops"] == pytest.approx(4.0) and r["floor_samples"] == 6 and r["matmuls_per_call"] == 500_000
    assert floor.rate_from_times(_fake_times(**{floor.ONE: 0.5}), 1e9, [10, 10, 10])["gflops"] == pytest.approx(2.0)


def test_step_below_its_floor_is_a_measurement_failure():
    assert floor.floor_check(0.235, 0.283) == {
        "floor_ratio": None,
        "measurement_failure": "step 235 ms below its floor 283 ms",
    }
    assert floor.floor_check(0.300, 0.250) == {"floor_ratio": pytest.approx(1.2)}
    assert floor.floor_check(12.0, 20.0, "rollout")["measurement_failure"] == "rollout 12 s below its floor 20 s"


def test_train_bench_samples_the_floor_between_steps_and_reports_failures(tmp_path, monkeypatch):
    from somojax.bench import suite

    cfg = load_config("tiny", [f"bench.output_dir={tmp_path}"])
    b = cfg.bench
    flop = floor.train_step_flop(b.batch_size, b.seq_length, b.hidden_size)  # one call = one member's step work
    monkeypatch.setattr(floor, "matmul_fns", lambda *shape: ({floor.ONE: None, floor.SPLIT: None}, flop))
    rounds = []

    def fake_round_robin(fns, warmup, repeats):
        rounds.append(list(fns))
        step = {"somojax, 1 member": 0.235 / 2, "somojax, 5 members (one step)": 1.5 / 2}  # a step's time is its median
        return _fake_times(
            **{k: step.get(k, 0.283 if k == floor.ONE else 0.4 if k == floor.SPLIT else 9.0) for k in fns}
        )

    monkeypatch.setattr(harness, "round_robin", fake_round_robin)
    res = suite.bench_train(cfg)
    assert len(rounds) == 1 and {floor.ONE, floor.SPLIT, "somojax, 1 member"} <= set(
        rounds[0]
    )  # one interleaved round robin
    saved = json.loads(next(tmp_path.glob("train_step-*.json")).read_text())
    one, five = saved["rows"][:2]
    assert one["floor_ms"] == pytest.approx(283.0) and one["floor_ratio"] is None
    assert one["measurement_failure"] == "step 235 ms below its floor 283 ms"
    assert five["floor_ratio"] == pytest.approx(1.5 / (5 * 0.283)) and "measurement_failure" not in five
    assert saved["ratios"]["step / matmul floor"] is None
    assert saved["measurement_failures"] == ["somojax, 1 member: step 235 ms below its floor 283 ms"]
    assert res["matmul_floor"]["gflops"] == pytest.approx(flop / 0.283 / 1e9)
