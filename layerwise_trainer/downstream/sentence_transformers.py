"""`LayerwiseSentenceTransformerTrainer`: the spec's groups for sentence-transformers' Trainer, loss included.

sentence-transformers trains what its loss holds: the model, and for some losses parameters of their own
(``SoftmaxLoss``'s ``classifier``). Its Trainer hands the optimizer those parameters through
``get_optimizer_cls_and_kwargs``, as ready param groups (``optimizer_dict``), which a spec cannot reach: the
plain mixin refuses them. Here the spec is resolved over the model and the loss together, named as a
reader sees them: the model's parameters under their own names (``0.model.encoder.layer.1...``), the loss's
own under ``loss.`` (``loss.classifier.weight``; with one loss per dataset, ``loss.<dataset>.classifier...``).
A parameter no group matches falls to ``default`` as everywhere; none is left out of the optimizer.

``args.learning_rate_mapping`` (regular expressions to rates) is the same feature as the spec's groups; the
two together are refused, with the groups that say the same in the message.

Importing this module imports sentence-transformers (the ``[downstream]`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from transformers import Trainer

from ..core.parameter_names import user_model
from ..errors import SpecError
from ..trainer import LayerwiseTrainerMixin

try:
    from sentence_transformers import SentenceTransformerTrainer
except ModuleNotFoundError as error:  # pragma: no cover - the message is the point
    raise ModuleNotFoundError(
        "layerwise_trainer.downstream.sentence_transformers needs sentence-transformers: "
        'pip install "layerwise-trainer[downstream]" (or pip install sentence-transformers)',
        name=error.name,
    ) from error

LOSS_PREFIX = "loss"


class ModelWithLoss(nn.Module):
    """The model's parameters under their own names, and the loss's own parameters under ``loss.``.

    It holds the same modules as the model and the loss (nothing is copied) and is never called: it is what
    the spec is resolved against and the optimizer is built from. A loss that wraps the model (as every
    sentence-transformers loss does) shows only its own parameters, since the model's come first.

    Args:
        model: The model the Trainer trains.
        loss: The loss module, a mapping of dataset names to loss modules, or None.
    """

    def __init__(self, model: nn.Module, loss: nn.Module | Mapping[str, nn.Module] | None) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, parameter in model.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        if isinstance(loss, Mapping):
            loss = nn.ModuleDict(dict(loss))
        own = loss_own_parameters(loss, model) if isinstance(loss, nn.Module) else None
        if own is not None:
            self.add_module(LOSS_PREFIX, own)
        # Kept out of the module tree (no names of their own). Under `_orig_mod`, the library's wrapper
        # convention, the model is what freezing remembers and gives back by, as for a compiled model.
        self.__dict__["_orig_mod"] = model
        self.__dict__["wrapped_loss"] = loss

    def holds(self, model: nn.Module, loss: Any) -> bool:
        """Whether this was built from ``model`` and ``loss`` as they are now."""
        if isinstance(loss, Mapping):
            held = self.__dict__["wrapped_loss"]
            same = isinstance(held, nn.ModuleDict) and held.keys() == loss.keys()
            return same and self.__dict__["_orig_mod"] is model and all(held[key] is loss[key] for key in loss)
        return self.__dict__["_orig_mod"] is model and self.__dict__["wrapped_loss"] is loss


def loss_own_parameters(loss: nn.Module, model: nn.Module) -> nn.Module | None:
    """The loss's module tree without the model's modules: only the loss's own parameters, at their paths.

    A loss holds the model (``loss.model``); leaving it in would give every model parameter a second name
    under ``loss.``, which a ``loss.*`` pattern would match. Modules that hold none of the model are kept as
    they are; the ones on the way to it are mirrored by plain containers.

    Returns:
        The tree, or None when the loss has no parameters of its own.
    """
    model_modules = {id(module) for module in model.modules()}
    model_parameters = {id(parameter) for parameter in model.parameters()}

    def without_model(module: nn.Module) -> nn.Module | None:
        if id(module) in model_modules:
            return None
        if not any(id(inner) in model_modules for inner in module.modules()):
            return module if any(True for _ in module.parameters()) else None
        mirror = nn.Module()
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) not in model_parameters:
                mirror.register_parameter(name, parameter)
        for name, child in module.named_children():
            kept = without_model(child)
            if kept is not None:
                mirror.add_module(name, kept)
        return mirror if mirror._parameters or mirror._modules else None

    return without_model(loss)


def learning_rate_mapping_as_groups(mapping: Mapping[str, float]) -> list[dict[str, Any]]:
    """The spec groups that give the parameters ``learning_rate_mapping`` names the same rates.

    sentence-transformers searches each regular expression anywhere in a name; a spec's ``re:`` pattern
    matches the whole name, hence the ``.*`` on both sides.

    Example:
        ```python
        learning_rate_mapping_as_groups({"classifier": 1e-3})
        # [{'name': 'classifier', 'match': 're:.*(?:classifier).*', 'lr': 0.001}]
        ```
    """
    groups = []
    for index, (pattern, rate) in enumerate(mapping.items()):
        name = pattern if pattern.replace("_", "").isalnum() else f"mapping_{index}"
        groups.append({"name": name, "match": f"re:.*(?:{pattern}).*", "lr": float(rate)})
    return groups


def check_no_learning_rate_mapping(args: Any) -> None:
    """Refuse ``learning_rate_mapping`` next to a spec, with the groups to write instead.

    Raises:
        SpecError: ``args.learning_rate_mapping`` is not empty.
    """
    mapping = getattr(args, "learning_rate_mapping", None)
    if not mapping:
        return
    raise SpecError(
        "learning_rate_mapping cannot be combined with param_groups: both set rates per parameter. Drop "
        "learning_rate_mapping and put its patterns in the spec, before the other groups: "
        f"{learning_rate_mapping_as_groups(mapping)} (names are the model's own, and loss.* for the loss's "
        "parameters)"
    )


class LayerwiseLossModelMixin(LayerwiseTrainerMixin):
    """`LayerwiseTrainerMixin` for sentence-transformers' Trainers, whose loss may hold parameters.

    Put it first in the bases of any of sentence-transformers' Trainers (``SentenceTransformerTrainer``,
    ``CrossEncoderTrainer``, ``SparseEncoderTrainer``): its `spec_model` is `ModelWithLoss`, so the spec is
    resolved over the model and the loss together, and the optimizer kwargs are the stock Trainer's when there
    is a spec (with none, everything is sentence-transformers' own).
    """

    _model_with_loss: ModelWithLoss | None = None

    def spec_model(self, model: nn.Module) -> nn.Module:
        """`ModelWithLoss` for the model the loss trains (DDP and ``torch.compile`` looked through).

        Raises:
            SpecError: The optimizer is built on a module the loss does not hold (an FSDP wrapper) while the
                loss has parameters of its own, which would be left out.
        """
        if isinstance(model, ModelWithLoss):
            return model
        loss = getattr(self, "loss", None)
        losses = [
            item for item in (loss.values() if isinstance(loss, Mapping) else [loss]) if isinstance(item, nn.Module)
        ]
        own_model = user_model(model)
        if not any(module is own_model for item in losses for module in item.modules()):
            if any(loss_own_parameters(item, own_model) is not None for item in losses):
                raise SpecError(
                    f"the optimizer is built on a {type(model).__name__} that the loss does not hold, so the "
                    "loss's own parameters (loss.*) could not be given to it; train without FSDP, or with a "
                    "loss without parameters of its own"
                )
            return model
        if self._model_with_loss is None or not self._model_with_loss.holds(own_model, loss):
            self._model_with_loss = ModelWithLoss(own_model, loss)
        return self._model_with_loss

    def get_optimizer_cls_and_kwargs(self, args: Any, model: nn.Module | None = None) -> tuple[Any, Any]:
        """sentence-transformers' optimizer kwargs without a spec; with one, the stock Trainer's.

        Raises:
            SpecError: A spec together with ``args.learning_rate_mapping``.
        """
        if self.param_groups_spec is None:
            return super().get_optimizer_cls_and_kwargs(args, model)  # type: ignore[misc]
        check_no_learning_rate_mapping(args)
        return Trainer.get_optimizer_cls_and_kwargs(args, model)


class LayerwiseSentenceTransformerTrainer(LayerwiseLossModelMixin, SentenceTransformerTrainer):
    """``SentenceTransformerTrainer`` with a ``param_groups`` spec, the loss's parameters included.

    Everything ``SentenceTransformerTrainer`` takes, plus ``param_groups``. Spec patterns see the model's
    parameter names (``0.model.encoder.layer.1.attention...``) and the loss's own parameters under
    ``loss.`` (``loss.classifier.weight``). With no spec it is ``SentenceTransformerTrainer`` itself.

    Args:
        param_groups: The spec (see `parse_spec`).
        *args: ``SentenceTransformerTrainer``'s positional arguments.
        **kwargs: ``SentenceTransformerTrainer``'s keyword arguments.

    Raises:
        SpecError: A problem with the spec, or a spec with ``args.learning_rate_mapping``.

    Example:
        ```python
        trainer = LayerwiseSentenceTransformerTrainer(
            model=model,
            args=SentenceTransformerTrainingArguments("out"),
            train_dataset=pairs,
            loss=SoftmaxLoss(model, model.get_embedding_dimension(), num_labels=3),
            param_groups=[{"name": "classifier", "match": "loss.*", "lr": 1e-3}],
        )
        ```
    """
