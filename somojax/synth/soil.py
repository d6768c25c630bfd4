"""A layered bucket soil model: the synthetic Earth's truth, and (mis-parameterised) its reanalysis.

State: water storage S_k [mm] of each layer k (thickness z_k [mm], porosity φ_k), and snow [mm].
Each day, in this order:

1. snow: precipitation falls as snow below 0 °C; melt M = min(snow, ddf·max(T − 273.15, 0));
2. water input W = rain + M; saturation-excess runoff R = W·(S_1/S_1,max)^b; infiltration
   I = W − R enters layer 1;
3. overflow: water above a layer's capacity φ_k·z_k passes to the layer below (the bottom
   layer's overflow joins runoff);
4. drainage: Q_k = k_k·max(S_k − S_fc,k, 0) from layer k to layer k+1 (limited by the room
   there); the bottom layer drains out of the column;
5. evapotranspiration: PET = c·max(Rn, 0)/2.45·clip((T − 268)/15, 0, 1) [mm day-1], taken from
   layer k as E_k = PET·r_k·β_k with roots r_k and stress β_k = clip((θ_k − θ_wp)/(θ_fc − θ_wp), 0, 1),
   never below half the wilting-point storage.

Water balance per layer and day: ΔS_k = in_k − out_k with in_1 = I, in_k = Q_{k−1} + O_{k−1}
(drainage and overflow from above), out_k = Q_k + O_k + E_k. `run` returns every flux so that
the tests check the balance exactly.
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


@dataclass
class SoilRun:
    """Daily output [day, layer, cell] of volumetric soil moisture and the fluxes [mm day-1]."""

    theta: np.ndarray  # [day, layer, cell] m3 m-3 at the end of the day
    storage: np.ndarray  # [day, layer, cell] mm at the end of the day
    infiltration: np.ndarray  # [day, cell] into layer 1
    inflow: np.ndarray  # [day, layer, cell] from above (drainage + overflow), layer 0: infiltration
    outflow: np.ndarray  # [day, layer, cell] to below (drainage + overflow); bottom: out of the column
    et: np.ndarray  # [day, layer, cell]
    runoff: np.ndarray  # [day, cell]
    initial: np.ndarray  # [layer, cell] storage before the first day


def run(params: SoilParams, precip: np.ndarray, t2m: np.ndarray, net_rad: np.ndarray, initial: np.ndarray | None = None) -> SoilRun:
    """Runs the bucket model.

    Args:
      params: soil parameters for n_layer layers and n_cell cells.
      precip: [day, cell] precipitation [mm day-1]; t2m: [day, cell] [K];
      net_rad: [day, cell] net radiation [MJ m-2 day-1].
      initial: [layer, cell] initial storage [mm]; default field capacity.
    """
    nd, nc = precip.shape
    z = np.asarray(params.thickness, np.float64)[:, None]
    nl = z.shape[0]
    smax = params.porosity * z
    sfc = params.field_capacity * z
    swp = params.wilting_point * z
    s = (sfc.copy() if initial is None else np.array(initial, np.float64)) * np.ones((nl, nc))
    init = s.copy()
    snow = np.zeros(nc)
    out = SoilRun(
        theta=np.empty((nd, nl, nc)),
        storage=np.empty((nd, nl, nc)),
        infiltration=np.empty((nd, nc)),
        inflow=np.empty((nd, nl, nc)),
        outflow=np.empty((nd, nl, nc)),
        et=np.empty((nd, nl, nc)),
        runoff=np.empty((nd, nc)),
        initial=init,
    )
    frozen_t = 273.15
    stress_den = np.maximum(sfc - swp, 1e-9)
    for d in range(nd):
        p, t = precip[d], t2m[d]
        if params.degree_day > 0:
            snowfall = np.where(t < frozen_t, p, 0.0)
            snow += snowfall
            melt = np.minimum(snow, params.degree_day * np.maximum(t - frozen_t, 0.0))
            snow -= melt
            water = p - snowfall + melt
        else:
            water = p
        runoff = water * np.clip(s[0] / smax[0], 0.0, 1.0) ** params.runoff_exp
        inflow_top = water - runoff
        inflow = np.empty((nl, nc))
        outflow = np.empty((nl, nc))
        inflow[0] = inflow_top
        carry = inflow_top
        for k in range(nl):
            s[k] += carry
            over = np.maximum(s[k] - smax[k], 0.0)
            s[k] -= over
            q = params.drainage[k] * np.maximum(s[k] - sfc[k], 0.0)
            if k + 1 < nl:
                room = smax[k + 1] - s[k + 1]
                q = np.minimum(q, np.maximum(room, 0.0))
            s[k] -= q
            outflow[k] = q + over
            if k + 1 < nl:
                inflow[k + 1] = outflow[k]
            carry = outflow[k]
        pet = params.pet_coef * np.maximum(net_rad[d], 0.0) / 2.45 * np.clip((t - 268.0) / 15.0, 0.0, 1.0)
        beta = np.clip((s - swp) / stress_den, 0.0, 1.0)
        e = np.minimum(pet[None] * params.roots * beta, np.maximum(s - 0.5 * swp, 0.0))
        s -= e
        out.theta[d] = s / z
        out.storage[d] = s
        out.infiltration[d] = inflow_top
        out.inflow[d] = inflow
        out.outflow[d] = outflow
        out.et[d] = e
        out.runoff[d] = runoff
    return out


def spun_up(params: SoilParams, precip: np.ndarray, t2m: np.ndarray, net_rad: np.ndarray, spinup_days: int = 365, cycles: int = 2) -> SoilRun:
    """Runs the model after cycling the first `spinup_days` `cycles` times to find the initial state."""
    init = None
    n = min(spinup_days, precip.shape[0])
    for _ in range(cycles):
        init = run(params, precip[:n], t2m[:n], net_rad[:n], init).storage[-1]
    return run(params, precip, t2m, net_rad, init)


def layer_average(theta: np.ndarray, bounds_from: list[tuple[float, float]], target: tuple[float, float]) -> np.ndarray:
    """Thickness-weighted mean of layers (bounds in cm) over a target depth range [cm]."""
    w = np.array([max(0.0, min(b, target[1]) - max(a, target[0])) for a, b in bounds_from])
    if w.sum() <= 0:
        raise ValueError(f"depth range {target} cm lies outside the model layers {bounds_from}")
    return np.tensordot(w / w.sum(), theta, axes=([0], [-2]))
