"""Values from YAML and the command line, converted to the declared type of their key.

Command-line values arrive as strings and PyYAML reads `3e-4` as a string (YAML 1.1), so
numbers, booleans and lists are parsed here by declared type rather than trusted to the parser.
A command-line value is read as YAML only where its key takes a list or a mapping: `--source_prefix
"[fix] "` stays the text it is. Keys of our dataclasses, `Seq2SeqTrainingArguments` and
`GenerationConfig` fields (by their documented types) are all converted here.
"""

from __future__ import annotations

import enum
import os
import types
import typing
from typing import Any

from . import strict_yaml
from ..errors import ConfigError
from .library_fields import LibraryType, generation_field_types

# The command line's spellings of null: `--validation_split null`.
NULL_WORDS = ("null", "none", "~")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _union_members(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML or command-line value to the key's declared type, or raise ConfigError.

    Command-line values arrive as strings and PyYAML reads `3e-4` as a string (YAML 1.1),
    so numbers are parsed here by declared type rather than trusted to the YAML parser.
    """
    members = _union_members(annotation)
    if value is None:
        if type(None) in members:
            return None
        raise ConfigError("needs a value, got null", key=key, hint=f"give a {_type_name(annotation)}")
    if isinstance(value, BareFlag) and bool not in members:
        raise ConfigError("needs a value", key=key, hint=f"give --{key} VALUE")
    if isinstance(value, str) and (YamlText in members or (value.lstrip()[:1] in ("[", "{")
                                                           and any(map(_is_container, members)))):
        value = strict_yaml.load(value, key=key)  # `--metrics [bleu, chrf]`, `--presets '{"b6": {...}}'`
    for member in sorted(members, key=lambda m: isinstance(m, type) and issubclass(m, LibraryType)):
        if member is type(None):
            continue
        converted = _convert(value, member)
        if converted is not _NO:
            return converted
    expected = " or ".join(_type_name(m) for m in members if m is not type(None))
    raise ConfigError(f"expected {expected}, got {value!r}", key=key)


def coerce_generation_field(field: str, value: Any) -> Any:
    """A value for a GenerationConfig field: text converted by the field's documented type, or read as YAML where
    the field is documented with a richer one (`--suppress_tokens [5, 7]`, `--eos_token_id 2`).

    Other values (the Python API's) are left as they are, for presets.check_fields to judge by the documented type.
    """
    if not isinstance(value, str):
        return value
    return coerce(field, value, generation_field_types().get(field) or YamlText)


class YamlText:
    """The declared type of a GenerationConfig field documented as more than one scalar type (eos_token_id,
    suppress_tokens, sequence_bias ...): its text is read as YAML, which reads JSON too; transformers checks it."""


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and a bare `--flag` (true) into flat keys.

    `null` means None; every other value stays text for coerce() to convert by its key's declared type.
    """
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}", hint="keys are given as --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = BareFlag()
        values[key] = None if not isinstance(value, BareFlag) and value.lower() in NULL_WORDS else value
        i += 1
    return values


class BareFlag(str):
    """`--key` given with no value: true for a boolean key, a mistake for any other (a forgotten value)."""

    def __new__(cls) -> BareFlag:
        return super().__new__(cls, "true")


def _is_container(annotation: Any) -> bool:
    return annotation in (list, dict) or typing.get_origin(annotation) in (list, dict)


_NO = object()


def _convert(value: Any, target: Any) -> Any:
    origin = typing.get_origin(target)
    if target is Any or target is YamlText:
        return value
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        return _NO
    if target is int:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            return _NO
    if target is float:
        if isinstance(value, bool):
            return _NO
        try:
            return float(value)
        except (TypeError, ValueError):
            return _NO
    if target is str or (isinstance(target, type) and issubclass(target, (str, os.PathLike, enum.Enum))):
        if isinstance(value, enum.Enum):
            return value.value
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else _NO
    if target is list or origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return list(value) if isinstance(value, (list, tuple)) else _NO
    if target is dict or origin is dict:
        return value if isinstance(value, dict) else _NO
    return value  # transformers' own types (enums, GenerationConfig, DebugOption lists): the library validates
