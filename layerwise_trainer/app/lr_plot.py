"""The picture of a run: every group's learning rate and the training loss against the step.

A group that starts later (``start``, gradual unfreezing) is drawn dashed at 0 while it waits, with a dotted
vertical line in its colour where it starts, on both panels, so the staging and what it does to the loss
show at a glance. A group whose start an evaluation decided (a plateau) is marked at the step its
``group_started`` event in the log gives, and its legend says why (``plateau``, ``latest``). A run without
staged groups is drawn as before: one solid line per group. Each group keeps its colour (`group_colors`) in
``diagnostics.png`` (see `diagnostics_plot`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.log_keys import GROUP_STARTED_KEY, LEARNING_RATE_PREFIX, START_REASON_KEY

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _training_entries(log_history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [entry for entry in log_history if "loss" in entry and "step" in entry]


def _group_keys(training: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for entry in training for key in entry if key.startswith(LEARNING_RATE_PREFIX)))


def group_names_in_log(log_history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The groups whose learning rate the log holds, in the order `learning_rate_figure` draws them.

    Args:
        log_history: ``trainer.state.log_history``.

    Returns:
        Group names (without ``learning_rate/``), in the order of their first logged rate.
    """
    return [key[len(LEARNING_RATE_PREFIX) :] for key in _group_keys(_training_entries(log_history))]


def group_colors(names: Sequence[str]) -> dict[str, str]:
    """The colour of each group in every picture of a run: matplotlib's colour cycle (``C0``, ``C1``, ...) in order.

    Args:
        names: The groups, in drawing order (`group_names_in_log`).

    Returns:
        Group name -> a matplotlib colour.
    """
    return {name: f"C{index}" for index, name in enumerate(names)}


def group_starts_in_log(log_history: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The groups whose rate stayed 0 while another group trained, and the last step it was 0, from the log.

    A group whose start an evaluation decided has a ``group_started`` event in the log, which gives its start
    exactly. For the others the log does not say when a group started, only its rate at each logging step;
    so this is the start to within one logging interval (a group with its own warm-up still logs 0 at its
    first step). A group at rate 0 the whole run (``lr: 0``, frozen) never starts, and a group that waits only
    while every group is at 0 (the Trainer's warm-up) does not count as staged.

    Args:
        log_history: ``trainer.state.log_history``.

    Returns:
        Group name (without ``learning_rate/``) -> its start: the step of its ``group_started`` event, else the
        last logged step at which its rate was still 0.
    """
    training = _training_entries(log_history)
    keys = _group_keys(training)
    waited = {key[len(LEARNING_RATE_PREFIX) :]: _waited_alone_until(training, key, keys) for key in keys}
    starts = {name: step for name, step in waited.items() if step is not None}
    return {**starts, **{name: step for name, (step, _) in start_events_in_log(log_history).items()}}


def start_events_in_log(log_history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, str]]:
    """The ``group_started`` events of the log: group name -> (its start step, why it started).

    Args:
        log_history: ``trainer.state.log_history``.

    Returns:
        Group name -> ``(step, reason)``, e.g. ``(40, "plateau: eval_loss did not improve ...")``.
    """
    return {
        str(entry[GROUP_STARTED_KEY]): (int(entry["step"]), str(entry.get(START_REASON_KEY, "")))
        for entry in log_history
        if GROUP_STARTED_KEY in entry and "step" in entry
    }


def _waited_alone_until(training: Sequence[Mapping[str, Any]], key: str, keys: Sequence[str]) -> int | None:
    """The last logged step at 0 before ``key`` first rose, if another group was above 0 meanwhile."""
    waited_alone, last_zero = False, None
    for entry in training:
        rate = entry.get(key)
        if rate is None:
            continue
        if rate > 0:
            return int(last_zero) if waited_alone and last_zero is not None else None
        last_zero = entry["step"]
        waited_alone = waited_alone or any(entry.get(other, 0) > 0 for other in keys if other != key)
    return None


def learning_rate_figure(
    log_history: Sequence[Mapping[str, Any]],
    title: str | None = None,
    starts: Mapping[str, int] | None = None,
) -> Figure:
    """The figure `plot_learning_rates` saves: per-group rates (top) and the loss (bottom) by step.

    Each artist of a group carries a ``gid``: ``rate:<group>`` for its line (solid, from its start on),
    ``waiting:<group>`` for the dashed line at 0 before its start, ``start:<group>`` for the vertical line
    at the start on the rate panel and ``start-loss:<group>`` on the loss panel.

    Args:
        log_history: ``trainer.state.log_history``.
        title: A title for the rate panel.
        starts: Group name -> the number of optimizer steps before it starts (its ``start``: a group with
            ``start: 100`` takes part from the 101st step and is marked at step 100); read from the log
            with `group_starts_in_log` when None. Starts at step 0 are not marked.

    Returns:
        The matplotlib figure, on the Agg canvas.
    """
    # The object-oriented API with the Agg canvas: no display and no global pyplot state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    training = _training_entries(log_history)
    evaluation = [entry for entry in log_history if "eval_loss" in entry and "step" in entry]
    keys = _group_keys(training)
    staged = group_starts_in_log(log_history) if starts is None else dict(starts)
    decided = start_events_in_log(log_history)
    colors = group_colors([key[len(LEARNING_RATE_PREFIX) :] for key in keys])

    figure = Figure(figsize=(9, 7), constrained_layout=True)
    FigureCanvasAgg(figure)
    rates, losses = figure.subplots(2, 1, sharex=True)
    steps = [entry["step"] for entry in training]
    for key in keys:
        name = key[len(LEARNING_RATE_PREFIX) :]
        values = [entry.get(key, float("nan")) for entry in training]
        start = staged.get(name, 0)
        if start <= 0:
            rates.plot(steps, values, color=colors[name], label=name, gid=f"rate:{name}")
            continue
        # At step `start` the group's rate is still 0 (a step logs the rate its update used): both lines meet there.
        before = [(step, value) for step, value in zip(steps, values, strict=True) if step < start]
        after = [(step, value) for step, value in zip(steps, values, strict=True) if step > start]
        label = f"{name} (starts after step {start}{_why(decided.get(name))})"
        color = colors[name]
        rates.plot(*_columns([(start, 0.0), *after]), color=color, label=label, gid=f"rate:{name}")
        rates.plot(*_columns([*before, (start, 0.0)]), "--", color=color, alpha=0.6, gid=f"waiting:{name}")
        rates.axvline(start, linestyle=":", color=color, alpha=0.8, gid=f"start:{name}")
        losses.axvline(start, linestyle=":", color=color, alpha=0.5, gid=f"start-loss:{name}")
    rates.set_ylabel("learning rate")
    rates.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if keys:
        rates.legend(fontsize="small", ncol=2 if len(keys) > 6 else 1, loc="upper right")
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
    return figure


def _why(event: tuple[int, str] | None) -> str:
    """``": plateau"`` or ``": latest"`` for a start an evaluation decided (its event's reason), else ``""``."""
    kind = event[1].partition(":")[0] if event is not None else ""
    return f": {kind}" if kind in ("plateau", "latest") else ""


def _columns(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [step for step, _ in points], [value for _, value in points]


def plot_learning_rates(
    log_history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str | None = None,
    starts: Mapping[str, int] | None = None,
) -> Path:
    """Draw ``learning_rates.png``: per-group learning rates (top) and the loss (bottom) by step.

    A group that starts later is drawn dashed at 0 until its start, which a dotted vertical line in its
    colour marks on both panels; its legend entry says the step.

    Args:
        log_history: ``trainer.state.log_history``.
        path: The PNG file to write.
        title: A title for the figure.
        starts: Group name -> the number of optimizer steps before it starts, for exact marks; read from
            the log (to within one logging interval) when None.

    Returns:
        The path written.

    Example:
        ```python
        plot_learning_rates(trainer.state.log_history, "learning_rates.png")
        ```
    """
    target = Path(path)
    learning_rate_figure(log_history, title, starts).savefig(target, dpi=110)
    return target
