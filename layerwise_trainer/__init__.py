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

# The public API, the one table of it: public name -> the module that defines it. `__all__` and
# `docs/api.md` follow it (tests/test_docs.py checks the page). Names are imported on first use, so that
# `import layerwise_trainer` (and `layerwise-trainer --help`) does not pay for importing torch and
# transformers; the application's names need its extra (`pip install "layerwise-trainer[app]"`).
_EXPORTS = {
    # The Trainer adapter.
    "LayerwiseTrainer": "trainer",
    "LayerwiseTrainerMixin": "trainer",
    "LayerwiseTrainingArguments": "training_args",
    "GroupLearningRateCallback": "callbacks",
    "GroupDiagnosticsCallback": "callbacks",
    "build_param_groups": "optimizer_choice",
    "CheckpointLayoutError": "checkpoints",
    "StateTransfer": "core.optimizer_state_transfer",
    "GroupTransfer": "core.optimizer_state_transfer",
    # The core: spec -> groups.
    "SpecError": "errors",
    "parse_spec": "core.spec",
    "LayerwiseSpec": "core.spec",
    "GroupSpec": "core.spec",
    "MAX_SPEC_BYTES": "core.spec",
    "MAX_GROUPS": "core.spec",
    "MAX_PATTERNS": "core.spec",
    "MAX_WILDCARD_PATTERNS": "core.spec",
    "MAX_NUM_LAYERS": "core.spec",
    "resolve_groups": "core.grouping",
    "GroupPlan": "core.grouping",
    "PlannedGroup": "core.grouping",
    "GroupScheduler": "core.group_scheduler",
    "GroupRateFactor": "core.group_scheduler",
    "HybridOptimizer": "core.hybrid_optimizer",
    "MuonSettings": "core.muon",
    "detect_layers": "core.layer_ids",
    "LayerMap": "core.layer_ids",
    "group_learning_rates": "core.log_keys",
    "render_table": "core.group_table",
    "plan_to_data": "core.group_table",
    # The application.
    "plot_learning_rates": "app.lr_plot",
    "plot_diagnostics": "app.diagnostics_plot",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and IDEs; tests/test_architecture.py keeps it equal to the table
    from .app.diagnostics_plot import plot_diagnostics
    from .app.lr_plot import plot_learning_rates
    from .callbacks import GroupDiagnosticsCallback, GroupLearningRateCallback
    from .checkpoints import CheckpointLayoutError
    from .core.group_scheduler import GroupRateFactor, GroupScheduler
    from .core.group_table import plan_to_data, render_table
    from .core.grouping import GroupPlan, PlannedGroup, resolve_groups
    from .core.hybrid_optimizer import HybridOptimizer
    from .core.layer_ids import LayerMap, detect_layers
    from .core.log_keys import group_learning_rates
    from .core.muon import MuonSettings
    from .core.optimizer_state_transfer import GroupTransfer, StateTransfer
    from .core.spec import (
        MAX_GROUPS,
        MAX_NUM_LAYERS,
        MAX_PATTERNS,
        MAX_SPEC_BYTES,
        MAX_WILDCARD_PATTERNS,
        GroupSpec,
        LayerwiseSpec,
        parse_spec,
    )
    from .errors import SpecError
    from .optimizer_choice import build_param_groups
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
