"""The hyperparameters an optimizer class takes, read from its signature."""

from __future__ import annotations

import torch

from layerwise_trainer.core.optimizer_options import optimizer_hyperparameters


def test_hyperparameters_of_adamw():
    known = optimizer_hyperparameters(torch.optim.AdamW)
    assert known is not None
    assert known["betas"] == (0.9, 0.999)
    assert "params" not in known


def test_hyperparameters_unknown_for_kwargs_only_optimizers():
    class KwargsOptimizer(torch.optim.SGD):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)

    assert optimizer_hyperparameters(KwargsOptimizer) is None
