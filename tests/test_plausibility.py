"""Physical plausibility bounds (somojax/prepare/bounds.py): the table, what happens inside and
outside it, and the ERA5 reader's screen on real sample files modified in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from somojax import constants as C
from somojax.errors import ConfigError, InputDataError
from somojax.prepare import bounds as B
from somojax.prepare.era5 import clean_era5, read_era5, screen_era5
from somojax.prepare.units import stated_units

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
SWVL_5DEG = "era5_swvl1_lsm_5deg_2010-01-01.nc"
FAST = settings(max_examples=30, deadline=None)


def _doc_bounds() -> dict[tuple[str, str], tuple[str, str]]:
    """(input, variable) -> (bounds, noise) from the table in docs/reliability.md."""
    text = DOC.read_text()
    section = text.split("## Plausibility bounds", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in ("ISMN", "ERA5", "static"):
            rows[(cells[0], cells[1])] = (cells[2], cells[3])
    return rows


def test_every_bound_is_documented_with_its_numbers():
    rows = _doc_bounds()
    table = (
        [("ISMN", "soil moisture", B.ISMN_SM)]
        + [("ERA5", k, b) for k, b in B.ERA5.items()]
        + [("static", k, b) for k, b in B.STATIC.items()]
    )
    for source, name, b in table:
        assert (source, name) in rows, f"docs/reliability.md has no row for {source} {name}"
        span, noise = rows[(source, name)]
        assert span == b.span, (source, name)
        assert noise == (f"{b.noise:g}" if b.noise else "–"), (source, name)
    assert len(rows) == len(table)


def test_classify_reasons_noise_and_fill_values():
    b = B.ERA5["tp"]  # 0..2 m, noise 1e-6 m per hour of step
    x = np.array([0.0, 1e-3, -5e-7, -5e-6, -9999.0, 2.5, 9.969e36, np.nan, np.inf])
    reasons, noise = B.classify(x, b)
    assert noise.tolist() == [False, False, True, False, False, False, False, False, False]
    assert reasons[B.FILL_REASON].tolist() == [False, False, False, False, True, False, True, False, True]
    assert reasons["below 0 m"].tolist() == [False, False, False, True, False, False, False, False, False]
    assert reasons["above 2 m"].tolist() == [False, False, False, False, False, True, False, False, False]
    # a daily step (24 h) tolerates 24 times the hourly rounding noise
    assert B.classify(np.array([-5e-6]), b, noise_scale=24)[1].tolist() == [True]


def test_fill_values_inside_the_bounds_are_data():
    # −999 m is a depth, −9999 J m-2 a night's net thermal radiation: not fill values there
    elev, therm = B.STATIC["elevation"], B.ERA5["str"]
    assert not B.classify(np.array([-999.0, -9999.0]), elev)[0][B.FILL_REASON].any()
    assert not B.classify(np.array([-9999.0, -32767.0]), therm)[0][B.FILL_REASON].any()
    assert B.classify(np.array([-9999.0]), B.STATIC["clay"])[0][B.FILL_REASON].all()


def test_screen_and_check_name_the_file_variable_values_and_fix():
    x = np.array([0.1, 0.2, 3.0, 4.0])
    s = B.screen(x, B.ERA5["swvl1"], "f.nc", "swvl1")
    assert (s.values, s.n_dropped, s.dropped["above 1 m3 m-3"]) == (4, 2, 2)
    assert (s.min, s.mean, s.max) == (0.1, pytest.approx(1.825), 4.0)
    with pytest.raises(
        InputDataError,
        match=r"f\.nc: 'swvl1' is implausible as a whole: 50\.0% of its 4 values lie outside 0\.\.1 m3 m-3 \(above 1 m3 m-3: 2; min 0\.1, mean 1\.825, max 4.*Likely values scaled \(×10\?\)",
    ):
        B.check_screen(s, "era5")
    B.check_screen(
        B.screen(np.r_[np.full(999, 0.2), 3.0], B.ERA5["swvl1"], "f.nc", "swvl1"), "era5"
    )  # 0.1% is not the variable


def test_mean_day_total_check_catches_mm_labelled_m():
    hourly_mm = np.full(48, 0.2)  # 0.2 "m" per hour: every value in 0..2 m, but 4.8 m a day
    s = B.screen(hourly_mm, B.ERA5["tp"], "tp.nc", "tp", day_factor=24.0)
    assert s.n_dropped == 0
    with pytest.raises(
        InputDataError,
        match=r"tp\.nc: 'tp' is implausible as a whole: its mean day total 4\.8 m exceeds 0\.05 m .*divide by 1000",
    ):
        B.check_screen(s, "era5")


@FAST
@given(hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(0.0, 1.0)))
def test_values_inside_the_bounds_survive_unchanged(x):
    b = B.ERA5["swvl1"]
    out = B.clean(xr.DataArray(x), b).values
    np.testing.assert_array_equal(out, x)
    assert B.screen(x, b, "f", "swvl1").n_dropped == 0


@FAST
@given(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e4, 1e4, allow_nan=False)),
    st.sampled_from(sorted(B.ERA5)),
)
def test_values_outside_are_dropped_and_counted_noise_set_to_the_bound(x, name):
    b = B.ERA5[name]
    out = B.clean(xr.DataArray(x), b).values
    inside = (x >= b.lo) & (x <= b.hi)
    noise = (x < b.lo) & (x >= b.lo - b.noise)
    np.testing.assert_array_equal(out[inside], x[inside])
    np.testing.assert_array_equal(out[noise], b.lo)
    assert np.isnan(out[~inside & ~noise]).all()
    s = B.screen(x, b, "f", name)
    assert s.n_dropped == int((~inside & ~noise).sum()) and s.set_to_bound == int(noise.sum())


# ------------------------------------------------------------------ ERA5, real samples
def test_real_negative_soil_water_is_rounding_noise(shared_data):
    path = shared_data / "era5" / SWVL_5DEG
    era5 = read_era5([path], ["swvl1"])
    raw = xr.open_dataset(path)["swvl1"].values
    (s,) = screen_era5(era5)
    # ERA5 writes small negative soil water (down to −0.003) over ice and the sea: set to 0, counted
    assert s.source == str(path) and s.values == raw.size and s.n_dropped == 0
    assert s.set_to_bound == int((raw < 0).sum()) > 0 and s.min == pytest.approx(float(raw.min()))
    clean = clean_era5(era5)["swvl1"].values
    assert clean.min() == 0.0 and int((clean == 0).sum()) == int((raw <= 0).sum())
    np.testing.assert_array_equal(np.sort(clean[clean > 0]), np.sort(raw[raw > 0]))  # the rest unchanged


def test_real_cmip_precipitation_rounding_noise(shared_data):
    path = shared_data / "era5" / "daily_surface_cancities_1990-1993.nc"
    era5 = read_era5([path], ["tp"])
    pr = xr.open_dataset(path)["pr"].values
    (s,) = screen_era5(era5)
    assert s.set_to_bound == int((pr < 0).sum()) > 0 and s.n_dropped == 0  # −5e-10 kg m-2 s-1 in the file


def _modified(src: Path, dst: Path, change) -> Path:
    with xr.open_dataset(src, mask_and_scale=True) as ds:
        ds = ds.load()
    ds = change(ds)
    for v in ds.variables:
        ds[v].encoding = {}
    ds.to_netcdf(dst)
    return dst


def test_soil_water_scaled_by_ten_stops_naming_file_and_values(shared_data, tmp_path):
    def x10(ds):
        ds["swvl1"] = (ds["swvl1"] * 10).assign_attrs(ds["swvl1"].attrs)
        return ds

    p = _modified(shared_data / "era5" / SWVL_5DEG, tmp_path / "swvl_x10.nc", x10)
    screens = screen_era5(read_era5([p], ["swvl1"]))
    with pytest.raises(
        InputDataError,
        match=r"swvl_x10\.nc: 'swvl1' is implausible as a whole: .*% of its 10,656 values lie outside 0\.\.1 m3 m-3 \(above 1 m3 m-3: .*max 7\.47.*scaled \(×10\?\)",
    ):
        B.check_screen(screens[0], "era5")


def test_celsius_labelled_kelvin_stops(shared_data, tmp_path):
    def to_c(ds):
        ds["t2m"] = (ds["t2m"] - 273.15).assign_attrs(ds["t2m"].attrs)  # still says K
        return ds

    p = _modified(shared_data / "era5" / "era5_2t_small.nc", tmp_path / "t2m_c.nc", to_c)
    (s,) = screen_era5(read_era5([p], ["t2m"]))
    assert s.fraction == 1.0 and -60 < s.mean < 40
    with pytest.raises(
        InputDataError,
        match=r"t2m_c\.nc: 't2m' is implausible as a whole: 100\.0% of its 162 values lie outside 160\.\.340 K \(below 160 K: 162; .*convert with \+273\.15",
    ):
        B.check_screen(s, "era5")


def test_negative_precipitation_beyond_noise_stops(shared_data, tmp_path):
    def negate(ds):
        ds["pr"] = (-ds["pr"]).assign_attrs(ds["pr"].attrs)
        return ds

    p = _modified(shared_data / "era5" / "daily_surface_cancities_1990-1993.nc", tmp_path / "neg_pr.nc", negate)
    (s,) = screen_era5(read_era5([p], ["tp"]))
    with pytest.raises(
        InputDataError,
        match=r"neg_pr\.nc: 'tp' is implausible as a whole: .* lie outside 0\.\.2 m \(below 0 m: .*data\.era5_accumulation",
    ):
        B.check_screen(s, "era5")


def test_check_steps_reads_a_sample_of_each_file(shared_data):
    era5 = read_era5([shared_data / "era5" / "daily_surface_cancities_1990-1993.nc"], ["t2m"])
    (s,) = screen_era5(era5, steps_per_file=10)
    assert (
        s.checked == f"10 of {era5['t2m'].sizes[C.TIME]:,} time steps"
        and s.values == 10 * era5["t2m"].sizes["location"]
    )


def test_each_file_is_screened_on_its_own(shared_data, tmp_path):
    # one good file and one scaled file of the same variable: the report names the scaled one
    src = shared_data / "era5" / "daily_surface_cancities_1990-1993.nc"
    a = _modified(src, tmp_path / "y1990.nc", lambda ds: ds.sel(time="1990"))

    def y1991_in_hpa(ds):
        ds = ds.sel(time="1991")
        ds["ps"] = (ds["ps"] / 100).assign_attrs(ds["ps"].attrs)  # still says Pa
        return ds

    b = _modified(src, tmp_path / "y1991.nc", y1991_in_hpa)
    screens = {s.source: s for s in screen_era5(read_era5([a, b], ["sp"]))}
    assert screens[str(a)].n_dropped == 0 and screens[str(b)].fraction == 1.0
    with pytest.raises(InputDataError, match=r"y1991\.nc: 'sp' .*below 30000 Pa.*hPa labelled Pa \(multiply by 100\)"):
        B.check_screen(screens[str(b)], "era5")


# ------------------------------------------------------------------ units attribute
def test_missing_units_is_an_error_unless_stated(shared_data, tmp_path):
    def strip(ds):
        ds["t2m"].attrs.pop("units")
        return ds

    p = _modified(shared_data / "era5" / "era5_2t_small.nc", tmp_path / "no_units.nc", strip)
    with pytest.raises(
        InputDataError, match=r"no_units\.nc: variable 't2m' has no 'units' attribute; .*data\.units: \{t2m: K\}"
    ):
        read_era5([p])
    t2m = read_era5([p], stated_units=stated_units({"t2m": "K"}))["t2m"]
    assert t2m.attrs["units"] == "K" and "data.units" in t2m.attrs["units_source"]
    raw = xr.open_dataset(p)["t2m"]
    assert float(t2m[0].sel(latitude=40.0, longitude=-20.0)) == float(raw[0].sel(latitude=40.0, longitude=340.0))


def test_stated_units_are_checked():
    assert stated_units([("2m_temperature", "K"), ("tp", "m"), ("pr", "kg m-2 s-1")]) == {
        "t2m": "K",
        "tp": "m",
        "pr": "kg m-2 s-1",
    }
    with pytest.raises(ConfigError, match=r"data\.units: 'tmp' is not an input variable somojax reads"):
        stated_units({"tmp": "K"})
    with pytest.raises(
        ConfigError,
        match=r"data\.units: t2m: 'degC' is not a unit somojax reads t2m in \(expected 'K'\); .*convert the file",
    ):
        stated_units({"t2m": "degC"})


def test_stated_unit_does_not_hide_a_wrong_scale(shared_data, tmp_path):
    # stating K for °C values: the bounds still stop it
    def strip_c(ds):
        ds["t2m"] = ds["t2m"] - 273.15
        ds["t2m"].attrs = {}
        return ds

    p = _modified(shared_data / "era5" / "era5_2t_small.nc", tmp_path / "c_no_units.nc", strip_c)
    (s,) = screen_era5(read_era5([p], stated_units={"t2m": "K"}))
    with pytest.raises(InputDataError, match="convert with"):
        B.check_screen(s, "era5")


INJECTED = {
    -9999.0: "fill",
    9.96921e36: "fill",
    1.5: "above",
    -0.2: "below",
    -0.004: "noise",
}  # float32-exact where it matters


@settings(max_examples=20, deadline=None)
@given(
    hnp.arrays(np.float32, (3, 2, 2), elements=st.floats(0.0, 0.875, width=32)),
    st.lists(st.tuples(st.integers(0, 11), st.sampled_from(sorted(INJECTED))), max_size=4, unique_by=lambda p: p[0]),
)
def test_era5_reader_property(tmp_path_factory, good, bad):
    """Property, through a NetCDF file and the reader: in-range values come back unchanged, each
    injected value is counted under its reason and becomes NaN (or 0 when it is rounding noise)."""
    x = good.copy().reshape(-1)
    kind = np.full(x.size, "", object)
    for i, v in bad:
        x[i], kind[i] = v, INJECTED[v]
    x, kind = x.reshape(good.shape), kind.reshape(good.shape)
    ds = xr.Dataset(
        {"swvl1": (("time", "latitude", "longitude"), x, {"units": "m3 m-3"})},
        coords={
            "time": np.array(["2001-01-01T00", "2001-01-01T01", "2001-01-01T02"], "datetime64[ns]"),
            "latitude": [40.25, 40.0],
            "longitude": [262.0, 262.25],
        },
    )
    p = tmp_path_factory.mktemp("era5") / "swvl1.nc"
    ds.to_netcdf(p)
    era5 = read_era5([p], ["swvl1"])
    (s,) = screen_era5(era5)
    assert s.set_to_bound == (kind == "noise").sum() and s.dropped[B.FILL_REASON] == (kind == "fill").sum()
    assert (
        s.dropped["above 1 m3 m-3"] == (kind == "above").sum()
        and s.dropped["below 0 m3 m-3"] == (kind == "below").sum()
    )
    got = clean_era5(era5)["swvl1"].sel(latitude=[40.25, 40.0]).values  # the file's latitude order
    np.testing.assert_array_equal(got[kind == ""], x[kind == ""])
    assert (got[kind == "noise"] == 0).all() and np.isnan(got[(kind != "") & (kind != "noise")]).all()
