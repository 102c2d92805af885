"""Benchmark baselines (e.g. the TimeSformer-Ti model of the efficiency comparison)."""
