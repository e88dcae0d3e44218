"""Per-group learning rates, layer-wise LR decay and per-group LR logging for Hugging Face Trainers.

Example:
    ```python
    from layerwise_trainer import LayerwiseTrainer

    trainer = LayerwiseTrainer(
        model=model,
        args=args,
        train_dataset=train,
        param_groups=[
            {"name": "body", "match": "bert.*", "lr": 0},
            {"name": "head", "match": "classifier.*", "lr": 2e-5},
        ],
    )
    trainer.train()
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Public name -> the module that defines it. Imported on first use, so that `import layerwise_trainer`
# (and `layerwise-trainer --help`) does not pay for importing torch and transformers.
_EXPORTS = {
    "GroupLearningRateCallback": "callback",
    "group_learning_rates": "callback",
    "SpecError": "errors",
    "GroupPlan": "grouping",
    "PlannedGroup": "grouping",
    "build_param_groups": "grouping",
    "resolve_groups": "grouping",
    "LayerMap": "layers",
    "detect_layers": "layers",
    "GroupSpec": "spec",
    "LayerwiseSpec": "spec",
    "parse_spec": "spec",
    "LayerwiseTrainer": "trainer",
    "LayerwiseTrainerMixin": "trainer",
    "LayerwiseTrainingArguments": "training_args",
}

__all__ = [
    "GroupLearningRateCallback",
    "GroupPlan",
    "GroupSpec",
    "LayerMap",
    "LayerwiseSpec",
    "LayerwiseTrainer",
    "LayerwiseTrainerMixin",
    "LayerwiseTrainingArguments",
    "PlannedGroup",
    "SpecError",
    "__version__",
    "build_param_groups",
    "detect_layers",
    "group_learning_rates",
    "parse_spec",
    "resolve_groups",
]

if TYPE_CHECKING:
    from .callback import GroupLearningRateCallback, group_learning_rates
    from .errors import SpecError
    from .grouping import GroupPlan, PlannedGroup, build_param_groups, resolve_groups
    from .layers import LayerMap, detect_layers
    from .spec import GroupSpec, LayerwiseSpec, parse_spec
    from .trainer import LayerwiseTrainer, LayerwiseTrainerMixin
    from .training_args import LayerwiseTrainingArguments


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
