"""The mixin overrides private Trainer methods only where PRIVATE_TRAINER_OVERRIDES says, with their signatures.

A transformers release that renames such a method, or changes its parameters, would leave the override
dead (never called) or break it; this test fails first.
"""

from __future__ import annotations

import ast
import inspect

from transformers import Trainer

from layerwise_trainer.trainer import PRIVATE_TRAINER_OVERRIDES, LayerwiseTrainerMixin


def test_every_private_override_is_listed():
    private = {name for name in vars(LayerwiseTrainerMixin) if name.startswith("_") and not name.startswith("__")}
    overriding = {name for name in private if callable(getattr(Trainer, name, None))}
    assert overriding == set(PRIVATE_TRAINER_OVERRIDES)


def test_the_installed_trainer_has_each_overridden_method_with_the_expected_parameters():
    for name, parameters in PRIVATE_TRAINER_OVERRIDES.items():
        assert callable(getattr(Trainer, name, None)), f"transformers.Trainer has no {name} any more"
        assert tuple(inspect.signature(getattr(Trainer, name)).parameters) == parameters, name


def test_the_overrides_take_what_the_trainer_s_methods_take():
    for name in PRIVATE_TRAINER_OVERRIDES:
        ours = inspect.signature(getattr(LayerwiseTrainerMixin, name)).parameters
        theirs = inspect.signature(getattr(Trainer, name)).parameters
        assert list(ours) == list(theirs), name
        assert [parameter.default for parameter in ours.values()] == [
            parameter.default for parameter in theirs.values()
        ], name


def test_no_trainer_in_the_package_overrides_a_private_method_of_the_mixin(repo_root):
    private = {name for name in vars(LayerwiseTrainerMixin) if name.startswith("_") and not name.startswith("__")}
    overriding = []
    for path in sorted((repo_root / "layerwise_trainer").rglob("*.py")):
        if path.name == "trainer.py" and path.parent.name == "layerwise_trainer":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
                overriding += [f"{path.name}:{node.name}.{name}" for name in sorted(methods & private)]
    assert overriding == []
