"""YAML as recipes need it: every problem is a ConfigError naming the file, line and key.

PyYAML's safe loader keeps the last of two equal keys without a word, and takes `3:` or `on:` as
keys of another type (an int, a bool); both are mistakes in a recipe, so both are refused here,
with the line. JSON is YAML, so presets files and JSON values on the command line come through here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate and non-string keys."""


class _KeyProblem(yaml.MarkedYAMLError):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merges first, as SafeLoader does
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise _KeyProblem(problem=f"key {key!r} is not text (YAML read it as {type(key).__name__}); "
                              f"quote it: '{key_node.value}'", problem_mark=key_node.start_mark)
        if key in seen:
            raise _KeyProblem(problem=f"key '{key}' is given twice (lines {seen[key]} and {line}); "
                              "keep one", problem_mark=key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(text: str, *, path: str | None = None, key: str | None = None) -> Any:
    """Parse YAML (or JSON) text; a syntax error, a duplicate key or a non-text key is one ConfigError."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or "invalid YAML"
        kind = "" if isinstance(err, _KeyProblem) else "invalid YAML: "
        hint = None if path else "a list is written [a, b], a mapping {key: value}; quote the whole value in the shell"
        raise ConfigError(f"{kind}{problem}", path=path, line=line, key=key, hint=hint) from None


def read(path: str | Path, *, key: str | None = None, what: str = "file") -> Any:
    """A YAML/JSON file: missing, a folder, unreadable, not UTF-8 or malformed are one ConfigError each."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory, expected a file" if path.is_dir() else f"{what} not found"
        raise ConfigError(problem, path=str(path), key=key, hint="check the path")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the {what} ({err.strerror or err})", path=str(path), key=key,
                          hint="check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: editors on Windows may start the file with a byte-order mark
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} is not UTF-8 text (byte 0x{raw[err.start]:02x})", path=str(path),
                          line=raw[:err.start].count(b"\n") + 1, key=key, hint="re-save it as UTF-8") from None
    return load(text, path=str(path), key=key)
