"""Cross-validation, skill metrics, reference datasets, figures and the report."""
