"""``layerwise-trainer plan``: the groups a spec gives for a model, without loading any weights.

The spec may be a run config (the YAML `train` reads, as in `examples/`): `plan` then takes its
`param_groups`, and its model, learning rate, weight decay and optimizer where the command line does not
give them, so that it shows the groups `train` would build. `--spec` is read once and its spec parsed once:
the `LayerwiseSpec` is handed on, and nothing after `plan_settings` reads or checks it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core.grouping import GroupPlan
from ..core.spec import LayerwiseSpec, SpecSource, parse_spec, read_spec_file
from ..core.yaml_json import JSON_SUFFIXES, YAML_SUFFIXES
from ..errors import SpecError
from .hub_access import offline_reason
from .lora import with_lora
from .run_config import ConfigError, RunConfig, check_layer_counts, model_config_from, parse_run_config
from .tasks import TASKS

# Modules a model built by `meta_model` may have: 200,000 is about 11,000 BERT blocks (0.5 GiB at the refusal);
# a released model has a few thousand (DeepSeek-V3 with every expert a module of its own: about 62,000).
MAX_MODEL_MODULES = 200_000
# A mapping with one of these sections is a run config; a spec's top-level keys never include them.
_RUN_CONFIG_SECTIONS = ("model", "param_groups")
_SETTING_FLAGS = ("model", "learning_rate", "weight_decay", "optim", "num_labels", "task")


@dataclass(frozen=True)
class PlanSettings:
    """What a plan is built from; any field left None is taken from `plan_for_model`'s defaults.

    Args:
        model: A hub id, a directory with a `config.json`, or a transformers config.
        spec: The parsed spec.
        learning_rate: The base learning rate.
        weight_decay: The base weight decay.
        optim: The `TrainingArguments.optim` the groups are checked against.
        num_labels: The number of labels of a classification head.
        task: Which head to build the model with.
        peft: `peft.LoraConfig` fields, to wrap the model as `train` does.
    """

    model: Any = None
    spec: LayerwiseSpec | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    optim: str | None = None
    num_labels: int | None = None
    task: str | None = None
    peft: Mapping[str, Any] | None = None


def settings_from_spec_argument(spec: str, checkpoint: str | None = None) -> PlanSettings:
    """What `--spec` gives: a spec (a file or a JSON string), or a run config's spec, model and settings.

    A file is read once (`read_spec_file`); a mapping with a `model` or `param_groups` section is a run config
    (`parse_run_config`, which parses its spec), anything else a spec (`parse_spec` on the data read).

    Args:
        spec: The `--spec` argument.
        checkpoint: `--resume-from`: a run config's model is then sized as the checkpoint's.

    Returns:
        The settings, with the spec parsed.

    Raises:
        SpecError: The file cannot be read, or the spec is wrong (the message starts with the file).
        ConfigError: The file is a run config, and a wrong one.
    """
    if spec.lstrip()[:1] in ("[", "{") or not spec.lower().endswith(YAML_SUFFIXES + JSON_SUFFIXES):
        return PlanSettings(spec=parse_spec(spec))
    raw = read_spec_file(spec)
    if isinstance(raw, Mapping) and any(section in raw for section in _RUN_CONFIG_SECTIONS):
        return settings_from_run_config(parse_run_config(raw, Path(spec).resolve().parent, spec), checkpoint)
    try:
        return PlanSettings(spec=parse_spec(raw))
    except SpecError as error:
        raise error.within(source=spec) from None


def plan_settings(spec: str, checkpoint: str | None = None, **flags: Any) -> PlanSettings:
    """The settings of a `plan` command: the flags given (not None), over what `--spec` gives.

    Args:
        spec: The `--spec` argument.
        checkpoint: The `--resume-from` argument, if given.
        **flags: `model`, `learning_rate`, `weight_decay`, `optim`, `num_labels`, `task`; None when not given.

    Returns:
        The settings.

    Raises:
        ConfigError: No model: neither `--model` nor a run config with a model section.
    """
    base = settings_from_spec_argument(spec, checkpoint)
    given = {name: value for name, value in flags.items() if name in _SETTING_FLAGS and value is not None}
    settings = dataclasses.replace(base, **given)
    if settings.model is None:
        raise ConfigError("--model: required (a hub id or a directory with a config.json) unless --spec is a run "
                          "config with a model section")  # fmt: skip
    return settings


def settings_from_run_config(config: RunConfig, checkpoint: str | None = None) -> PlanSettings:
    """The plan `train` would build from `config`: its spec, model, rates, optimizer and LoRA settings.

    Args:
        config: A checked run config.
        checkpoint: A checkpoint of the run, whose model (its vocabulary) the plan is then built like.

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
        model=model_of_run_config(config, checkpoint),
        spec=config.param_groups,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        optim=str(getattr(args.optim, "value", args.optim)),
        num_labels=config.model.num_labels or _num_labels_of_data(config),
        task="sequence-classification",
        peft=config.peft,
    )


def model_of_run_config(config: RunConfig, checkpoint: str | None = None) -> Any:
    """A run config's model: a hub id or directory (read only when it is built), or the config `from_config` builds.

    `train` sizes the embeddings of a model built from a config to the tokenizer it trains, whose vocabulary is
    known only once it is learnt: at most `tokenizer.train.vocab_size` entries, or exactly the checkpoint's
    (its `config.json`, else its `vocab.txt`) when one is given, so that a resume's preview sees the same
    embedding shape the resume loads.

    Args:
        config: A checked run config.
        checkpoint: A checkpoint directory of this run, or None.

    Returns:
        The hub id or directory, or a transformers config.
    """
    if config.model.name_or_path is not None:
        _check_local(config.model.name_or_path, where="model.name_or_path")
        return config.model.name_or_path
    settings = dict(config.model.from_config or {})
    if config.tokenizer.train is not None and "vocab_size" not in settings:
        learned = _learned_vocab_size(checkpoint) if checkpoint is not None else None
        settings["vocab_size"] = learned or config.tokenizer.train.get("vocab_size", 8000)
    return model_config_from(settings)


def _learned_vocab_size(checkpoint: str) -> int | None:
    """The vocabulary the run learnt, as its checkpoint saved it: `config.json`'s `vocab_size`, or `vocab.txt`."""
    import json

    from ..core.yaml_json import DocumentError, read_text_bounded

    folder = Path(checkpoint)
    try:
        size = json.loads(read_text_bounded(folder / "config.json", 1024 * 1024)).get("vocab_size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    except (DocumentError, ValueError, AttributeError):
        pass
    try:
        return len(read_text_bounded(folder / "vocab.txt", 64 * 1024 * 1024).splitlines()) or None
    except DocumentError:
        return None


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
            `config.json`, or any failure to read the config (a hub id the cache does not have, when the
            command line found the hub unreachable: see `hub_access`), in one line.
    """
    import transformers

    _check_local(name_or_path, where)
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path)
    except Exception as error:  # hub, network, JSON and model-type failures alike: one line, not a traceback
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        if offline_reason() is not None:
            reason = f"it is not in the local cache, and the hub cannot be reached ({offline_reason()})"
        raise ConfigError(f"{where}: cannot read the model config of {name_or_path}: {reason[:300]}") from None
    check_layer_counts(config, f"{where}: {name_or_path}/config.json: ")
    return config


def meta_model(
    model: Any,
    num_labels: int | None = None,
    task: str = "auto",
    peft: Mapping[str, Any] | None = None,
    where: str = "--model",
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
        where: What to call the model in messages (`--model`, `model.name_or_path`).

    Returns:
        The model, with every tensor on the meta device.
    """
    import torch
    import transformers

    config = read_model_config(model, where) if isinstance(model, str) else model
    if num_labels is not None:
        config.num_labels = num_labels
    with torch.device("meta"), _at_most_modules(MAX_MODEL_MODULES, model if isinstance(model, str) else "model"):
        built = _model_for_task(transformers, config, task)
        return with_lora(built, peft) if peft is not None else built


@contextlib.contextmanager
def _at_most_modules(limit: int, what: str) -> Iterator[None]:
    """Stop building a model once it has registered ``limit`` modules: on the meta device its tensors cost
    nothing, but every module does (about 2.5 KiB), and only the layer counts are checked before building."""
    from torch.nn.modules.module import register_module_module_registration_hook

    count = 0

    def count_module(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise ConfigError(f"{what}: the model has more than {limit:,} modules (MAX_MODEL_MODULES); a model config "
                              "with that many blocks or experts is a mistake")  # fmt: skip

    handle = register_module_module_registration_hook(count_module)
    try:
        yield
    finally:
        handle.remove()


def _model_for_task(transformers: Any, config: Any, task: str) -> nn.Module:
    if task != "auto":
        return getattr(transformers, TASKS[task]).from_config(config)
    for architecture in getattr(config, "architectures", None) or []:
        model_cls: Any = getattr(transformers, architecture, None)
        if model_cls is not None:
            return model_cls(config)
    return transformers.AutoModel.from_config(config)


def plan_training_arguments(settings: PlanSettings) -> Any:
    """The `TrainingArguments` a plan is resolved under: the settings' optimizer and rates, or the defaults."""
    from transformers import TrainingArguments

    values = {name: getattr(settings, name) for name in ("learning_rate", "weight_decay", "optim")}
    given = {name: value for name, value in values.items() if value is not None}
    return TrainingArguments(output_dir="unused", report_to=[], use_cpu=True, **given)


def resolve_plan(model: nn.Module, spec: SpecSource, args: Any) -> GroupPlan:
    """The plan of ``spec`` on ``model`` under ``args``, through the one path the trainer takes too."""
    from ..core.spec import parse_spec
    from ..optimizer_choice import plan_inputs_for_arguments

    spec = parse_spec(spec)
    return plan_inputs_for_arguments(args, model, spec=spec).resolve(model, spec)


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
    model = meta_model(name_or_path, num_labels, task, peft)
    settings = PlanSettings(learning_rate=learning_rate, weight_decay=weight_decay, optim=optim)
    return resolve_plan(model, spec, plan_training_arguments(settings))


def resume_preview(checkpoint: str, plan: GroupPlan, model: nn.Module, args: Any, spec: SpecSource) -> Any:
    """What a resume from ``checkpoint`` would carry, start fresh and drop (None: an exact resume).

    Args:
        checkpoint: The checkpoint directory.
        plan: The plan `resolve_plan` gave.
        model: The meta-device model it was resolved on.
        args: The `TrainingArguments` it was resolved under.
        spec: The spec it was resolved from (one that chooses Muon is built as a `HybridOptimizer`).

    Returns:
        The `StateTransfer`, or None when the resume is exact.
    """
    from ..checkpoints import preview_transfer

    return preview_transfer(checkpoint, plan, model, args, spec)
