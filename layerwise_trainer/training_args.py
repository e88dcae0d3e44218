"""``TrainingArguments`` with a ``param_groups`` field, for ``HfArgumentParser`` and config files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments


@dataclass
class LayerwiseTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus ``param_groups``, the spec for :class:`~layerwise_trainer.LayerwiseTrainer`.

    ``HfArgumentParser`` reads the new field from the command line
    (``--param_groups spec.yaml``) or from a JSON/YAML arguments file like any other.

    Args:
        param_groups: A path to a YAML/JSON spec file, or a JSON string. A mapping or list given in
            Python (or in a YAML arguments file) is accepted too.

    Example:
        ```python
        parser = HfArgumentParser(LayerwiseTrainingArguments)
        (args,) = parser.parse_args_into_dataclasses(["--output_dir", "out", "--param_groups", "spec.yaml"])
        trainer = LayerwiseTrainer(model=model, args=args, train_dataset=data)
        ```
    """

    # Optional[str], not `str | None`: HfArgumentParser reads the annotation to build the CLI flag.
    param_groups: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": (
                "Param-group spec for LayerwiseTrainer: a path to a .yaml/.yml/.json file, or a JSON string "
                'such as \'[{"name": "head", "match": "classifier.*", "lr": 1e-3}]\'.'
            )
        },
    )
