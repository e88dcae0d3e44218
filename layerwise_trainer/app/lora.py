"""A LoRA adapter from a run config's ``peft`` section, for `train` and `plan` alike."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from .extras import require_extra
from .run_config import ConfigError


def with_lora(model: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """``model`` wrapped by peft with a sequence-classification LoRA adapter built from ``settings``.

    Args:
        model: The model.
        settings: ``peft.LoraConfig`` fields.

    Returns:
        The peft model.

    Raises:
        MissingExtraError: peft is not installed (the `[peft]` extra).
        ConfigError: peft refuses the settings, or they do not fit the model (``r: 0``, target modules it
            lacks); the message starts with ``peft:``.
    """
    require_extra("peft", "a run config with a peft section")
    from peft import LoraConfig, TaskType, get_peft_model

    try:
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, **settings)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"peft: {error}") from None
    with warnings.catch_warnings():
        # peft calls transformers' deprecated `is_gradient_checkpointing`; nothing a user can change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        try:
            return get_peft_model(model, lora)
        except (TypeError, ValueError) as error:  # `r: 0`, target modules the model lacks: found only here
            raise ConfigError(f"peft: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())[:500]
