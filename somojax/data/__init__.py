"""Training samples from the analysis-ready stores: valid (cell, day) tables, windows, grain."""
