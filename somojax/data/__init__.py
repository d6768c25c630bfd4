"""Training samples from the analysis-ready stores: valid (cell, day) tables, windows, batches.

- `samples`: a layer's inputs from the stores (per-layer arrays, splits, sample tables);
- `pipeline`: the `TrainData` protocol the training loop reads, and its in-memory implementation
  (grain index shuffling, one fancy-index gather of each batch's windows).
"""
