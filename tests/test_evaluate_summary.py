"""Cell grouping (continents, climate classes), summaries and verdicts."""

import numpy as np
import pandas as pd
import pytest

from somojax.evaluate import scoring, summary


def test_continent_lookup_of_known_places():
    places = {
        "Europe": [(48.85, 2.35), (59.3, 18.1), (40.4, -3.7), (55.75, 37.6), (64.1, -21.9)],
        "Africa": [(-1.3, 36.8), (30.0, 31.2), (14.7, -17.4), (-33.9, 18.4), (-18.9, 47.5)],
        "Asia": [(39.9, 116.4), (24.7, 46.7), (28.6, 77.2), (35.7, 139.7), (-6.2, 106.8), (62.0, 129.7)],
        "North America": [(39.7, -104.9), (19.4, -99.1), (64.8, -147.7), (72.0, -40.0)],
        "South America": [(-15.8, -47.9), (-34.6, -58.4), (4.7, -74.1)],
        "Oceania": [(-33.9, 151.2), (-41.3, 174.8), (-6.3, 143.9)],
        "Antarctica": [(-75.0, 0.0)],
    }
    for name, pts in places.items():
        lat, lon = np.array(pts).T
        assert list(summary.continent(lat, lon)) == [name] * len(pts), name
    # 0..360 longitudes give the same answer
    assert summary.continent(np.array([39.7]), np.array([360 - 104.9]))[0] == "North America"


def test_aridity_and_temperature_classes_at_their_edges():
    phi = np.array([0.5, 1 / 0.65, 1.6, 2.0, 3.0, 5.0, 10.0, 20.0, 25.0, np.nan, 0.0])
    assert list(summary.aridity_class(phi)) == [
        "humid",
        "humid",
        "dry sub-humid",
        "dry sub-humid",
        "semi-arid",
        "semi-arid",
        "arid",
        "arid",
        "hyper-arid",
        "unknown",
        "unknown",
    ]
    t = np.array([-10.0, 4.99, 5.0, 17.99, 18.0, 30.0, np.nan]) + 273.15
    assert list(summary.temperature_class(t)) == ["cold", "cold", "temperate", "temperate", "warm", "warm", "unknown"]


def test_summarize_median_and_quantiles_match_numpy():
    rng = np.random.default_rng(0)
    n = 37
    df = pd.DataFrame(
        {
            "dataset": ["a"] * n + ["b"] * n,
            "layer": "L1",
            "cell": list(range(n)) * 2,
            "r": np.r_[rng.uniform(size=n), rng.uniform(size=n)],
            "continent": (["Europe", "Asia"] * n)[: 2 * n],
        }
    )
    df.loc[3, "r"] = np.nan  # not scored: left out, not counted
    s = summary.summarize(df, ["r"], None, (0.2, 0.8))
    a = df[(df.dataset == "a")]["r"].dropna().to_numpy()
    row = s[(s.dataset == "a")].iloc[0]
    assert row["n_cells"] == n - 1
    assert row["median"] == pytest.approx(np.median(a))
    assert row["q20"] == pytest.approx(np.quantile(a, 0.2))
    assert row["q80"] == pytest.approx(np.quantile(a, 0.8))
    g = summary.summarize(df, ["r"], "continent")
    assert set(g["group"]) == {"Europe", "Asia"}
    eu = df[(df.dataset == "b") & (df.continent == "Europe")]["r"].to_numpy()
    assert g[(g.dataset == "b") & (g.group == "Europe")]["median"].item() == pytest.approx(np.median(eu))


def test_verdicts_compare_medians_on_common_cells():
    df = pd.DataFrame(
        {
            "dataset": ["ours"] * 4 + ["base"] * 4,
            "layer": ["L1"] * 8,
            "cell": [1, 2, 3, 4] * 2,
            "anomaly_r": [0.6, 0.5, 0.7, np.nan, 0.4, 0.55, 0.3, 0.9],
        }
    )
    (v,) = scoring.verdicts(df, "ours", "base")
    # common cells 1..3: ours median 0.6, base median 0.4; ours better in 2 of 3
    assert v["beats"] is True and v["n_cells"] == 3
    assert v["median_ours"] == pytest.approx(0.6) and v["median_baseline"] == pytest.approx(0.4)
    assert v["share_better"] == pytest.approx(2 / 3)
    assert "beats the base baseline in anomaly correlation (median 0.600 vs 0.400" in v["sentence"]
    assert v["median_better"] is True and "better in 67% of them)" in v["sentence"]
    df.loc[df.dataset == "ours", "anomaly_r"] = [0.1, 0.1, 0.1, 0.1]
    (v,) = scoring.verdicts(df, "ours", "base")
    assert v["beats"] is False and "does not beat" in v["sentence"]


def test_verdict_needs_the_median_and_a_majority_of_cells():
    def verdict(ours, base):
        n = len(ours)
        df = pd.DataFrame(
            {
                "dataset": ["ours"] * n + ["base"] * n,
                "layer": ["L2"] * 2 * n,
                "cell": list(range(n)) * 2,
                "anomaly_r": ours + base,
            }
        )
        (v,) = scoring.verdicts(df, "ours", "base")
        return v

    # higher median (0.6 vs 0.55) but better in 2 of 5 cells only: no
    v = verdict([0.6, 0.6, 0.6, 0.1, 0.1], [0.5, 0.5, 0.7, 0.7, 0.55])
    assert v["median_better"] is True and v["share_better"] == pytest.approx(0.4) and v["beats"] is False
    assert (
        "does not beat" in v["sentence"]
        and "better in 40% of them; the median is better, the majority of cells is not" in v["sentence"]
    )
    # better in 3 of 5 cells but a lower median: no
    v = verdict([0.2, 0.3, 0.4, 0.0, 0.0], [0.1, 0.25, 0.35, 0.5, 0.5])
    assert v["median_better"] is False and v["share_better"] == pytest.approx(0.6) and v["beats"] is False
    assert "the majority of cells is better, the median is not" in v["sentence"]
    # exactly half of the cells is not a majority
    v = verdict([0.9, 0.9, 0.45, 0.45], [0.5, 0.5, 0.5, 0.5])
    assert v["median_better"] is True and v["share_better"] == pytest.approx(0.5) and v["beats"] is False
    # both: yes
    v = verdict([0.9, 0.9, 0.9, 0.1], [0.5, 0.5, 0.5, 0.5])
    assert v["median_better"] is True and v["share_better"] == pytest.approx(0.75) and v["beats"] is True
