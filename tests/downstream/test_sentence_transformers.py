"""sentence-transformers' Trainer with a spec: real CPU runs of a tiny model, the loss's own parameters included."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sentence_transformers", reason="the [downstream] extra is not installed")

from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import SoftmaxLoss
from tiny_downstream import logged_rates, moved, pair_classification_data, snapshot, tiny_sentence_transformer

from layerwise_trainer import LayerwiseTrainerMixin, SpecError
from layerwise_trainer.downstream import LayerwiseSentenceTransformerTrainer
from layerwise_trainer.downstream.sentence_transformers import learning_rate_mapping_as_groups

SPEC = {
    "layer_decay": 0.5,
    "groups": [
        {"name": "embeddings", "match": "0.model.embeddings.*", "freeze": True},
        {"name": "classifier", "match": "loss.*", "lr": 1e-2, "layer_decay": 1},
        {"name": "body", "match": "0.*"},
    ],
}


def arguments(tmp_path, **overrides):
    settings = dict(
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return SentenceTransformerTrainingArguments(str(tmp_path / "out"), **settings)


@pytest.fixture
def model(tmp_path):
    (tmp_path / "model").mkdir()
    return tiny_sentence_transformer(tmp_path / "model")


def softmax_loss(model):
    return SoftmaxLoss(model, model.get_embedding_dimension(), num_labels=3)


def test_a_spec_trains_the_model_and_the_loss_classifier_with_per_group_rates(model, tmp_path):
    loss = softmax_loss(model)
    trainer = LayerwiseSentenceTransformerTrainer(
        model=model, args=arguments(tmp_path), train_dataset=pair_classification_data(), loss=loss, param_groups=SPEC
    )
    before_model, before_loss = snapshot(model.named_parameters()), snapshot(loss.classifier.named_parameters())
    trainer.train()

    groups = [(group["name"], group["lr"]) for group in trainer.optimizer.param_groups]
    assert [name for name, _ in groups] == [
        "classifier", "classifier", "body/layer_1", "body/layer_1", "body/layer_2", "body/layer_2",
        "body/layer_3", "body/layer_3",
    ]  # fmt: skip
    optimized = {id(parameter) for group in trainer.optimizer.param_groups for parameter in group["params"]}
    embeddings = {name for name, _ in model.named_parameters() if name.startswith("0.model.embeddings.")}
    trained = [parameter for name, parameter in model.named_parameters() if name not in embeddings]
    classifier = {id(loss.classifier.weight), id(loss.classifier.bias)}
    assert optimized == {id(parameter) for parameter in trained} | classifier

    # Linear decay over 2 steps: each step logs the rate it trained with, the planned one then half of it.
    planned = {"classifier": 1e-2, "body/layer_1": 2.5e-4, "body/layer_2": 5e-4, "body/layer_3": 1e-3}
    expected = [
        {"learning_rate": 1e-3, **{f"learning_rate/{name}": rate for name, rate in planned.items()}},
        {"learning_rate": 5e-4, **{f"learning_rate/{name}": rate / 2 for name, rate in planned.items()}},
    ]
    for step in expected:
        step["learning_rate/embeddings"] = 0.0
    assert logged_rates(trainer.state.log_history) == [pytest.approx(step, rel=1e-12) for step in expected]

    # The pooler gets no gradient: sentence-transformers pools the token states, never the pooler output.
    pooler = {"0.model.pooler.dense.weight", "0.model.pooler.dense.bias"}
    changed = moved(before_model, model.named_parameters())
    assert {name for name, did in changed.items() if not did} == embeddings | pooler
    assert all(moved(before_loss, loss.classifier.named_parameters()).values())


def members_of(plan) -> dict[str, tuple[str, ...]]:
    """Group name -> its parameters, the decay and no-decay halves together."""
    members: dict[str, tuple[str, ...]] = {}
    for group in plan.groups:
        members[group.name] = members.get(group.name, ()) + group.parameter_names
    return members


def test_the_loss_parameters_no_group_matches_fall_to_default(model, tmp_path):
    trainer = LayerwiseSentenceTransformerTrainer(
        model=model,
        args=arguments(tmp_path),
        train_dataset=pair_classification_data(),
        loss=softmax_loss(model),
        param_groups=[{"name": "body", "match": "0.*", "lr": 1e-4}],
    )
    assert members_of(trainer.group_plan)["default"] == ("loss.classifier.weight", "loss.classifier.bias")
    assert trainer.group_plan.group_names == ("body", "default")


def test_one_loss_per_dataset_names_each_loss_parameters_under_its_dataset(model, tmp_path):
    from datasets import DatasetDict

    losses = {"first": softmax_loss(model), "second": softmax_loss(model)}
    data = DatasetDict({"first": pair_classification_data(), "second": pair_classification_data()})
    trainer = LayerwiseSentenceTransformerTrainer(
        model=model,
        args=arguments(tmp_path),
        train_dataset=data,
        loss=losses,
        param_groups=[{"name": "second_head", "match": "loss.second.*", "lr": 1e-2}],
    )
    members = members_of(trainer.group_plan)
    assert members["second_head"] == ("loss.second.classifier.weight", "loss.second.classifier.bias")
    assert "loss.first.classifier.weight" in members["default"]
    assert not any(name.startswith("loss.") and ".model." in name for names in members.values() for name in names)


def test_learning_rate_mapping_with_a_spec_is_refused_with_the_groups_to_write(model, tmp_path):
    args = arguments(tmp_path, learning_rate_mapping={"classifier": 1e-3, r"0\.model\.pooler": 2e-3})
    with pytest.raises(SpecError) as error:
        LayerwiseSentenceTransformerTrainer(
            model=model, args=args, train_dataset=pair_classification_data(), loss=softmax_loss(model),
            param_groups=[{"name": "body", "match": "0.*"}],
        )  # fmt: skip
    assert str(error.value) == (
        "learning_rate_mapping cannot be combined with param_groups: both set rates per parameter. Drop "
        "learning_rate_mapping and put its patterns in the spec, before the other groups: "
        "[{'name': 'classifier', 'match': 're:.*(?:classifier).*', 'lr': 0.001}, "
        "{'name': 'mapping_1', 'match': 're:.*(?:0\\\\.model\\\\.pooler).*', 'lr': 0.002}] "
        "(names are the model's own, and loss.* for the loss's parameters)"
    )


def test_the_groups_the_refusal_suggests_give_the_mapping_rates(model, tmp_path):
    groups = learning_rate_mapping_as_groups({"classifier": 1e-3, r"0\.model\.pooler": 2e-3})
    trainer = LayerwiseSentenceTransformerTrainer(
        model=model, args=arguments(tmp_path), train_dataset=pair_classification_data(), loss=softmax_loss(model),
        param_groups=groups,
    )  # fmt: skip
    members = members_of(trainer.group_plan)
    rates = {group.name: group.lr for group in trainer.group_plan.groups}
    assert members["classifier"] == ("loss.classifier.weight", "loss.classifier.bias")
    assert members["mapping_1"] == ("0.model.pooler.dense.weight", "0.model.pooler.dense.bias")
    assert (rates["classifier"], rates["mapping_1"]) == (1e-3, 2e-3)


def test_without_a_spec_learning_rate_mapping_is_sentence_transformers_own(model, tmp_path):
    loss = softmax_loss(model)
    args = arguments(tmp_path, learning_rate_mapping={"classifier": 1e-2})
    trainer = LayerwiseSentenceTransformerTrainer(
        model=model, args=args, train_dataset=pair_classification_data(), loss=loss
    )
    trainer.create_optimizer()
    rates = [(group["lr"], len(group["params"])) for group in trainer.optimizer.param_groups]
    assert rates[2:] == [(1e-2, 1), (1e-2, 1)]
    assert trainer.optimizer.param_groups[2]["params"] == [loss.classifier.weight]


def test_the_plain_mixin_is_refused_naming_the_ready_trainer(model, tmp_path):
    class MixedTrainer(LayerwiseTrainerMixin, SentenceTransformerTrainer):
        pass

    with pytest.raises(SpecError, match="LayerwiseSentenceTransformerTrainer"):
        MixedTrainer(
            model=model, args=arguments(tmp_path), train_dataset=pair_classification_data(), loss=softmax_loss(model),
            param_groups=[{"name": "body", "match": "0.*"}],
        )  # fmt: skip


def test_an_optimizer_on_a_module_the_loss_does_not_hold_is_refused_when_the_loss_has_parameters(model, tmp_path):
    trainer = LayerwiseSentenceTransformerTrainer(
        model=model, args=arguments(tmp_path), train_dataset=pair_classification_data(), loss=softmax_loss(model),
        param_groups=[{"name": "body", "match": "0.*"}],
    )  # fmt: skip
    stand_in_for_a_sharded_model = torch.nn.Linear(2, 2)
    with pytest.raises(SpecError) as error:
        trainer.create_optimizer(stand_in_for_a_sharded_model)
    assert str(error.value) == (
        "the optimizer is built on a Linear that the loss does not hold, so the loss's own parameters (loss.*) "
        "could not be given to it; train without FSDP, or with a loss without parameters of its own"
    )
