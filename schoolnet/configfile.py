"""Strict YAML reading with file:line:field errors, and the masked ``Secret`` type.

Every config in schoolnet (site inventory, collector config) is read through
:class:`MappingReader`: unknown keys, wrong types and missing required keys become
:class:`ConfigIssue` entries that name the file, the line and the dotted field path. A
loader collects *all* issues of a run and raises one :class:`ConfigError`, so
``schoolnet config check`` can report every problem at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more config problems; ``issues`` lists every one found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        # A shared value (a tenant default used by every device) is reported once.
        unique: dict[tuple[str, int, str], ConfigIssue] = {}
        for issue in sorted(issues):
            unique.setdefault((issue.file, issue.line, issue.message), issue)
        self.issues = list(unique.values())
        super().__init__("\n".join(str(i) for i in self.issues))


class Secret:
    """A credential that never shows itself in logs, ``repr`` or ``str``.

    Given inline (a plain string), or as a reference ``{env: NAME}`` or ``{file: PATH}``
    that is resolved when the config is loaded. Call :meth:`reveal` only where the value
    is handed to a library (SNMP engine, MQTT client, SMTP).
    """

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self._source = source

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    @property
    def source(self) -> str:
        """Where the value came from (``inline``, ``env:NAME``, ``file:PATH``); not secret."""
        return self._source

    def __repr__(self) -> str:
        return f"Secret(***, source={self._source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass
class IssueList:
    """Collects issues while a loader walks its files; also carries the load's options.

    ``resolve_secrets=False`` checks the shape of secret references without reading
    environment variables or files (the collector needs the inventory, not the SNMP
    credentials of every school).
    """

    issues: list[ConfigIssue] = field(default_factory=list)
    resolve_secrets: bool = True

    def add(self, node: Node | None, path: str, message: str, file: str = "") -> None:
        """Record an issue at ``node`` (its file and line) for field ``path``."""
        if node is not None:
            file = node.start_mark.name
            line = node.start_mark.line + 1
        else:
            line = 0
        self.issues.append(ConfigIssue(file, line, path, message))

    def raise_if_any(self) -> None:
        """Raise :class:`ConfigError` with everything collected, if anything was."""
        if self.issues:
            raise ConfigError(self.issues)


def compose_file(path: Path, issues: IssueList) -> Node | None:
    """Parse a YAML file into a node tree whose marks carry the file name and lines."""
    try:
        with path.open(encoding="utf-8") as f:
            node = yaml.compose(f, Loader=yaml.SafeLoader)
    except OSError as exc:
        issues.add(None, "", f"cannot read: {exc.strerror}", file=str(path))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 0
        msg = f"YAML syntax error: {exc.problem}"
        issues.issues.append(ConfigIssue(str(path), line, "", msg))
        return None
    except yaml.YAMLError as exc:
        issues.add(None, "", f"YAML error: {exc}", file=str(path))
        return None
    if node is None:
        issues.add(None, "", "file is empty", file=str(path))
    return node


def merge_nodes(base: Node | None, over: Node | None) -> Node | None:
    """Deep-merge two mapping nodes (``over`` wins), keeping each node's own mark.

    Used for tenant defaults under a site's own settings: an error in a merged value
    still points at the file and line it came from.
    """
    if base is None:
        return over
    if over is None:
        return base
    if not (isinstance(base, MappingNode) and isinstance(over, MappingNode)):
        return over
    merged: dict[str, tuple[Node, Node]] = {}
    for k, v in base.value:
        merged[str(k.value)] = (k, v)
    for k, v in over.value:
        key = str(k.value)
        if key in merged:
            merged[key] = (k, merge_nodes(merged[key][1], v) or v)
        else:
            merged[key] = (k, v)
    return MappingNode(over.tag, list(merged.values()), over.start_mark, over.end_mark)


_LOADER = yaml.SafeLoader("")


def _construct(node: ScalarNode) -> Any:
    """Resolve a scalar node to its Python value with YAML's safe rules."""
    return _LOADER.construct_object(node, deep=True)


_SECRET_FORMS = "a non-empty string, {env: NAME} or {file: PATH}"


class MappingReader:
    """Reads one YAML mapping strictly: typed getters, then :meth:`finish` flags leftovers.

    ``path`` is the dotted field path of this mapping (``devices[2].snmp``), used in
    every issue it reports.
    """

    def __init__(self, node: Node | None, path: str, issues: IssueList) -> None:
        self.node = node
        self.path = path
        self.issues = issues
        self.ok = True
        self._items: dict[str, tuple[Node, Node]] = {}
        self._used: set[str] = set()
        if node is None:
            return
        if not isinstance(node, MappingNode):
            issues.add(node, path or "(top level)", "must be a mapping")
            self.ok = False
            return
        for k, v in node.value:
            key = str(k.value)
            if key in self._items:
                issues.add(k, self.sub(key), "duplicate key")
            self._items[key] = (k, v)

    def sub(self, key: str) -> str:
        """The dotted path of ``key`` below this mapping."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """Whether ``key`` is present."""
        return key in self._items

    def node_of(self, key: str) -> Node | None:
        """The value node of ``key`` (marks it used), or None."""
        self._used.add(key)
        item = self._items.get(key)
        return item[1] if item else None

    def keys(self) -> Iterator[str]:
        """Keys present in this mapping."""
        return iter(self._items)

    def value(
        self,
        key: str,
        kind: type[T] | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        """A scalar of type ``kind``; a missing key without default is an issue.

        ``check`` returns an error message or None. On any issue the default (or None)
        is returned so loading can continue and report more.
        """
        node = self.node_of(key)
        if node is None:
            if default is ...:
                if self.ok and self.node is not None:
                    self.issues.add(self.node, self.sub(key), "is required")
                elif self.node is None:
                    self.issues.add(None, self.sub(key), "is required")
                return None
            return default
        if not isinstance(node, ScalarNode):
            self.issues.add(node, self.sub(key), f"must be a {_kind_name(kind)}")
            return None if default is ... else default
        val = _construct(node)
        if kind is float and isinstance(val, int) and not isinstance(val, bool):
            val = float(val)
        # YAML's true/false are ints to Python; a count given as `yes` is a mistake.
        ok = not (isinstance(val, bool) and kind in (int, float)) and isinstance(val, kind)
        if not ok:
            self.issues.add(node, self.sub(key), f"must be a {_kind_name(kind)}, not {val!r}")
            return None if default is ... else default
        if check is not None:
            err = check(val)
            if err:
                self.issues.add(node, self.sub(key), err)
                return None if default is ... else default
        return val

    def secret(self, key: str, required: bool = True) -> Secret | None:
        """A :class:`Secret`: inline string, ``{env: NAME}`` or ``{file: PATH}``."""
        node = self.node_of(key)
        path = self.sub(key)
        if node is None:
            if required:
                self.issues.add(self.node, path, f"is required ({_SECRET_FORMS})")
            return None
        if isinstance(node, ScalarNode):
            val = _construct(node)
            if not isinstance(val, str) or not val:
                self.issues.add(node, path, f"must be {_SECRET_FORMS}")
                return None
            return Secret(val)
        ref = MappingReader(node, path, self.issues)
        if not ref.ok:
            return None
        env = ref.value("env", str, None)
        fname = ref.value("file", str, None)
        ref.finish()
        if (env is None) == (fname is None):
            self.issues.add(node, path, "give exactly one of env: or file:")
            return None
        if not self.issues.resolve_secrets:
            return Secret("", f"env:{env}" if env is not None else f"file:{fname}")
        if env is not None:
            got = os.environ.get(env)
            if not got:
                self.issues.add(node, path, f"environment variable {env} is not set")
                return None
            return Secret(got, f"env:{env}")
        try:
            got = Path(fname).read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.issues.add(node, path, f"cannot read secret file {fname}: {exc.strerror}")
            return None
        if not got:
            self.issues.add(node, path, f"secret file {fname} is empty")
            return None
        return Secret(got, f"file:{fname}")

    def mapping(self, key: str) -> MappingReader:
        """A nested mapping reader for ``key`` (empty if absent)."""
        return MappingReader(self.node_of(key), self.sub(key), self.issues)

    def sequence(self, key: str) -> list[Node]:
        """The item nodes of a sequence under ``key`` (empty if absent or wrong)."""
        node = self.node_of(key)
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            self.issues.add(node, self.sub(key), "must be a list")
            return []
        return list(node.value)

    def string_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A string or a list of strings under ``key``."""
        node = self.node_of(key)
        if node is None:
            return default
        if isinstance(node, ScalarNode):
            val = _construct(node)
            if isinstance(val, str) and val:
                return (val,)
        elif isinstance(node, SequenceNode):
            vals = [_construct(n) if isinstance(n, ScalarNode) else None for n in node.value]
            strings = tuple(v for v in vals if isinstance(v, str) and v)
            if len(strings) == len(vals):
                return strings
        self.issues.add(node, self.sub(key), "must be a string or a list of strings")
        return default

    def finish(self) -> None:
        """Report every key that no getter asked for as unknown."""
        for key, (knode, _) in self._items.items():
            if key not in self._used:
                self.issues.add(knode, self.sub(key), "unknown key")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean (true/false)"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def positive(val: float) -> str | None:
    """Check: a number > 0."""
    return None if val > 0 else "must be greater than 0"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    """Check: one of the given strings."""

    def check(val: Any) -> str | None:
        return None if val in choices else f"must be one of {', '.join(choices)}, not {val!r}"

    return check
