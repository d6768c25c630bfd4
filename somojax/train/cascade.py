"""The cascade: layer k's training inputs `sm_L1`, `sm_L2` are the upper layers' exact predictions.

Layer 2 is trained with the layer-1 ensemble-mean prediction as an extra dynamic input, layer 3
with those of layers 1 and 2 (docs/design.md#the-cascade). The predictions are EXACT seq-to-one predictions:
day e gets its own `seq_length`-day window from a zero state (docs/design.md#inference-semantics), de-normalised with
the upper layer's target statistics and clipped at 0, as the product is. Days without a complete
finite input window are NaN, so the samples that would need them are not used.

`upper_predictions` runs the rollout engine's in-memory cascade (`somojax.infer.engine`) on the
training cells, so the inputs a layer is trained with are exactly those `somojax predict` feeds it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from somojax import constants as C
from somojax.checkpoint import Bundle
from somojax.utils.logging import get_logger

log = get_logger("train")


def upper_predictions(
    layer: str,
    bundles: Mapping[str, Bundle],
    raw_dynamic: np.ndarray,
    raw_static: np.ndarray,
    dynamic_names: Sequence[str],
    static_names: Sequence[str],
    mode: str = "auto",
) -> dict[str, np.ndarray]:
    """{`sm_L1`: [C, days], ...}: the inputs `layer` needs from the layers above it.

    Runs the rollout engine's cascade (`somojax.infer.engine.cascade`) on these cells: each
    upper layer on its own input order and statistics, `sm_L1` feeding L2 when layer 3 is
    trained, exactly as `somojax predict` computes them for the product.

    Args:
      bundles: the upper layers' models (`L1`, and `L2` for layer 3).
      raw_dynamic: [C, days, D] raw (not normalised) dynamic inputs named `dynamic_names`.
      raw_static: [C, S] raw statics named `static_names`.
      mode: the inference mode (`infer.mode`; `auto` is `exact` for sequence-to-one models).
    """
    from somojax.infer import engine

    names = C.UPPER_LAYER_INPUTS[layer]
    uppers = [n.removeprefix("sm_") for n in names]
    means = engine.cascade_means(
        {u: bundles[u] for u in uppers}, raw_dynamic, raw_static, dynamic_names, static_names, uppers, mode
    )
    preds = {}
    for name, upper in zip(names, uppers):
        b = bundles[upper]
        preds[name] = means[upper]
        log.info(
            "%s: %s from the %d-member %s ensemble (%s), %d cells x %d days",
            layer,
            name,
            b.n_members,
            upper,
            engine.resolve_mode(b, mode),
            *preds[name].shape,
        )
    return preds
