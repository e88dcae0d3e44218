"""Ready Trainers for other projects' Trainer subclasses: sentence-transformers and TRL.

Each module imports its project when it is imported, and only then: ``import layerwise_trainer`` and
``import layerwise_trainer.downstream`` need neither. The names below are imported on first use:

- `LayerwiseSentenceTransformerTrainer` (``layerwise_trainer.downstream.sentence_transformers``,
  needs sentence-transformers);
- `LayerwiseSFTTrainer` and `LayerwiseDPOTrainer` (``layerwise_trainer.downstream.trl``, needs TRL).

Example:
    ```python
    from layerwise_trainer.downstream import LayerwiseSFTTrainer
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sentence_transformers import LayerwiseSentenceTransformerTrainer
    from .trl import LayerwiseDPOTrainer, LayerwiseSFTTrainer

# Public name -> the module of this package that defines it.
_EXPORTS = {
    "LayerwiseSentenceTransformerTrainer": "sentence_transformers",
    "LayerwiseSFTTrainer": "trl",
    "LayerwiseDPOTrainer": "trl",
}
__all__ = ["LayerwiseDPOTrainer", "LayerwiseSFTTrainer", "LayerwiseSentenceTransformerTrainer"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
