"""Reading YAML and JSON documents safely, with errors that name the file and the line.

YAML is only ever read with a safe loader (no tags that build Python objects), and a mapping that
repeats a key is an error rather than a silent "last one wins". Aliases are counted before any Python
object is built: 422 bytes of nested aliases name 43 million nodes, and anything that walks them (an
error message's `repr`, a JSON dump, a deep copy) ran for a minute and ended in `MemoryError`. libyaml
reads the text when it is installed (about eight times faster than PyYAML's pure-Python loader); a
document it refuses is read again by the pure-Python loader, whose messages are the fuller ones.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
# Nodes a YAML document may hold, each alias counted as a copy of what it names: a real spec or run config
# holds a few thousand; a spec that lists 50,000 parameter names about 50,000, and one at `MAX_PATTERNS`
# (100,000) a few more. Composing costs about 7 us a node (2 cores), so a document at the limit composes in
# about 1.4 s; one beyond it is refused after counting, at about 1.2 us a node.
MAX_YAML_NODES = 200_000
# A document libyaml refuses is read again by the pure-Python loader for its fuller message, when it is at
# most this long: that loader is about eight times slower, seconds on a document of megabytes.
_MAX_REREAD_CHARS = 256 * 1024
# The largest YAML or JSON file read: a spec listing every parameter name of a 50,000-tensor model is about
# 2.5 MB. A run config may hold such a spec inline, so it has the same limit.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


class DocumentError(ValueError):
    """A YAML or JSON document that could not be read; the message names the source and the line.

    Args:
        source: The file or a name for the text.
        detail: What is wrong, with the line and column where known.
    """

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: {detail}")


class DocumentTooLargeError(DocumentError):
    """A file over the size limit.

    Args:
        source: The file.
        size: Its size in bytes, when known (a file whose ``stat`` says 0 is known only to be larger).
        max_bytes: The limit.
    """

    def __init__(self, source: str, size: int | None, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        if size is None:
            super().__init__(source, f"the file holds more than the {max_bytes:,} bytes allowed")
        else:
            super().__init__(source, f"the file is {size:,} bytes, more than the {max_bytes:,} allowed")


class _UniqueKeyConstructor(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor, refusing mappings that repeat a key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # e.g. `!!set` on a scalar: PyYAML's own error
            return super().construct_mapping(node, deep=deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let PyYAML raise its own marked error
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyConstructor.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyConstructor.construct_mapping
)


class _Yaml12Resolver(yaml.resolver.Resolver):
    """YAML 1.2 booleans and floats.

    PyYAML follows YAML 1.1, where ``no`` is False (so ``save_strategy: no`` breaks) and ``2e-5`` is a
    string; YAML 1.2 reads ``no`` as a string and ``2e-5`` as a number, as people expect.
    """


_YAML_11_ONLY = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
_Yaml12Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_11_ONLY]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
_Yaml12Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


class _PythonLoader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _UniqueKeyConstructor,
    _Yaml12Resolver,
):
    """The pure-Python loader: slow, with the most helpful messages."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _UniqueKeyConstructor.__init__(self)
        _Yaml12Resolver.__init__(self)


_LibyamlLoader: type | None = None
if yaml.__with_libyaml__:

    class _LibyamlLoader(yaml.cyaml.CParser, _UniqueKeyConstructor, _Yaml12Resolver):  # type: ignore[no-redef]
        """The same loader over libyaml's parser, about eight times faster."""

        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            _UniqueKeyConstructor.__init__(self)
            _Yaml12Resolver.__init__(self)


class _NodeGraphError(ValueError):
    """A YAML node graph that must not become Python objects; the message gives the line."""

    def __init__(self, node: yaml.Node | yaml.Event, problem: str) -> None:
        mark = node.start_mark
        super().__init__(f"line {mark.line + 1}, column {mark.column + 1}: {problem}")


_TOO_MANY_NODES = (
    f"the document holds more than {MAX_YAML_NODES:,} nodes (MAX_YAML_NODES), counting each alias as a copy of what "
    "it names"
)
_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def _check_node_count(loader_class: type, text: str) -> None:
    """Refuse a document of more than `MAX_YAML_NODES` nodes before composing it, from its parser's events.

    Composing builds a Python object per node, about six times the cost of the event: a 4 MiB flow list of
    two million nodes took 11 s and 500 MB to compose, and is refused here after 200,000 events.
    """
    loader = loader_class(text)
    try:
        count = 0
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, _NODE_EVENTS):
                count += 1
                if count > MAX_YAML_NODES:
                    raise _NodeGraphError(event, f"{_TOO_MANY_NODES}; write a shorter document")
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand it beyond `MAX_YAML_NODES` nodes, or that contains itself.

    An alias shares the node it names, so a few hundred bytes of nested aliases compose to a small graph
    that expands to billions of nodes in anything that walks it (a `repr`, a JSON dump, a deep copy).
    Counting with memoisation costs one visit per distinct node, before any Python object is built.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        if children_counted:
            on_path.discard(id(node))
            size = min(1 + sum(sizes[id(child)] for child in _children(node)), MAX_YAML_NODES + 1)
            if size > MAX_YAML_NODES:
                raise _NodeGraphError(
                    node, f"{_TOO_MANY_NODES} (nested aliases: a YAML alias bomb?); write out fewer aliases"
                )
            sizes[id(node)] = size
        elif id(node) in on_path:
            raise _NodeGraphError(node, "a recursive alias: the node contains itself")
        elif id(node) not in sizes:
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _load_with(loader_class: type, text: str) -> Any:
    _check_node_count(loader_class, text)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _DuplicateJsonKey(ValueError):
    pass


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateJsonKey(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` with the safe loader.

    Args:
        text: The document.
        source: What to call the document in errors (a path, ``"<string>"``).

    Returns:
        The plain Python data (dicts, lists, strings, numbers, booleans, None).

    Raises:
        DocumentError: The text is not valid YAML, repeats a key, nests too deeply, holds an alias that
            contains itself, or holds more than `MAX_YAML_NODES` nodes counting each alias as a copy of
            what it names.
    """
    if _LibyamlLoader is not None:
        try:
            return _load_with(_LibyamlLoader, text)
        except _NodeGraphError as error:
            raise DocumentError(source, str(error)) from None
        except Exception as error:  # read again below, for PyYAML's fuller, marked message
            if "maximum nesting depth" in str(error):  # which the pure-Python loader takes seconds to give
                raise DocumentError(source, "the YAML document nests too deeply") from None
            if len(text) > _MAX_REREAD_CHARS:
                raise _document_error(source, error) from None
    try:
        return _load_with(_PythonLoader, text)
    except Exception as error:
        raise _document_error(source, error) from None


def _document_error(source: str, error: Exception) -> DocumentError:
    """The `DocumentError` for what a YAML loader raised, with the line where the error has one."""
    if isinstance(error, _NodeGraphError):
        return DocumentError(source, str(error))
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = error.problem or error.context or "invalid YAML"
        return DocumentError(source, f"{line}: not valid YAML: {problem}" if line else f"not valid YAML: {problem}")
    if isinstance(error, yaml.YAMLError):
        return DocumentError(source, f"not valid YAML: {error}")
    if isinstance(error, RecursionError):
        return DocumentError(source, "the YAML document nests too deeply")
    # PyYAML's constructors fail in their own ways on some explicit tags
    return DocumentError(source, f"not valid YAML: {type(error).__name__}: {error}")


def parse_json(text: str, source: str) -> Any:
    """Parse JSON ``text``; the same contract as `parse_yaml`."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
    except json.JSONDecodeError as error:
        raise DocumentError(source, f"line {error.lineno}, column {error.colno}: not valid JSON: {error.msg}") from None
    except _DuplicateJsonKey as error:
        raise DocumentError(source, f"not valid JSON: {error}") from None
    except RecursionError:
        raise DocumentError(source, "the JSON document nests too deeply") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise DocumentError(source, f"not valid JSON: {error}") from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_a_regular_file(mode: int) -> str | None:
    """What a file of ``mode`` is when it is not a regular file (``a FIFO (named pipe)``), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for is_kind, kind in _FILE_KINDS if is_kind(mode)), "not a regular file")


def read_text_bounded(path: str | os.PathLike[str], max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes, reading at most ``max_bytes + 1``.

    ``stat`` alone does not bound a read: ``/dev/zero`` and ``/dev/urandom`` (or a link to them) have size 0
    and never end, so a whole read ran to 23.7 GB, and opening a FIFO blocks until someone writes to it. So
    the file is opened without blocking (``O_NONBLOCK``), the opened descriptor is checked to be a regular file
    (``fstat``, so a file swapped after a check is still caught), and at most one byte past the limit is read,
    which also bounds a regular file whose ``stat`` size says 0 (``/proc``).

    Args:
        path: The file.
        max_bytes: The largest size accepted.

    Returns:
        The text.

    Raises:
        DocumentError: The file is missing, unreadable, not a regular file (a directory, a FIFO, a device, a
            socket), over ``max_bytes`` (a `DocumentTooLargeError`), or not UTF-8.
    """
    source = os.fspath(path)
    try:
        kind = _not_a_regular_file(os.stat(source).st_mode)  # before opening: opening a device can act
        if kind is not None:
            raise DocumentError(source, f"is {kind}, expected a regular file")
        descriptor = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise DocumentError(source, "no such file") from None
    except OSError as error:
        raise DocumentError(source, f"cannot be read: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        kind = _not_a_regular_file(status.st_mode)
        if kind is not None:
            raise DocumentError(source, f"is {kind}, expected a regular file")
        if status.st_size > max_bytes:
            raise DocumentTooLargeError(source, status.st_size, max_bytes)
        try:
            data = file.read(max_bytes + 1)
        except OSError as error:
            raise DocumentError(source, f"cannot be read: {error.strerror}") from None
    if len(data) > max_bytes:
        raise DocumentTooLargeError(source, None, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError(source, "not UTF-8 text") from None


def load_document(path: str | os.PathLike[str], max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Read a ``.yaml``/``.yml`` or ``.json`` file of at most ``max_bytes`` bytes.

    Args:
        path: The file; its suffix decides the format.
        max_bytes: The largest file accepted (see `read_text_bounded`).

    Returns:
        The plain Python data it holds.

    Raises:
        DocumentError: The file is missing, unreadable, not a regular file, over ``max_bytes``, not UTF-8, of
            another suffix, empty, or not valid YAML/JSON (the message gives the line).
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in YAML_SUFFIXES + JSON_SUFFIXES:
        raise DocumentError(str(file), f"expected a .yaml, .yml or .json file, got suffix {suffix or '(none)'!r}")
    text = read_text_bounded(file, max_bytes)
    data = parse_json(text, str(file)) if suffix in JSON_SUFFIXES else parse_yaml(text, str(file))
    if data is None:
        raise DocumentError(str(file), "the file is empty")
    return data
