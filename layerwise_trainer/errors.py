"""The one exception every problem with a param-group spec raises."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Sequence
from typing import Any

# reprlib visits at most `maxlist` items per level and `maxlevel` levels, so describing any value costs
# bounded time and memory, even a YAML alias graph that would expand to billions of nodes.
_BOUNDED_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_BOUNDED_REPR.maxlevel = 3
_BOUNDED_REPR.maxlist = _BOUNDED_REPR.maxtuple = _BOUNDED_REPR.maxdict = _BOUNDED_REPR.maxset = 4
_BOUNDED_REPR.maxstring = _BOUNDED_REPR.maxother = 40
_DESCRIBED_LENGTH = 60


class SpecError(ValueError):
    """A param-group spec that cannot be turned into a correct optimizer.

    The message names where the problem is (``groups[1].lr``), the group when it is known, what was
    found and what was expected.

    Args:
        detail: What is wrong and what was expected.
        path: Where in the spec, as a sequence of keys and indexes (``("groups[1]", "lr")``).
        group: The name of the group concerned, when known.
        source: The file or string the spec came from, when it came from one.

    Example:
        ```python
        try:
            parse_spec([{"name": "head", "match": "classifier.*", "lr": "fast"}])
        except SpecError as error:
            print(error)  # groups[0].lr (group 'head'): expected a finite number >= 0, got 'fast' (str)
        ```
    """

    def __init__(
        self, detail: str, *, path: Sequence[str] = (), group: str | None = None, source: str | None = None
    ) -> None:
        self.detail = detail
        self.path = tuple(path)
        self.group = group
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = ".".join(self.path).replace(".[", "[")
        if self.group is not None:
            where = f"{where} (group {self.group!r})" if where else f"group {self.group!r}"
        message = f"{where}: {self.detail}" if where else self.detail
        return f"{self.source}: {message}" if self.source else message

    def within(self, *prefix: str, group: str | None = None, source: str | None = None) -> SpecError:
        """The same error, located inside ``prefix`` (and ``group``/``source`` when it names none)."""
        return SpecError(
            self.detail,
            path=(*prefix, *self.path),
            group=self.group if self.group is not None else group,
            source=self.source if self.source is not None else source,
        )


def did_you_mean(word: str, candidates: Iterable[str], *, limit: int = 3) -> str:
    """A ``"; did you mean 'x'?"`` suffix for a misspelt ``word``, or ``""`` when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=limit, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(match) for match in matches) + "?"


def describe_value(value: Any) -> str:
    """A short, bounded description of a value for an error message: ``'fast' (str)``.

    The text is at most about 60 characters and is built without walking more than a few items of a
    nested value, so it is safe on hostile input.

    Example:
        ```python
        assert describe_value("fast") == "'fast' (str)"
        ```
    """
    try:
        text = _BOUNDED_REPR.repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        text = f"<{value.bit_length()}-bit integer>" if isinstance(value, int) else "<unprintable>"
    if len(text) > _DESCRIBED_LENGTH:
        text = text[: _DESCRIBED_LENGTH - 3] + "..."
    return f"{text} ({type(value).__name__})"


def some_names(names: Sequence[str], shown: int = 3, *, quoted: bool = True) -> str:
    """The first ``shown`` names and how many more: ``'a', 'b', 'c' and 4 more``.

    Args:
        names: The names.
        shown: How many to write out.
        quoted: Quote each name (for messages); tables for people leave the quotes out.

    Example:
        ```python
        assert some_names(["a", "b", "c", "d"], shown=2) == "'a', 'b' and 2 more"
        assert some_names(["a", "b", "c"], shown=2, quoted=False) == "a, b and 1 more"
        ```
    """
    text = ", ".join(repr(name) if quoted else name for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def whole_number_problem(value: Any, *, minimum: int = 1, maximum: int | None = None) -> str | None:
    """What a whole number in ``[minimum, maximum]`` should have been, or None when ``value`` is one.

    The one check behind every "a whole number" setting, in specs and run configs alike; each caller
    raises its own error with the text. Booleans are not numbers; ``12.0`` is the whole number 12.

    Example:
        ```python
        assert whole_number_problem(3) is None
        assert whole_number_problem(0) == "a whole number >= 1"
        assert whole_number_problem(11, maximum=10) == "a whole number from 1 to 10"
        ```
    """
    expected = f"a whole number >= {minimum}" if maximum is None else f"a whole number from {minimum} to {maximum:,}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return expected
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        return expected
    if value < minimum or (maximum is not None and value > maximum):
        return expected
    return None
