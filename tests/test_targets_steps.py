"""Step 7 of `build_targets` (somojax/prepare/targets.py) on their own: the ERA5 reference of
the series' cells, and the rescaling that skips series without one."""

import numpy as np
import pandas as pd
import xarray as xr

from somojax import constants as C
from somojax.prepare import targets
from somojax.prepare.report import Ledger
from somojax.prepare.targets import SensorSeries, Series, TargetRules

RULES = TargetRules("2000-01-03", "2000-01-12", (40.0, 42.0), (-98.0, -96.0), min_overlap_days=2)  # a 10-day case
DAYS = pd.date_range(RULES.start, RULES.end, freq="D")


def _series(name: str, lat: float, lon: float, layer: str, values) -> Series:
    daily = pd.Series(np.asarray(values, float), index=DAYS[: len(values)])
    sensor = SensorSeries(("N", name, "s"), f"N/{name}/s", "N", name, lat, lon, 0.05, 0.05, "s", daily)
    return Series(("N", name, layer), layer, sensor, daily)


def test_era5_reference_is_not_asked_for_without_series():
    def era5_sm(cells):
        raise AssertionError(f"asked for cells {cells}")

    assert targets._era5_reference(era5_sm, [], RULES) == {}


def test_era5_reference_by_layer_and_cell_over_the_target_period():
    series = [_series("A", 40.6, -97.4, "L1", [0.2] * 5), _series("B", 41.1, -96.9, "L2", [0.3] * 5)]
    cells = np.array(sorted({s.sensor.cell for s in series}), np.int64)
    days = pd.date_range("2000-01-01", "2000-01-20", freq="D")  # wider than the target period
    values = np.arange(2 * cells.size * days.size, dtype=np.float32).reshape(cells.size, 2, days.size)
    asked = []

    def era5_sm(c):
        asked.append(c)
        return xr.DataArray(
            values, dims=(C.CELL, C.LAYER, C.TIME), coords={C.CELL: c, C.LAYER: ["L1", "L2"], C.TIME: days}
        )

    ref = targets._era5_reference(era5_sm, series, RULES)
    np.testing.assert_array_equal(asked[0], cells)
    assert sorted(ref) == sorted((layer, int(c)) for layer in ("L1", "L2") for c in cells)
    ci, first = 1, days.get_loc(pd.Timestamp(RULES.start))
    r = ref[("L2", int(cells[ci]))]
    assert r.index.equals(DAYS) and r.dtype == np.float64
    np.testing.assert_array_equal(r.values, values[ci, 1, first : first + DAYS.size])


def test_rescaling_skips_a_series_without_reference_and_counts_it():
    a, b = _series("A", 40.6, -97.4, "L1", [0.1, 0.2, 0.3, 0.2]), _series("B", 41.1, -96.9, "L1", [0.2, 0.4])
    assert a.sensor.cell != b.sensor.cell
    era5 = pd.Series(np.linspace(0.3, 0.5, DAYS.size), index=DAYS)
    ledger = Ledger()
    kept, stats = targets._rescaled_series([a, b], {("L1", a.sensor.cell): era5}, RULES, ledger)
    assert [s.key for s in kept] == [a.key] and list(stats) == [a.label]
    y, _, _ = targets.rescale(a.values, era5, RULES.min_overlap_days)
    np.testing.assert_array_equal(kept[0].values.values, y.values)
    step = ledger.steps[-1]
    assert step["step"] == "rescaling" and step["series_dropped"] == {"no ERA5 soil moisture for the cell": 1}
    assert step["values_in"] == 6 and step["values_kept"] == 4
    assert [d["id"] for d in ledger.dropped] == [b.label]
