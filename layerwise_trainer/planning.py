"""``layerwise-trainer plan``: the groups a spec gives for a model, without loading any weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from .grouping import GroupPlan, resolve_groups
from .spec import SpecSource

# `--task` -> the Auto class that builds the model for it.
TASKS = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "masked-lm": "AutoModelForMaskedLM",
    "image-classification": "AutoModelForImageClassification",
    "base": "AutoModel",
}


def meta_model(name_or_path: str, num_labels: int | None = None, task: str = "auto") -> nn.Module:
    """The model of a hub id or local directory, built from its config on the meta device.

    Only ``config.json`` is read: no weights are downloaded or loaded, and no memory is allocated.

    Args:
        name_or_path: A hub id or a directory with a ``config.json``.
        num_labels: Override the number of labels of a classification head.
        task: One of :data:`TASKS` (``sequence-classification`` builds the model with a new classifier
            head, as a fine-tune would); ``auto`` takes the config's first ``architectures`` entry that
            transformers knows, else ``AutoModel``.

    Returns:
        The model, with every tensor on the meta device.
    """
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(name_or_path)
    if num_labels is not None:
        config.num_labels = num_labels
    with torch.device("meta"):
        if task != "auto":
            return getattr(transformers, TASKS[task]).from_config(config)
        for architecture in getattr(config, "architectures", None) or []:
            model_cls: Any = getattr(transformers, architecture, None)
            if model_cls is not None:
                return model_cls(config)
        return transformers.AutoModel.from_config(config)


def plan_for_model(
    name_or_path: str,
    spec: SpecSource,
    *,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.0,
    optim: str = "adamw_torch",
    num_labels: int | None = None,
    task: str = "auto",
) -> GroupPlan:
    """Resolve ``spec`` against the model of ``name_or_path`` built on the meta device.

    Args:
        name_or_path: A hub id or a directory with a ``config.json``.
        spec: The spec.
        learning_rate: The base learning rate.
        weight_decay: The base weight decay.
        optim: The ``TrainingArguments.optim`` the groups are checked against.
        num_labels: Override the number of labels of a classification head.
        task: Which head to build the model with (see :func:`meta_model`).

    Returns:
        The plan.

    Raises:
        SpecError: Any problem with the spec.
    """
    from transformers import TrainingArguments

    from .optimizers import optimizer_for_args

    model = meta_model(name_or_path, num_labels, task)
    args = TrainingArguments(output_dir="unused", optim=optim, learning_rate=learning_rate, report_to=[], use_cpu=True)
    optimizer_cls, optimizer_kwargs, label = optimizer_for_args(args, model)
    return resolve_groups(
        model,
        spec,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        optimizer_cls=optimizer_cls,
        optimizer_kwargs=optimizer_kwargs,
        optimizer_label=label,
    )
