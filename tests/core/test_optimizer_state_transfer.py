"""Optimizer state carried by parameter name between two layouts (the pure part of issue 13)."""

from __future__ import annotations

import pytest
import torch

from layerwise_trainer.core.optimizer_state_transfer import (
    StateTransferError,
    group_labels,
    hyperparameter_changes,
    transfer_state,
)


def group(name, parameters, **hyperparameters):
    return {"name": name, "parameters": [[n, list(shape)] for n, shape in parameters],
            "hyperparameters": {"lr": 1e-3, **hyperparameters}}  # fmt: skip


def entry(value, shape):
    return {"step": torch.tensor(float(value)), "exp_avg": torch.full(shape, float(value))}


SAVED_GROUPS = [group("body", [("a", (2, 2)), ("b", (2,))]), group("head", [("c", (3,)), ("d", (1,))])]
SAVED = {
    "state": {0: entry(1, (2, 2)), 1: entry(2, (2,)), 2: entry(3, (3,)), 3: entry(4, (1,))},
    "param_groups": [{"params": [0, 1], "lr": 1e-3}, {"params": [2, 3], "lr": 1e-3}],
}


def param_groups(*sizes):
    groups, index = [], 0
    for size in sizes:
        groups.append({"params": list(range(index, index + size)), "lr": 0.0})
        index += size
    return groups


def test_dropped_parameters_are_listed_on_the_group_of_their_label_else_on_a_row_of_their_own():
    current = [group("head", [("c", (3,)), ("a", (2, 2))])]  # d dropped from head; b dropped, a moved from body
    transfer = transfer_state(SAVED, SAVED_GROUPS, current, param_groups(2), "AdamW")
    assert [(row.label, row.carried, row.dropped) for row in transfer.groups] == [
        ("head", ("c", "a"), ("d",)),  # the label is still a group: its dropped parameter is listed there
        ("body", (), ("b",)),  # the label is gone: a row lists only what was dropped, not a (still trained)
    ]


def test_state_follows_the_name_to_its_new_position_shapes_checked_and_the_rest_reported():
    current = [
        group("head", [("d", (1,)), ("a", (2, 2))], lr=2e-3),  # d and a moved here, a rate changed
        group("new", [("e", (5,)), ("c", (4,))]),  # e is new, c changed shape
    ]
    transfer = transfer_state(SAVED, SAVED_GROUPS, current, param_groups(2, 2), "AdamW")
    state = transfer.state_dict["state"]
    assert sorted(state) == [0, 1]
    assert state[0] is SAVED["state"][3] and state[1] is SAVED["state"][0]
    assert transfer.state_dict["param_groups"] == param_groups(2, 2)
    assert [row.to_data() for row in transfer.groups] == [
        {"group": "head", "carried": ["d", "a"], "fresh": [], "reshaped": [], "dropped": [],
         "changes": ["lr 0.001 -> 0.002"]},
        {"group": "new", "carried": [], "fresh": ["e"], "reshaped": ["c"], "dropped": [], "changes": []},
        {"group": "body", "carried": [], "fresh": [], "reshaped": [], "dropped": ["b"], "changes": []},
    ]  # fmt: skip
    assert transfer.table().splitlines()[2:] == [
        "| head | 2 | 0 | 0 | lr 0.001 -> 0.002 |",
        "| new | 0 | 2 (1 reshaped) | 0 | - |",
        "| body | 0 | 0 | 1 | - |",
    ]


def test_state_that_does_not_fit_its_layout_is_refused():
    with pytest.raises(StateTransferError) as caught:
        transfer_state(SAVED, [*SAVED_GROUPS[:1], group("head", [("c", (3,))])], SAVED_GROUPS, param_groups(2, 2), "X")
    assert str(caught.value) == (
        "the saved optimizer's param groups hold [2, 2] tensors, its layout [2, 1]: the state cannot be matched "
        "to parameter names"
    )
    wrong = {**SAVED, "state": {**SAVED["state"], 0: entry(1, (4,))}}
    with pytest.raises(StateTransferError) as caught:
        transfer_state(wrong, SAVED_GROUPS, SAVED_GROUPS, param_groups(2, 2), "X")
    assert (
        str(caught.value)
        == "the saved state 'exp_avg' of 'a' has shape [4], its layout says the parameter has shape [2, 2]"
    )
    stray = {**SAVED, "state": {**SAVED["state"], 9: entry(1, (1,))}}
    with pytest.raises(StateTransferError, match=r"the saved X state has an entry \(9\) for no parameter"):
        transfer_state(stray, SAVED_GROUPS, SAVED_GROUPS, param_groups(2, 2), "X")


def test_labels_and_hyperparameter_changes():
    assert group_labels([{"name": "a"}, {"name": "a"}, {"name": "b"}]) == ["a", "a (no-decay half)", "b"]
    assert hyperparameter_changes(
        [{"lr": 1.0, "betas": (0.9, 0.99)}, {"lr": 2.0}], {"lr": 1.0, "betas": [0.9, 0.99]}
    ) == ["lr 1.0, 2.0 -> 1.0"]
    assert hyperparameter_changes([{"eps": 1e-8}], {"lr": 1.0}) == []  # only keys both sides have


def test_a_rate_computed_as_a_product_is_shown_and_compared_without_float_noise():
    computed = 0.002 * 0.4**2  # a layer-decayed rate
    assert repr(computed) == "0.0003200000000000001"
    assert hyperparameter_changes([{"lr": 0.0004}], {"lr": computed}) == ["lr 0.0004 -> 0.00032"]
    assert hyperparameter_changes([{"lr": 0.00032}], {"lr": computed}) == []
    assert hyperparameter_changes([{"betas": (0.9, 0.999)}], {"betas": (0.9, 0.95)}) == [
        "betas [0.9, 0.999] -> [0.9, 0.95]"
    ]
