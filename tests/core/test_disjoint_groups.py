"""Building an optimizer over disjoint param groups: the same optimizer as torch builds, without its re-hashing."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from layerwise_trainer.core.disjoint_groups import build_optimizer


def layers(count: int = 4) -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(3, 3) for _ in range(count)]


def groups_of(modules: list[nn.Linear]) -> list[dict[str, Any]]:
    return [{"params": list(module.parameters()), "lr": 0.1 * (index + 1)} for index, module in enumerate(modules)]


def described(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Every group as a dict, its tensors by identity."""
    return [{**group, "params": [id(parameter) for parameter in group["params"]]} for group in optimizer.param_groups]


TORCH_OPTIMIZERS = [
    (torch.optim.AdamW, {"weight_decay": 0.01}),
    (torch.optim.Adam, {"foreach": False}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (torch.optim.Adagrad, {}),
    (torch.optim.RMSprop, {}),
    (torch.optim.NAdam, {}),
    (torch.optim.RAdam, {}),
    (torch.optim.Adamax, {}),
    (torch.optim.Adadelta, {}),
]


@pytest.mark.parametrize(
    ("optimizer_cls", "kwargs"), TORCH_OPTIMIZERS, ids=lambda value: getattr(value, "__name__", "-")
)
def test_the_same_optimizer_as_torch_builds(optimizer_cls, kwargs):
    # Also the check that a new torch release changes nothing add_param_group leaves in its groups.
    modules = layers()
    built = build_optimizer(optimizer_cls, groups_of(modules), kwargs)
    expected = optimizer_cls(groups_of(modules), **kwargs)
    assert type(built) is optimizer_cls
    assert described(built) == described(expected)
    assert built.defaults == expected.defaults
    assert "add_param_group" not in vars(built)
    built.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})  # torch's own method again, check included
    with pytest.raises(ValueError, match="more than one parameter group"):
        built.add_param_group({"params": [modules[0].weight]})


def test_steps_the_same_as_torchs_optimizer():
    results = []
    for build in (build_optimizer, lambda cls, groups, kwargs: cls(groups, **kwargs)):
        modules = layers()
        optimizer = build(torch.optim.AdamW, groups_of(modules), {"weight_decay": 0.1})
        for _ in range(3):
            sum(module(torch.ones(2, 3)).square().sum() for module in modules).backward()
            optimizer.step()
            optimizer.zero_grad()
        results.append([parameter.detach().clone() for module in modules for parameter in module.parameters()])
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(*results, strict=True))


def test_earlier_groups_are_not_hashed_again(monkeypatch):
    # torch hashes every tensor of every earlier group for each group it adds: 4 groups of 2 tensors hashed
    # 2 x 8 (a duplicate check and a disjointness check of each group's own tensors) + 2 + 4 + 6 earlier ones.
    modules = layers()
    torch_groups, our_groups = groups_of(modules), groups_of(modules)
    hashed = counted_hashes(monkeypatch)
    torch.optim.AdamW(torch_groups)
    assert len(hashed) == 2 * 8 + 2 + 4 + 6
    hashed.clear()
    build_optimizer(torch.optim.AdamW, our_groups, {})
    assert len(hashed) == 2 * 8


def counted_hashes(monkeypatch) -> list[torch.Tensor]:
    hashed: list[torch.Tensor] = []
    original_hash = torch.Tensor.__hash__
    monkeypatch.setattr(torch.Tensor, "__hash__", lambda tensor: hashed.append(tensor) or original_hash(tensor))
    return hashed


class NewedAdamW(torch.optim.AdamW):
    """An optimizer with its own ``__new__``, which may do anything before ``__init__``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NewedAdamW:
        return super().__new__(cls)


def test_an_optimizer_with_its_own_new_is_built_the_usual_way(monkeypatch):
    groups = groups_of(layers())
    hashed = counted_hashes(monkeypatch)
    optimizer = build_optimizer(NewedAdamW, groups, {})
    assert type(optimizer) is NewedAdamW
    assert len(hashed) == 2 * 8 + 2 + 4 + 6


def test_constructor_checks_still_run():
    with pytest.raises(ValueError, match="LBFGS doesn't support per-parameter options"):
        build_optimizer(torch.optim.LBFGS, groups_of(layers(2)), {})
    leaf = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        build_optimizer(torch.optim.SGD, [{"params": [leaf]}, {"params": [leaf * 2]}], {"lr": 0.1})


def test_groups_with_and_without_names_are_still_refused():
    first, second = layers(2)
    named = {"params": list(second.named_parameters())}
    with pytest.raises(ValueError, match="all optimizer param groups should be with/without names"):
        build_optimizer(torch.optim.SGD, [{"params": list(first.parameters())}, named], {"lr": 0.1})
    optimizer = build_optimizer(torch.optim.SGD, [{"params": list(first.named_parameters())}, named], {"lr": 0.1})
    assert [group["param_names"] for group in optimizer.param_groups] == [["weight", "bias"], ["weight", "bias"]]


class ExtraGroupSGD(torch.optim.SGD):
    """An optimizer whose constructor adds a group of its own (here one that overlaps the first)."""

    def __init__(self, params: Any, extra: list[torch.Tensor], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.add_param_group({"params": extra})


def test_a_group_the_optimizer_adds_by_itself_is_checked_as_usual():
    modules = layers(2)
    with pytest.raises(ValueError, match="more than one parameter group"):
        build_optimizer(ExtraGroupSGD, groups_of(modules), {"lr": 0.1, "extra": [modules[0].weight]})
    extra = nn.Parameter(torch.ones(2))
    optimizer = build_optimizer(ExtraGroupSGD, groups_of(modules), {"lr": 0.1, "extra": [extra]})
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, 2, 1]


def test_a_duplicate_inside_a_group_still_warns():
    weight = nn.Parameter(torch.ones(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_optimizer(torch.optim.SGD, [{"params": [nn.Parameter(torch.ones(1))]}, {"params": [weight, weight]}],
                        {"lr": 0.1})  # fmt: skip
    assert any("duplicate parameters" in str(warning.message) for warning in caught)


class BookkeepingAdamW(torch.optim.AdamW):
    """An optimizer that overrides add_param_group and needs to see the earlier groups."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group["position"] = len(self.param_groups)
        super().add_param_group(param_group)


def test_an_override_of_add_param_group_sees_every_earlier_group():
    optimizer = build_optimizer(BookkeepingAdamW, groups_of(layers(3)), {})
    assert [group["position"] for group in optimizer.param_groups] == [0, 1, 2]


def test_a_factory_is_called_as_it_is():
    calls = []

    def factory(param_groups: list[dict[str, Any]], **kwargs: Any) -> torch.optim.Optimizer:
        calls.append(kwargs)
        return torch.optim.SGD(param_groups, **kwargs)

    optimizer = build_optimizer(factory, groups_of(layers(2)), {"lr": 0.5})
    assert calls == [{"lr": 0.5}]
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.2]
