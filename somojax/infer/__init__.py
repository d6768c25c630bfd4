"""Rollout: exact and chunked inference over tiles of cells into the prediction store."""
