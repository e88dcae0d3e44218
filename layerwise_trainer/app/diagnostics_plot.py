"""The picture of the per-group diagnostics: gradient norm, update ratio and weight norm against the step.

Drawn from the keys `GroupDiagnosticsCallback` logs (``group_diagnostics=True``), in the colour each group
has in ``learning_rates.png``. Gradient norms and update ratios span orders of magnitude, between groups
and over a run (in the default run, gradient norms from 4e-4 to 40, update ratios from 3e-2 down to 9e-7
as the linear schedule runs out), so both panels are logarithmic. A logarithmic axis has no 0, and a group
logs 0 while it has not started (no gradient, no update) and its update ratio is 0 at a step whose rate is
0: a 0 is left out, a gap in the line, and a group that starts later has its start marked by a dotted line
in its colour, as in ``learning_rates.png``. The weight norm is drawn relative to its first logged value,
so that the slow drift the diagnostics page reads (growth: too little weight decay; a fall: too much) shows
for every group on one linear axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.log_keys import DIAGNOSTIC_PREFIXES, GRAD_NORM_PREFIX, PARAM_NORM_PREFIX, UPDATE_RATIO_PREFIX
from .lr_plot import group_colors, group_names_in_log, group_starts_in_log

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The rule of thumb the diagnostics page gives for Adam-style optimizers: about 1e-3 per step.
UPDATE_RATIO_GUIDE = 1e-3


def _diagnostics_entries(log_history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        entry for entry in log_history if "step" in entry and any(key.startswith(DIAGNOSTIC_PREFIXES) for key in entry)
    ]


def has_group_diagnostics(log_history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the log holds per-group diagnostics (``grad_norm/<group>``, ...), so `plot_diagnostics` has a picture.

    Args:
        log_history: ``trainer.state.log_history``.

    Returns:
        True when some logged step has a ``grad_norm/``, ``update_ratio/`` or ``param_norm/`` key.
    """
    return bool(_diagnostics_entries(log_history))


def _groups_and_colors(
    log_history: Sequence[Mapping[str, Any]], entries: Sequence[Mapping[str, Any]]
) -> tuple[list[str], dict[str, str]]:
    """The diagnosed groups in the order of ``learning_rates.png``, then any others; each with its colour there."""
    diagnosed = dict.fromkeys(
        key.split("/", 1)[1] for entry in entries for key in entry if key.startswith(DIAGNOSTIC_PREFIXES)
    )
    drawn = group_names_in_log(log_history)
    others = [name for name in diagnosed if name not in drawn]
    colors = group_colors([*drawn, *others])
    return [name for name in drawn if name in diagnosed] + others, colors


def _positive(values: Sequence[float]) -> list[float]:
    """The values with every 0 (and anything a logarithmic axis cannot show) made a gap."""
    return [value if value > 0 and math.isfinite(value) else math.nan for value in values]


def _relative_to_first(values: Sequence[float]) -> list[float]:
    first = next((value for value in values if value > 0 and math.isfinite(value)), None)
    return [value / first if first is not None and math.isfinite(value) else math.nan for value in values]


def _series(entries: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    logged = [entry for entry in entries if key in entry]
    return [entry["step"] for entry in logged], [float(entry[key]) for entry in logged]


def diagnostics_figure(
    log_history: Sequence[Mapping[str, Any]],
    title: str | None = None,
    starts: Mapping[str, int] | None = None,
) -> Figure:
    """The figure `plot_diagnostics` saves: per group, gradient norm, update ratio and relative weight norm by step.

    Each artist carries a ``gid``: ``grad_norm:<group>``, ``update_ratio:<group>`` and ``param_norm:<group>``
    for a group's lines (0s left out as gaps; the weight norm divided by its first logged value),
    ``start-grad_norm:<group>``, ``start-update_ratio:<group>`` and ``start-param_norm:<group>`` for the
    dotted line at a later group's start on each panel, ``total:grad_norm`` for the Trainer's ``grad_norm``
    (all groups together) and ``guide:update_ratio`` for the 1e-3 rule of thumb.

    Args:
        log_history: ``trainer.state.log_history`` of a run with ``group_diagnostics=True``.
        title: A title for the top panel.
        starts: Group name -> the number of optimizer steps before it starts, as for `learning_rate_figure`;
            read from the learning rates in the log with `group_starts_in_log` when None.

    Returns:
        The matplotlib figure, on the Agg canvas.
    """
    # The object-oriented API with the Agg canvas: no display and no global pyplot state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = _diagnostics_entries(log_history)
    names, colors = _groups_and_colors(log_history, entries)
    staged = group_starts_in_log(log_history) if starts is None else dict(starts)

    figure = Figure(figsize=(9, 9), constrained_layout=True)
    FigureCanvasAgg(figure)
    gradients, updates, weights = figure.subplots(3, 1, sharex=True)
    panels = ((gradients, GRAD_NORM_PREFIX, _positive), (updates, UPDATE_RATIO_PREFIX, _positive),
              (weights, PARAM_NORM_PREFIX, _relative_to_first))  # fmt: skip
    for name in names:
        _draw_group(panels, entries, name, colors[name], staged.get(name, 0))
    _draw_guides(gradients, updates, entries)
    _decorate(gradients, "gradient norm", log=True)
    _decorate(updates, "update ratio", log=True)
    _decorate(weights, "weight norm / first", log=False)
    gradients.set_title(title or "diagnostics per group")
    # Below the panels: inside, six groups hide the top panel's highest norms.
    groups = [line for line in gradients.get_lines() if not line.get_gid().startswith("start-")]
    figure.legend(handles=groups, fontsize="small", ncol=max(1, min(4, len(groups))), loc="outside lower center")
    updates.legend(handles=[line for line in updates.get_lines() if line.get_gid() == "guide:update_ratio"],
                   fontsize="small", loc="best")  # fmt: skip
    weights.set_xlabel("step")
    return figure


def _draw_group(
    panels: Sequence[tuple[Axes, str, Callable[[Sequence[float]], list[float]]]],
    entries: Sequence[Mapping[str, Any]],
    name: str,
    color: str,
    start: int,
) -> None:
    """One group's line on every panel, and the dotted line at its start when it starts later."""
    label = _label(name, start, _series(entries, GRAD_NORM_PREFIX + name)[1])
    for axes, prefix, transform in panels:
        kind = prefix.rstrip("/")
        steps, values = _series(entries, prefix + name)
        axes.plot(steps, transform(values), color=color, label=label, gid=f"{kind}:{name}")
        if start > 0:
            axes.axvline(start, linestyle=":", color=color, alpha=0.8, gid=f"start-{kind}:{name}")


def _draw_guides(gradients: Axes, updates: Axes, entries: Sequence[Mapping[str, Any]]) -> None:
    """The Trainer's ``grad_norm`` (every group together) and the update ratio's rule of thumb."""
    steps, totals = _series(entries, "grad_norm")
    if steps:
        # Broad, grey and beneath the groups: it runs along the largest group's line.
        gradients.plot(steps, _positive(totals), color="0.6", linewidth=3, alpha=0.5, zorder=1,
                       label="all groups (grad_norm)", gid="total:grad_norm")  # fmt: skip
    updates.axhline(UPDATE_RATIO_GUIDE, linestyle="--", color="gray", linewidth=0.8,
                    label="1e-3 (rule of thumb for Adam)", gid="guide:update_ratio")  # fmt: skip


def _label(name: str, start: int, gradient_norms: Sequence[float]) -> str:
    if gradient_norms and not any(value > 0 for value in gradient_norms):
        return f"{name} (0 throughout)"
    return f"{name} (starts after step {start})" if start > 0 else name


def _decorate(axes: Axes, label: str, log: bool) -> None:
    if log:
        axes.set_yscale("log")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3, which="both" if log else "major")


def plot_diagnostics(
    log_history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str | None = None,
    starts: Mapping[str, int] | None = None,
) -> Path:
    """Draw ``diagnostics.png``: per group, gradient norm and update ratio (log scales) and relative weight norm.

    A 0 (a group that has not started, an update at rate 0) is a gap in its line; a group that starts later
    has its start marked by a dotted line in its colour on every panel and in its legend entry. Each group
    has the colour it has in ``learning_rates.png``.

    Args:
        log_history: ``trainer.state.log_history`` of a run with ``group_diagnostics=True``
            (`has_group_diagnostics` says whether it has any).
        path: The PNG file to write.
        title: A title for the figure.
        starts: Group name -> the number of optimizer steps before it starts, for exact marks; read from
            the log (to within one logging interval) when None.

    Returns:
        The path written.

    Example:
        ```python
        if has_group_diagnostics(trainer.state.log_history):
            plot_diagnostics(trainer.state.log_history, "diagnostics.png")
        ```
    """
    target = Path(path)
    diagnostics_figure(log_history, title, starts).savefig(target, dpi=110)
    return target
