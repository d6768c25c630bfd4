"""Benchmarks: throughput against the PyTorch peers and the hardware floor."""
