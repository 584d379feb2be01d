"""A suite file as text and YAML, and its problems as ``file:line: dotted.path: message`` lines.

- :func:`read_text`: the file as UTF-8 text; bytes that are not raise :class:`SuiteError` naming the
  offset, line and byte (never a traceback).
- :func:`compose`: the YAML node tree (lines of every key) or :class:`SuiteError` for invalid YAML
  (syntax, or a character YAML does not allow, with its line).
- :func:`duplicate_keys`: a key written twice in one mapping (YAML loaders silently keep the last),
  one problem naming the key's path and both lines.
- :func:`format_errors`: pydantic's errors on the file's lines, without pydantic's internals: the
  branch names of unions (``function-after[...]``, ``int``, ``list[int]``, a model's class name,
  the ``shape:`` tags of :func:`~harness.base.specbase.by_shape`, the ``kind`` tag of a registered
  union) are left out of the path, and the branches of one plain union that all failed at one place
  make one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.base.errors import HarnessError
from harness.base.specbase import SHAPE_TAG

# the names pydantic-core gives the branches of a plain union in an error's location
_BRANCH = re.compile(r"^(?:(?:int|float|str|bool|bytes|none|any|decimal|date|time|datetime|timedelta|url|uuid|complex"
                     r"|callable|definition-ref)$|(?:list|dict|set|frozenset|tuple|literal|nullable|union|tagged-union"
                     r"|json-or-python|lax-or-strict|is-instance|chain|function-(?:after|before|wrap|plain))\[.*\]$"
                     r"|[A-Z]\w*$)")


class SuiteError(HarnessError):
    """A suite file that cannot be used; ``problems`` lists every problem as 'file:line: path: message'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(problems))


def read_text(path: Path) -> str:
    """The file's text; raises :class:`SuiteError` when it cannot be read or is not UTF-8 (naming the
    first bad byte's offset and line)."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(source, [f"{source}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SuiteError(source, [f"{source}:{line}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                                  f"{exc.start} ({exc.reason}); a suite file is YAML in UTF-8"]) from None


def compose(text: str, source: str) -> tuple[Any, Any]:
    """``(node tree, data)`` of the YAML ``text``; raises :class:`SuiteError` for invalid YAML."""
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a control character, NUL...)
        line = text.count("\n", 0, exc.position) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise SuiteError(source, [f"{source}:{line}: invalid YAML: character {char} at offset {exc.position} "
                                  "is not allowed (control characters other than tab and newline are not)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SuiteError(source, [f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from None


def duplicate_keys(node: Any, source: str, path: tuple[Any, ...] = (), seen_nodes: set[int] | None = None) -> list[str]:
    """One problem per key written twice in one mapping of the tree, naming both lines (a node reached
    again through an alias is checked once)."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return []
    seen_nodes.add(id(node))
    out: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, key.value) in seen:
                    first = seen[(key.tag, key.value)]
                    where = ".".join(str(p) for p in (*path, key.value))
                    lines = f"on lines {first} and {line}" if first != line else f"on line {line}"
                    out.append(f"{source}:{line}: {where}: key {key.value!r} is written twice, {lines} (YAML "
                               "would keep only the last); keep one")
                else:
                    seen[(key.tag, key.value)] = line
            out += duplicate_keys(value, source, (*path, getattr(key, "value", "?")), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += duplicate_keys(item, source, (*path, i), seen_nodes)
    return out


def _line_of(node: Any, loc: tuple[Any, ...]) -> tuple[int | None, tuple[Any, ...], tuple[int | None, int] | None]:
    """Walk the tree along ``loc``: the deepest line found, loc without union tags, and where a plain
    union's branch name was first left out (the line then, and how many parts of the clean loc lead
    to it), or None."""
    line = node.start_mark.line + 1 if node is not None else None
    clean: list[Any] = []
    union: tuple[int | None, int] | None = None
    for part in loc:
        if isinstance(part, str) and part.startswith(SHAPE_TAG):
            continue
        if isinstance(part, str) and _BRANCH.match(part) and not (
                isinstance(node, yaml.MappingNode) and any(k.value == part for k, _ in node.value)):
            union = union or (line, len(clean))
            continue
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                kinds = [v.value for k, v in node.value if k.value == "kind"]
                if kinds and kinds[0] == part:  # pydantic's discriminated-union tag, not a key
                    continue
                clean.append(part)
                node = None
                continue
            clean.append(part)
            line, node = pair[0].start_mark.line + 1, pair[1]
            continue
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        clean.append(part)
    return line, tuple(clean), union


def line_of(root: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the key or item at ``loc`` in the YAML tree ``root`` (the deepest one found)."""
    return _line_of(root, loc)[0]


def format_errors(exc: ValidationError, source: str, root: Any = None) -> list[str]:
    """One line per problem: ``source:line: dotted.path: message`` (see the module docstring)."""
    lines: list[str] = []
    unions: dict[tuple[Any, ...], int] = {}  # a plain union's place -> its line in ``lines``
    for err in exc.errors():
        line, loc, union = _line_of(root, tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required key is missing"
        if union is not None:  # one line for every branch of the union, at the union's place
            line, depth = union
            inner = ".".join(str(p) for p in loc[depth:])
            msg, loc = (f"{inner}: {msg}" if inner else msg), loc[:depth]
            if loc in unions:
                lines[unions[loc]] += f"; or {msg}"
                continue
            unions[loc] = len(lines)
            msg = f"no allowed form fits: {msg}"
        where = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"{source}:{line}: {where}: {msg}" if line else f"{source}: {where}: {msg}")
    return lines


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, root: Any, source: str, problems: list[str]) -> M:
    """``data`` validated as ``model``; the YAML's own ``problems`` (duplicate keys) and every validation
    error, each with its file and line, raised together as one :class:`SuiteError`."""
    try:
        out = model.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(source, problems + format_errors(exc, source, root)) from None
    if problems:
        raise SuiteError(source, problems)
    return out
