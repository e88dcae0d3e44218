"""One console line per evaluation instead of every log dict: what `layerwise-trainer train` prints.

The stock `ProgressCallback` (and `PrinterCallback` under `disable_tqdm`) prints every log as a dict;
with a learning rate per group, the default run's dict is about 400 characters at every logging step
and wraps three times under the progress bar. The callbacks here print one line per evaluation
instead, e.g. `epoch 2/5: train loss 0.4100, eval loss 0.1200, eval accuracy 0.9700`: the mean of
the training losses logged since the previous line, then the evaluation's metrics. When the run does
not evaluate, the line comes at the end of each epoch with the training loss alone. Every logged value
still reaches `trainer.state.log_history` and the reporting integrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import ProgressCallback, TrainerCallback

# Timing figures, not results: left out of the line.
_TIMING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def epoch_summary_line(epoch: float, num_epochs: int, train_losses: list[float], metrics: Mapping[str, Any]) -> str:
    """The line for one evaluation (or one epoch end).

    Args:
        epoch: The epoch reached (fractional when evaluating by steps).
        num_epochs: How many epochs the run trains.
        train_losses: The training losses logged since the previous line.
        metrics: The evaluation's logs (`eval_loss`, `eval_accuracy`, ...); empty without one.

    Returns:
        The line, e.g. `epoch 2/5: train loss 0.4100, eval loss 0.1200, eval accuracy 0.9700`.

    Example:
        ```python
        epoch_summary_line(2.0, 5, [0.5, 0.32], {"eval_loss": 0.12, "eval_accuracy": 0.97, "epoch": 2.0})
        # 'epoch 2/5: train loss 0.4100, eval loss 0.1200, eval accuracy 0.9700'
        ```
    """
    parts = []
    if train_losses:
        parts.append(f"train loss {sum(train_losses) / len(train_losses):.4f}")
    for key, value in metrics.items():
        if key.startswith("eval_") and not key.endswith(_TIMING_SUFFIXES) and isinstance(value, (int, float)):
            parts.append(f"eval {key.removeprefix('eval_')} {value:.4f}")
    return f"epoch {round(epoch, 2):g}/{num_epochs}: {', '.join(parts)}"


class EpochSummaryCallback(TrainerCallback):
    """Print one line per evaluation during training, in place of `PrinterCallback`'s log dicts.

    Example:
        ```python
        trainer.pop_callback(PrinterCallback)
        trainer.add_callback(EpochSummaryCallback())
        ```
    """

    def __init__(self) -> None:
        self._train_losses: list[float] = []
        self._training = False

    def write(self, line: str) -> None:
        """Show one line; `EpochSummaryProgressCallback` writes above its progress bar."""
        print(line)

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._training = True
        self._train_losses = []

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self._training = False

    def on_log(self, args, state, control, logs: Mapping[str, Any] | None = None, **kwargs) -> None:
        if not self._training or not logs:
            return
        if "loss" in logs:
            self._train_losses.append(float(logs["loss"]))
        if "eval_loss" in logs:
            self._summarise(state, logs)

    def on_epoch_end(self, args, state, control, **kwargs) -> None:
        if args.eval_strategy == "no":
            self._summarise(state, {})

    def _summarise(self, state, metrics: Mapping[str, Any]) -> None:
        if state.is_world_process_zero:
            self.write(epoch_summary_line(state.epoch or 0.0, state.num_train_epochs, self._train_losses, metrics))
        self._train_losses = []


class EpochSummaryProgressCallback(EpochSummaryCallback, ProgressCallback):
    """The stock progress bars, with one line per evaluation written above them instead of log dicts.

    Example:
        ```python
        trainer.pop_callback(ProgressCallback)
        trainer.add_callback(EpochSummaryProgressCallback())
        ```
    """

    def __init__(self) -> None:
        EpochSummaryCallback.__init__(self)
        ProgressCallback.__init__(self)

    def write(self, line: str) -> None:
        if self.training_bar is not None:
            self.training_bar.write(line)
        else:
            print(line)

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        EpochSummaryCallback.on_train_begin(self, args, state, control, **kwargs)
        ProgressCallback.on_train_begin(self, args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        EpochSummaryCallback.on_train_end(self, args, state, control, **kwargs)
        ProgressCallback.on_train_end(self, args, state, control, **kwargs)
