"""Rows of a matrix as a group of their own: new vocabulary rows with their own rate, warm-up and weight decay.

A fine-tune that adds tokens wants the new rows of the embedding (and of an untied LM head) to learn fast while
the pretrained rows stay frozen or move slowly. Zeroing the old rows' gradient is the usual trick, and it is
wrong under AdamW: decoupled weight decay still shrinks them, and momentum from earlier steps still moves them.
So a group with ``rows`` takes rows of the 2-D parameters its patterns match, not the parameters: the optimizer
gets one tensor per contiguous range of rows, a view that shares the matrix's memory (``weight.detach()[a:b]``),
so its step changes those rows and nothing else, and its state (Adam's moments) has those rows' shape. The rest
of the matrix belongs to whichever group matches the parameter, as it would without the row group: views of the
other rows in that group, or in no optimizer at all when that group is frozen.

A row group does not take its parameters the way a group does (first match wins): its patterns choose the
matrices, its ``rows`` the rows, and the parameter still matches the later groups for its other rows.

Rows are written three ways:

- ``rows: new``: the rows added since the model's original vocabulary, from the vocabulary size in the config of
  the checkpoint the model was loaded from (the adapter reads it; see `OriginalVocabulary`) to the end;
- ``rows: {from: N}``: rows N to the end;
- a list of row indices and half-open ``[start, stop]`` ranges (as Python's ``range``): ``[[32000, 32004], 32010]``
  takes rows 32000 to 32003 and 32010.

Parsed here, at the boundary, into a `RowSelection` (explicit rows merged into sorted, disjoint ranges); resolved
against each matrix by `assign_rows`. Bounds keep a hostile spec cheap: at most `MAX_ROW_ITEMS` items are read
and at most `MAX_ROW_RANGES` ranges result, and a range is never expanded into its rows, so ``[[0, 10**12]]``
costs what ``[[0, 4]]`` does. This module imports neither torch nor transformers (parsing a spec imports neither).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SpecError, describe_value, whole_number_problem

if TYPE_CHECKING:
    from .spec import GroupSpec

NEW = "new"
# Ranges of all row groups together once resolved (each is one view and one optimizer tensor; a real spec has a
# few), and items one group may list before they are merged (indices listed one by one).
MAX_ROW_RANGES = 1_000
MAX_ROW_ITEMS = 100_000
# Far above any vocabulary; keeps a hostile spec from naming a 301-digit row.
MAX_ROW_INDEX = 10**12

RowRanges = tuple[tuple[int, int], ...]

_EXPECTED = (
    "'new', {from: N}, or a list of row indices and half-open [start, stop] ranges such as [[32000, 32004], 32010]"
)


@dataclass(frozen=True)
class RowSelection:
    """Which rows of a matrix a group takes, as the spec wrote them.

    Args:
        new: The rows added to the vocabulary: from ``start`` to the end of the matrix.
        start: For ``new``: the first new row (``{from: N}``); None to take the original vocabulary size of the
            checkpoint the model was loaded from.
        ranges: Explicit rows: sorted, disjoint, half-open ``(start, stop)`` ranges.

    Example:
        ```python
        assert RowSelection.parse([[32000, 32004], 32010, 32011]).ranges == ((32000, 32004), (32010, 32012))
        ```
    """

    new: bool = False
    start: int | None = None
    ranges: RowRanges = ()

    @classmethod
    def parse(cls, value: Any) -> RowSelection:
        """``rows`` as a spec gives it: ``"new"``, ``{"from": N}`` or a list of indices and ranges.

        Raises:
            SpecError: Anything else, located under ``rows`` (an item under ``rows[k]``): a negative index, a range
                whose start is not below its stop, more than `MAX_ROW_ITEMS` items or `MAX_ROW_RANGES` ranges.
        """
        if isinstance(value, RowSelection):
            return value
        if value == NEW:
            return cls(new=True)
        if isinstance(value, Mapping):
            if set(value) != {"from"}:
                raise SpecError(f"expected {_EXPECTED}, got {describe_value(value)}", path=("rows",))
            return cls(new=True, start=_row_index(value["from"], ("rows", "from")))
        if isinstance(value, (list, tuple)) and value:
            if len(value) > MAX_ROW_ITEMS:
                raise SpecError(
                    f"{len(value):,} items, more than the {MAX_ROW_ITEMS:,} allowed (MAX_ROW_ITEMS); write "
                    "contiguous rows as one [start, stop] range",
                    path=("rows",),
                )
            ranges = merged([_row_range(item, index) for index, item in enumerate(value)])
            check_range_count(len(ranges), ("rows",))
            return cls(ranges=ranges)
        raise SpecError(f"expected {_EXPECTED}, got {describe_value(value)}", path=("rows",))

    def to_spec(self) -> Any:
        """The selection as a spec writes it."""
        if self.new:
            return NEW if self.start is None else {"from": self.start}
        return [start if stop == start + 1 else [start, stop] for start, stop in self.ranges]


def _row_index(value: Any, path: tuple[str, ...]) -> int:
    problem = whole_number_problem(value, minimum=0, maximum=MAX_ROW_INDEX)
    if problem is not None:
        raise SpecError(f"expected a row index, {problem}, got {describe_value(value)}", path=path)
    return int(value)


def _row_range(item: Any, index: int) -> tuple[int, int]:
    path = ("rows", f"[{index}]")
    if isinstance(item, (list, tuple)):
        if len(item) != 2:
            raise SpecError(
                f"expected a range [start, stop] (half-open, as Python's range), got {describe_value(item)}",
                path=path,
            )
        start, stop = _row_index(item[0], path), _row_index(item[1], path)
        if start >= stop:
            raise SpecError(
                f"expected a range [start, stop] with start < stop (half-open, as Python's range: [{start}, "
                f"{start + 1}] is row {start} alone), got {describe_value(item)}",
                path=path,
            )
        return start, stop
    start = _row_index(item, path)
    return start, start + 1


def merged(ranges: Sequence[tuple[int, int]]) -> RowRanges:
    """Half-open ranges sorted, with overlapping and adjacent ones joined.

    Example:
        ```python
        assert merged([(4, 6), (0, 2), (2, 3)]) == ((0, 3), (4, 6))
        ```
    """
    result: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if result and start <= result[-1][1]:
            result[-1] = (result[-1][0], max(stop, result[-1][1]))
        else:
            result.append((start, stop))
    return tuple(result)


def complement(ranges: RowRanges, num_rows: int) -> RowRanges:
    """The rows of ``range(num_rows)`` outside ``ranges`` (sorted and disjoint), as ranges.

    Example:
        ```python
        assert complement(((2, 4),), 6) == ((0, 2), (4, 6))
        ```
    """
    result, position = [], 0
    for start, stop in ranges:
        if start > position:
            result.append((position, start))
        position = max(position, stop)
    if position < num_rows:
        result.append((position, num_rows))
    return tuple(result)


def row_count(ranges: RowRanges) -> int:
    """How many rows ``ranges`` hold."""
    return sum(stop - start for start, stop in ranges)


def row_entry_name(name: str, start: int, stop: int) -> str:
    """The name of one range of a matrix's rows, in checkpoint layouts and resume reports: ``name[start:stop]``."""
    return f"{name}[{start}:{stop}]"


def describe_ranges(ranges: RowRanges, shown: int = 3) -> str:
    """``32000:32004, 32010`` (half-open ranges, single rows as their index), the first ``shown`` and how many more."""
    parts = [str(start) if stop == start + 1 else f"{start}:{stop}" for start, stop in ranges[:shown]]
    more = f" and {len(ranges) - shown} more ranges" if len(ranges) > shown else ""
    return ", ".join(parts) + more


def check_range_count(count: int, path: tuple[str, ...], group: str | None = None) -> None:
    """Refuse more than `MAX_ROW_RANGES` ranges of rows."""
    if count > MAX_ROW_RANGES:
        raise SpecError(
            f"{count:,} ranges of rows, more than the {MAX_ROW_RANGES:,} allowed (MAX_ROW_RANGES): each range is "
            "one tensor in the optimizer; take contiguous rows",
            path=path,
            group=group,
        )


@dataclass(frozen=True)
class OriginalVocabulary:
    """How many rows the model's vocabulary had before tokens were added, and where that was read.

    Args:
        size: The original vocabulary size (``vocab_size``).
        source: Where it was read, for messages (the checkpoint the model was loaded from).
    """

    size: int
    source: str


@dataclass(frozen=True)
class RowMatrix:
    """A matrix a row group's patterns matched.

    Args:
        name: The parameter's name.
        aliases: Every name it goes by (tied weights have several).
        shape: Its whole shape.
    """

    name: str
    aliases: tuple[str, ...]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RowAssignment:
    """Which rows of which matrices the row groups take, and what is left of each matrix for the other groups.

    Args:
        taken: Row group index (in ``groups``) -> parameter name -> its rows.
        rest: Parameter name -> the rows no row group takes (empty when row groups take every row).
    """

    taken: Mapping[int, Mapping[str, RowRanges]]
    rest: Mapping[str, RowRanges]


def _resolve(
    selection: RowSelection, matrix: RowMatrix, original: OriginalVocabulary | None, path: tuple[str, ...]
) -> RowRanges:
    """The rows ``selection`` takes of ``matrix``, checked against its row count."""
    num_rows = matrix.shape[0]
    if selection.new:
        if selection.start is not None:
            first, said = selection.start, f"rows from {selection.start}"
        elif original is None:
            raise SpecError(
                "rows: new takes the rows added since the model's original vocabulary, and that vocabulary's size "
                "is not known: the model was not loaded from a checkpoint whose config (config.name_or_path, read "
                "from this machine) gives its vocab_size; give the first new row instead: rows: {from: N}",
                path=(*path, "rows"),
            )
        else:
            first, said = original.size, f"rows added to the vocabulary of {original.source} ({original.size} rows)"
        if first >= num_rows:
            raise SpecError(
                f"{matrix.name!r} has {num_rows:,} rows, so there are no {said}; add the tokens and resize the "
                "embeddings first (model.resize_token_embeddings(len(tokenizer))), or give the rows",
                path=(*path, "rows"),
            )
        return ((first, num_rows),)
    beyond = [(start, stop) for start, stop in selection.ranges if stop > num_rows]
    if beyond:
        start, stop = beyond[0]
        raise SpecError(
            f"rows {describe_ranges(((start, stop),))} are out of range: {matrix.name!r} has {num_rows:,} rows "
            f"(0 to {num_rows - 1:,})",
            path=(*path, "rows"),
        )
    return selection.ranges


def _first_overlap(left: RowRanges, right: RowRanges) -> tuple[int, int] | None:
    """The first rows two sorted, disjoint range lists share, or None."""
    i = j = 0
    while i < len(left) and j < len(right):
        start, stop = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if start < stop:
            return start, stop
        if left[i][1] <= right[j][1]:
            i += 1
        else:
            j += 1
    return None


def assign_rows(
    groups: Sequence[GroupSpec],
    matched: Mapping[int, Sequence[RowMatrix]],
    original: OriginalVocabulary | None,
) -> RowAssignment:
    """Resolve every row group's rows against the matrices its patterns matched.

    Args:
        groups: The spec's groups.
        matched: Row group index -> the matrices its patterns matched, in model order.
        original: The model's original vocabulary, for ``rows: new``; None when it is not known.

    Returns:
        The `RowAssignment`.

    Raises:
        SpecError: Naming the group and ``rows``: a matrix that is not 2-D, rows out of range, ``rows: new`` when no
            new rows can be found, rows another row group takes too, more than `MAX_ROW_RANGES` ranges in all.
    """
    taken: dict[int, dict[str, RowRanges]] = {}
    claims: dict[str, list[tuple[int, RowRanges]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    count = 0
    for index, matrices in matched.items():
        group = groups[index]
        path = (f"groups[{index}]",)
        own: dict[str, RowRanges] = {}
        for matrix in matrices:
            try:
                if len(matrix.shape) != 2:
                    raise SpecError(
                        f"rows take rows of 2-D matrices (an embedding, an LM head), and {matrix.name!r} has shape "
                        f"{list(matrix.shape)}; narrow the group's patterns to the matrices",
                        path=(*path, "rows"),
                    )
                ranges = _resolve(group.rows, matrix, original, path)
                for other, other_ranges in claims.get(matrix.name, ()):
                    shared = _first_overlap(other_ranges, ranges)
                    if shared is not None:
                        others = ", ".join(map(repr, matrix.aliases[1:]))
                        tied = f" (tied to {others})" if others else ""
                        raise SpecError(
                            f"rows {describe_ranges((shared,))} of {matrix.name!r}{tied} are taken by group "
                            f"{groups[other].name!r} too; a row belongs to one row group",
                            path=(*path, "rows"),
                        )
            except SpecError as error:
                raise error.within(group=group.name) from None
            count += len(ranges)
            check_range_count(count, (*path, "rows"), group.name)
            claims.setdefault(matrix.name, []).append((index, ranges))
            shapes[matrix.name] = matrix.shape
            own[matrix.name] = ranges
        taken[index] = own
    rest = {
        name: complement(merged([rows for _, ranges in owners for rows in ranges]), shapes[name][0])
        for name, owners in claims.items()
    }
    return RowAssignment(taken, rest)
