"""The `layerwise-trainer` command line: `train` a whole fine-tune, `plan` a spec against a model.

Exit status: 0 on success; 2 for any mistake on the command line or in a config or spec, with one line
on stderr that names the key, what was found and what was expected, before any data is prepared; 130 when
`train` is interrupted (Ctrl-C), with one line naming the checkpoint to resume from; 1 for any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._version import __version__
from .import_noise import drop_import_noise
from .tasks import TASKS

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors are one line on stderr, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _number(key: str, kind: type = float, bounds: Any = None) -> Callable[[str], Any]:
    """An argparse `type` that reads a number and checks it as `training_values.number_problem` does."""

    def parse(text: str) -> Any:
        from .training_values import number_problem

        try:
            value = kind(text)
        except ValueError:
            value = text
        problem = number_problem(key, value, kind, bounds)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _optimizer_name(text: str) -> str:
    """An argparse `type` for `--optim`: one of transformers' `OptimizerNames`, with a suggestion."""
    from .training_values import training_value_problem

    problem = training_value_problem("optim", text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _checkpoint_directory(text: str) -> str:
    """An argparse `type` for `--resume-from`: a checkpoint directory, checked before anything is imported."""
    from .training_values import checkpoint_directory_problem

    problem = checkpoint_directory_problem(text, needs_weights=False)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `layerwise-trainer`.

    Returns:
        A parser whose errors are one line on stderr, with exit status 2.
    """
    from .training_values import Bounds

    parser = OneLineParser(
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
        description=(
            "Build the model from its config on the meta device and print the groups the spec gives. --spec "
            "may be a run config (as train reads): its param_groups, model, learning rate, weight decay, optim "
            "and peft are used where no flag gives them."
        ),
    )
    plan.add_argument(
        "--model", metavar="ID_OR_DIR", help="hub id or directory with a config.json (default: the run config's)"
    )
    plan.add_argument(
        "--spec", required=True, metavar="SPEC", help="spec or run config file (.yaml/.yml/.json), or a JSON string"
    )
    plan.add_argument(
        "--learning-rate", type=_number("learning_rate"), help="base learning rate (default 5e-5 or the run config's)"
    )
    plan.add_argument(
        "--weight-decay", type=_number("weight_decay"), help="base weight decay (default 0 or the run config's)"
    )
    plan.add_argument(
        "--optim",
        type=_optimizer_name,
        help="TrainingArguments.optim to check the spec against (default adamw_torch or the run config's)",
    )
    plan.add_argument(
        "--num-labels", type=_number("--num-labels", int, Bounds(1)), help="number of labels of a classification head"
    )
    plan.add_argument(
        "--task",
        choices=("auto", *TASKS),
        help="the head to build the model with; auto: the config's architectures (default; "
        "sequence-classification for a run config)",
    )
    plan.add_argument(
        "--resume-from",
        metavar="CHECKPOINT",
        type=_checkpoint_directory,
        help="also show what resuming from this checkpoint with the spec would do to the optimizer state "
        "(training.resume_with_changed_groups): per group, parameters carried, started fresh and dropped",
    )
    plan.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    return parser


def _train(arguments: argparse.Namespace) -> int:
    """Read and check the whole config first: every mistake in it stops the run before any data is read."""
    from .extras import require_extra
    from .run_config import dump_config, load_run_config

    config = load_run_config(arguments.config, arguments.overrides)
    if arguments.print_config:
        print(dump_config(config), end="")
        return 0
    require_extra("app", "layerwise-trainer train")
    if config.tokenizer.train is not None:
        require_extra("ja", "a run that trains a Japanese tokenizer (tokenizer.train)")
    from .hub_access import use_cache_when_hub_unreachable
    from .pipeline import run_training
    from .preflight import hub_ids

    if hub_ids(config):
        use_cache_when_hub_unreachable()  # offline: fail in seconds, not after 30 to 54 s of retries

    started = time.monotonic()
    try:
        result = run_training(config, progress_bars=_progress_bars_on_a_terminal_only())
    except KeyboardInterrupt:
        print(_interrupted(config), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_summary(result, time.monotonic() - started))
    return 0


def _progress_bars_on_a_terminal_only() -> bool:
    """Whether stderr is a terminal; when it is not (a file, a pipe, CI), turn off every progress bar.

    A progress bar redraws itself with carriage returns and cursor-up escape codes (`\\x1b[A`), which a file
    keeps as they are. The command line owns its process, so it turns off the bars of datasets, transformers
    and huggingface_hub for the whole process; the Trainer's follow `disable_tqdm`.
    """
    if sys.stderr.isatty():
        return True
    import datasets
    import huggingface_hub.utils
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    return False


def _interrupted(config: Any) -> str:
    """One line for Ctrl-C: the checkpoint to resume from (the latest complete one in the output directory)."""
    output_dir = Path(config.training.get("output_dir") or "trainer_output")  # TrainingArguments' default
    latest = _latest_complete_checkpoint(output_dir)
    lead = "\n" if sys.stderr.isatty() else ""  # below a progress bar on a terminal
    if latest is None:
        return (f"{lead}layerwise-trainer train: interrupted; no checkpoint was saved in {output_dir} to resume from "
                "(training.save_strategy and save_steps set when checkpoints are saved)")  # fmt: skip
    return (f"{lead}layerwise-trainer train: interrupted; resume from the latest checkpoint with "
            f"--set training.resume_from_checkpoint={latest.resolve()}")  # fmt: skip


def _latest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The `checkpoint-<step>` of the highest step whose `trainer_state.json`, written last, is there."""
    from .training_values import TRAINER_STATE_FILE

    steps = {}
    for entry in output_dir.glob("checkpoint-*") if output_dir.is_dir() else ():
        step = entry.name.removeprefix("checkpoint-")
        if step.isdigit() and (entry / TRAINER_STATE_FILE).is_file():
            steps[int(step)] = entry
    return steps[max(steps)] if steps else None


def _summary(result, seconds: float) -> str:
    from ..core.group_table import render_table

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
    from ..core.group_table import plan_to_data, render_table
    from .plan_command import meta_model, plan_settings, plan_training_arguments, resolve_plan, resume_preview

    flags = {name: getattr(arguments, name) for name in ("model", "learning_rate", "weight_decay", "optim",
                                                          "num_labels", "task")}  # fmt: skip
    settings = plan_settings(arguments.spec, arguments.resume_from, **flags)
    if isinstance(settings.model, str) and not Path(settings.model).expanduser().is_dir():
        from .hub_access import use_cache_when_hub_unreachable

        use_cache_when_hub_unreachable()  # offline: fail in seconds, not after 30 to 54 s of retries
    model = meta_model(settings.model, settings.num_labels, settings.task or "auto", settings.peft)
    args = plan_training_arguments(settings)
    plan = resolve_plan(model, settings.spec, args)
    transfer = (
        resume_preview(arguments.resume_from, plan, model, args, settings.spec) if arguments.resume_from else None
    )
    if arguments.format == "json":
        data = plan_to_data(plan)
        if arguments.resume_from:
            data["resume_transfer"] = None if transfer is None else transfer.to_data()
        print(json.dumps(data, indent=2))
        return 0
    print(render_table(plan))
    if arguments.resume_from:
        from ..checkpoints import report_text

        exact = f"\nresuming from {arguments.resume_from}: its param groups are the spec's, the resume is exact"
        print(exact if transfer is None else "\n" + report_text(transfer, arguments.resume_from).rstrip())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments, without the program name; by default `sys.argv[1:]`.

    Returns:
        The exit status: 0, or 2 after one line on stderr for a mistake in the arguments, config or spec.
        A usage error (an unknown flag, a bad number) exits with status 2 directly.
    """
    drop_import_noise()
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        usage = _one_line(parser.format_usage()).removeprefix("usage: ")
        print(f"{parser.prog}: error: a command is required, train or plan (usage: {usage})", file=sys.stderr)
        return EXIT_BAD_INPUT
    from ..errors import SpecError
    from .extras import MissingExtraError
    from .run_config import ConfigError

    try:
        return _train(arguments) if arguments.command == "train" else _plan(arguments)
    except (SpecError, ConfigError, MissingExtraError) as error:
        print(f"layerwise-trainer {arguments.command}: error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # `train` names the checkpoint to resume from when it was training
        print(f"layerwise-trainer {arguments.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
