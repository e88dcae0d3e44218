"""``layerwise-trainer plan``: the groups a spec gives for a model, without loading any weights.

The spec may be a run config (the YAML `train` reads, as in `examples/`): `plan` then takes its
`param_groups`, and its model, learning rate, weight decay and optimizer where the command line does not
give them, so that it shows the groups `train` would build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.grouping import GroupPlan
from ..core.spec import SpecSource
from ..core.yaml_json import DocumentError, load_document
from .lora import with_lora
from .run_config import ConfigError, RunConfig, model_config_from, parse_run_config
from .tasks import TASKS

# A run config is a few kilobytes; a larger file named by `--spec` is a spec, never read twice.
MAX_RUN_CONFIG_BYTES = 1024 * 1024
_RUN_CONFIG_SECTIONS = ("model", "param_groups")


@dataclass(frozen=True)
class PlanSettings:
    """What a plan is built from; any field left None is taken from `plan_for_model`'s defaults.

    Args:
        model: A hub id, a directory with a `config.json`, or a transformers config.
        spec: The spec.
        learning_rate: The base learning rate.
        weight_decay: The base weight decay.
        optim: The `TrainingArguments.optim` the groups are checked against.
        num_labels: The number of labels of a classification head.
        task: Which head to build the model with.
        peft: `peft.LoraConfig` fields, to wrap the model as `train` does.
    """

    model: Any = None
    spec: SpecSource | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    optim: str | None = None
    num_labels: int | None = None
    task: str | None = None
    peft: Mapping[str, Any] | None = None


def run_config_in(spec: str) -> RunConfig | None:
    """The run config in the file `spec` names, or None when `spec` is not a run config.

    A run config is a YAML/JSON mapping with a `model` or `param_groups` section; a spec never has one.

    Args:
        spec: The `--spec` argument: a file or a JSON string.

    Returns:
        The checked `RunConfig`, or None.

    Raises:
        ConfigError: The file is a run config, and a wrong one.
    """
    path = Path(spec)
    if spec.lstrip()[:1] in ("[", "{") or path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return None
    try:
        if not path.is_file() or path.stat().st_size > MAX_RUN_CONFIG_BYTES:
            return None
        raw = load_document(path)
    except (OSError, DocumentError):
        return None  # the spec parser says what is wrong with the file
    if not isinstance(raw, Mapping) or not any(section in raw for section in _RUN_CONFIG_SECTIONS):
        return None
    return parse_run_config(raw, path.resolve().parent, str(path))


def settings_from_run_config(config: RunConfig) -> PlanSettings:
    """The plan `train` would build from `config`: its spec, model, rates, optimizer and LoRA settings.

    Args:
        config: A checked run config.

    Returns:
        The settings; `task` is `sequence-classification`, the head `train` adds.

    Raises:
        ConfigError: The run config has no `param_groups`.
    """
    from ..training_args import LayerwiseTrainingArguments

    if config.param_groups is None:
        raise ConfigError(f"{config.source}: param_groups: the run config has no spec to plan")
    args = LayerwiseTrainingArguments(**config.training)
    return PlanSettings(
        model=_model_of(config),
        spec=config.param_groups,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        optim=str(getattr(args.optim, "value", args.optim)),
        num_labels=config.model.num_labels or _num_labels_of_data(config),
        task="sequence-classification",
        peft=config.peft,
    )


def _model_of(config: RunConfig) -> Any:
    """A hub id or directory (read only if no `--model` replaces it), or the config `from_config` builds."""
    if config.model.name_or_path is not None:
        _check_local(config.model.name_or_path, where="model.name_or_path")
        return config.model.name_or_path
    settings = dict(config.model.from_config or {})
    if config.tokenizer.train is not None and "vocab_size" not in settings:
        # `train` sizes the embeddings to the tokenizer it trains: at most this many entries.
        settings["vocab_size"] = config.tokenizer.train.get("vocab_size", 8000)
    return model_config_from(settings)


def _num_labels_of_data(config: RunConfig) -> int | None:
    if config.data.label_names is not None:
        return len(config.data.label_names)
    if config.data.builtin is not None:
        from .ja.sentiment_data import LABEL_NAMES

        return len(LABEL_NAMES)
    return None


def _looks_like_a_path(name_or_path: str) -> bool:
    """A hub id is `name` or `org/name`; anything absolute, relative (`./`, `../`, `~`) or deeper is a path."""
    return (
        os.path.isabs(name_or_path)
        or name_or_path.startswith((".", "~"))
        or name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in name_or_path)
    )


def _check_local(name_or_path: str, where: str) -> None:
    local = Path(name_or_path).expanduser()
    if _looks_like_a_path(name_or_path) and not local.exists():
        raise ConfigError(f"{where}: no such directory: {name_or_path}")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ConfigError(f"{where}: no config.json in the directory {name_or_path}")


def read_model_config(name_or_path: str, where: str = "--model") -> Any:
    """The transformers config of a hub id or a local directory.

    Args:
        name_or_path: A hub id or a directory with a `config.json`.
        where: What to call the argument in messages (`--model`, `model.name_or_path`).

    Returns:
        The `PretrainedConfig`.

    Raises:
        ConfigError: A path that does not exist ("no such directory"), a directory without a
            `config.json`, or any failure to read the config, in one line.
    """
    import transformers

    _check_local(name_or_path, where)
    try:
        return transformers.AutoConfig.from_pretrained(name_or_path)
    except Exception as error:  # hub, network, JSON and model-type failures alike: one line, not a traceback
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ConfigError(f"{where}: cannot read the model config of {name_or_path}: {reason[:300]}") from None


def meta_model(
    model: Any, num_labels: int | None = None, task: str = "auto", peft: Mapping[str, Any] | None = None
) -> nn.Module:
    """The model of a hub id, local directory or config, built on the meta device.

    Only `config.json` is read: no weights are downloaded or loaded, and no memory is allocated.

    Args:
        model: A hub id, a directory with a `config.json`, or a transformers config.
        num_labels: Override the number of labels of a classification head.
        task: One of `TASKS` (`sequence-classification` builds the model with a new classifier head, as a
            fine-tune would); `auto` takes the config's first `architectures` entry that transformers
            knows, else `AutoModel`.
        peft: `peft.LoraConfig` fields: wrap the model with LoRA for sequence classification, as `train`
            does.

    Returns:
        The model, with every tensor on the meta device.
    """
    import torch
    import transformers

    config = read_model_config(model) if isinstance(model, str) else model
    if num_labels is not None:
        config.num_labels = num_labels
    with torch.device("meta"):
        built = _model_for_task(transformers, config, task)
        return with_lora(built, peft) if peft is not None else built


def _model_for_task(transformers: Any, config: Any, task: str) -> nn.Module:
    if task != "auto":
        return getattr(transformers, TASKS[task]).from_config(config)
    for architecture in getattr(config, "architectures", None) or []:
        model_cls: Any = getattr(transformers, architecture, None)
        if model_cls is not None:
            return model_cls(config)
    return transformers.AutoModel.from_config(config)


def plan_for_model(
    name_or_path: Any,
    spec: SpecSource,
    *,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.0,
    optim: str = "adamw_torch",
    num_labels: int | None = None,
    task: str = "auto",
    peft: Mapping[str, Any] | None = None,
) -> GroupPlan:
    """Resolve `spec` against the model of `name_or_path` built on the meta device.

    Args:
        name_or_path: A hub id, a directory with a `config.json`, or a transformers config.
        spec: The spec.
        learning_rate: The base learning rate.
        weight_decay: The base weight decay.
        optim: The `TrainingArguments.optim` the groups are checked against.
        num_labels: Override the number of labels of a classification head.
        task: Which head to build the model with (see `meta_model`).
        peft: `peft.LoraConfig` fields, to plan a LoRA fine-tune.

    Returns:
        The plan.

    Raises:
        SpecError: Any problem with the spec.
        ConfigError: The model's config cannot be read.

    Example:
        ```python
        plan = plan_for_model("bert-base-uncased", "spec.yaml", task="sequence-classification")
        ```
    """
    from transformers import TrainingArguments

    from ..optimizer_choice import plan_inputs_for_arguments

    model = meta_model(name_or_path, num_labels, task, peft)
    args = TrainingArguments(
        output_dir="unused",
        optim=optim,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        report_to=[],
        use_cpu=True,
    )
    return plan_inputs_for_arguments(args, model).resolve(model, spec)
