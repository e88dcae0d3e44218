"""One optimizer whose param groups are stepped by different algorithms: Muon for some, AdamW for others.

Muon orthogonalises the update of a 2-D weight matrix, so every real use is a hybrid: Muon for the hidden
matrices, AdamW for embeddings, the head, norms and biases. Built as two optimizers, the hybrid loses what
the Trainer gives one optimizer: one scheduler over every group, one ``state_dict`` in a checkpoint, the
per-group rate logging and diagnostics, the resume check. `HybridOptimizer` is one
``torch.optim.Optimizer``: every param group carries an ``"optimizer"`` key naming the algorithm that steps
it, and `step` hands each algorithm its groups. The algorithms are torch's own optimizers, built once over
the same group dicts and sharing this optimizer's ``state``, so a hybrid step is exactly their steps: the
same kernels on the same tensors (``torch.equal`` on CPU).

Schedulers set ``group["lr"]`` on this optimizer's groups, which are the dicts the algorithms read; a
checkpoint saves one state dict whose groups keep their ``"optimizer"`` key, and ``load_state_dict`` (which
replaces every group dict) needs nothing more, since `step` reads the current groups at every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from .muon import OPTIMIZER_KEY

Algorithm = tuple[type[Optimizer], Mapping[str, Any]]


class HybridOptimizer(Optimizer):
    """Several torch optimizers as one: each param group names the algorithm that steps it.

    Every group needs an ``"optimizer"`` key, one of ``algorithms``' names; a group takes that algorithm's
    defaults for the hyperparameters it does not set, as it would in that optimizer alone.

    Args:
        params: Param-group dicts, each with ``"optimizer"``.
        algorithms: Name -> (optimizer class, its keyword arguments), such as
            ``{"muon": (torch.optim.Muon, {"adjust_lr_fn": "match_rms_adamw"}), "adamw": (torch.optim.AdamW, {})}``.

    Raises:
        ValueError: A group without ``"optimizer"``, or naming no algorithm given; or whatever an algorithm
            refuses (Muon: a parameter that is not 2-D).

    Example:
        ```python
        optimizer = HybridOptimizer(
            [
                {"params": [w], "optimizer": "muon", "lr": 2e-4},
                {"params": [b], "optimizer": "adamw", "lr": 2e-4},
            ],
            {"muon": (torch.optim.Muon, {"adjust_lr_fn": "match_rms_adamw"}), "adamw": (torch.optim.AdamW, {})},
        )
        ```
    """

    # Each parameter's update depends on that parameter alone, and a step writes to no group dict: the
    # diagnostics may step it a slice of parameters at a time (core.group_statistics).
    steps_each_parameter_alone = True

    def __init__(self, params: Iterable[dict[str, Any]], algorithms: Mapping[str, Algorithm]) -> None:
        groups = list(params)
        for index, group in enumerate(groups):
            if not isinstance(group, dict) or group.get(OPTIMIZER_KEY) not in algorithms:
                found = group.get(OPTIMIZER_KEY) if isinstance(group, dict) else group
                raise ValueError(
                    f"param group {index} names optimizer {found!r}; expected one of {', '.join(algorithms)}"
                )
        self.algorithm_classes = dict(algorithms)
        # Each algorithm fills its defaults into its groups' dicts, in place, and checks them.
        self.algorithms: dict[str, Optimizer] = {}
        for name, (optimizer_cls, kwargs) in algorithms.items():
            own = [group for group in groups if group[OPTIMIZER_KEY] == name]
            if own:
                self.algorithms[name] = optimizer_cls(own, **kwargs)
        super().__init__(groups, {})

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Step every group with its algorithm.

        Args:
            closure: Re-evaluates the model and returns the loss; called once.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for name, algorithm in self.algorithms.items():
            # The current groups: a scheduler, load_state_dict or the diagnostics' slices may have replaced them.
            own = [group for group in self.param_groups if group[OPTIMIZER_KEY] == name]
            if own:
                algorithm.param_groups = own
                algorithm.state = self.state
                algorithm.step()
        return loss

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; after construction it takes its algorithm's defaults first."""
        classes = getattr(self, "algorithm_classes", None)
        if classes is not None and getattr(self, "param_groups", None):  # after construction
            name = param_group.get(OPTIMIZER_KEY)
            if name not in classes:
                raise ValueError(f"the param group names optimizer {name!r}; expected one of {', '.join(classes)}")
            if name in self.algorithms:
                for key, value in self.algorithms[name].defaults.items():
                    param_group.setdefault(key, value)
            else:
                optimizer_cls, kwargs = classes[name]
                self.algorithms[name] = optimizer_cls([param_group], **kwargs)
        super().add_param_group(param_group)
