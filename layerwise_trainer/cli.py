"""The ``layerwise-trainer`` command line: ``train`` a whole fine-tune, ``plan`` a spec against a model.

Exit status: 0 on success, 2 for a bad configuration or spec (the message names the key), 1 for any
other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from ._version import __version__

# Mirrors planning.TASKS, kept here so that `--help` does not import torch.
TASKS = (
    "sequence-classification", "token-classification", "causal-lm", "seq2seq-lm", "masked-lm",
    "image-classification", "base",
)  # fmt: skip

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``layerwise-trainer``."""
    parser = argparse.ArgumentParser(
        prog="layerwise-trainer",
        description="Fine-tune Hugging Face models with per-group learning rates and layer-wise LR decay.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="run a whole fine-tune from one config file",
        description=(
            "Run a fine-tune from a YAML config (sections model, tokenizer, data, training, param_groups, "
            "metrics, peft). Without --config, runs the built-in offline default: Japanese sentiment "
            "classification with a small BERT."
        ),
    )
    train.add_argument("--config", metavar="FILE", help="the run's YAML config (default: the built-in default)")
    train.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config value, e.g. --set training.num_train_epochs=1 (repeatable)",
    )
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    plan = commands.add_parser(
        "plan",
        help="show the param groups a spec gives for a model, without loading weights",
        description="Build the model from its config on the meta device and print the groups the spec gives.",
    )
    plan.add_argument("--model", required=True, metavar="ID_OR_DIR", help="hub id or directory with a config.json")
    plan.add_argument("--spec", required=True, metavar="SPEC", help="spec file (.yaml/.yml/.json) or JSON string")
    plan.add_argument("--learning-rate", type=float, default=5e-5, help="base learning rate (default 5e-5)")
    plan.add_argument("--weight-decay", type=float, default=0.0, help="base weight decay (default 0)")
    plan.add_argument("--optim", default="adamw_torch", help="TrainingArguments.optim to check the spec against")
    plan.add_argument("--num-labels", type=int, help="number of labels of a classification head")
    plan.add_argument(
        "--task",
        choices=("auto", *TASKS),
        default="auto",
        help="the head to build the model with; auto: the config's architectures (default)",
    )
    plan.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    return parser


def _train(arguments: argparse.Namespace) -> int:
    from .pipeline import run_training
    from .run_config import dump_config, load_run_config

    config = load_run_config(arguments.config, arguments.overrides)
    if arguments.print_config:
        print(dump_config(config), end="")
        return 0
    started = time.monotonic()
    result = run_training(config)
    print(_summary(result, time.monotonic() - started))
    return 0


def _summary(result, seconds: float) -> str:
    from .group_table import render_table

    lines = [f"\nlayerwise-trainer: finished in {seconds:.0f} s"]
    test = result.metrics.get("test")
    if test:
        scores = ", ".join(
            f"{key.removeprefix('test_')} {value:.4f}"
            for key, value in test.items()
            if key not in ("test_loss", "epoch") and not key.endswith(("runtime", "per_second"))
        )
        lines.append(f"test: {scores} (majority class {result.metrics['test_majority_baseline']:.4f})")
    if result.plan is not None:
        lines += ["", "param groups:", render_table(result.plan)]
    lines += ["", f"written to {result.output_dir}:"]
    for kind, path in result.files.items():
        lines.append(f"  {kind:<15} {path}")
    return "\n".join(lines)


def _plan(arguments: argparse.Namespace) -> int:
    from .group_table import plan_to_data, render_table
    from .planning import plan_for_model

    plan = plan_for_model(
        arguments.model,
        arguments.spec,
        learning_rate=arguments.learning_rate,
        weight_decay=arguments.weight_decay,
        optim=arguments.optim,
        num_labels=arguments.num_labels,
        task=arguments.task,
    )
    if arguments.format == "json":
        print(json.dumps(plan_to_data(plan), indent=2))
    else:
        print(render_table(plan))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help()
        return 0
    from .errors import SpecError
    from .run_config import ConfigError

    try:
        return _train(arguments) if arguments.command == "train" else _plan(arguments)
    except (SpecError, ConfigError) as error:
        print(f"layerwise-trainer {arguments.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
