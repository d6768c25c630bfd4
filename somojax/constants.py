"""Names and orders shared by every stage: dimensions, variables, layers, mesh axes.

Defined once here (docs/design.md#conventions); every module imports them instead of spelling strings.
Dimension names follow WeatherBench2 (`time`, `latitude` increasing, `longitude`), plus `layer`,
`member` and `cell` (a 0.25° grid cell that holds in-situ targets).
"""

from __future__ import annotations

from typing import Final

# --- dimensions -------------------------------------------------------------------------
TIME: Final = "time"
LAT: Final = "latitude"
LON: Final = "longitude"
LAYER: Final = "layer"
MEMBER: Final = "member"
CELL: Final = "cell"

# --- mesh axes (jax.sharding.Mesh) ------------------------------------------------------
MEMBER_AXIS: Final = "member"  # ensemble members
DATA_AXIS: Final = "data"  # batch of samples / cells
MESH_AXES: Final = (MEMBER_AXIS, DATA_AXIS)

# --- the grid ---------------------------------------------------------------------------
GRID_RES: Final = 0.25  # degrees; cell centres at .125/.375/.625/.875
N_LAT_GLOBAL: Final = 720  # -89.875 .. 89.875
N_LON_GLOBAL: Final = 1440  # -179.875 .. 179.875
# SoMo.ml's quasi-global land domain (docs/design.md#product)
PRODUCT_LAT_RANGE: Final = (-60.0, 90.0)

# --- model inputs (docs/design.md#inputs; order matters: it is the column order of the model) ----
DYNAMIC_INPUTS: Final = ("log_tp", "t2m", "snr", "ssrd", "q", "skt")
STATIC_INPUTS: Final = (
    "ETOPOavg",
    "ETOPOsd",
    "tp",
    "arid",
    "clay",
    "sand",
    "silt",
    "poro_top",
    "poro_mid",
    "domveg",
)
# The long-term precipitation static shares ERA5's short name with the hourly accumulation;
# in the statics store it is called `tp` as in SoMo.ml, in the forcing store precipitation is
# `log_tp`, so the two never meet in one dataset.

# --- layers ---------------------------------------------------------------------------
LAYERS: Final = ("L1", "L2", "L3")
LAYER_BOUNDS_CM: Final = {"L1": (0.0, 10.0), "L2": (10.0, 30.0), "L3": (30.0, 50.0)}
LAYER_MID_CM: Final = {"L1": 5.0, "L2": 20.0, "L3": 40.0}
# Upper-layer predictions fed to layer k as extra dynamic inputs (docs/design.md#the-cascade)
UPPER_LAYER_INPUTS: Final = {"L1": (), "L2": ("sm_L1",), "L3": ("sm_L1", "sm_L2")}

# ERA5 soil layers (swvl1..3) and their depth-weighted interpolation onto the target layers:
# target = sum(w * swvl_k) / sum(w), with w the overlap in cm (docs/design.md#targets).
ERA5_SM_VARS: Final = ("swvl1", "swvl2", "swvl3")
ERA5_LAYER_BOUNDS_CM: Final = {"swvl1": (0.0, 7.0), "swvl2": (7.0, 28.0), "swvl3": (28.0, 100.0)}
ERA5_TO_TARGET_WEIGHTS: Final = {
    "L1": {"swvl1": 7.0, "swvl2": 3.0},
    "L2": {"swvl2": 18.0, "swvl3": 2.0},
    "L3": {"swvl3": 20.0},
}

# --- store variables ------------------------------------------------------------------
SM: Final = "sm"  # soil moisture [m3 m-3]: targets, predictions
SM_SPREAD: Final = "sm_spread"  # ensemble standard deviation of predictions
SM_ERA5: Final = "sm_era5"  # ERA5 soil moisture interpolated to the target layers
SM_TRUE: Final = "sm_true"  # the synthetic Earth's truth
LAND_MASK: Final = "land"

UNITS: Final = {
    "log_tp": "1",  # ln(1 + precipitation in mm day-1)
    "t2m": "K",
    "snr": "MJ m-2 day-1",
    "ssrd": "MJ m-2 day-1",
    "q": "kg kg-1",
    "skt": "K",
    "ETOPOavg": "m",
    "ETOPOsd": "m",
    "tp": "mm year-1",
    "arid": "1",
    "clay": "1",
    "sand": "1",
    "silt": "1",
    "poro_top": "m3 m-3",
    "poro_mid": "m3 m-3",
    "domveg": "1",
    SM: "m3 m-3",
    SM_SPREAD: "m3 m-3",
    SM_ERA5: "m3 m-3",
    SM_TRUE: "m3 m-3",
}

LONG_NAMES: Final = {
    "log_tp": "log of one plus daily total precipitation in mm",
    "t2m": "daily mean 2 m air temperature",
    "snr": "daily surface net radiation (net shortwave + net longwave)",
    "ssrd": "daily surface solar radiation downwards",
    "q": "daily mean 2 m specific humidity",
    "skt": "daily mean skin temperature",
    "ETOPOavg": "mean elevation of the ETOPO1 1-arc-minute points in the cell",
    "ETOPOsd": "standard deviation of the ETOPO1 1-arc-minute elevation in the cell",
    "tp": "long-term mean annual precipitation",
    "arid": "aridity index: net radiation as evaporation equivalent over precipitation",
    "clay": "clay fraction (GLDAS)",
    "sand": "sand fraction (GLDAS)",
    "silt": "silt fraction (GLDAS)",
    "poro_top": "soil porosity, top layer (GLDAS)",
    "poro_mid": "soil porosity, middle layer (GLDAS)",
    "domveg": "dominant vegetation class (GLDAS, modified IGBP)",
    SM: "volumetric soil moisture",
    SM_SPREAD: "ensemble standard deviation of volumetric soil moisture",
    SM_ERA5: "ERA5 volumetric soil moisture interpolated to the target layer",
    SM_TRUE: "volumetric soil moisture of the synthetic truth",
}

# --- store names inside a run's store directory ---------------------------------------
FORCINGS_STORE: Final = "forcings.zarr"
STATICS_STORE: Final = "statics.zarr"
TARGETS_STORE: Final = "targets.zarr"
STATS_FILE: Final = "normalization.json"
TRUTH_STORE: Final = "truth.zarr"
PREDICTIONS_STORE: Final = "predictions.zarr"
PREPARE_REPORT: Final = "prepare_report.json"

# Physical constants used in preparation
LATENT_HEAT_VAPORISATION: Final = 2.45  # MJ kg-1: 1 mm of evaporation = 2.45 MJ m-2
