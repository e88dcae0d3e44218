"""Which parameters get weight decay: the stock Trainer's rule, computed in one pass.

``Trainer.get_decay_parameter_names`` (transformers 5) excludes the parameters of ``nn.LayerNorm``
modules and every parameter whose lower-cased name matches ``bias``, ``layernorm``, ``rmsnorm``, a
``norm`` segment or a ``_norm`` suffix. It walks the module tree re-joining names at every depth;
`decay_parameter_names` gives the same set in a single pass over ``named_modules``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .parameter_names import walk_modules

_NO_DECAY_NAME = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def decay_parameter_names(model: nn.Module) -> set[str]:
    """The names of the parameters the stock Trainer applies weight decay to.

    Args:
        model: The model, as ``named_parameters`` names it; tied parameters appear under every
            name they have.

    Returns:
        The set of decayed parameter names.

    Example:
        ```python
        names = decay_parameter_names(model)
        assert "bert.encoder.layer.0.output.dense.weight" in names
        assert "bert.encoder.layer.0.output.dense.bias" not in names
        ```
    """
    return decay_names_in(walk_modules(model))


def decay_names_in(modules: list[tuple[str, nn.Module]]) -> set[str]:
    """`decay_parameter_names` over an already walked module tree."""
    names: set[str] = set()
    for module_name, module in modules:
        if isinstance(module, nn.LayerNorm):
            continue
        prefix = f"{module_name}." if module_name else ""
        for parameter_name, parameter in module._parameters.items():
            if parameter is None:
                continue
            full_name = prefix + parameter_name
            if not _NO_DECAY_NAME.search(full_name.lower()):
                names.add(full_name)
    return names


class _NormWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))


def _probe_model() -> nn.Module:
    """A tiny model with one parameter of every kind the stock rule distinguishes.

    Built on the meta device, inside a forked RNG: building it must not move the random stream that
    the run's dropout and data order draw from.
    """
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        probe = nn.Module()
        probe.dense = nn.Linear(2, 2)
        probe.ln = nn.LayerNorm(2)
        for name in ("norm", "post_attention_layernorm", "input_norm", "final_rmsnorm", "normalizer"):
            setattr(probe, name, _NormWeight())
    return probe


@functools.cache
def matches_stock_rule(stock_rule: Callable[[nn.Module], Iterable[str]]) -> bool:
    """Whether `decay_parameter_names` gives what ``stock_rule`` gives on a probe model.

    The installed transformers' rule may differ from the one this module knows (older releases did
    not exclude ``norm`` parameters outside ``nn.LayerNorm``); the fast path is used only when the
    two agree on every kind of parameter.
    """
    probe = _probe_model()
    return set(stock_rule(probe)) == decay_parameter_names(probe)
