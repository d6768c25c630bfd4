"""Small shared utilities: logging, progress, metric files, timing."""
