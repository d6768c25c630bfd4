"""Target builder: each step of docs/design.md#targets against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somojax import constants as C
from somojax import grid
from somojax.prepare.report import Ledger, markdown
from somojax.prepare.targets import (
    SensorSeries,
    Series,
    clip_period,
    daily_means,
    drop_cells,
    flags_allowed,
    grid_series,
    TargetRules,
    layer_of,
    physical_filter,
    process_sensor,
    quality_filter,
    rescale,
    select_layers,
    sensor_depth_cm,
)


def _values(times, sm, flags):
    return pd.DataFrame(
        {"sm": np.asarray(sm, float), "ismn_flag": flags, "provider_flag": ["M"] * len(flags)},
        index=pd.DatetimeIndex(times, name="time"),
    )


def test_flags_allowed_needs_every_part():
    flags = ["G", "D03", "D03,D05", "G,D05", "C01", "U", "", "G,G"]
    assert flags_allowed(flags, ["G"]).tolist() == [True, False, False, False, False, False, False, True]
    assert flags_allowed(flags, ["G", "D03"]).tolist() == [True, True, False, False, False, False, False, True]
    assert flags_allowed(flags, ["G", "D03", "D05", "U"]).tolist() == [True, True, True, True, False, True, False, True]


def test_quality_filter_counts_each_flag():
    t = pd.date_range("2001-01-01", periods=6, freq="h")
    v = _values(t, [0.1, 0.2, 0.3, np.nan, 0.5, 0.6], ["G", "D03,D05", "G", "G", "C01", "D03,D05"])
    kept, why = quality_filter(v, ["G"])
    assert kept["sm"].tolist() == [0.1, 0.3]  # NaN with flag G is dropped as "not a number"
    assert dict(why) == {"flag D03,D05": 2, "flag C01": 1, "not a number": 1}


def test_daily_mean_needs_min_values_per_utc_day():
    # day 1: 6 values 0.1..0.6 -> mean 0.35; day 2: 5 values -> dropped; day 3: 7 values, mean 0.4
    t1 = pd.date_range("2001-01-01 00:00", periods=6, freq="h")
    t2 = pd.date_range("2001-01-02 18:00", periods=5, freq="h")  # 18..22h, all on day 2
    t3 = pd.date_range("2001-01-03 17:00", periods=7, freq="h")  # 17..23h
    v = _values(
        t1.append(t2).append(t3),
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] + [0.9] * 5 + [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        ["G"] * 18,
    )
    d, dropped = daily_means(v, 6)
    assert list(d.index) == [pd.Timestamp("2001-01-01"), pd.Timestamp("2001-01-03")]
    np.testing.assert_allclose(d.to_numpy(), [0.35, 0.4])
    assert dropped == 5


def test_daily_mean_uses_utc_calendar_days():
    # 23:00 and 00:00 belong to different days
    t = pd.DatetimeIndex(["2001-01-01 23:00", "2001-01-02 00:00", "2001-01-02 01:00"])
    d, dropped = daily_means(_values(t, [1.0, 3.0, 5.0], ["G"] * 3), 1)
    np.testing.assert_allclose(d.to_numpy(), [1.0, 4.0])
    assert dropped == 0


def test_clip_period_inclusive():
    d = pd.Series([1.0, 2, 3, 4], index=pd.date_range("2000-12-30", periods=4, freq="D"))
    kept, n = clip_period(d, "2000-12-31", "2001-01-01")
    assert kept.tolist() == [2.0, 3.0] and n == 2


@pytest.mark.parametrize(
    "dfrom,dto,depth,layer",
    [
        (0.05, 0.05, 5.0, "L1"),
        (0.0, 0.19, 9.5, "L1"),  # cosmic-ray probe 0-0.19 m: mid-depth 9.5 cm
        (0.0, 0.0, 0.0, "L1"),
        (0.10, 0.10, 10.0, "L1"),  # boundary -> the upper layer
        (0.1016, 0.1016, 10.16, "L2"),
        (0.30, 0.30, 30.0, "L2"),
        (0.0, 0.6, 30.0, "L2"),
        (0.3048, 0.3048, 30.48, "L3"),
        (0.50, 0.50, 50.0, "L3"),
        (0.508, 0.508, 50.8, None),
        (1.0, 1.0, 100.0, None),
    ],
)
def test_sensor_depth_and_layer(dfrom, dto, depth, layer):
    assert sensor_depth_cm(dfrom, dto) == pytest.approx(depth)
    assert layer_of(sensor_depth_cm(dfrom, dto)) == layer


def _sensor(station, dfrom, dto, ndays=100, name="P", net="N", lat=40.1, lon=-97.9):
    key = (net, station, name, dfrom, dto)
    daily = pd.Series(np.ones(ndays), index=pd.date_range("2001-01-01", periods=ndays, freq="D"))
    return SensorSeries(
        key, f"{net}/{station}/{name}@{dfrom:g}-{dto:g}m", net, station, lat, lon, dfrom, dto, name, daily
    )


def test_layer_selection_mid_depth_then_closest_within_layer():
    s = [
        _sensor("A", 0.05, 0.05),  # L1 exact mid
        _sensor("A", 0.02, 0.02),  # L1, not chosen
        _sensor("A", 0.10, 0.10),  # L1 (boundary), not chosen
        _sensor("A", 0.15, 0.15),  # L2: |15-20| = 5
        _sensor("A", 0.28, 0.28),  # L2: |28-20| = 8
        _sensor("A", 0.50, 0.50),  # L3: |50-40| = 10 (the only one)
        _sensor("A", 0.80, 0.80),  # below 50 cm
        _sensor("B", 0.10, 0.10),  # station B, L1: 10 cm is the closest within the layer
        _sensor("B", 0.0, 0.30),  # station B: mid 15 cm -> L2
    ]
    chosen, reasons = select_layers(s)
    got = {k: v.depth_cm for k, v in chosen.items()}
    assert got == {
        ("N", "A", "L1"): 5.0,
        ("N", "A", "L2"): 15.0,
        ("N", "A", "L3"): 50.0,
        ("N", "B", "L1"): 10.0,
        ("N", "B", "L2"): 15.0,
    }
    assert "below the deepest layer" in reasons[s[6].key][1]
    assert "closer to the mid-depth 5 cm" in reasons[s[1].key][1]
    assert "closer to the mid-depth 20 cm" in reasons[s[4].key][1]
    assert (
        reasons[s[4].key][0]
        == "not selected for L2 (another sensor of the station is closer to 20 cm or has more days)"
    )
    assert len(reasons) == 4


def test_layer_selection_tie_goes_to_more_days():
    a = _sensor("A", 0.05, 0.05, ndays=80, name="X")
    b = _sensor("A", 0.05, 0.05, ndays=120, name="Y")
    chosen, reasons = select_layers([a, b])
    assert chosen[("N", "A", "L1")].sensor == "Y"
    assert "more days" in reasons[a.key][1]


def test_rescale_hand_computed():
    # x over the overlap (days 2..4): 1, 2, 3 -> mean 2, std sqrt(2/3);  ERA5: 10, 14, 12 -> mean 12, std sqrt(8/3)
    days = pd.date_range("2001-01-01", periods=5, freq="D")
    x = pd.Series([5.0, 1.0, 2.0, 3.0, np.nan], index=days)
    e = pd.Series([np.nan, 10.0, 14.0, 12.0, 11.0], index=days)
    y, why, st = rescale(x, e, min_overlap=3)
    assert why is None and st["overlap_days"] == 3
    ratio = np.sqrt(8 / 3) / np.sqrt(2 / 3)  # = 2
    expected = 12.0 + (np.array([5.0, 1.0, 2.0, 3.0]) - 2.0) * ratio  # [18, 10, 12, 14]
    np.testing.assert_allclose(y.to_numpy()[:4], expected)
    np.testing.assert_allclose(expected, [18.0, 10.0, 12.0, 14.0])
    assert np.isnan(y.to_numpy()[4])


def test_rescale_skips_with_reasons():
    days = pd.date_range("2001-01-01", periods=4, freq="D")
    x = pd.Series([1.0, 2.0, 3.0, 4.0], index=days)
    later = pd.Series([0.3, 0.2], index=pd.date_range("2002-01-01", periods=2, freq="D"))
    y, why, _ = rescale(x, later, 2)
    assert y is None and "no overlap" in why
    y, why, _ = rescale(x, pd.Series([0.1, 0.2, 0.3, 0.4], index=days), 5)
    assert y is None and "only 4 day(s) overlap" in why and "need 5" in why
    y, why, _ = rescale(pd.Series([0.2] * 4, index=days), pd.Series([0.1, 0.2, 0.3, 0.4], index=days), 2)
    assert y is None and "constant series" in why
    y, why, _ = rescale(x, pd.Series([0.3] * 4, index=days), 2)
    assert y is None and "ERA5 soil moisture of the cell is constant" in why


def test_grid_series_averages_series_of_one_layer_in_one_cell():
    days = pd.date_range("2001-01-01", periods=3, freq="D")
    a = _sensor("A", 0.05, 0.05, lat=40.10, lon=-97.90)
    b = _sensor("B", 0.05, 0.05, lat=40.20, lon=-97.80)  # same 0.25° cell as A
    c = _sensor("C", 0.20, 0.20, lat=40.60, lon=-97.30)  # another cell, L2
    assert a.cell == b.cell != c.cell
    s = [
        Series(("N", "A", "L1"), "L1", a, pd.Series([0.1, 0.2, np.nan], index=days)),
        Series(("N", "B", "L1"), "L1", b, pd.Series([0.3, np.nan, np.nan], index=days)),
        Series(("N", "C", "L2"), "L2", c, pd.Series([0.5, 0.6, 0.7], index=days)),
    ]
    ds = grid_series(s, days)
    assert ds[C.CELL].values.tolist() == sorted([a.cell, c.cell])
    i = ds[C.CELL].values.tolist().index(a.cell)
    np.testing.assert_allclose(ds[C.SM].sel(layer="L1").values[i], [0.2, 0.2, np.nan])
    assert np.isnan(ds[C.SM].sel(layer="L2").values[i]).all()
    assert ds["n_series"].sel(layer="L1").values[i] == 2
    assert ds["provenance"].sel(layer="L1").values[i] == "N/A/P@0.05-0.05m; N/B/P@0.05-0.05m"
    lat, lon = grid.cell_centre(a.cell)
    assert ds[C.LAT].values[i] == pytest.approx(40.125) == pytest.approx(float(lat))
    assert ds[C.LON].values[i] == pytest.approx(-97.875) == pytest.approx(float(lon))


def test_ledger_counts_and_drop_cells():
    days = pd.date_range("2001-01-01", periods=2, freq="D")
    a = _sensor("A", 0.05, 0.05, lat=40.1, lon=-97.9)
    c = _sensor("C", 0.05, 0.05, lat=40.6, lon=-97.3)
    ds = grid_series(
        [
            Series(("N", "A", "L1"), "L1", a, pd.Series([0.1, 0.2], index=days)),
            Series(("N", "C", "L1"), "L1", c, pd.Series([0.3, np.nan], index=days)),
        ],
        days,
    )
    ledger = Ledger()
    out = drop_cells(ds, {c.cell: "statics missing: clay"}, ledger)
    assert out[C.CELL].values.tolist() == [a.cell]
    st = ledger.steps[-1]
    assert st["values_in"] == 3 and st["values_kept"] == 2 and st["values_dropped"] == {"statics missing: clay": 1}
    assert st["cells_dropped"] == {"statics missing: clay": 1}
    assert "statics missing: clay" in markdown({"targets": {"steps": ledger.steps, "dropped": ledger.dropped}})


def test_ledger_never_loses_values_without_reason():
    led = Ledger()
    rec = led.step("x", "values", 10, 7, {"flag D01": 2}, [("n", "s", 1)], [("n", "s", 1)])
    assert rec["values_dropped"] == {"flag D01": 2, "other (bookkeeping difference)": 1}


# ------------------------------------------------------------------ physical bounds
ARM1 = "COSMOS/ARM-1/COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_Cosmic-ray-Probe_20170810_20180809.stm"
ARM1_RULES = dict(
    start="2017-08-10", end="2018-08-09", lat_range=(-90.0, 90.0), lon_range=(-180.0, 180.0), min_days_per_sensor=60
)


def test_physical_filter_counts_per_file_and_reason():
    t = pd.date_range("2001-01-01", periods=8, freq="h")
    v = _values(t, [0.2, -9999.0, 1.7, -0.5, 0.8, 0.0, 0.3, 0.31], ["G"] * 8).assign(file=[0, 0, 0, 0, 0, 0, 1, 1])
    kept, counts, records = physical_filter(v, ["a.stm", "b.stm"])
    assert kept["sm"].tolist() == [0.2, 0.8, 0.0, 0.3, 0.31]  # the edges are inside
    assert dict(counts) == {"fill value (-9999, ±1e20, ...)": 1, "above 0.8 m3 m-3": 1, "below 0 m3 m-3": 1}
    assert [r["file"] for r in records] == ["a.stm"] and records[0]["values"] == 6 and records[0]["min"] == -9999.0
    assert "whole file dropped" not in records[0]


def test_a_file_mostly_outside_loses_all_its_values():
    # a file in percent: 3 of 4 values above 0.8 -> its 0.5 is no data either; the other file stays
    t = pd.date_range("2001-01-01", periods=6, freq="h")
    v = _values(t, [25.0, 31.0, 0.5, 40.0, 0.2, 0.21], ["G"] * 6).assign(file=[0, 0, 0, 0, 1, 1])
    kept, counts, records = physical_filter(v, ["pct.stm", "ok.stm"])
    assert kept["sm"].tolist() == [0.2, 0.21]
    assert dict(counts) == {"above 0.8 m3 m-3": 3, "rest of a file with > 50% of its values outside 0..0.8 m3 m-3": 1}
    assert records[0]["whole file dropped"].startswith(
        "75% of its values lie outside 0..0.8 m3 m-3: likely values in percent"
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-2.0, 2.0), st.integers(0, 2)), min_size=1, max_size=50))
def test_physical_filter_property(pairs):
    """Property: in-bound values of files mostly in bounds survive unchanged; every other value is counted."""
    x = np.array([p[0] for p in pairs])
    f = np.array([p[1] for p in pairs])
    v = _values(pd.date_range("2001-01-01", periods=len(x), freq="h"), x, ["G"] * len(x)).assign(file=f)
    kept, counts, records = physical_filter(v, ["a", "b", "c"])
    inside = (x >= 0.0) & (x <= 0.8)
    whole = {i for i in np.unique(f) if (~inside[f == i]).mean() > 0.5}
    keep = inside & ~np.isin(f, list(whole))
    np.testing.assert_array_equal(kept["sm"].to_numpy(), x[keep])
    assert sum(counts.values()) == len(x) - keep.sum()
    assert {r["file"] for r in records} == {"abc"[i] for i in np.unique(f[~inside])}


def _inject(shared_data, tmp_path):
    """A copy of a real ISMN file with physically impossible values flagged G: −9999 (3 lines),
    1.7 (2), −0.5 (1) and all of September 2017 at 5.0; returns the file and the injected rows."""
    src = shared_data / "ismn" / "Data_seperate_files_header_20170810_20180809" / ARM1
    dst = tmp_path / "arc" / ARM1
    dst.parent.mkdir(parents=True)
    lines = src.read_bytes().decode().replace("\r\n", "\n").split("\n")
    head, rows = lines[0], [ln.split() for ln in lines[1:] if ln.strip()]
    bad = {10: "-9999", 20: "-9999", 30: "-9999", 40: "1.7", 50: "1.7", 60: "-0.5"}
    bad.update({i: "5.0" for i, r in enumerate(rows) if r[0].startswith("2017/09/")})
    out = [head] + [" ".join([r[0], r[1], bad[i], "G", r[4]] if i in bad else r) for i, r in enumerate(rows)]
    dst.write_text("\r\n".join(out) + "\r\n")
    return dst, rows, bad


def test_impossible_values_flagged_G_in_a_real_file_are_dropped_and_counted(shared_data, tmp_path):
    from somojax.prepare.ismn import group_sensors, scan_ismn

    path, rows, bad = _inject(shared_data, tmp_path)
    (members,) = group_sensors(scan_ismn(tmp_path / "arc"))
    o = process_sensor(members, TargetRules(**ARM1_RULES))
    n_sep = sum(1 for r in rows if r[0].startswith("2017/09/"))
    assert n_sep == 720
    assert dict(o.bound_reasons) == {
        "fill value (-9999, ±1e20, ...)": 3,
        "above 0.8 m3 m-3": 2 + n_sep,
        "below 0 m3 m-3": 1,
    }
    (rec,) = o.implausible
    assert (
        rec["file"] == str(path) and rec["min"] == -9999.0 and rec["max"] == 5.0 and sum(rec["dropped"].values()) == 726
    )
    # the daily series is exactly the one of the file's other values flagged G (hand pipeline)
    keep = [
        (pd.Timestamp(f"{r[0]} {r[1]}".replace("/", "-")), float(r[2]))
        for i, r in enumerate(rows)
        if i not in bad and r[3] == "G"
    ]
    s = pd.Series([v for _, v in keep], index=pd.DatetimeIndex([t for t, _ in keep]))
    g = s.groupby(s.index.floor("D"))
    expect = g.mean()[g.size() >= 6]
    np.testing.assert_allclose(o.daily.to_numpy(), expect.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(o.daily.index.to_numpy(), expect.index.to_numpy())
    assert not (o.daily.index.month == 9).any()  # the month at 5.0 left no day behind
