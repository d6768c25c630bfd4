"""The report on small synthetic stores: produced, parseable, figures non-blank, verdict per layer,
and the numbers in it consistent with an independent computation."""

import base64
import io
import math
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from somojax import constants as C
from somojax import stores
from somojax.config import load_config
from somojax.evaluate import evaluate_series
from tests import evaluate_mock as mock


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.verdicts, self.truth_verdicts, self.tables, self.stack = [], [], [], 0, []
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.stack.append(tag)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "table":
            self.tables += 1
        if tag == "p" and "verdict" in a.get("class", ""):
            self._in = ("truth" if "data-truth-layer" in a else "cv", a)
            (self.truth_verdicts if self._in[0] == "truth" else self.verdicts).append([a, ""])

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        if tag == "p":
            self._in = None

    def handle_data(self, data):
        if self._in:
            (self.truth_verdicts if self._in[0] == "truth" else self.verdicts)[-1][1] += data


def _check_png(src):
    assert src.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    img.load()
    assert img.format == "PNG" and img.width > 300 and img.height > 200
    a = np.asarray(img.convert("L"), np.float64)
    assert a.std() > 5.0 and (a < 200).mean() > 0.01  # not blank: ink on a meaningful share


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    cfg = load_config("tiny", [f"workdir={tmp}/run"])
    m = mock.mock_stores(store_dir=cfg.store_dir, start="2000-06-01", days=420, n_cells=7, seed=2)
    stores.write_store(m.predictions, cfg.predictions_path, "predictions")
    res = evaluate_series(cfg, m.cv)
    return cfg, m, res


def test_report_opens_with_nonblank_figures_and_a_verdict_per_layer(run):
    cfg, m, res = run
    html = res.report.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(html)
    p.close()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert len(p.imgs) >= 8  # figs 2, 4, 5, r, bias, 6a, 6b, truth maps
    for src in p.imgs:
        _check_png(src)
    assert p.tables >= 4
    layers = [a["data-layer"] for a, _ in p.verdicts]
    assert layers == list(C.LAYERS)
    for a, text in p.verdicts:
        assert ("beats the ERA5 baseline in anomaly correlation" in text) or (
            "does not beat the ERA5 baseline in anomaly correlation" in text
        )
        assert ("does not beat" not in text) == (a["data-beats"] == "true")
    for v in res.verdicts:  # the verdict table shows the share of cells where somojax* is better
        assert (
            f"<td>{v['layer']}</td><td>{v['n_cells']}</td><td>{v['median_ours']:.3f}</td><td>{v['median_baseline']:.3f}</td><td>{100 * v['share_better']:.0f}%</td>"
            in html
        )
    for f in res.figures.values():
        _check_png("data:image/png;base64," + base64.b64encode(f.read_bytes()).decode())


def test_verdicts_and_tables_agree_with_an_independent_computation(run):
    cfg, m, res = run
    out = cfg.evaluation_dir
    df = pd.read_csv(out / "metrics_cells.csv")
    assert set(df["dataset"]) == {"somojax*", "ERA5"}
    nc = xr.open_dataset(out / "metrics_cells.nc")
    assert nc["anomaly_r"].dims == ("dataset", C.LAYER, C.CELL)
    # recompute one cell's ERA5 correlation from the stores with plain numpy
    cell = int(df["cell"].iloc[0])
    i = int(np.flatnonzero(m.targets[C.CELL].values == cell)[0])
    lat, lon = float(m.targets[C.LAT][i]), float(m.targets[C.LON][i])
    o = m.targets[C.SM].sel(layer="L1").isel(cell=i).values.astype(np.float64)
    s = m.forcings[C.SM_ERA5].sel(layer="L1", latitude=lat, longitude=lon).values.astype(np.float64)
    cvv = m.cv.sel(layer="L1").isel(cell=i).values
    ok = np.isfinite(o) & np.isfinite(s) & np.isfinite(cvv)
    want = np.corrcoef(o[ok], s[ok])[0, 1]
    got = df[(df.dataset == "ERA5") & (df.layer == "L1") & (df.cell == cell)]["r"].item()
    assert got == pytest.approx(want, rel=1e-9)
    nrmse = math.sqrt(np.mean((s[ok] - o[ok]) ** 2)) / np.mean(o[ok])
    assert df[(df.dataset == "ERA5") & (df.layer == "L1") & (df.cell == cell)]["nrmse"].item() == pytest.approx(
        nrmse, rel=1e-9
    )
    # the verdict is the comparison of medians over the cells both have
    for v in res.verdicts:
        a = df[(df.dataset == "somojax*") & (df.layer == v["layer"])].set_index("cell")["anomaly_r"]
        b = df[(df.dataset == "ERA5") & (df.layer == v["layer"])].set_index("cell")["anomaly_r"]
        j = pd.concat([a, b], axis=1, keys=["a", "b"]).dropna()
        assert v["median_ours"] == pytest.approx(j["a"].median()) and v["median_baseline"] == pytest.approx(
            j["b"].median()
        )
        assert v["beats"] == (j["a"].median() > j["b"].median() and (j["a"] > j["b"]).mean() > 0.5)
    # the mock's cross-validated series follows the truth better than its ERA5 does
    assert res.verdicts[0]["beats"] is True
    summ = pd.read_csv(out / "summary.csv")
    row = summ[(summ.dataset == "ERA5") & (summ.layer == "L1") & (summ.metric == "r")].iloc[0]
    v = df[(df.dataset == "ERA5") & (df.layer == "L1")]["r"].dropna()
    assert row["median"] == pytest.approx(v.median()) and row["q20"] == pytest.approx(v.quantile(0.2))
    groups = pd.read_csv(out / "summary_by_group.csv")
    assert {"continent", "aridity", "temperature", "climate"} == set(groups["group_by"])
    assert set(groups[groups.group_by == "continent"]["group"]) == {"North America"}


def test_truth_is_scored_on_every_land_cell(run):
    cfg, m, res = run
    tr = res.truth
    assert tr.scope == "all land cells"
    n_land = int((m.statics[C.LAND_MASK] > 0).sum())
    assert tr.n_cells == {l: n_land for l in C.LAYERS}
    g = tr.grid_scores
    assert set(g["dataset"].values) == {"somojax", "ERA5"}
    # the sea cell is not scored
    assert np.isnan(g["r"].sel(dataset="ERA5", layer="L1").values[0, 0])
    # one land cell against plain numpy
    o = m.truth[C.SM_TRUE].sel(layer="L2").values[:, 3, 4].astype(np.float64)
    s = m.predictions[C.SM].sel(layer="L2").values[:, 3, 4].astype(np.float64)
    assert g["r"].sel(dataset="somojax", layer="L2").values[3, 4] == pytest.approx(np.corrcoef(o, s)[0, 1], rel=1e-9)
    html = res.report.read_text(encoding="utf-8")
    assert "skill against the known truth (all land cells)" in html
    assert len(tr.verdicts) == 3


def test_without_prediction_store_truth_is_scored_at_station_cells(tmp_path):
    cfg = load_config("tiny", [f"workdir={tmp_path}/run"])
    m = mock.mock_stores(store_dir=cfg.store_dir, start="2000-06-01", days=200, n_cells=5, seed=4)
    res = evaluate_series(cfg, m.cv)
    assert res.truth.scope == "station cells" and res.truth.grid_scores is None
    assert res.truth.n_cells["L1"] == 5
    assert "fig6a" in res.figures  # the CV medians at the target cells
