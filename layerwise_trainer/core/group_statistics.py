"""Per-group norms for training diagnostics: gradients, weights and the size of one optimizer step.

A logging step's norms stay on the device until they are read back together. `SquaredNorms` takes one
batched ``torch._foreach_norm`` per device and dtype for each list of tensors it is given, keeps the 0-d
norms with a key each (a metric and a param group), and when read makes the norms of sharded DTensors
(FSDP2) whole with one collective per device mesh and placement, moves each device's norms to the host in
one transfer, and adds their squares per key in float64. On a GPU that is one synchronisation per logging
step instead of one per metric, and no kernels per group. Norms of bf16 and fp16 tensors are accumulated
and returned in float32 (in their own dtype they would keep 3 significant digits). FSDP1's flat shards are
plain tensors, whose squares the caller sums over the ranks with `summed_over_ranks`.

The size of an update needs the weights from before the step. A copy of every trainable weight would
double the model's memory (14 GB more for a 7B model in bf16), so `UpdateMeasurement` runs the optimizer's
step in slices instead: each slice's weights are copied into one flat buffer, the slice is stepped, and the
copy minus the weights after the step is the slice's update; the next slice reuses the buffer, so the extra
memory is one slice. A slice holds up to `MAX_SLICE_BYTES` or the largest trained tensor's bytes, whichever
is more (that tensor is a slice of its own in any case, so the bound does not grow), and runs across param
groups: BERT-base with LLRD (28 groups) is stepped in 6 slices and a Llama of 1B float32 weights (43 groups)
in 18, where slices within groups took 29 and 103, each a step call, copies, a subtraction and norms, which
on a GPU cost host time mostly. The buffer is reused because fresh memory is slow on a CPU, where it is
page-faulted in: copying 89 MiB took 113 ms into new memory and 29 ms into memory written before (2 cores).

Stepping a slice of the parameters on its own leaves the weights bit-identical to a whole step for an
optimizer that updates each parameter from that parameter, its gradient, its state and its group's
hyperparameters alone (`steps_each_parameter_alone`): the optimizers of ``torch.optim`` but L-BFGS, and any
class that declares it. Any other optimizer is stepped whole, after a copy of every weight that has a
gradient (documented as the cost of its update ratio).

The update is measured, not recomputed from the optimizer's state after the step (for AdamW,
``-lr * wd * p - lr * m_hat / (sqrt(v_hat) + eps)`` from its moments), for two reasons. Recomputing moves
more memory: ``_foreach_sqrt``, ``_foreach_add_``, ``_foreach_mul`` and ``_foreach_addcdiv_`` over the
weights and both moments are about 40 bytes per float32 weight, against 24 for the copy, the subtraction
and its norm. And it is the update AdamW computed, not the change of the weights: they differ by the
rounding of the new weights, which moved a group's update norm by up to 0.07 % at a rate of 1e-3 and 0.7 %
at 1e-6 on a small BERT in float32 (LayerNorm weights near 1 round coarsely against small steps), and by
20-60 % in bf16.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

# The most weight bytes copied at once while measuring an update (64 MiB), unless one tensor is larger.
MAX_SLICE_BYTES = 64 * 2**20

# In torch.optim but not per-parameter: L-BFGS flattens every parameter into one update.
_NOT_SLICEABLE = ("LBFGS",)

# Each copy in the buffer starts on a multiple of 16 bytes, where vectorised kernels load it whole.
COPY_ALIGNMENT = 16

# The metrics `SquaredNorms` keys are made of, each with a param group's index: ``(GRADIENT, 0)``.
GRADIENT, WEIGHT, UPDATE, WEIGHT_BEFORE = "gradient", "weight", "update", "weight_before"


def steps_each_parameter_alone(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` can be stepped one slice of its parameters at a time, with a whole step's weights.

    An optimizer class declares it with a class attribute ``steps_each_parameter_alone`` (True or False, which a
    subclass inherits). Without one, the optimizers of ``torch.optim`` can, but L-BFGS. Declare True only when the
    step updates each parameter from that parameter, its gradient, its state and its param group's
    hyperparameters alone, finds the parameters in ``self.param_groups`` on every call (not in lists kept from its
    constructor) and writes nothing to the group dicts: `UpdateMeasurement` steps each slice with ``param_groups``
    replaced by copies of the groups that hold only the slice's parameters.

    Args:
        optimizer: A torch optimizer.

    Returns:
        True when slices give the weights of a whole step.

    Example:
        ```python
        class MuonAdamW(torch.optim.Optimizer):
            steps_each_parameter_alone = True  # Muon per matrix, AdamW per tensor: nothing across parameters
        ```
    """
    kind = type(optimizer)
    declared = getattr(kind, "steps_each_parameter_alone", None)
    if declared is not None:
        return bool(declared)
    return kind.__module__.startswith("torch.optim") and kind.__name__ not in _NOT_SLICEABLE


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


def _foreach_norms(tensors: list[Tensor]) -> tuple[Tensor, ...]:
    """The L2 norm of each tensor (all of one device and dtype), in float32 for half-precision tensors."""
    if tensors[0].dtype in (torch.float16, torch.bfloat16):
        return torch._foreach_norm(tensors, 2, dtype=torch.float32)
    return torch._foreach_norm(tensors)


class SquaredNorms:
    """Sums of squared L2 norms of tensors under keys, left on the device until `sums` reads them all at once.

    Example:
        ```python
        norms = SquaredNorms()
        norms.add_groups(GRADIENT, [[p.grad for p in group["params"]] for group in optimizer.param_groups])
        squares = norms.sums([(GRADIENT, 0), (GRADIENT, 1)])  # one synchronisation
        ```
    """

    def __init__(self) -> None:
        self._norms: list[Tensor] = []
        self._keys: list[Hashable] = []

    def add(self, tensors: Sequence[Tensor], keys: Sequence[Hashable]) -> None:
        """Take the norm of each tensor, to be added under its key: one ``_foreach_norm`` per device and dtype."""
        by_kind: dict[tuple[Any, Any], list[int]] = {}
        for index, tensor in enumerate(tensors):
            by_kind.setdefault((tensor.device, tensor.dtype), []).append(index)
        for indices in by_kind.values():
            self._norms.extend(_foreach_norms([tensors[i] for i in indices]))
            self._keys.extend(keys[i] for i in indices)

    def add_groups(self, metric: str, groups: Sequence[Sequence[Tensor]]) -> None:
        """Take the norms of each group's tensors under the key ``(metric, index of the group)``."""
        keys = [(metric, index) for index, group in enumerate(groups) for _ in group]
        self.add([tensor for group in groups for tensor in group], keys)

    def extend(self, other: SquaredNorms) -> None:
        """Take over the norms ``other`` holds, with their keys."""
        self._norms.extend(other._norms)
        self._keys.extend(other._keys)

    def sums(self, keys: Sequence[Hashable]) -> list[float]:
        """The sum of the squared norms taken under each of ``keys`` (0.0 where none was), read back at once.

        Norms under other keys are left out. The norms of every device are read with one transfer each.
        """
        totals = dict.fromkeys(keys, 0.0)
        whole = _made_whole(self._norms)
        by_device: dict[Any, list[int]] = {}
        for index, norm in enumerate(whole):
            by_device.setdefault(norm.device, []).append(index)
        for indices in by_device.values():
            values = torch.stack([whole[i] for i in indices]).tolist()
            for index, value in zip(indices, values, strict=True):
                key = self._keys[index]
                if key in totals:
                    totals[key] += value * value
        return [totals[key] for key in keys]


def grouped_norms(groups: Sequence[Sequence[Tensor]]) -> list[float]:
    """The L2 norm of each group of tensors (0.0 for an empty group), read back with one synchronisation.

    Args:
        groups: The tensors of each group.

    Returns:
        One float per group.
    """
    norms = SquaredNorms()
    norms.add_groups("norm", groups)
    return [math.sqrt(square) for square in norms.sums([("norm", index) for index in range(len(groups))])]


def summed_over_ranks(
    values: Sequence[float], device: torch.device | str = "cpu", process_group: Any = None
) -> list[float]:
    """Each value summed over the ranks with one all-reduce (FSDP1's flat shards: their squared norms).

    Args:
        values: This rank's values, the same number on every rank.
        device: Where the collective runs (the parameters' device: CUDA for NCCL).
        process_group: The ranks to sum over (None: all of them).
    """
    summed = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(summed, group=process_group)
    return summed.tolist()


def parameters_with_gradients(param_groups: Iterable[dict[str, Any]]) -> list[list[Tensor]]:
    """Each param group's parameters that have a gradient (the ones its step will change)."""
    return [[p for p in group["params"] if p.grad is not None] for group in param_groups]


def _local(tensor: Tensor) -> Tensor:
    """The part of a DTensor this rank holds; a plain tensor itself."""
    return tensor.to_local() if callable(getattr(tensor, "to_local", None)) else tensor  # type: ignore[operator]


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _aligned(offset: int) -> int:
    return -(-offset // COPY_ALIGNMENT) * COPY_ALIGNMENT


def _slices(members: Sequence[tuple[int, Tensor]], max_bytes: int) -> list[list[tuple[int, Tensor]]]:
    """``(group index, parameter)`` pairs cut, in order, into runs whose aligned bytes stay within ``max_bytes``.

    A DTensor counts with its whole size, so that every rank cuts the same slices (and takes its norms in the
    same order); its copy holds only this rank's part.
    """
    slices: list[list[tuple[int, Tensor]]] = []
    end = 0
    for member in members:
        start = _aligned(end)
        if not slices or start + _nbytes(member[1]) > max_bytes:
            slices.append([])
            start = 0
        slices[-1].append(member)
        end = start + _nbytes(member[1])
    return slices


def _subgroups(groups: Sequence[dict[str, Any]], part: Sequence[tuple[int, Tensor]]) -> list[dict[str, Any]]:
    """A slice's param groups: a copy of each group with parameters in the slice, holding only those."""
    subgroups: list[dict[str, Any]] = []
    current = None
    for index, parameter in part:
        if index != current:
            subgroups.append({**groups[index], "params": []})
            current = index
        subgroups[-1]["params"].append(parameter)
    return subgroups


def _layout(part: Sequence[Tensor]) -> list[tuple[torch.device, int, int]]:
    """Where each tensor's local part goes in its device's buffer: ``(device, start, end)``, in bytes."""
    ends: dict[torch.device, int] = {}
    places = []
    for tensor in part:
        local = _local(tensor)
        start = _aligned(ends.get(local.device, 0))
        ends[local.device] = start + _nbytes(local)
        places.append((local.device, start, ends[local.device]))
    return places


class _CopyBuffer:
    """One flat buffer per device, large enough for the weights of any one of ``slices``, copied in in turn."""

    def __init__(self, slices: Iterable[Sequence[Tensor]]) -> None:
        sizes: dict[torch.device, int] = {}
        for part in slices:
            for device, _, end in _layout(part):
                sizes[device] = max(sizes.get(device, 0), end)
        self._buffers = {device: torch.empty(size, dtype=torch.uint8, device=device) for device, size in sizes.items()}

    def copy(self, part: Sequence[Tensor]) -> list[Tensor]:
        """Copies of the local parts of ``part``'s tensors, in the buffer (over the last slice's copies)."""
        if not part:
            return []
        locals_ = [_local(tensor) for tensor in part]
        copies = [
            self._buffers[device][start:end].view(local.dtype).view(local.shape)
            for (device, start, end), local in zip(_layout(part), locals_, strict=True)
        ]
        torch._foreach_copy_(copies, locals_)
        return copies


def _differences(copies: list[Tensor], tensors: Sequence[Tensor]) -> list[Tensor]:
    """``copies`` (of the tensors' local parts) minus the tensors now, in place; as DTensors where they are."""
    if not copies:
        return []
    torch._foreach_sub_(copies, [_local(tensor) for tensor in tensors])
    return [_like(copy, tensor) for copy, tensor in zip(copies, tensors, strict=True)]


def _like(local: Tensor, tensor: Tensor) -> Tensor:
    """``local``, values of ``tensor``'s part on this rank, as a tensor of its kind: a DTensor of its layout."""
    if not callable(getattr(tensor, "to_local", None)):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local, tensor.device_mesh, tensor.placements, run_check=False, shape=tensor.shape, stride=tensor.stride()
    )  # type: ignore[attr-defined]


class UpdateMeasurement:
    """Measures, for one optimizer step, each param group's update norm and its weight norm before the step.

    `arm` before the step; the optimizer's own ``step()`` call (through step hooks) is then run slice by slice
    (or whole after a copy of every weight, for an optimizer that cannot be sliced), and `take` gives the
    norms: under ``(UPDATE, group index)`` and ``(WEIGHT_BEFORE, group index)``, over each group's parameters
    that have a gradient.

    Args:
        optimizer: The torch optimizer (unwrapped from accelerate's ``AcceleratedOptimizer``).
        max_slice_bytes: The most weight bytes copied at once, unless one tensor is larger.

    Example:
        ```python
        measurement = UpdateMeasurement(optimizer)
        measurement.arm()
        optimizer.step()
        update_square, weight_square = measurement.take().sums([(UPDATE, 0), (WEIGHT_BEFORE, 0)])
        ```
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_slice_bytes: int = MAX_SLICE_BYTES) -> None:
        self.optimizer = optimizer
        self.max_slice_bytes = max_slice_bytes
        self._armed = False
        self._inside = False
        self._norms: SquaredNorms | None = None
        self._groups: list[dict[str, Any]] | None = None
        self._snapshot: tuple[list[Tensor], list[tuple[str, int]], list[Tensor]] | None = None
        raw_step = getattr(type(optimizer).step, "__wrapped__", None)
        self._raw_step = raw_step if steps_each_parameter_alone(optimizer) else None
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
        self._norms = None

    def take(self) -> SquaredNorms | None:
        """The norms of the step measured since `arm` (None where none was), and no measurement until the next."""
        norms, self._norms = self._norms, None
        self._armed = False
        return norms

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
            trained = parameters_with_gradients(optimizer.param_groups)
            self._norms = norms = SquaredNorms()
            norms.add_groups(WEIGHT_BEFORE, trained)
            members = [(index, parameter) for index, params in enumerate(trained) for parameter in params]
            if self._raw_step is None:
                params = [parameter for _, parameter in members]
                keys = [(UPDATE, index) for index, _ in members]
                self._snapshot = (params, keys, _CopyBuffer([params]).copy(params))
                return
            self._step_in_slices(optimizer, members, {k: v for k, v in kwargs.items() if k != "closure"}, norms)
        # Every group is stepped: the step the caller asked for runs over no group.
        self._groups = optimizer.param_groups
        optimizer.param_groups = []

    def _step_in_slices(
        self, optimizer: Any, members: list[tuple[int, Tensor]], kwargs: dict[str, Any], norms: SquaredNorms
    ) -> None:
        groups = optimizer.param_groups
        limit = max([self.max_slice_bytes, *(_nbytes(parameter) for _, parameter in members)])
        slices = _slices(members, limit)
        buffer = _CopyBuffer([[parameter for _, parameter in part] for part in slices])
        self._inside = True
        try:
            for part in slices:
                params = [parameter for _, parameter in part]
                copies = buffer.copy(params)
                optimizer.param_groups = _subgroups(groups, part)
                self._raw_step(optimizer, **kwargs)
                # The copy minus the weights after the step: minus the update, of the same norm.
                norms.add(_differences(copies, params), [(UPDATE, index) for index, _ in part])
        finally:
            optimizer.param_groups = groups
            self._inside = False

    def _after_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._inside:
            return
        if self._groups is not None:
            optimizer.param_groups = self._groups
            self._groups = None
        if self._snapshot is not None and self._norms is not None:
            params, keys, copies = self._snapshot
            with torch.no_grad():
                self._norms.add(_differences(copies, params), keys)
        self._snapshot = None
