"""``TrainingArguments`` with a ``param_groups`` field, for ``HfArgumentParser`` and config files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from transformers import TrainingArguments

from .core.spec import GroupSpec, LayerwiseSpec


@dataclass
class LayerwiseTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus ``param_groups``, the spec for `LayerwiseTrainer`.

    ``HfArgumentParser`` reads the new field from the command line
    (``--param_groups spec.yaml``) or from a JSON/YAML arguments file like any other.

    Args:
        param_groups: A path to a YAML/JSON spec file, or a JSON string. A mapping or list given in
            Python (or in a YAML arguments file), `GroupSpec` objects and a `LayerwiseSpec` are accepted
            too; `to_dict`, `to_json_string` and `to_sanitized_dict` (which the Trainer's logging
            integrations call) render them as plain data, and the arguments pickle with them (the
            Trainer saves ``training_args.bin`` at every checkpoint).
        group_diagnostics: Log ``grad_norm/<group>``, ``update_ratio/<group>``, ``param_norm/<group>`` and
            the per-group hyperparameters that differ or change, on logging steps (see the `diagnostics`
            module). Off by default: then nothing is computed and the logs are as without it.
        resume_with_changed_groups: Resume from a checkpoint whose param groups differ from the spec's (or
            one saved by the stock Trainer) by carrying every parameter's optimizer state over by name (see
            the `checkpoints` module). Off by default: such a resume is refused.

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

    group_diagnostics: bool = field(
        default=False,
        metadata={
            "help": (
                "Log each param group's gradient norm, update ratio and weight norm (and the hyperparameters "
                "that differ between groups) on logging steps."
            )
        },
    )

    resume_with_changed_groups: bool = field(
        default=False,
        metadata={
            "help": (
                "When resuming from a checkpoint saved with other param groups (or by the stock Trainer), carry "
                "each parameter's optimizer state over by name instead of refusing; hyperparameters come from "
                "the spec, and a report of what was carried, started fresh and dropped is written to "
                "resume_transfer.md."
            )
        },
    )

    def to_dict(self) -> dict[str, Any]:
        """The arguments as JSON-ready data, with ``param_groups`` as the plain data a spec file holds."""
        result = super().to_dict()
        result["param_groups"] = spec_as_plain_data(self.param_groups)
        return result


def spec_as_plain_data(spec: Any) -> Any:
    """A spec in any accepted form, with its spec objects and paths turned into plain data.

    Only the spec's own structure is visited (the top level and the list of groups), never a value
    inside a group, so a shared or deeply nested value is not walked.

    Example:
        ```python
        assert spec_as_plain_data([GroupSpec(name="head", match="classifier.*")]) == [
            {"name": "head", "match": "classifier.*"}
        ]
        ```
    """
    if isinstance(spec, (LayerwiseSpec, GroupSpec)):
        return spec.to_dict()
    if isinstance(spec, os.PathLike):
        return os.fspath(spec)
    if isinstance(spec, Mapping) and isinstance(spec.get("groups"), (list, tuple)):
        return {**spec, "groups": spec_as_plain_data(spec["groups"])}
    if isinstance(spec, (list, tuple)):
        return [group.to_dict() if isinstance(group, GroupSpec) else group for group in spec]
    return spec
