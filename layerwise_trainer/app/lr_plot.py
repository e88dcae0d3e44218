"""The picture of a run: every group's learning rate and the training loss against the step."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..callback import GROUP_KEY_PREFIX


def plot_learning_rates(
    log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Draw ``learning_rates.png``: per-group learning rates (top) and the loss (bottom) by step.

    Args:
        log_history: ``trainer.state.log_history``.
        path: The PNG file to write.
        title: A title for the figure.

    Returns:
        The path written.
    """
    # The object-oriented API with the Agg canvas: no display and no global pyplot state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    training = [entry for entry in log_history if "loss" in entry and "step" in entry]
    evaluation = [entry for entry in log_history if "eval_loss" in entry and "step" in entry]
    names = list(dict.fromkeys(key for entry in training for key in entry if key.startswith(GROUP_KEY_PREFIX)))

    figure = Figure(figsize=(9, 7), constrained_layout=True)
    FigureCanvasAgg(figure)
    rates, losses = figure.subplots(2, 1, sharex=True)
    steps = [entry["step"] for entry in training]
    for name in names:
        rates.plot(steps, [entry.get(name, float("nan")) for entry in training], label=name[len(GROUP_KEY_PREFIX) :])
    rates.set_ylabel("learning rate")
    rates.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if names:
        rates.legend(fontsize="small", ncol=2 if len(names) > 6 else 1, loc="upper right")
    rates.grid(alpha=0.3)
    rates.set_title(title or "learning rate per group")

    losses.plot(steps, [entry["loss"] for entry in training], label="training loss")
    if evaluation:
        losses.plot(
            [entry["step"] for entry in evaluation],
            [entry["eval_loss"] for entry in evaluation],
            "o-",
            label="eval loss",
        )
    losses.set_xlabel("step")
    losses.set_ylabel("loss")
    losses.legend(fontsize="small")
    losses.grid(alpha=0.3)

    target = Path(path)
    figure.savefig(target, dpi=110)
    return target
