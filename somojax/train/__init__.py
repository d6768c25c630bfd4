"""Ensemble training: sharded jitted step, epochs, validation, orbax checkpoints, cascade."""
