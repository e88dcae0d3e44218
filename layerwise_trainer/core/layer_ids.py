"""Layer ids for layer-wise learning-rate decay, read from parameter names.

A transformer block is found from a name segment pair ``<container>.<index>`` where the container is
one of ``layer``, ``layers``, ``h``, ``blocks``, ``block`` or ``albert_layer_groups`` (the first such
pair in the name counts, so T5's ``encoder.block.3.layer.0`` is block 3). Staged models hold their blocks
inside stages: Swin's ``encoder.layers.<stage>.blocks.<block>`` is block ``<block>`` of stage ``<stage>``
(a ``blocks`` pair inside another pair makes the outer one a stage), and ConvNeXt's
``encoder.stages.<stage>.layers.<block>`` likewise; each block gets its own id, counted through the
stages in order, and a stage's own parameters (Swin's ``downsample``) sit between its blocks and the next
stage's.

A **stack** is one sequence of blocks: the path before the block index with stage indices written ``*``
(``model.vision_tower.encoder.layers``, ``model.language_model.layers``, ``encoder.block``,
``decoder.block``, ``swin.encoder.layers.*.blocks``). A model with several stacks (an encoder and a
decoder; a vision tower and a language model) numbers them one after the other in the order their
parameters appear: the *joined* ids, `LayerMap.layer_id_of`. With ``L`` blocks in all:

- embeddings, and anything before the first block, have id 0 (a name segment containing ``embed``
  marks an embedding wherever it sits: DeBERTa's ``rel_embeddings``, BART's ``layernorm_embedding``);
- block ``i`` of the stacks in order has id ``i + 1``;
- anything between two stacks (T5's ``encoder.final_layer_norm``) shares the id of the block just
  before it;
- anything after the last block (final norm, pooler, head) has id ``L + 1``.

Ids *within one stack* (`LayerMap.layer_id_in`) follow the same rules with that stack's blocks alone:
its block ``i`` has id ``i + 1``, what comes before its first block (or is an embedding) 0, what comes
after its last block ``L_stack + 1``. For a model with one stack both numberings are the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

BLOCK_CONTAINERS = ("layer", "layers", "h", "blocks", "block", "albert_layer_groups")
_BLOCK = re.compile(r"(?:^|\.)(" + "|".join(BLOCK_CONTAINERS) + r")\.(\d+)(?=\.|$)")
# The container of blocks nested inside a stage (Swin's ``layers.<stage>.blocks.<block>``).
_STAGED_BLOCKS = "blocks"
_INDEX_SEGMENT = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")
_EMBEDDING_SEGMENT = re.compile(r"(?:^|\.)[^.]*embed[^.]*(?=\.|$)", re.IGNORECASE)

# Layer-id markers for parameters outside the blocks, resolved against the number of blocks.
_AFTER_LAST_BLOCK = -1


@dataclass(frozen=True)
class LayerMap:
    """Where each parameter sits in the block structure of a model.

    Args:
        positions: Parameter name -> joined layer id, with ``-1`` standing for "after the last block"
            (its id depends on the number of blocks, which a group may override).
        num_layers: ``L``, the number of blocks detected in all stacks.
        stacks: Stack path -> its number of blocks, in the order the stacks appear.
        blocks: Parameter name -> (stack path, block id within the stack), for the parameters in a block.
        order: Every parameter name, in the model's order.

    Example:
        ```python
        layers = detect_layers(name for name, _ in model.named_parameters())
        layers.layer_id_of("bert.encoder.layer.3.output.dense.weight")  # 4
        layers.stacks  # {"bert.encoder.layer": 12}
        ```
    """

    positions: Mapping[str, int]
    num_layers: int
    stacks: Mapping[str, int] = field(default_factory=dict)
    blocks: Mapping[str, tuple[str, int]] = field(default_factory=dict, repr=False)
    order: Sequence[str] = field(default=(), repr=False)
    # Computed on first use: ids within each stack, and each name's position in the model's order.
    _within: dict[str, Mapping[str, int]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _first_blocks: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def layer_id_of(self, name: str, num_layers: int | None = None) -> int:
        """The joined layer id of parameter ``name``; ``num_layers`` replaces the detected ``L``."""
        position = self.positions[name]
        if position == _AFTER_LAST_BLOCK:
            return (self.num_layers if num_layers is None else num_layers) + 1
        return position

    def layer_ids_of(self, names: Iterable[str], num_layers: int | None = None) -> list[int]:
        """`layer_id_of` of each of ``names``, looked up in one pass."""
        after_last = (self.num_layers if num_layers is None else num_layers) + 1
        return _with_after_last(map(self.positions.__getitem__, names), after_last)

    def stack_of(self, name: str) -> str | None:
        """The stack of the block parameter ``name`` is in; None for a parameter outside the blocks."""
        block = self.blocks.get(name)
        return None if block is None else block[0]

    def layer_id_in(self, stack: str, name: str, num_layers: int | None = None) -> int:
        """The layer id of parameter ``name`` counted within ``stack``; ``num_layers`` replaces its ``L``.

        Example:
            ```python
            layers.layer_id_in("decoder.block", "decoder.block.0.layer.0.SelfAttention.q.weight")  # 1
            ```
        """
        position = self._positions_in(stack)[name]
        if position == _AFTER_LAST_BLOCK:
            return (self.stacks[stack] if num_layers is None else num_layers) + 1
        return position

    def layer_ids_in(self, stack: str, names: Iterable[str], num_layers: int | None = None) -> list[int]:
        """`layer_id_in` of each of ``names``, looked up in one pass."""
        after_last = (self.stacks[stack] if num_layers is None else num_layers) + 1
        return _with_after_last(map(self._positions_in(stack).__getitem__, names), after_last)

    def _positions_in(self, stack: str) -> Mapping[str, int]:
        """Each parameter's position counted within ``stack`` (computed once per stack)."""
        if stack not in self._within:
            if len(self.stacks) == 1:  # the one stack's blocks are all the blocks: the joined positions
                self._within[stack] = self.positions
            else:
                own = {each: block_id for each, (block_stack, block_id) in self.blocks.items() if block_stack == stack}
                self._within[stack] = MappingProxyType(_positions_within(self.order, own))
        return self._within[stack]

    def home_stack(self, name: str, among: Sequence[str]) -> str:
        """Which of the stacks ``among`` a parameter belongs to.

        A block's own stack when it is among them; otherwise the stack whose path shares the most leading
        segments with the name (``model.vision_tower.post_layernorm`` goes with
        ``model.vision_tower.encoder.layers``); on a tie, the stack whose blocks come last before the
        parameter (a projector after the vision tower goes with it, ``lm_head`` with the language model),
        or the first stack for a parameter before every block (T5's ``shared``).
        """
        own = self.stack_of(name)
        if own in among:
            return own  # type: ignore[return-value]  # among holds strings only
        shared = {stack: _shared_segments(stack, name) for stack in among}
        most = max(shared.values())
        candidates = [stack for stack in among if shared[stack] == most]
        if len(candidates) == 1:
            return candidates[0]
        position = self._position_of(name)
        before = [stack for stack in candidates if self._first_block_position(stack) < position]
        if not before:
            return min(candidates, key=self._first_block_position)
        return max(before, key=self._first_block_position)

    def stack_labels(self) -> dict[str, str]:
        """Short names of the stacks: their paths from where they part, as few segments as keep them apart.

        Example:
            ```python
            detect_layers(t5_names).stack_labels()  # {"encoder.block": "encoder", "decoder.block": "decoder"}
            ```
        """
        return _short_labels(list(self.stacks))

    def _position_of(self, name: str) -> int:
        if not self._index:
            self._index.update((each, index) for index, each in enumerate(self.order))
        return self._index[name]

    def _first_block_position(self, stack: str) -> int:
        if not self._first_blocks:
            for name, (own, _) in self.blocks.items():
                self._first_blocks.setdefault(own, self._position_of(name))  # blocks are in the model's order
        return self._first_blocks[stack]


def _with_after_last(positions: Iterable[int], after_last: int) -> list[int]:
    return [after_last if position == _AFTER_LAST_BLOCK else position for position in positions]


def _shared_segments(stack: str, name: str) -> int:
    count = 0
    for stack_segment, name_segment in zip(stack.split("."), name.split("."), strict=False):
        if stack_segment != name_segment and not (stack_segment == "*" and name_segment.isdigit()):
            break
        count += 1
    return count


def _short_labels(stacks: list[str]) -> dict[str, str]:
    paths = [[segment for segment in stack.split(".") if segment != "*"] for stack in stacks]
    common = 0
    while len(paths) > 1 and all(len(path) > common + 1 for path in paths) and len({p[common] for p in paths}) == 1:
        common += 1
    rests = [path[common:] for path in paths]
    for length in range(1, max((len(rest) for rest in rests), default=0) + 1):
        labels = [".".join(rest[:length]) for rest in rests]
        if len(set(labels)) == len(labels):
            return dict(zip(stacks, labels, strict=True))
    return {stack: stack for stack in stacks}


def _block_pairs(names: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Parameter name -> (the concrete path before its block index, the index), for parameters in a block.

    The names of one block share their pair: it is built once per ``<path>.<index>``, and looked up for the
    rest (at 50,000 names in 24 blocks, a fifth less time than building it for every name; with each block
    numbered once in `_number_blocks`, `detect_layers` takes about a quarter less).
    """
    first: dict[str, tuple[str, int]] = {}
    inner: dict[str, tuple[str, int]] = {}  # a ``blocks`` pair inside the first pair: the first pair is a stage
    pairs: dict[str, tuple[str, int]] = {}  # "<path>.<index>" -> (path, index)
    for name in names:
        block = _BLOCK.search(name)
        if block is None:
            continue
        pair = pairs.get(name[: block.end()])
        first[name] = pair if pair is not None else _pair(name, block, pairs)
        if name.find(_STAGED_BLOCKS + ".", block.end()) >= 0:
            nested = [pair for pair in _BLOCK.finditer(name, block.end()) if pair.group(1) == _STAGED_BLOCKS]
            if nested:
                inner[name] = _pair(name, nested[0], pairs)
    stage_containers = {first[name][0] for name in inner}
    if not stage_containers:
        return first
    found: dict[str, tuple[str, int]] = {}
    for name, pair in first.items():
        if pair[0] in stage_containers:
            if name not in inner:
                continue  # a stage's own parameter (Swin's downsample), outside its blocks
            pair = inner[name]
        found[name] = pair
    return found


def _pair(name: str, block: re.Match[str], pairs: dict[str, tuple[str, int]]) -> tuple[str, int]:
    head = name[: block.end()]
    pair = pairs.get(head)
    if pair is None:
        pair = pairs[head] = (name[: block.start(2) - 1], int(block.group(2)))
    return pair


def _number_blocks(names: Sequence[str]) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
    """Each block parameter's (stack, id within the stack), and each stack's number of blocks."""
    pairs = _block_pairs(names)
    distinct = dict.fromkeys(pairs.values())  # each block once, in order of appearance
    stack_of: dict[str, str] = {}  # concrete path -> its stack: stage indices written "*"
    segment_sizes: dict[str, dict[str, int]] = {}  # stack -> concrete path -> blocks, in order of appearance
    for concrete, index in distinct:
        if concrete not in stack_of:
            stack_of[concrete] = _INDEX_SEGMENT.sub("*", concrete)
        sizes = segment_sizes.setdefault(stack_of[concrete], {})
        if sizes.get(concrete, 0) <= index:
            sizes[concrete] = index + 1
    offsets: dict[str, int] = {}
    stacks: dict[str, int] = {}
    for stack, sizes in segment_sizes.items():
        total = 0
        for concrete, size in sizes.items():
            offsets[concrete] = total
            total += size
        stacks[stack] = total
    block_of = {pair: (stack_of[pair[0]], offsets[pair[0]] + pair[1] + 1) for pair in distinct}
    return dict(zip(pairs, map(block_of.__getitem__, pairs.values()), strict=True)), stacks


def _positions_within(ordered: Sequence[str], block_ids: Mapping[str, int]) -> dict[str, int]:
    """Layer ids by the module docstring's rules, counting only the blocks that ``block_ids`` gives an id."""
    last_block_position = next((i for i in range(len(ordered) - 1, -1, -1) if ordered[i] in block_ids), -1)
    positions: dict[str, int] = {}
    previous_block_id = 0
    for position, name in enumerate(ordered):
        if name in block_ids:
            previous_block_id = block_ids[name]
            positions[name] = previous_block_id
        elif _EMBEDDING_SEGMENT.search(name):
            positions[name] = 0
        elif position > last_block_position:
            positions[name] = _AFTER_LAST_BLOCK
        else:
            positions[name] = previous_block_id
    return positions


def detect_layers(names: Iterable[str]) -> LayerMap:
    """Give every parameter name a layer id (see the module docstring for the rules).

    Args:
        names: Parameter names in the model's order (``model.named_parameters()``).

    Returns:
        The `LayerMap`; its ``num_layers`` is 0 when no block was found.
    """
    ordered = tuple(names)
    blocks, stacks = _number_blocks(ordered)
    stack_offsets: dict[str, int] = {}
    total = 0
    for stack, size in stacks.items():
        stack_offsets[stack] = total
        total += size
    joined_of = {block: stack_offsets[block[0]] + block[1] for block in set(blocks.values())}
    joined = dict(zip(blocks, map(joined_of.__getitem__, blocks.values()), strict=True))
    return LayerMap(
        positions=_positions_within(ordered, joined),
        num_layers=total,
        stacks=MappingProxyType(stacks),
        blocks=MappingProxyType(blocks),
        order=ordered,
    )
