"""Layer ids for layer-wise learning-rate decay, read from parameter names.

A transformer block is found from a name segment pair ``<container>.<index>`` where the container is
one of ``layer``, ``layers``, ``h``, ``blocks``, ``block`` or ``albert_layer_groups`` (the first such
pair in the name counts, so ``encoder.block.3.layer.0`` is block 3). Blocks of one container form a
stack; a model with several stacks (an encoder and a decoder) numbers them one after the other in the
order their parameters appear.

With ``L`` blocks in all:

- embeddings, and anything before the first block, have id 0 (a name segment containing ``embed``
  marks an embedding wherever it sits: DeBERTa's ``rel_embeddings``, BART's ``layernorm_embedding``);
- block ``i`` of the stacks in order has id ``i + 1``;
- anything between two stacks (T5's ``encoder.final_layer_norm``) shares the id of the block just
  before it;
- anything after the last block (final norm, pooler, head) has id ``L + 1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

BLOCK_CONTAINERS = ("layer", "layers", "h", "blocks", "block", "albert_layer_groups")
_BLOCK = re.compile(r"(?:^|\.)(?:" + "|".join(BLOCK_CONTAINERS) + r")\.(\d+)(?=\.|$)")
_EMBEDDING_SEGMENT = re.compile(r"(?:^|\.)[^.]*embed[^.]*(?=\.|$)", re.IGNORECASE)

# Layer-id markers for parameters outside the blocks, resolved against the number of blocks.
_AFTER_LAST_BLOCK = -1


@dataclass(frozen=True)
class LayerMap:
    """Where each parameter sits in the block structure of a model.

    Args:
        positions: Parameter name -> layer id, with ``-1`` standing for "after the last block"
            (its id depends on the number of blocks, which a group may override).
        num_layers: ``L``, the number of blocks detected.

    Example:
        ```python
        layers = detect_layers(name for name, _ in model.named_parameters())
        layers.layer_id_of("bert.encoder.layer.3.output.dense.weight")  # 4
        ```
    """

    positions: Mapping[str, int]
    num_layers: int

    def layer_id_of(self, name: str, num_layers: int | None = None) -> int:
        """The layer id of parameter ``name``; ``num_layers`` replaces the detected ``L``."""
        position = self.positions[name]
        if position == _AFTER_LAST_BLOCK:
            return (self.num_layers if num_layers is None else num_layers) + 1
        return position


def detect_layers(names: Iterable[str]) -> LayerMap:
    """Give every parameter name a layer id (see the module docstring for the rules).

    Args:
        names: Parameter names in the model's order (``model.named_parameters()``).

    Returns:
        The `LayerMap`; its ``num_layers`` is 0 when no block was found.
    """
    ordered = list(names)
    block_of: dict[str, tuple[str, int]] = {}
    stack_sizes: dict[str, int] = {}  # in order of first appearance
    for name in ordered:
        found = _BLOCK.search(name)
        if found is None:
            continue
        stack = name[: found.start(1)]
        index = int(found.group(1))
        block_of[name] = (stack, index)
        stack_sizes[stack] = max(stack_sizes.get(stack, 0), index + 1)

    offsets: dict[str, int] = {}
    total = 0
    for stack, size in stack_sizes.items():
        offsets[stack] = total
        total += size

    last_block_position = max((i for i, name in enumerate(ordered) if name in block_of), default=-1)
    positions: dict[str, int] = {}
    previous_block_id = 0
    for position, name in enumerate(ordered):
        if name in block_of:
            stack, index = block_of[name]
            previous_block_id = offsets[stack] + index + 1
            positions[name] = previous_block_id
        elif _EMBEDDING_SEGMENT.search(name):
            positions[name] = 0
        elif position > last_block_position:
            positions[name] = _AFTER_LAST_BLOCK
        else:
            positions[name] = previous_block_id
    return LayerMap(positions=positions, num_layers=total)
