"""HybridOptimizer: Muon and AdamW in one torch optimizer, each group stepped by the algorithm it names."""

from __future__ import annotations

import io

import pytest
import torch

from layerwise_trainer import HybridOptimizer
from layerwise_trainer.core.group_statistics import steps_each_parameter_alone

ALGORITHMS = {
    "muon": (torch.optim.Muon, {"adjust_lr_fn": "match_rms_adamw"}),
    "adamw": (torch.optim.AdamW, {"betas": (0.9, 0.95)}),
}


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"matrix": (8, 4), "wide": (3, 6), "bias": (8,), "embedding": (10, 4)}
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def parameters() -> dict[str, torch.nn.Parameter]:
    return {name: torch.nn.Parameter(value) for name, value in tensors().items()}


def give_gradients(params: dict[str, torch.nn.Parameter], step: int) -> None:
    for name, gradient in tensors(seed=100 + step).items():
        params[name].grad = gradient.clone()


def hybrid_of(params: dict[str, torch.nn.Parameter]) -> HybridOptimizer:
    return HybridOptimizer(
        [
            {"params": [params["matrix"], params["wide"]], "optimizer": "muon", "lr": 0.02, "weight_decay": 0.1},
            {"params": [params["bias"]], "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0},
            {"params": [params["embedding"]], "optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.01},
        ],
        ALGORITHMS,
    )


def test_a_hybrid_step_is_muons_and_adamws_steps_bit_for_bit():
    hybrid_params, muon_params = parameters(), parameters()
    hybrid = hybrid_of(hybrid_params)
    muon = torch.optim.Muon(
        [muon_params["matrix"], muon_params["wide"]], lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"
    )
    adamw = torch.optim.AdamW(
        [
            {"params": [muon_params["bias"]], "lr": 1e-3, "weight_decay": 0.0},
            {"params": [muon_params["embedding"]], "lr": 3e-4, "weight_decay": 0.01},
        ],
        betas=(0.9, 0.95),
    )
    for step in range(4):
        give_gradients(hybrid_params, step)
        give_gradients(muon_params, step)
        hybrid.step()
        muon.step()
        adamw.step()
        for name in hybrid_params:
            assert torch.equal(hybrid_params[name], muon_params[name]), (step, name)
    assert set(hybrid.state[hybrid_params["matrix"]]) == {"momentum_buffer"}
    assert set(hybrid.state[hybrid_params["bias"]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_every_group_takes_its_algorithm_s_defaults():
    hybrid = hybrid_of(parameters())
    muon, bias, embedding = hybrid.param_groups
    assert (muon["momentum"], muon["nesterov"], muon["ns_steps"], muon["adjust_lr_fn"]) == (
        0.95,
        True,
        5,
        "match_rms_adamw",
    )
    assert "betas" not in muon
    assert (bias["betas"], bias["eps"]) == ((0.9, 0.95), 1e-8)
    assert "momentum" not in embedding


def test_a_scheduler_moves_both_algorithms_rates():
    hybrid_params, reference_params = parameters(), parameters()
    hybrid = hybrid_of(hybrid_params)
    torch.optim.lr_scheduler.LambdaLR(hybrid, lambda step: 0.5)
    assert [group["lr"] for group in hybrid.param_groups] == [0.01, 5e-4, 1.5e-4]
    reference = torch.optim.Muon(
        [reference_params["matrix"], reference_params["wide"]], lr=0.01, weight_decay=0.1,
        adjust_lr_fn="match_rms_adamw",
    )  # fmt: skip
    give_gradients(hybrid_params, 0)
    give_gradients(reference_params, 0)
    hybrid.step()
    reference.step()
    assert torch.equal(hybrid_params["matrix"], reference_params["matrix"])


def test_the_state_dict_round_trips_and_loads_with_weights_only():
    first_params = parameters()
    first = hybrid_of(first_params)
    for step in range(2):
        give_gradients(first_params, step)
        first.step()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert [group["optimizer"] for group in saved["param_groups"]] == ["muon", "adamw", "adamw"]

    second_params = {name: torch.nn.Parameter(value.detach().clone()) for name, value in first_params.items()}
    second = hybrid_of(second_params)
    second.load_state_dict(saved)
    for step in (2, 3):
        give_gradients(first_params, step)
        give_gradients(second_params, step)
        first.step()
        second.step()
    for name in first_params:
        assert torch.equal(first_params[name], second_params[name]), name


def test_a_group_naming_no_algorithm_given_is_refused():
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^param group 0 names optimizer 'lion'; expected one of muon, adamw$"):
        HybridOptimizer([{"params": [parameter], "optimizer": "lion"}], ALGORITHMS)


def test_muon_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        HybridOptimizer([{"params": [torch.nn.Parameter(torch.zeros(3))], "optimizer": "muon"}], ALGORITHMS)


def test_a_group_added_later_takes_its_algorithm_s_defaults():
    params = parameters()
    hybrid = HybridOptimizer([{"params": [params["matrix"]], "optimizer": "muon"}], ALGORITHMS)
    hybrid.add_param_group({"params": [params["bias"]], "optimizer": "adamw", "lr": 1e-3})
    assert hybrid.param_groups[1]["betas"] == (0.9, 0.95)
    give_gradients(params, 0)
    hybrid.step()
    assert set(hybrid.state[params["bias"]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_the_diagnostics_may_step_it_a_slice_of_parameters_at_a_time():
    assert steps_each_parameter_alone(hybrid_of(parameters()))
