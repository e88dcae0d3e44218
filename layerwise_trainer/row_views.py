"""Row groups on a live model: which vocabulary rows are new, the row views' gradients, and where they cannot work.

A group with ``rows`` puts into the optimizer not the embedding (or LM head) but views of some of its rows
(`GroupPlan.row_views`): leaf tensors that share the weight's memory, so the optimizer's in-place step changes
those rows and nothing else, and its state (Adam's moments) is sized to them. See `layerwise_trainer.core.row_groups`.

**Which rows are new.** ``rows: new`` means the rows added since the model's original vocabulary. transformers'
``resize_token_embeddings`` keeps no record of the size before it, so the original size is read from the config of
the checkpoint the model was loaded from (``config.name_or_path``), as peft's ``save_embedding_layers="auto"`` does
to tell a resized embedding; only files already on this machine are read (``local_files_only``), never the network.

**Memory.** Moving or casting a model in place (``model.to(device)``) keeps each parameter object but may give it
new memory (``param.data = ...``): accelerate's ``prepare`` does it under DDP on CPU (to ``cpu:0``), after the
optimizer was built, and the views would then update a copy nobody reads. So `RowViews` checks that every view still
lies on its matrix's memory and puts it back there when not (``view.data = weight.detach()[start:stop]``; the same
tensor object, so the optimizer's state stays with it), before it sets the gradients.

**Gradients.** Autograd gives the gradient to the weight, not to the views. `RowViews` sets each view's
``.grad`` to its rows of the weight's gradient (a view of it, no copy) after every backward
(`LayerwiseTrainer.training_step`), before the Trainer unscales fp16 gradients and clips them: unscaling acts on
the optimizer's gradients and clipping on the model's, and both are the same memory. It does so again when the
optimizer's step begins (a step pre-hook; setting the same views twice changes nothing), for callers that step
without the Trainer's training step. Rows no trained group holds (rows of a frozen group, rows the user froze, and
the rows of a group that has not started) get a zero gradient, so they count nowhere: not in the clipping norm, not
in the logged ``grad_norm``. The weight's gradient is the finished one when backward returns: under DDP it is the
all-reduced one (in DDP's bucket with ``gradient_as_bucket_view``, and the views are views of that), and with
gradient accumulation the sum so far. ``model.zero_grad()`` drops the weight's gradient; the next call drops the
views' gradients too, so the old gradient is not kept alive beside the new one.

**Refused** before any data is prepared, under FSDP and DeepSpeed (`check_row_groups_supported`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .binding import sharding_engine
from .core.grouping import GroupPlan
from .core.parameter_names import user_model
from .core.row_groups import OriginalVocabulary, complement, merged
from .core.spec import LayerwiseSpec
from .errors import SpecError

# Why row views cannot work under each engine, as seen (torch 2.13, DeepSpeed 0.19.8, 2 processes on CPU).
_REFUSAL_REASONS = {
    "FSDP": "FSDP shards each matrix by rows over the ranks, and a slice of a sharded parameter is a new, replicated "
    "tensor, not a view of it: an in-place update of such a slice left the embedding unchanged",
    "DeepSpeed": "DeepSpeed's ZeRO optimizers take only the model's own parameters (ZeRO 1 and 2 look each one up by "
    "the model's parameter names, ZeRO 3 needs the attributes it puts on them), and stop on a row view with a "
    "KeyError or an AttributeError",
}


def needs_original_vocabulary(spec: LayerwiseSpec) -> bool:
    """Whether a group of ``spec`` takes ``rows: new`` without saying where the new rows start."""
    return any(group.rows is not None and group.rows.new and group.rows.start is None for group in spec.groups)


def original_vocabulary(model: nn.Module) -> OriginalVocabulary | None:
    """The vocabulary size in the config of the checkpoint ``model`` was loaded from, or None when unknown.

    Args:
        model: The model (wrappers and a peft model are looked through).

    Returns:
        The size and the checkpoint it was read from; None for a model built from a config, or one whose
        checkpoint's config is not on this machine.
    """
    inner = user_model(model)
    base_model = getattr(inner, "get_base_model", None)  # a peft model
    if callable(base_model):
        inner = base_model()
    config = getattr(inner, "config", None)
    source = getattr(config, "_name_or_path", None)
    if not source or not hasattr(type(config), "from_pretrained"):
        return None
    try:
        saved = type(config).from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return None
    size = getattr(saved.get_text_config(), "vocab_size", None)
    return OriginalVocabulary(int(size), str(source)) if isinstance(size, int) else None


def check_row_groups_supported(spec: LayerwiseSpec, trainer: Any) -> None:
    """Refuse groups with ``rows`` under FSDP and DeepSpeed, before any data is prepared.

    Raises:
        SpecError: Naming the first group with rows and the engine, and why.
    """
    index = next((index for index, group in enumerate(spec.groups) if group.rows is not None), None)
    if index is None:
        return
    engine = sharding_engine(trainer)
    if engine is not None:
        raise SpecError(
            f"rows of a matrix are not supported under {engine}: {_REFUSAL_REASONS[engine]}; train row groups "
            "with DDP (or one device)",
            path=(f"groups[{index}]", "rows"),
            group=spec.groups[index].name,
        )


@dataclass
class _Matrix:
    """One matrix the optimizer holds as views of its rows."""

    weight: nn.Parameter
    views: list[tuple[int, int, torch.Tensor]]


class RowViews:
    """Keeps a plan's row views on their matrices' memory and sets their gradients from the matrices' gradients.

    Args:
        plan: The plan the optimizer was built from.
        views: Its row views (`GroupPlan.row_views`), the tensors the optimizer holds.

    Example:
        ```python
        views = plan.row_views()
        optimizer = torch.optim.AdamW(plan.optimizer_param_groups(views))
        row_views = RowViews(plan, views).attach(optimizer)
        loss.backward()
        row_views.sync()  # before clipping; the optimizer's step calls it too
        ```
    """

    def __init__(self, plan: GroupPlan, views: Mapping[str, torch.Tensor]) -> None:
        matrices: dict[str, _Matrix] = {}
        for group in plan.trainable_groups:
            for entry, name, rows in group.entries():
                if rows is not None:
                    matrix = matrices.setdefault(name, _Matrix(plan.parameters[name], []))
                    matrix.views.append((rows[0], rows[1], views[entry]))
        self._matrices = list(matrices.values())
        self._handle: Any = None

    def __bool__(self) -> bool:
        return bool(self._matrices)

    def attach(self, optimizer: torch.optim.Optimizer) -> RowViews:
        """Sync the gradients whenever ``optimizer``'s step begins; returns self."""
        hook: Callable[..., None] = lambda *_: self.sync()  # noqa: E731
        self._handle = optimizer.register_step_pre_hook(hook)
        return self

    def sync(self) -> None:
        """Put every view back on its matrix's memory where it left it, give it its rows of the matrix's gradient
        (None when the matrix has none), and zero the rows no trained group holds now.

        A view whose ``requires_grad`` is False (its group has not started) gets None, and its rows are zeroed.
        """
        with torch.no_grad():
            for matrix in self._matrices:
                for start, stop, view in matrix.views:
                    rows = matrix.weight.detach()[start:stop]
                    if view.data_ptr() != rows.data_ptr() or view.shape != rows.shape:
                        view.data = rows  # the matrix got new memory (moved or cast in place)
                gradient = matrix.weight.grad
                if gradient is None:
                    for _, _, view in matrix.views:
                        view.grad = None
                    continue
                if gradient.is_sparse:
                    raise RuntimeError(
                        "rows of a matrix need a dense gradient, and this embedding's is sparse "
                        "(nn.Embedding(sparse=True)); build it with sparse=False"
                    )
                trained = merged([(start, stop) for start, stop, view in matrix.views if view.requires_grad])
                for start, stop in complement(trained, gradient.shape[0]):
                    gradient[start:stop].zero_()
                for start, stop, view in matrix.views:
                    view.grad = gradient[start:stop] if view.requires_grad else None
