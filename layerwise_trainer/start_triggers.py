"""Starts decided at an evaluation: unfreeze a group when a metric plateaus, once, the same on every rank.

A group with ``start: {plateau: {...}}`` (or layers under ``gradual_unfreeze: {every: {plateau: ...}}``) is in
the optimizer from step 0 at rate 0, as any group that starts later. `StartTriggerCallback` watches the
evaluations the Trainer runs during training; the decision itself is the scheduler's
(`GroupScheduler.records_after_evaluation`, pure), taken on rank 0 and given to every rank
(`binding.decided_on_rank_0`), so all ranks start the group at the same optimizer step even when their
metrics differ. The scheduler records it in its state (``scheduler.pt``), so a resume from a checkpoint before
the decision continues the watch and one after it replays the start; from the recorded start on, the group's
rate is again a function of the step, its warm-up and schedule counted from there.

Every start in such a chain is logged once as an event, ``{"group_started": <group>, "reason": ..., "step":
<start>}``, through ``Trainer.log``: into ``trainer_state.json``'s ``log_history`` and every reporting
integration. A plateau is decided at the evaluation that completes it, so the group takes part from the
next optimizer step, as ``start: N`` does; a start at a trigger's ``latest``, or a fixed interval after a
decided start, is logged when the step reaches it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .binding import decided_on_rank_0
from .core.group_scheduler import GroupScheduler
from .core.log_keys import GROUP_STARTED_KEY, START_REASON_KEY

logger = logging.getLogger(__name__)


def _chained(scheduler: Any) -> GroupScheduler | None:
    """The scheduler when it has starts that evaluations decide, else None."""
    return scheduler if isinstance(scheduler, GroupScheduler) and scheduler.chains else None


class StartTriggerCallback(TrainerCallback):
    """Decides starts on a plateau at each evaluation during training, and logs every start of their chains.

    `LayerwiseTrainer` installs it when its scheduler has such starts. The metrics of one evaluation are
    gathered over its eval sets (the Trainer evaluates a dict of eval sets one at a time); a trigger whose
    metric no eval set logged is a `SpecError` before the next step.

    Args:
        log: Where an event goes: ``Trainer.log`` (the history and every reporting integration); when None,
            it is appended to ``state.log_history``.

    Example:
        ```python
        StartTriggerCallback.attach(trainer)  # done by LayerwiseTrainer when a group starts on a plateau
        ```
    """

    def __init__(self, log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.log = log
        self._training = False
        self._logged: set[str] = set()
        self._metrics: dict[str, Any] = {}
        self._evaluated_step: int | None = None

    @classmethod
    def attach(cls, trainer: Any) -> StartTriggerCallback:
        """The trainer's `StartTriggerCallback`, added (logging through ``trainer.log``) when it has none."""
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, cls):
                return callback
        callback = cls(log=trainer.log)
        trainer.add_callback(callback)
        return callback

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        scheduler = _chained(kwargs.get("lr_scheduler"))
        self._training = scheduler is not None
        self._metrics, self._evaluated_step = {}, None
        # After a resume, the starts up to the checkpoint's step are in its log history already.
        self._logged = {name for name, _, _ in scheduler.started_groups()} if scheduler is not None else set()

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._check_last_evaluation(kwargs.get("lr_scheduler"))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        scheduler = _chained(kwargs.get("lr_scheduler"))
        if self._training and scheduler is not None:
            self._log_new_starts(scheduler, state, control)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        scheduler = _chained(kwargs.get("lr_scheduler"))
        if not self._training or scheduler is None or metrics is None:
            return
        step = scheduler.last_epoch
        if step != self._evaluated_step:
            self._metrics, self._evaluated_step = {}, step
        self._metrics.update(metrics)
        if not scheduler.watching(step):
            return
        seen = dict(self._metrics)
        records = decided_on_rank_0(lambda: scheduler.records_after_evaluation(seen, step))
        scheduler.load_trigger_records(records)
        self._log_new_starts(scheduler, state, control)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        scheduler = _chained(kwargs.get("lr_scheduler"))
        self._check_last_evaluation(scheduler)
        self._training = False
        if scheduler is None:
            return
        started = {name for name, _, _ in scheduler.started_groups()}
        waiting = [name for chain in scheduler.chains for link in chain.links for name in link.names]
        never = [name for name in waiting if name not in started]
        if never:
            logger.warning("these groups never started (no plateau, and no latest start within training): %s", never)

    def _check_last_evaluation(self, scheduler: Any) -> None:
        """Refuse a trigger that found no value of its metric in the evaluation just finished."""
        scheduler = _chained(scheduler)
        if self._training and scheduler is not None and self._evaluated_step is not None:
            step, self._evaluated_step = self._evaluated_step, None
            scheduler.check_metrics_found(step, list(self._metrics))

    def _log_new_starts(self, scheduler: GroupScheduler, state: TrainerState, control: TrainerControl) -> None:
        """Log each chained group that started since the last call, once (before a checkpoint of the step)."""
        for name, start, reason in scheduler.started_groups():
            if name in self._logged:
                continue
            self._logged.add(name)
            event = {GROUP_STARTED_KEY: name, START_REASON_KEY: reason}
            logger.info("%s starts at step %d (%s)", name, start, reason)
            if self.log is None:
                state.log_history.append({**event, "step": state.global_step})
                continue
            # The callback handler's on_log clears should_log, which the Trainer reads after on_step_end to log
            # the step's loss: without this, the loss of a step that starts a group would not be logged.
            should_log = control.should_log
            self.log(event)
            control.should_log = should_log
