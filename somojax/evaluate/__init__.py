"""Cross-validation, skill metrics, reference datasets, figures and the report (docs/design.md#cross-validation).

`evaluate(cfg)` runs the k-fold cross-validation of the cascade and scores it, ERA5 and any
reference product against the in-situ targets; see `runner` for the files it writes and
docs/evaluation.md for the protocol.
"""

from somojax.evaluate.runner import EvaluationResult, evaluate, evaluate_series

__all__ = ["EvaluationResult", "evaluate", "evaluate_series"]
