"""The one exception every problem with a param-group spec raises."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


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
