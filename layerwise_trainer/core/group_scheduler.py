"""Per-group learning-rate schedules, each group's rate a pure function of the optimizer step.

Every group is in the optimizer from step 0. A group that has not started has rate exactly 0 and its
parameters ``requires_grad=False`` (no gradients, no optimizer state); starting it changes only those two.
So the optimizer's layout never changes, and the scheduler's whole state is its step counter: the state
dict holds plain numbers only (the Trainer loads it with ``weights_only=True``), and loading it puts every
group's rate and ``requires_grad`` where the step says.

The shapes repeat transformers' formulas (``constant_with_warmup``, ``linear``, ``cosine_with_min_lr``)
term for term, so that a group whose shape is the Trainer's gets the same float rates.

**Starts decided at an evaluation.** A group whose ``start`` is a plateau trigger (or a layer whose
gradual unfreezing waits for one) belongs to a `StartChain`: the spec group's layers from the top down, each
a `ChainLink` that starts at a fixed point, a fixed interval after the link above, or on a plateau watched
from the link above's start. Until a link's start is known its groups have rate 0, as any group before its
start; once it is, the link's factor is built for that start (`ChainLink.factor_for`) and the rate is again a
pure function of the step. The scheduler's state holds, per chain, each link's decided start and what its
trigger has seen (``trigger_records``: plain numbers and text), so a resume continues the watch or replays
the decision. `records_after_evaluation` is the decision (taken on one rank, see the trainer's callback);
`load_trigger_records` applies it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import SpecError, some_names
from .group_schedule import PlateauRule, PlateauWatch

StepFactor = Callable[[int], float]
# A group's factor once its start is known.
FactorForStart = Callable[[int], StepFactor]
# The Trainer's own schedule shape, rebuilt for a group's length and warm-up.
TRAINER_SHAPE = "trainer"


@dataclass(frozen=True)
class GroupRateFactor:
    """The factor a group's planned rate is multiplied by at an optimizer step.

    Args:
        start: The first step the group trains at; the factor is 0 before it.
        warmup: Warm-up steps, counted from ``start``.
        length: The group's steps, from ``start`` to the end of training.
        shape: ``constant``, ``linear``, ``cosine`` or ``trainer``.
        min_lr_ratio: The floor of ``cosine``.
        trainer_shape: For ``trainer``: the Trainer's schedule built for ``warmup`` and ``length``.

    Example:
        ```python
        factor = GroupRateFactor(start=10, warmup=5, length=90, shape="linear")
        assert factor(9) == 0.0 and factor(15) == 1.0
        ```
    """

    start: int
    warmup: int
    length: int
    shape: str
    min_lr_ratio: float = 0.0
    trainer_shape: StepFactor | None = field(default=None, compare=False, repr=False)

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 0.0
        local = step - self.start
        if self.trainer_shape is not None:
            return float(self.trainer_shape(local))
        if local < self.warmup:
            return float(local) / float(max(1, self.warmup))
        if self.shape == "constant":
            return 1.0
        if self.shape == "linear":
            return max(0.0, float(self.length - local) / float(max(1, self.length - self.warmup)))
        progress = float(local - self.warmup) / float(max(1, self.length - self.warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
        return max(0.0, factor * (1 - self.min_lr_ratio) + self.min_lr_ratio)


def never_started(step: int) -> float:
    """The factor of a group whose start is not known (yet): 0 at every step."""
    return 0.0


@dataclass(frozen=True)
class ChainLink:
    """The param groups of one place in a `StartChain` (a layer, or the whole group), which start together.

    Args:
        groups: Their indices among the optimizer's param groups.
        names: Their logged names, once each.
        factor_for: Their factor for a given start step.
        offset: Without a ``rule``: the start is the link above's start plus this (the first link's: this).
        rule: With one: the start is decided at an evaluation after the link above's start.
        last_start: The last step it may start at (its warm-up fits before the end); None for no bound.
        where: The spec path of its trigger, for errors (``("groups[1]", "start", "plateau")``).
    """

    groups: tuple[int, ...]
    names: tuple[str, ...]
    factor_for: FactorForStart = field(compare=False, repr=False)
    offset: int = 0
    rule: PlateauRule | None = None
    last_start: int | None = None
    where: tuple[str, ...] = ()

    def fits(self, start: int | None) -> int | None:
        """``start`` when the link can still start there, else None."""
        return start if start is None or self.last_start is None or start <= self.last_start else None


@dataclass(frozen=True)
class StartChain:
    """A spec group whose start, or whose layers' starts, an evaluation decides: its links from the top down.

    Args:
        name: The spec group's name; its records in the scheduler's state are kept under it.
        links: The links, the first (top) one first.
    """

    name: str
    links: tuple[ChainLink, ...]


def _fresh_record() -> dict[str, Any]:
    return {"start": None, "reason": None, "best": None, "stale": 0, "evaluated_at": None}


def _link_starts(chain: StartChain, records: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """Each link's start as far as it is known: decided, at its offset, or at its ``latest``; else None."""
    starts: list[int | None] = []
    previous: int | None = 0
    for link, record in zip(chain.links, records, strict=True):
        if previous is None:
            start = None
        elif record["start"] is not None:
            start = record["start"]
        elif link.rule is None:
            start = previous + link.offset
        else:
            start = None if link.rule.latest is None else previous + link.rule.latest
        starts.append(previous := link.fits(start))
    return starts


def _watching(link: ChainLink, record: Mapping[str, Any], since: int | None, step: int) -> bool:
    """Whether ``link``'s trigger counts an evaluation at ``step``: after the link above started, before its latest."""
    if link.rule is None or record["start"] is not None or since is None or step <= since:
        return False
    return link.rule.latest is None or step < since + link.rule.latest


def _plateau_reason(rule: PlateauRule, watch: PlateauWatch) -> str:
    evaluations = "1 evaluation" if rule.patience == 1 else f"{rule.patience} evaluations"
    best = "none, every value was NaN" if watch.best is None else f"{watch.best:.6g}"
    return (
        f"plateau: {rule.metric} did not improve on its best ({best}) by more than {rule.min_delta:g} for {evaluations}"
    )


# LambdaLR attributes that are not state: rebuilt from the spec when the scheduler is built.
_BUILT_FROM_SPEC = ("optimizer", "lr_lambdas", "base_factor_of_step", "group_starts", "chains")


class GroupScheduler(LambdaLR):
    """``LambdaLR`` with one factor per param group that also holds not-started groups out of autograd.

    Args:
        optimizer: The optimizer; its param groups are never added, removed or reordered.
        factors: One factor per param group (a `GroupRateFactor`, or the Trainer's own schedule); the groups of
            ``chains`` get theirs from their links.
        starts: Each group's first training step; a group with a start above 0 has ``requires_grad=False``
            before it (one whose start is not known yet, None, until it is).
        base_factor: The Trainer's schedule, read for the logged ``learning_rate``.
        chains: The groups whose starts evaluations decide.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factors: Sequence[StepFactor],
        starts: Sequence[int | None],
        base_factor: StepFactor,
        chains: Sequence[StartChain] = (),
    ) -> None:
        if not len(factors) == len(starts) == len(optimizer.param_groups):
            raise ValueError("one factor and one start per param group")
        # Set before LambdaLR.__init__, whose first step() applies the starts.
        self.group_starts: list[int | None] = list(starts)
        self.base_factor_of_step = base_factor
        self.chains = tuple(chains)
        self.trigger_records: dict[str, list[dict[str, Any]]] = {
            chain.name: [_fresh_record() for _ in chain.links] for chain in self.chains
        }
        factors = list(factors)
        self._place_chain_starts(factors)
        super().__init__(optimizer, factors)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        super().step() if epoch is None else super().step(epoch)
        self._record_latest_starts()
        self.apply_starts()

    def apply_starts(self) -> None:
        """``requires_grad`` of each staged group's parameters: True from its start step on."""
        for group, start in zip(self.optimizer.param_groups, self.group_starts, strict=True):
            if start is not None and start <= 0:
                continue
            started = start is not None and self.last_epoch >= start
            for parameter in group["params"]:
                if parameter.requires_grad != started:
                    parameter.requires_grad_(started)

    # Starts decided at an evaluation.

    def _place_chain_starts(self, factors: list[StepFactor]) -> None:
        """Each chained group's factor and start, from its link's start as far as the records know it."""
        for chain in self.chains:
            for link, start in zip(chain.links, _link_starts(chain, self.trigger_records[chain.name]), strict=True):
                for index in link.groups:
                    factors[index] = never_started if start is None else link.factor_for(start)
                    self.group_starts[index] = start

    def _record_latest_starts(self) -> None:
        """Record the links that started at their ``latest`` without a plateau, once the step reaches it."""
        for chain in self.chains:
            records = self.trigger_records[chain.name]
            starts = _link_starts(chain, records)
            for link, record, start in zip(chain.links, records, starts, strict=True):
                if link.rule is not None and record["start"] is None and start is not None and start <= self.last_epoch:
                    record.update(start=start, reason=f"latest: no plateau of {link.rule.metric} by step {start}")

    def watching(self, step: int) -> bool:
        """Whether some trigger counts an evaluation at ``step`` (the same answer on every rank)."""
        return bool(self._watching_links(step))

    def _watching_links(self, step: int) -> list[tuple[StartChain, int]]:
        """The chains and link indices whose triggers count an evaluation at ``step``."""
        found = []
        for chain in self.chains:
            records = self.trigger_records[chain.name]
            starts = _link_starts(chain, records)
            for index, (link, record) in enumerate(zip(chain.links, records, strict=True)):
                if _watching(link, record, 0 if index == 0 else starts[index - 1], step):
                    found.append((chain, index))
        return found

    def records_after_evaluation(self, metrics: Mapping[str, float], step: int) -> dict[str, list[dict[str, Any]]]:
        """The trigger records after an evaluation at ``step``, without applying them (`load_trigger_records` does).

        Each watching trigger whose metric is among ``metrics`` counts the value once per step; one that completes
        a plateau (at or after its ``earliest``, while its warm-up still fits) starts its link at ``step``.

        Args:
            metrics: The evaluation's metrics (one eval set's, when there are several).
            step: The optimizer step of the evaluation (``last_epoch``).

        Returns:
            The records, plain data, as ``trigger_records`` holds them.
        """
        records = copy.deepcopy(self.trigger_records)
        for chain in self.chains:
            chain_records = records[chain.name]
            for index, (link, record) in enumerate(zip(chain.links, chain_records, strict=True)):
                since = 0 if index == 0 else _link_starts(chain, chain_records)[index - 1]
                if not _watching(link, record, since, step) or record["evaluated_at"] == step:
                    continue
                if link.rule is None or link.rule.metric not in metrics or since is None:
                    continue
                watch = PlateauWatch(record["best"], record["stale"]).after(float(metrics[link.rule.metric]), link.rule)
                record.update(best=watch.best, stale=watch.stale, evaluated_at=step)
                if watch.fires(link.rule, step - since) and link.fits(step) is not None:
                    record.update(start=step, reason=_plateau_reason(link.rule, watch))
        return records

    def load_trigger_records(self, records: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Apply trigger records (from `records_after_evaluation`, or a checkpoint): factors, rates and
        ``requires_grad`` of the chained groups follow at the current step."""
        self.trigger_records = {
            chain.name: [dict(record) for record in records[chain.name]]
            if chain.name in records and len(records[chain.name]) == len(chain.links)
            else [_fresh_record() for _ in chain.links]
            for chain in self.chains
        }
        self._place_chain_starts(self.lr_lambdas)
        self._set_rates()

    def check_metrics_found(self, step: int, logged: Sequence[str]) -> None:
        """Refuse a trigger that watched the evaluation at ``step`` but found no value of its metric in it.

        Raises:
            SpecError: Naming the trigger's ``metric`` key and group, the metric and what the evaluation logged.
        """
        for chain, index in self._watching_links(step):
            link, record = chain.links[index], self.trigger_records[chain.name][index]
            if link.rule is not None and record["evaluated_at"] != step:
                raise SpecError(
                    f"the evaluation at step {step} logged no {link.rule.metric!r}; it logged "
                    f"{some_names(sorted(logged), 12)}; name one of those (as the Trainer logs it)",
                    path=(*link.where, "metric"),
                    group=chain.name,
                )

    def started_groups(self) -> list[tuple[str, int, str]]:
        """``(logged name, start step, reason)`` of every chained group that has started by the current step."""
        started = []
        for chain in self.chains:
            records = self.trigger_records[chain.name]
            starts = _link_starts(chain, records)
            for index, (link, start) in enumerate(zip(chain.links, starts, strict=True)):
                if start is None or start > self.last_epoch:
                    continue
                reason = records[index]["reason"] or self._fixed_reason(chain, index, link)
                started += [(name, start, reason) for name in link.names]
        return started

    @staticmethod
    def _fixed_reason(chain: StartChain, index: int, link: ChainLink) -> str:
        if index == 0:
            return f"start: step {link.offset}"
        return f"{link.offset} steps after {some_names(chain.links[index - 1].names, 2, quoted=False)}"

    def _set_rates(self) -> None:
        """Every group's rate (and ``requires_grad``) for the current step, from its factor."""
        groups = self.optimizer.param_groups
        for group, factor, base_rate in zip(groups, self.lr_lambdas, self.base_lrs, strict=True):
            rate = base_rate * factor(self.last_epoch)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(rate)  # capturable and torchao optimizers keep rates as tensors
            else:
                group["lr"] = rate
        self._last_lr = [group["lr"] for group in groups]
        self.apply_starts()

    def base_factor(self) -> float:
        """The Trainer's schedule factor at the current step (what ``learning_rate`` logs)."""
        return float(self.base_factor_of_step(self.last_epoch))

    def state_dict(self) -> dict[str, Any]:
        """The step counter, last rates and trigger records: plain numbers and text only."""
        state = {key: value for key, value in self.__dict__.items() if key not in _BUILT_FROM_SPEC}
        state["group_starts"] = list(self.group_starts)
        state["trigger_records"] = copy.deepcopy(self.trigger_records)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved step: rates and ``requires_grad`` follow the step, and the saved trigger records
        (a chain's, when the saved state has as many links under its name)."""
        state = {key: value for key, value in state_dict.items() if key not in _BUILT_FROM_SPEC}
        records = state.pop("trigger_records", None)
        self.__dict__.update(state)
        if records is not None:
            self.load_trigger_records(records)
        self._set_rates()
