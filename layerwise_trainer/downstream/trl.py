"""`LayerwiseSFTTrainer` and `LayerwiseDPOTrainer`: TRL's Trainers with a ``param_groups`` spec.

TRL's Trainers build the model (from a hub id, with a peft adapter when given ``peft_config``) in their
``__init__`` and leave the optimizer to the stock ``Trainer.create_optimizer``: the mixin needs nothing
more, and resolves the spec once the model, adapter included, exists. With an adapter, parameter names sit
under ``base_model.model.`` and the frozen base stays out of the optimizer; LoRA+ is two groups,
``*.lora_A.*`` and ``*.lora_B.*`` with a larger ``lr_scale``.

Importing this module imports TRL (the ``[downstream]`` extra).
"""

from __future__ import annotations

from ..trainer import LayerwiseTrainerMixin

try:
    from trl import DPOTrainer, SFTTrainer
except ModuleNotFoundError as error:  # pragma: no cover - the message is the point
    raise ModuleNotFoundError(
        'layerwise_trainer.downstream.trl needs TRL: pip install "layerwise-trainer[downstream]" (or pip install trl)',
        name=error.name,
    ) from error


class LayerwiseSFTTrainer(LayerwiseTrainerMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` with a ``param_groups`` spec (see `LayerwiseTrainerMixin`).

    Args:
        param_groups: The spec (see `parse_spec`).
        *args: ``SFTTrainer``'s positional arguments.
        **kwargs: ``SFTTrainer``'s keyword arguments (``peft_config`` too).

    Example:
        ```python
        trainer = LayerwiseSFTTrainer(
            model=model,
            args=SFTConfig("out"),
            train_dataset=texts,
            processing_class=tokenizer,
            param_groups={"layer_decay": 0.9, "groups": [{"name": "embeddings", "match": "model.embed_tokens.*"}]},
        )
        ```
    """


class LayerwiseDPOTrainer(LayerwiseTrainerMixin, DPOTrainer):
    """TRL's ``DPOTrainer`` with a ``param_groups`` spec (see `LayerwiseTrainerMixin`).

    The spec covers the policy model; the reference model is never trained.

    Args:
        param_groups: The spec (see `parse_spec`).
        *args: ``DPOTrainer``'s positional arguments.
        **kwargs: ``DPOTrainer``'s keyword arguments (``ref_model`` and ``peft_config`` too).

    Example:
        ```python
        trainer = LayerwiseDPOTrainer(
            model=model,
            args=DPOConfig("out"),
            train_dataset=preferences,
            processing_class=tokenizer,
            param_groups=[{"name": "lm_head", "match": "lm_head.*", "lr_scale": 0.1}],
        )
        ```
    """
