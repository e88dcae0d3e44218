"""Per-group learning-rate schedules, each group's rate a pure function of the optimizer step.

Every group is in the optimizer from step 0. A group that has not started has rate exactly 0 and its
parameters ``requires_grad=False`` (no gradients, no optimizer state); starting it changes only those two.
So the optimizer's layout never changes, and the scheduler's whole state is its step counter: the state
dict holds plain numbers only (the Trainer loads it with ``weights_only=True``), and loading it puts every
group's rate and ``requires_grad`` where the step says.

The shapes repeat transformers' formulas (``constant_with_warmup``, ``linear``, ``cosine_with_min_lr``)
term for term, so that a group whose shape is the Trainer's gets the same float rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

StepFactor = Callable[[int], float]
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


# LambdaLR attributes that are not state: rebuilt from the spec when the scheduler is built.
_BUILT_FROM_SPEC = ("optimizer", "lr_lambdas", "base_factor_of_step", "group_starts")


class GroupScheduler(LambdaLR):
    """``LambdaLR`` with one factor per param group that also holds not-started groups out of autograd.

    Args:
        optimizer: The optimizer; its param groups are never added, removed or reordered.
        factors: One factor per param group (a `GroupRateFactor`, or the Trainer's own schedule).
        starts: Each group's first training step; a group with a start above 0 has ``requires_grad=False``
            before it.
        base_factor: The Trainer's schedule, read for the logged ``learning_rate``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factors: Sequence[StepFactor],
        starts: Sequence[int],
        base_factor: StepFactor,
    ) -> None:
        if not len(factors) == len(starts) == len(optimizer.param_groups):
            raise ValueError("one factor and one start per param group")
        # Set before LambdaLR.__init__, whose first step() applies the starts.
        self.group_starts = tuple(starts)
        self.base_factor_of_step = base_factor
        super().__init__(optimizer, list(factors))

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        super().step() if epoch is None else super().step(epoch)
        self.apply_starts()

    def apply_starts(self) -> None:
        """``requires_grad`` of each staged group's parameters: True from its start step on."""
        for group, start in zip(self.optimizer.param_groups, self.group_starts, strict=True):
            if start <= 0:
                continue
            started = self.last_epoch >= start
            for parameter in group["params"]:
                if parameter.requires_grad != started:
                    parameter.requires_grad_(started)

    def base_factor(self) -> float:
        """The Trainer's schedule factor at the current step (what ``learning_rate`` logs)."""
        return float(self.base_factor_of_step(self.last_epoch))

    def state_dict(self) -> dict[str, Any]:
        """The step counter and last rates: plain numbers only."""
        state = {key: value for key, value in self.__dict__.items() if key not in _BUILT_FROM_SPEC}
        state["group_starts"] = list(self.group_starts)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved step: rates and ``requires_grad`` follow the step."""
        state = {key: value for key, value in state_dict.items() if key not in _BUILT_FROM_SPEC}
        self.__dict__.update(state)
        groups = self.optimizer.param_groups
        for group, factor, base_rate in zip(groups, self.lr_lambdas, self.base_lrs, strict=True):
            rate = base_rate * factor(self.last_epoch)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(rate)  # capturable and torchao optimizers keep rates as tensors
            else:
                group["lr"] = rate
        self._last_lr = [group["lr"] for group in groups]
        self.apply_starts()
