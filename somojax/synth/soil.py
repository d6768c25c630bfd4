"""A layered bucket soil model: the synthetic Earth's truth, and (mis-parameterised) its reanalysis.

State: water storage S_k [mm] of each layer k (thickness z_k [mm], porosity φ_k), and snow [mm].
Each day, in this order:

1. snow: precipitation falls as snow below 0 °C; melt M = min(snow, ddf·max(T − 273.15, 0));
2. water input W = rain + M; saturation-excess runoff R = W·(S_1/S_1,max)^b; infiltration
   I = W − R. Macropores carry B = f_B·max(I − I_B, 0) of it past layer 1 (preferential flow
   after heavy rain), split over the layers below by weights w_B,k; I − B enters layer 1;
3. overflow: water above a layer's capacity φ_k·z_k passes to the layer below (the bottom
   layer's overflow joins runoff);
4. drainage: Q_k = k_k·max(S_k − S_d,k, 0) from layer k to layer k+1 (limited by the room
   there), S_d the drainage threshold (default: field capacity); the bottom layer drains out of
   the column;
5. diffusion: F_k = D_k·(θ_k − θ_k+1) between layers k and k+1, downward or upward (capillary
   rise), D_k capped at z_k·z_k+1/(z_k + z_k+1) so it never overshoots equal moisture, limited by
   the room in the receiving layer and half the wilting-point storage of the giving one;
6. analysis increments (the reanalysis only): water A_k added or removed by its data
   assimilation, limited to the room and to half the wilting-point storage;
7. evapotranspiration: PET = c·max(Rn, 0)/2.45·clip((T − 268)/15, 0, 1) [mm day-1], taken from
   layer k as E_k = PET·r_k·β_k with roots r_k and stress β_k = clip((θ_k − θ_wp)/(θ_fc − θ_wp), 0, 1),
   never below half the wilting-point storage.

Water balance per layer and day: ΔS_k = in_k − out_k + A_k − E_k with in_1 = I − B,
in_k = B_k + N_k−1 (bypass and the net flux from above), out_k = N_k, where N_k = O_k + Q_k + F_k
is the net flux from layer k to the one below (negative when diffusion lifts more water than
drains). `run` returns every flux so that the tests check the balance exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SoilParams:
    """Per-cell parameters, arrays [layer, cell] (or broadcastable)."""

    thickness: np.ndarray  # [layer] mm
    porosity: np.ndarray  # [layer, cell] m3 m-3
    field_capacity: np.ndarray  # [layer, cell] m3 m-3
    wilting_point: np.ndarray  # [layer, cell] m3 m-3
    drainage: np.ndarray  # [layer, cell] day-1
    roots: np.ndarray  # [layer, cell], sums to 1 over layers
    pet_coef: float | np.ndarray = 0.8
    runoff_exp: float = 3.0
    degree_day: float = 3.0  # mm K-1 day-1; 0 disables snow (all precipitation is rain)
    drainage_threshold: np.ndarray | None = (
        None  # [layer, cell] m3 m-3 above which a layer drains; None: field capacity
    )
    diffusion: float | np.ndarray = 0.0  # [layer − 1, cell] mm day-1 per unit θ difference between layers k and k+1
    bypass_fraction: float | np.ndarray = (
        0.0  # [cell] share of the infiltration above `bypass_above` that skips layer 1
    )
    bypass_above: float = 10.0  # mm day-1
    bypass_split: np.ndarray | None = None  # [layer] weights of the bypass over the layers (layer 1 gets none)
    infiltration_excess: bool = False  # True: water that does not fit into layer 1 runs off instead of passing down


@dataclass
class SoilRun:
    """Daily output [day, layer, cell] of volumetric soil moisture and the fluxes [mm day-1]."""

    theta: np.ndarray  # [day, layer, cell] m3 m-3 at the end of the day
    storage: np.ndarray  # [day, layer, cell] mm at the end of the day
    infiltration: np.ndarray  # [day, cell] into the soil (layer 1 and the macropores)
    bypass: np.ndarray  # [day, layer, cell] macropore flow into each layer
    inflow: np.ndarray  # [day, layer, cell] bypass + net flux from above; layer 0: infiltration − bypass
    outflow: (
        np.ndarray
    )  # [day, layer, cell] net flux to below (overflow + drainage + diffusion); bottom: out of the column
    et: np.ndarray  # [day, layer, cell]
    increment: np.ndarray  # [day, layer, cell] analysis increments applied
    runoff: np.ndarray  # [day, cell]
    initial: np.ndarray  # [layer, cell] storage before the first day


def _bypass(params: SoilParams, infiltration: np.ndarray, nl: int) -> np.ndarray:
    """Macropore flow [layer, cell] of a day's infiltration [cell]."""
    total = params.bypass_fraction * np.maximum(infiltration - params.bypass_above, 0.0)
    split = np.zeros(nl) if params.bypass_split is None else np.asarray(params.bypass_split, np.float64)
    split = split / max(split.sum(), 1e-12)
    return split[:, None] * total[None]


def _diffuse(s: np.ndarray, z: np.ndarray, smax: np.ndarray, floor: np.ndarray, diffusion) -> np.ndarray:
    """Exchanges water between neighbouring layers in place; returns the downward fluxes [layer − 1, cell]."""
    nl = s.shape[0]
    d = np.broadcast_to(np.asarray(diffusion, np.float64), (nl - 1,) + s.shape[1:])
    flux = np.zeros((nl - 1,) + s.shape[1:])
    for k in range(nl - 1):
        zk, zb = z[k], z[k + 1]
        rate = np.minimum(d[k], zk * zb / (zk + zb))
        f = rate * (s[k] / zk - s[k + 1] / zb)
        f = np.clip(
            f, -np.minimum(smax[k] - s[k], s[k + 1] - floor[k + 1]), np.minimum(smax[k + 1] - s[k + 1], s[k] - floor[k])
        )
        s[k] -= f
        s[k + 1] += f
        flux[k] = f
    return flux


def _surface(
    params: SoilParams, precip: np.ndarray, t2m: np.ndarray, snow: np.ndarray, s_top: np.ndarray, smax_top: np.ndarray
):
    """Snow (updated in place), runoff and infiltration [cell] of one day."""
    frozen_t = 273.15
    if params.degree_day > 0:
        snowfall = np.where(t2m < frozen_t, precip, 0.0)
        snow += snowfall
        melt = np.minimum(snow, params.degree_day * np.maximum(t2m - frozen_t, 0.0))
        snow -= melt
        water = precip - snowfall + melt
    else:
        water = precip
    runoff = water * np.clip(s_top / smax_top, 0.0, 1.0) ** params.runoff_exp
    infiltration = water - runoff
    if params.infiltration_excess:
        fits = np.minimum(infiltration, np.maximum(smax_top - s_top, 0.0))
        runoff, infiltration = runoff + infiltration - fits, fits
    return runoff, infiltration


def _percolate(
    params: SoilParams, s: np.ndarray, top_inflow: np.ndarray, bypass: np.ndarray, smax: np.ndarray, sdrain: np.ndarray
) -> np.ndarray:
    """Fills the layers top-down (in place): overflow and drainage; returns the downward flux [layer, cell]."""
    nl = s.shape[0]
    outflow = np.empty_like(s)
    carry = top_inflow
    for k in range(nl):
        s[k] += carry + (bypass[k] if k else 0.0)
        over = np.maximum(s[k] - smax[k], 0.0)
        s[k] -= over
        q = params.drainage[k] * np.maximum(s[k] - sdrain[k], 0.0)
        if k + 1 < nl:
            q = np.minimum(q, np.maximum(smax[k + 1] - s[k + 1] - bypass[k + 1], 0.0))
        s[k] -= q
        outflow[k] = q + over
        carry = outflow[k]
    return outflow


def _new_run(nd: int, nl: int, nc: int, init: np.ndarray) -> SoilRun:
    days_layers = lambda: np.empty((nd, nl, nc))  # noqa: E731
    return SoilRun(
        theta=days_layers(),
        storage=days_layers(),
        infiltration=np.empty((nd, nc)),
        bypass=days_layers(),
        inflow=days_layers(),
        outflow=days_layers(),
        et=days_layers(),
        increment=days_layers(),
        runoff=np.empty((nd, nc)),
        initial=init,
    )


def run(
    params: SoilParams,
    precip: np.ndarray,
    t2m: np.ndarray,
    net_rad: np.ndarray,
    initial: np.ndarray | None = None,
    increments: np.ndarray | None = None,
) -> SoilRun:
    """Runs the bucket model.

    Args:
      params: soil parameters for n_layer layers and n_cell cells.
      precip: [day, cell] precipitation [mm day-1]; t2m: [day, cell] [K];
      net_rad: [day, cell] net radiation [MJ m-2 day-1].
      initial: [layer, cell] initial storage [mm]; default field capacity.
      increments: [day, layer, cell] analysis increments [mm day-1]; default none.
    """
    nd, nc = precip.shape
    z = np.asarray(params.thickness, np.float64)[:, None]
    nl = z.shape[0]
    smax = params.porosity * z
    sfc = params.field_capacity * z
    swp = params.wilting_point * z
    sdrain = sfc if params.drainage_threshold is None else params.drainage_threshold * z
    floor = 0.5 * swp * np.ones((nl, nc))
    s = (sfc.copy() if initial is None else np.array(initial, np.float64)) * np.ones((nl, nc))
    out = _new_run(nd, nl, nc, s.copy())
    snow = np.zeros(nc)
    stress_den = np.maximum(sfc - swp, 1e-9)
    for d in range(nd):
        t = t2m[d]
        runoff, infiltration = _surface(params, precip[d], t, snow, s[0], smax[0])
        bypass = _bypass(params, infiltration, nl)
        inflow = bypass.copy()
        inflow[0] = infiltration - bypass.sum(axis=0)
        outflow = _percolate(params, s, inflow[0], bypass, smax, sdrain)
        outflow[:-1] += _diffuse(s, z, smax, floor, params.diffusion)
        inflow[1:] += outflow[:-1]
        inc = np.zeros((nl, nc)) if increments is None else np.clip(increments[d], floor - s, smax - s)
        s += inc
        pet = params.pet_coef * np.maximum(net_rad[d], 0.0) / 2.45 * np.clip((t - 268.0) / 15.0, 0.0, 1.0)
        beta = np.clip((s - swp) / stress_den, 0.0, 1.0)
        e = np.minimum(pet[None] * params.roots * beta, np.maximum(s - floor, 0.0))
        s -= e
        out.theta[d] = s / z
        out.storage[d] = s
        out.infiltration[d] = infiltration
        out.bypass[d] = bypass
        out.inflow[d] = inflow
        out.outflow[d] = outflow
        out.et[d] = e
        out.increment[d] = inc
        out.runoff[d] = runoff
    return out


def spun_up(
    params: SoilParams,
    precip: np.ndarray,
    t2m: np.ndarray,
    net_rad: np.ndarray,
    increments: np.ndarray | None = None,
    spinup_days: int = 365,
    cycles: int = 2,
) -> SoilRun:
    """Runs the model after cycling the first `spinup_days` `cycles` times to find the initial state."""
    init = None
    n = min(spinup_days, precip.shape[0])
    head = None if increments is None else increments[:n]
    for _ in range(cycles):
        init = run(params, precip[:n], t2m[:n], net_rad[:n], init, head).storage[-1]
    return run(params, precip, t2m, net_rad, init, increments)
