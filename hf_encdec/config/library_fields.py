"""The fields transformers declares for `Seq2SeqTrainingArguments` and `GenerationConfig`, read from its source.

Importing either class loads torch and most of transformers: 5-9 s on 2 CPU cores, and a typo in a
recipe should be reported in well under a second. So the names and declared types are read from
the installed source files with `ast` (a few tens of milliseconds), which keeps them exactly those
of the installed version; tests/test_library_fields.py checks them against the imported classes.
Where the source cannot be read (an unusual install), the classes are imported after all.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import typing
from pathlib import Path
from typing import Any


class LibraryType:
    """A type of transformers' own (an enum, GenerationConfig ...): its value is left to the library to check."""


def _transformers_file(relative: str) -> Path | None:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _class_node(relative: str, name: str) -> ast.ClassDef | None:
    path = _transformers_file(relative)
    if path is None:
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name), None)


# The names annotations use; any other name is one of transformers' own types.
_NAMESPACE: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str, "dict": dict, "list": list,
                              "tuple": tuple, "None": None, "Any": Any, "Optional": typing.Optional,
                              "Union": typing.Union, "Literal": typing.Literal, "Path": Path}


def _annotation(node: ast.expr) -> Any:
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - set(_NAMESPACE)
    namespace = {**_NAMESPACE, **{name: type(name, (LibraryType,), {}) for name in names}}
    # Our own parse of the library's annotation: only names bound above, no builtins.
    return eval(compile(ast.Expression(node), "<annotation>", "eval"), {"__builtins__": {}}, namespace)


def _init_fields(node: ast.ClassDef) -> dict[str, Any]:
    """Dataclass fields that __init__ takes: annotated class attributes, minus field(init=False)."""
    fields = {}
    for statement in node.body:
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        value = statement.value
        if isinstance(value, ast.Call) and any(k.arg == "init" and isinstance(k.value, ast.Constant)
                                               and k.value.value is False for k in value.keywords):
            continue
        if ast.unparse(statement.annotation).startswith("ClassVar"):
            continue
        fields[statement.target.id] = _annotation(statement.annotation)
    return fields


@functools.cache
def training_argument_types() -> dict[str, Any]:
    """Field name -> declared type of every Seq2SeqTrainingArguments field (TrainingArguments' included)."""
    base = _class_node("training_args.py", "TrainingArguments")
    seq2seq = _class_node("training_args_seq2seq.py", "Seq2SeqTrainingArguments")
    if base is None or seq2seq is None:
        return _imported_training_types()
    return {**_init_fields(base), **_init_fields(seq2seq)}


def _imported_training_types() -> dict[str, Any]:
    import dataclasses

    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


# GenerationConfig documents each field as "name (`type`, *optional*, ...)" or "name (`bool` or `str`, ...)".
_DOCUMENTED = re.compile(r"^\s+(\w+) \((`[^`]+`(?: or `[^`]+`)*)", re.MULTILINE)
_SIMPLE_TYPES = {"`int`": int, "`float`": float, "`bool`": bool, "`str`": str}  # one type, not "`bool` or `str`"


@functools.cache
def generation_field_types() -> dict[str, type | None]:
    """GenerationConfig field -> int, float, bool or str where documented as such; None for the others."""
    node = _class_node("generation/configuration_utils.py", "GenerationConfig")
    if node is None:
        return _imported_generation_types()
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = [call.args[0].value for call in ast.walk(init)
             if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "pop"
             and isinstance(call.func.value, ast.Name) and call.func.value.id == "kwargs"
             and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)]
    documented = dict(_DOCUMENTED.findall(ast.get_docstring(node) or ""))
    return {name: _SIMPLE_TYPES.get(documented.get(name, "")) for name in names if _is_setting(name)}


def _is_setting(name: str) -> bool:
    return not name.startswith("_") and name != "transformers_version"  # bookkeeping, not decoding settings


def _imported_generation_types() -> dict[str, type | None]:
    from transformers import GenerationConfig

    documented = dict(_DOCUMENTED.findall(GenerationConfig.__doc__ or ""))
    names = GenerationConfig().to_dict()
    return {name: _SIMPLE_TYPES.get(documented.get(name, "")) for name in names if _is_setting(name)}
