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
    "GroupPlan": "core.grouping",
    "PlannedGroup": "core.grouping",
    "build_param_groups": "core.grouping",
    "resolve_groups": "core.grouping",
    "LayerMap": "core.layer_ids",
    "detect_layers": "core.layer_ids",
    "GroupSpec": "core.spec",
    "LayerwiseSpec": "core.spec",
    "parse_spec": "core.spec",
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
    from .core.grouping import GroupPlan, PlannedGroup, build_param_groups, resolve_groups
    from .core.layer_ids import LayerMap, detect_layers
    from .core.spec import GroupSpec, LayerwiseSpec, parse_spec
    from .errors import SpecError
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
