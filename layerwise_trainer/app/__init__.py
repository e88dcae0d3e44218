"""The `layerwise-trainer` application: command line, run config, data, metrics and plots."""
