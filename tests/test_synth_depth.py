"""The synthetic Earth below the surface: the soil processes of the deep layers, and what the
pipeline's targets and the reanalysis look like at depth."""

import numpy as np
import pandas as pd
import pytest

from somojax import constants as C
from somojax import stores
from somojax.config import load_config
from somojax.synth import earth, simulate, soil, stations, weather


@pytest.fixture(scope="module")
def tiny_sim():
    return simulate(load_config("tiny", []))


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory):
    from somojax.prepare import prepare

    cfg = load_config("tiny", [f"workdir={tmp_path_factory.mktemp('depth')}/run"])
    earth.generate(cfg)
    prepare(cfg)
    return cfg


def _two_layers(**kw) -> soil.SoilParams:
    # 100 mm over 200 mm, porosity 0.4, field capacity 0.3, wilting point 0.1, no drainage
    return soil.SoilParams(
        thickness=np.array([100.0, 200.0]),
        porosity=np.full((2, 1), 0.4),
        field_capacity=np.full((2, 1), 0.3),
        wilting_point=np.full((2, 1), 0.1),
        drainage=np.zeros((2, 1)),
        roots=np.array([[0.5], [0.5]]),
        **kw,
    )


def test_diffusion_one_day_by_hand():
    # layer 1 at 0.35 (35 mm), layer 2 at 0.15 (30 mm); D = 20 mm per unit θ difference
    p = _two_layers(diffusion=20.0)
    out = soil.run(p, np.zeros((1, 1)), np.array([[260.0]]), np.zeros((1, 1)), initial=np.array([[35.0], [30.0]]))
    flux = 20.0 * (0.35 - 0.15)  # 4 mm downward; below the cap 100·200/300 = 66.7
    assert out.outflow[0, 0, 0] == pytest.approx(flux)
    np.testing.assert_allclose(out.storage[0, :, 0], [35.0 - flux, 30.0 + flux])
    # capillary rise: a dry top over a wet layer lifts water (negative downward flux)
    up = soil.run(p, np.zeros((1, 1)), np.array([[260.0]]), np.zeros((1, 1)), initial=np.array([[15.0], [70.0]]))
    assert up.outflow[0, 0, 0] == pytest.approx(20.0 * (0.15 - 0.35))


def test_diffusion_never_overshoots_equal_moisture():
    p = _two_layers(diffusion=1e6)
    out = soil.run(p, np.zeros((1, 1)), np.array([[260.0]]), np.zeros((1, 1)), initial=np.array([[38.0], [24.0]]))
    theta = out.theta[0, :, 0]
    assert theta[0] == pytest.approx(theta[1])
    assert theta[0] == pytest.approx(62.0 / 300.0)


def test_bypass_one_day_by_hand():
    # 30 mm of rain on an empty-enough top layer: runoff 30·(20/40)³, then macropores carry
    # 0.5·(infiltration − 10 mm) straight into layer 2
    p = _two_layers(
        bypass_fraction=0.5, bypass_above=10.0, bypass_split=np.array([0.0, 1.0]), runoff_exp=3.0, degree_day=0.0
    )
    out = soil.run(p, np.array([[30.0]]), np.array([[290.0]]), np.zeros((1, 1)), initial=np.array([[20.0], [30.0]]))
    runoff = 30.0 * (20.0 / 40.0) ** 3
    infiltration = 30.0 - runoff
    bypass = 0.5 * (infiltration - 10.0)
    assert out.runoff[0, 0] == pytest.approx(runoff)
    assert out.bypass[0, 1, 0] == pytest.approx(bypass)
    np.testing.assert_allclose(out.storage[0, :, 0], [20.0 + infiltration - bypass, 30.0 + bypass])


def test_infiltration_excess_runs_off_instead_of_passing_down():
    p = _two_layers(infiltration_excess=True, runoff_exp=3.0, degree_day=0.0)
    out = soil.run(p, np.array([[30.0]]), np.array([[290.0]]), np.zeros((1, 1)), initial=np.array([[30.0], [30.0]]))
    # saturation excess 30·(30/40)³ = 12.66 mm runs off, 17.34 mm would infiltrate, 10 mm fit
    assert out.infiltration[0, 0] == pytest.approx(10.0)
    assert out.runoff[0, 0] == pytest.approx(20.0)
    assert out.storage[0, 1, 0] == pytest.approx(30.0)  # nothing passed down


def test_every_process_conserves_water():
    rng = np.random.default_rng(3)
    nd, nl, nc = 300, 3, 6
    poro = rng.uniform(0.35, 0.5, (nl, nc))
    p = soil.SoilParams(
        thickness=np.array([70.0, 210.0, 720.0]),
        porosity=poro,
        field_capacity=poro * 0.7,
        wilting_point=poro * 0.25,
        drainage=rng.uniform(0.01, 0.4, (nl, nc)),
        roots=np.full((nl, nc), 1.0 / nl),
        drainage_threshold=poro * 0.4,
        diffusion=rng.uniform(1.0, 30.0, (nl - 1, nc)),
        bypass_fraction=rng.uniform(0.1, 0.6, nc),
        bypass_above=5.0,
        bypass_split=np.array([0.0, 0.6, 0.4]),
        infiltration_excess=True,
        degree_day=0.0,
    )
    precip = np.where(rng.random((nd, nc)) < 0.3, rng.gamma(0.8, 25.0, (nd, nc)), 0.0)
    t2m = 265.0 + 25 * rng.random((nd, nc))
    rn = rng.uniform(-2.0, 15.0, (nd, nc))
    inc = rng.normal(0.0, 3.0, (nd, nl, nc))
    out = soil.run(p, precip, t2m, rn, increments=inc)
    s = np.concatenate([out.initial[None], out.storage]).astype(np.float64)
    np.testing.assert_allclose(np.diff(s, axis=0), out.inflow - out.outflow + out.increment - out.et, atol=1e-9)
    np.testing.assert_allclose(out.inflow[:, 1:], out.bypass[:, 1:] + out.outflow[:, :-1], atol=1e-12)
    np.testing.assert_allclose(out.inflow[:, 0] + out.bypass.sum(axis=1), out.infiltration, atol=1e-12)
    np.testing.assert_allclose(out.infiltration + out.runoff, precip, atol=1e-9)
    assert np.all(out.theta >= 0.5 * p.wilting_point[None] - 1e-12)
    assert np.all(out.theta <= p.porosity[None] + 1e-12)
    assert (out.outflow[:, :-1] < 0).any()  # capillary rise happened
    assert np.abs(out.increment).sum() > 0


def test_analysis_increments_follow_the_temperature_error():
    days = pd.date_range("2001-01-01", periods=4)
    shape = (4, 1, 2)
    true_t = np.full(shape, 280.0)
    true_t[:, 0, 1] = 260.0  # a frozen cell
    era_t = true_t + np.array([1.0, -1.0, 2.0, 0.0])[:, None, None]  # mean error +0.5 K
    zeros = np.zeros(shape)
    w = lambda t: weather.Weather(days, zeros, t, t - 2, zeros, zeros, zeros, zeros, t)  # noqa: E731
    inc = earth.analysis_increments(w(era_t), w(true_t))
    assert inc.shape == (4, 3, 2)
    want = earth.INCREMENT_MM_PER_K * (np.array([1.0, -1.0, 2.0, 0.0]) - 0.5)
    np.testing.assert_allclose(inc[:, :, 0], want[:, None] * earth.INCREMENT_WEIGHTS[None, :])
    assert np.all(inc[:, :, 1] == 0)  # frozen ground gets no increment


def test_truth_deep_layers_are_smooth_but_alive(tiny_sim):
    """The truth's 30–50 cm layer is slower than its surface, yet moves between storms."""
    land = tiny_sim["statics"].land
    truth = tiny_sim["truth"][:, :, land]
    lag1 = lambda x: np.array([np.corrcoef(x[1:, i], x[:-1, i])[0, 1] for i in range(x.shape[1])])  # noqa: E731
    assert np.all(lag1(truth[:, 2]) > lag1(truth[:, 0]))
    steady = np.abs(np.diff(truth[:, 2], axis=0)) < 1e-6  # days without any change
    assert steady.mean() < 0.2, steady.mean()


def test_reanalysis_deep_layers_are_smoother_than_its_surface_and_not_constant(tiny_sim):
    land = tiny_sim["statics"].land
    swvl = [tiny_sim["swvl"][v][:, land] for v in C.ERA5_SM_VARS]
    lag1 = [np.array([np.corrcoef(x[1:, i], x[:-1, i])[0, 1] for i in range(x.shape[1])]) for x in swvl]
    assert np.all(lag1[1] > lag1[0]) and np.all(lag1[2] > lag1[1])
    truth_l3 = tiny_sim["truth"][:, 2][:, land]
    std3 = swvl[2].std(axis=0)
    assert np.all(std3 > truth_l3.std(axis=0) / 3), (std3.min(), truth_l3.std(axis=0).max())
    assert np.all(std3 > 0.01)


def test_prepared_targets_vary_like_the_truth_in_every_layer(tiny_prepared):
    """Targets are rescaled to the reanalysis' std: at depth it must not be near zero."""
    cfg = tiny_prepared
    tg = stores.open_store(cfg.store_dir, "targets")
    truth = stores.open_store(cfg.store_dir, "truth")[C.SM_TRUE]
    for layer in C.LAYERS:
        sm = tg[C.SM].sel({C.LAYER: layer}).values.astype(np.float64)
        ratios = []
        for c in range(sm.shape[0]):
            ok = np.isfinite(sm[c])
            if ok.sum() < 60:
                continue
            cell = tg.isel({C.CELL: c})
            true = truth.sel({C.LAYER: layer, C.LAT: float(cell[C.LAT]), C.LON: float(cell[C.LON])})
            true = true.sel({C.TIME: tg[C.TIME].values[ok]}).values.astype(np.float64)
            ratios.append(sm[c, ok].std() / true.std())
        assert ratios, f"no {layer} target cell"
        assert 1 / 3 < min(ratios) and max(ratios) < 3, (layer, ratios)


def test_value_lines_are_ismn_records():
    times = pd.DatetimeIndex(["2001-03-04 00:00", "2001-03-04 03:00", "2001-12-31 21:00"])
    s = stations.Sensor(
        "S1",
        0,
        0,
        40.0,
        -97.0,
        300.0,
        0.05,
        0.05,
        "EC5",
        0.0,
        1.0,
        times,
        np.array([0.25004, -0.0123, 0.123449]),
        np.array(["G", "C01", "D03,D05"]),
        np.zeros(3),
    )
    assert stations.value_lines(s) == (
        "2001/03/04 00:00   0.2500 G M\n2001/03/04 03:00  -0.0123 C01 M\n2001/12/31 21:00   0.1234 D03,D05 M"
    )


def test_reanalysis_params_cover_every_cell(tiny_sim):
    st = tiny_sim["statics"]
    p = earth.reanalysis_params(st)
    n = st.land.size
    for f in ("porosity", "field_capacity", "wilting_point", "drainage_threshold"):
        assert getattr(p, f).shape == (3, n)
    assert np.all(p.wilting_point < p.drainage_threshold) and np.all(p.drainage_threshold < p.field_capacity)
    assert np.all(p.field_capacity < p.porosity)
    assert p.degree_day == 0.0  # no snow in the reanalysis
