"""Benchmark baselines (e.g. the TimeSformer-Ti model of the efficiency comparison)."""

# The models ``videomamba bench model`` compares (here so that the CLI lists them without importing torch).
MODELS = ("videomamba_tiny", "timesformer_tiny_naive", "timesformer_tiny_sdpa", "deit_tiny_sdpa")
