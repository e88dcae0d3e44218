"""Benchmarks of layerwise_trainer against the stock Trainer: ``python -m benchmarks --help``."""
