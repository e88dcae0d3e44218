"""A whole fine-tune from a `RunConfig`: data, tokenizer, model, training.

Used by `layerwise-trainer train`. The output directory receives the model and tokenizer (reloadable
with `from_pretrained` and `pipeline("text-classification", model=...)`), `metrics.json`, `config.yaml`
(the resolved config), `groups.txt` and `groups.json` (the group table), `trainer_state.json`,
`learning_rates.png`, and `diagnostics.png` when the run logged per-group diagnostics
(`training.group_diagnostics`, on in the default run).

The same config gives the same run, bit for bit, on the same machine: the data are generated from
their own seed, the tokenizer's vocabulary does not depend on the process (see `japanese_tokenizer`),
the seed is set before the model is built, and the Trainer seeds its sampler. The console shows the
progress bar and one line per evaluation (see `epoch_summary`), not a log dict every few steps.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.group_table import plan_to_data, render_table
from ..core.grouping import GroupPlan
from .data_sources import LoadedData, load_data
from .diagnostics_plot import has_group_diagnostics, plot_diagnostics
from .lora import with_lora
from .lr_plot import plot_learning_rates
from .metrics import classification_metrics
from .preflight import check_before_data
from .run_config import ConfigError, RunConfig, dump_config


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    Args:
        output_dir: Where everything was written.
        metrics: ``{"train": ..., "validation": ..., "test": ..., "test_majority_baseline": ...}``.
        plan: The resolved param groups.
        files: What was written, by kind.
    """

    output_dir: Path
    metrics: dict[str, Any]
    plan: GroupPlan | None
    files: dict[str, Path]


def _training_arguments(config: RunConfig, progress_bars: bool = True):
    from ..training_args import LayerwiseTrainingArguments

    settings = dict(config.training)
    settings.setdefault("disable_tqdm", not progress_bars)
    # Pinned memory only helps a copy to an accelerator; without one, torch warns at every data loader.
    settings.setdefault("dataloader_pin_memory", _has_accelerator())
    try:
        return LayerwiseTrainingArguments(**settings)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"training: {error}") from None


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def _tokenizer(config: RunConfig, data: LoadedData, workdir: Path):
    from transformers import AutoTokenizer

    if config.tokenizer.train is not None:
        from .ja.tokenizer import build_japanese_tokenizer

        return build_japanese_tokenizer(data.splits["train"]["text"], workdir / "tokenizer", **config.tokenizer.train)
    name = config.tokenizer.name_or_path or config.model.name_or_path
    if name is None:
        raise ConfigError("tokenizer: a model built from a config needs 'tokenizer.name_or_path' or 'tokenizer.train'")
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:  # not found, not in the cache offline: one line, not a traceback
        where = "tokenizer.name_or_path" if config.tokenizer.name_or_path else "model.name_or_path"
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ConfigError(f"{where}: cannot load the tokenizer of {name}: {reason[:300]}") from None


def _model(config: RunConfig, label_names: tuple[str, ...], tokenizer):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    num_labels = config.model.num_labels or len(label_names)
    if num_labels != len(label_names):
        raise ConfigError(f"model.num_labels: {num_labels}, but the data has {len(label_names)} classes")
    labels = {
        "num_labels": num_labels,
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
    }
    if config.model.from_config is not None:
        settings = dict(config.model.from_config)
        model_type = settings.pop("model_type", "bert")
        settings.setdefault("vocab_size", len(tokenizer))
        if tokenizer.pad_token_id is not None:
            settings.setdefault("pad_token_id", tokenizer.pad_token_id)
        try:
            model_config = AutoConfig.for_model(model_type, **settings, **labels)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.from_config: {error}") from None
        model = AutoModelForSequenceClassification.from_config(model_config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            config.model.name_or_path, ignore_mismatched_sizes=True, **labels
        )
    if config.peft is not None:
        model = with_lora(model, config.peft)
    return model


def _fit_tokenizer_to_model(config: RunConfig, tokenizer, model) -> None:
    """Save the tokenizer with the length the model takes (`check_before_data` refused a longer `max_length`).

    A tokenizer saved with a longer `model_max_length` than the model's positions makes
    `pipeline(...)(long_text, truncation=True)` fail on the saved model with a size mismatch.
    """
    positions = getattr(model.config, "max_position_embeddings", None)
    if config.model.from_config is not None:
        # Built from scratch: the positions past max_length were never trained.
        tokenizer.model_max_length = config.tokenizer.max_length
    elif positions is not None and tokenizer.model_max_length > positions:
        tokenizer.model_max_length = positions


def _with_epoch_summary(trainer) -> None:
    """Replace the stock callbacks that print every log dict with one line per evaluation."""
    from transformers import PrinterCallback, ProgressCallback

    from .epoch_summary import EpochSummaryCallback, EpochSummaryProgressCallback

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(EpochSummaryProgressCallback())
    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(EpochSummaryCallback())


class _TokenizeTexts:
    """The function mapped over each split: its `text` column to input ids, truncated to `max_length`.

    A named callable rather than a lambda, so that `datasets` can fingerprint the transform (a lambda
    got a random fingerprint, which defeats the cache, and a 500-character warning). `datasets` pickles
    a tokenizer through its `__dict__`, which for `BertJapaneseTokenizer` holds the MeCab tagger, and
    the tagger cannot be pickled; the tokenizer's own `__getstate__` leaves it out, so the transform
    pickles (and is hashed) as its tokenizer's class and state.
    """

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: Mapping[str, list[str]]) -> Mapping[str, list[list[int]]]:
        return self.tokenizer(batch["text"], truncation=True, max_length=self.max_length)

    def __reduce__(self):
        tokenizer = self.tokenizer
        state = tokenizer.__getstate__() if hasattr(tokenizer, "__getstate__") else vars(tokenizer)
        return (_tokenize_texts_from_state, (type(tokenizer), state, self.max_length))


def _tokenize_texts_from_state(tokenizer_class: type, state: dict[str, Any], max_length: int) -> _TokenizeTexts:
    tokenizer = tokenizer_class.__new__(tokenizer_class)
    if hasattr(tokenizer, "__setstate__"):
        tokenizer.__setstate__(state)
    else:
        tokenizer.__dict__.update(state)
    return _TokenizeTexts(tokenizer, max_length)


def _majority_baseline(train, test) -> float:
    majority, _ = Counter(train["label"]).most_common(1)[0]
    return sum(label == majority for label in test["label"]) / max(len(test), 1)


def run_training(config: RunConfig, progress_bars: bool = True) -> RunResult:
    """Run the fine-tune a configuration describes and write its outputs.

    Args:
        config: The checked run configuration.
        progress_bars: Whether the Trainer shows progress bars (unless `training.disable_tqdm` says); the
            command line turns them off when stderr is not a terminal, where they are escape codes in a file.

    Returns:
        The `RunResult`.

    Raises:
        ConfigError: A problem with the configuration or the machine (`check_before_data`), found before any
            data is prepared, or one found while building the run.
        SpecError: A problem with the param-group spec.
    """
    from transformers import DataCollatorWithPadding, set_seed

    from ..trainer import LayerwiseTrainer

    args = _training_arguments(config, progress_bars)
    check_before_data(config, args)
    spec = config.param_groups  # parsed once, when the config was read
    data = load_data(config.data)
    output_dir = Path(args.output_dir)
    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = _tokenizer(config, data, Path(workdir))
        set_seed(args.seed)
        model = _model(config, data.label_names, tokenizer)
        _fit_tokenizer_to_model(config, tokenizer, model)
        tokenize = _TokenizeTexts(tokenizer, config.tokenizer.max_length)
        encoded = {
            name: split.map(
                tokenize,
                batched=True,
                remove_columns=["text"],
                desc=f"tokenising {name}",
            )
            for name, split in data.splits.items()
        }
        trainer = LayerwiseTrainer(
            model=model,
            args=args,
            train_dataset=encoded["train"],
            eval_dataset=encoded.get("validation"),
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=classification_metrics(config.metrics),
            param_groups=spec,
        )
        _with_epoch_summary(trainer)
        train_result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        metrics: dict[str, Any] = {"train": train_result.metrics}
        if "validation" in encoded:
            metrics["validation"] = trainer.evaluate(encoded["validation"], metric_key_prefix="eval")
        if "test" in encoded:
            metrics["test"] = trainer.evaluate(encoded["test"], metric_key_prefix="test")
            metrics["test_majority_baseline"] = _majority_baseline(data.splits["train"], data.splits["test"])
        trainer.save_model(str(output_dir))
    trainer.save_state()
    return RunResult(
        output_dir=output_dir,
        metrics=metrics,
        plan=trainer.group_plan,
        files=_write_outputs(output_dir, config, trainer, metrics),
    )


def _group_starts(trainer: Any) -> dict[str, int] | None:
    """Each later-starting group's first step, from the per-group scheduler, for exact marks in the picture."""
    starts = getattr(trainer.lr_scheduler, "group_starts", None)
    if starts is None or trainer.optimizer is None:
        return None
    names = [group.get("name", f"group_{index}") for index, group in enumerate(trainer.optimizer.param_groups)]
    # None: a group whose start an evaluation was to decide, which never came.
    return {name: start for name, start in zip(names, starts, strict=True) if start is not None and start > 0}


def _write_outputs(output_dir: Path, config: RunConfig, trainer, metrics: dict[str, Any]) -> dict[str, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "model": output_dir,
        "metrics": output_dir / "metrics.json",
        "config": output_dir / "config.yaml",
        "learning_rates": output_dir / "learning_rates.png",
        "trainer_state": output_dir / "trainer_state.json",
    }
    files["metrics"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    files["config"].write_text(dump_config(config), encoding="utf-8")
    if trainer.group_plan is not None:
        files["groups"] = output_dir / "groups.txt"
        files["groups_json"] = output_dir / "groups.json"
        files["groups"].write_text(render_table(trainer.group_plan) + "\n", encoding="utf-8")
        files["groups_json"].write_text(json.dumps(plan_to_data(trainer.group_plan), indent=2) + "\n", encoding="utf-8")
    history, starts = trainer.state.log_history, _group_starts(trainer)
    title = f"{config.source}: learning rate per group"
    plot_learning_rates(history, files["learning_rates"], title=title, starts=starts)
    if has_group_diagnostics(history):
        files["diagnostics"] = output_dir / "diagnostics.png"
        title = f"{config.source}: diagnostics per group"
        plot_diagnostics(history, files["diagnostics"], title=title, starts=starts)
    return files
