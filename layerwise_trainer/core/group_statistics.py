"""Per-group norms for training diagnostics: gradients, weights and the size of one optimizer step.

Norms are taken with one batched ``torch._foreach_norm`` per device and dtype and read back with one
host synchronisation, only on the steps that are logged. The norms of sharded DTensors (FSDP2) are made
whole with one collective per device mesh and placement, not one per tensor; FSDP1's flat shards are
plain tensors, whose norms the caller sums over the ranks with `summed_over_ranks`.

The size of an update needs the weights from before the step. A copy of every trainable weight would
double the model's memory (14 GB more for a 7B model in bf16), so `UpdateMeasurement` runs the
optimizer's step in slices instead: each slice's weights are copied, that slice is stepped, and the
copy is dropped, so the extra memory is one slice (`MAX_SLICE_BYTES`, or the largest single tensor if
that is larger). Stepping a slice of parameters on its own gives bit-identical results for optimizers
whose update is per parameter and whose param-group dicts the step does not write to, which holds for
the optimizers of ``torch.optim``. Any other optimizer is stepped whole, after a copy of every weight
that has a gradient (documented as the cost of its update ratio).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

# The most weight bytes copied at once while measuring an update (64 MiB).
MAX_SLICE_BYTES = 64 * 2**20

# In torch.optim but not per-parameter: L-BFGS flattens every parameter into one update.
_NOT_SLICEABLE = ("LBFGS",)


def _made_whole(norms: Sequence[Tensor]) -> list[Tensor]:
    """Norms of sharded tensors (DTensors) made whole, with one reduction per device mesh and placement.

    The norm of a DTensor is itself a DTensor that each rank holds a part of; stacked, the parts stay parts,
    so one ``full_tensor()`` reduces every norm of a mesh at once instead of one collective per tensor.
    """
    whole = list(norms)
    by_layout: dict[tuple[Any, Any], list[int]] = {}
    for index, norm in enumerate(norms):
        if callable(getattr(norm, "full_tensor", None)):
            by_layout.setdefault((norm.device_mesh, norm.placements), []).append(index)  # type: ignore[attr-defined]
    for indices in by_layout.values():
        stacked = torch.stack([norms[i] for i in indices]).full_tensor()  # type: ignore[attr-defined]
        for index, norm in zip(indices, stacked.unbind(), strict=True):
            whole[index] = norm
    return whole


def tensor_norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The L2 norm of each tensor, as 0-d float32 tensors, with one ``_foreach_norm`` per device and dtype."""
    by_kind: dict[tuple[Any, Any], list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_kind.setdefault((tensor.device, tensor.dtype), []).append(index)
    norms: list[Tensor | None] = [None] * len(tensors)
    for indices in by_kind.values():
        for index, norm in zip(indices, _made_whole(torch._foreach_norm([tensors[i] for i in indices])), strict=True):
            norms[index] = norm.float()
    return norms  # type: ignore[return-value]


def grouped_norms(groups: Sequence[Sequence[Tensor]]) -> list[float]:
    """The L2 norm of each group of tensors (0.0 for an empty group), read back with one synchronisation.

    Args:
        groups: The tensors of each group.

    Returns:
        One float per group.
    """
    flat = [tensor for group in groups for tensor in group]
    if not flat:
        return [0.0] * len(groups)
    norms = tensor_norms(flat)
    device = norms[0].device
    totals, start = [], 0
    for group in groups:
        part = norms[start : start + len(group)]
        start += len(group)
        totals.append(torch.linalg.vector_norm(torch.stack([n.to(device) for n in part])) if part else None)
    zero = torch.zeros((), device=device)
    values = torch.stack([zero if total is None else total for total in totals]).tolist()
    return [float(value) for value in values]


def summed_over_ranks(
    norms: Sequence[float], device: torch.device | str = "cpu", process_group: Any = None
) -> list[float]:
    """Norms of tensors sharded over the ranks (FSDP1's flat shards): the square root of the ranks' summed squares.

    Args:
        norms: This rank's norms of its shards.
        device: Where the collective runs (the parameters' device: CUDA for NCCL).
        process_group: The ranks the tensors are sharded over (None: all of them).
    """
    squares = torch.tensor([value * value for value in norms], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(squares, group=process_group)
    return [float(value) for value in squares.sqrt().tolist()]


def parameters_with_gradients(param_groups: Iterable[dict[str, Any]]) -> list[list[Tensor]]:
    """Each param group's parameters that have a gradient (the ones its step will change)."""
    return [[p for p in group["params"] if p.grad is not None] for group in param_groups]


def _slices(parameters: Sequence[Tensor], max_bytes: int) -> list[list[Tensor]]:
    slices: list[list[Tensor]] = []
    size = max_bytes
    for parameter in parameters:
        nbytes = parameter.numel() * parameter.element_size()
        if size + nbytes > max_bytes:
            slices.append([])
            size = 0
        slices[-1].append(parameter)
        size += nbytes
    return slices


class UpdateMeasurement:
    """Measures, for one optimizer step, each param group's update norm and its weight norm before the step.

    `arm` before the step; the optimizer's own ``step()`` call (through step hooks) is then run slice by
    slice and `results` holds, per param group, ``(update_norm, weight_norm_before)``.

    Args:
        optimizer: The torch optimizer (unwrapped from accelerate's ``AcceleratedOptimizer``).
        max_slice_bytes: The most weight bytes copied at once.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_slice_bytes: int = MAX_SLICE_BYTES) -> None:
        self.optimizer = optimizer
        self.max_slice_bytes = max_slice_bytes
        self.results: list[tuple[float, float]] | None = None
        self._armed = False
        self._inside = False
        self._groups: list[dict[str, Any]] | None = None
        self._snapshot: list[tuple[list[Tensor], list[Tensor]]] | None = None
        raw_step = getattr(type(optimizer).step, "__wrapped__", None)
        kind = type(optimizer)
        sliceable = kind.__module__.startswith("torch.optim") and kind.__name__ not in _NOT_SLICEABLE
        self._raw_step = raw_step if sliceable else None
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    @property
    def steps_in_slices(self) -> bool:
        """Whether the extra memory is one slice (else a copy of every weight with a gradient)."""
        return self._raw_step is not None

    def arm(self) -> None:
        """Measure the next ``step()``."""
        self._armed = True
        self.results = None

    def remove(self) -> None:
        """Take the step hooks off the optimizer."""
        for handle in self._handles:
            handle.remove()

    def _before_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if not self._armed or self._inside or closure is not None or len(args) > 2:
            return
        self._armed = False
        with torch.no_grad():
            if self._raw_step is None:
                self._snapshot = [
                    (params, [p.detach().clone() for p in params])
                    for params in parameters_with_gradients(optimizer.param_groups)
                ]
                return
            self.results = self._step_in_slices(optimizer, {k: v for k, v in kwargs.items() if k != "closure"})
        # Every group is stepped: the step the caller asked for runs over no group.
        self._groups = optimizer.param_groups
        optimizer.param_groups = []

    def _step_in_slices(self, optimizer: Any, kwargs: dict[str, Any]) -> list[tuple[float, float]]:
        groups = optimizer.param_groups
        squares: list[tuple[Tensor | float, Tensor | float]] = []
        self._inside = True
        try:
            for group in groups:
                update_sq: Tensor | float = 0.0
                weight_sq: Tensor | float = 0.0
                for part in _slices([p for p in group["params"] if p.grad is not None], self.max_slice_bytes):
                    before = [p.detach().clone() for p in part]
                    weight_sq = weight_sq + _sum_of_squares(before)
                    optimizer.param_groups = [{**group, "params": part}]
                    self._raw_step(optimizer, **kwargs)
                    torch._foreach_sub_(before, [p.detach() for p in part])  # in place: the copy becomes -update
                    update_sq = update_sq + _sum_of_squares(before)
                    del before
                squares.append((update_sq, weight_sq))
        finally:
            optimizer.param_groups = groups
            self._inside = False
        return _as_norms(squares)

    def _after_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._inside:
            return
        if self._groups is not None:
            optimizer.param_groups = self._groups
            self._groups = None
        if self._snapshot is not None:
            with torch.no_grad():
                squares = []
                for params, before in self._snapshot:
                    weight_sq = _sum_of_squares(before)
                    torch._foreach_sub_(before, [p.detach() for p in params])
                    squares.append((_sum_of_squares(before), weight_sq))
            self._snapshot = None
            self.results = _as_norms(squares)


def _sum_of_squares(tensors: Sequence[Tensor]) -> Tensor | float:
    """The sum of the tensors' squared L2 norms, in float64, left on the device (no synchronisation)."""
    if not tensors:
        return 0.0
    norms = tensor_norms(tensors)
    device = norms[0].device
    return torch.stack([n.to(device) for n in norms]).double().square().sum()


def _as_norms(squares: Sequence[tuple[Tensor | float, Tensor | float]]) -> list[tuple[float, float]]:
    """Square roots of ``(update, weight)`` sums of squares, read back with one synchronisation."""
    tensors = [value for pair in squares for value in pair if isinstance(value, Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    flat = torch.stack([torch.as_tensor(value, dtype=torch.float64).to(device) for pair in squares for value in pair])
    values = flat.sqrt().tolist() if squares else []
    return [(float(values[2 * i]), float(values[2 * i + 1])) for i in range(len(squares))]
