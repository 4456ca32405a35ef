"""Which columns of a file hold the source and the target, and a cell's value as text.

One picker for training, evaluate and generate: the given columns, else the first guessed pair
(language columns, the task's usual names), else for a file that may be unlabelled the first
guessed source or the only column, else the only two. Values become text one way everywhere:
strings as written, numbers as JSON writes them, null and NaN as missing.
"""

from __future__ import annotations

import json
import math

from ..errors import ConfigError, DataError
from .formats import SURROGATE_HINT, lone_surrogate, surrogate_problem


def pick_columns(
    origin: str, columns: list[str], *, source_column: str | None, target_column: str | None,
    guesses: list[tuple[str | None, str | None]], require_target: bool = True, source_only: bool = False,
) -> tuple[str, str | None]:
    """(source, target) columns; the target is None where none is needed and none is found.

    `source_only` (generate: the file is all input) takes the first guessed source present, never a pair.
    """
    for key, given in (("source_column", source_column), ("target_column", target_column)):
        if given is not None and given not in columns:
            raise missing_column(origin, columns, given, f"set {key} to one of the columns")
    if source_column and target_column:
        if source_column == target_column:
            raise ConfigError(f"source_column and target_column are both '{source_column}': each target would be "
                              "its source", key="target_column", hint="set target_column to the column of the targets")
        return source_column, target_column
    for src, tgt in [] if source_only else guesses:  # a given column stands in for its side of each guess
        src, tgt = source_column or src, target_column or tgt
        if src in columns and tgt in columns and src != tgt:
            return src, tgt
    if source_only or not require_target:  # unlabelled data (e.g. a test file to translate): a source is enough
        src = source_column or next((s for s, _ in guesses if s in columns), None)
        if src or len(columns) == 1:
            return src or columns[0], target_column
    if source_only:
        raise DataError(f"cannot tell which column is the source (columns: {', '.join(columns)})", path=origin,
                        hint="set source_column")
    others = [c for c in columns if c not in (source_column, target_column)]
    if len(columns) == 2 and others:  # exactly two columns: the first is the source, the second the target
        return source_column or others[0], target_column or others[-1]
    hint = "set source_column and target_column"
    if "translation" in columns:
        hint = "set source_lang and target_lang for the 'translation' column"
    raise DataError(f"cannot tell which columns are source and target (columns: {', '.join(columns)})", path=origin,
                    hint=hint)


def missing_column(origin: str, columns: list[str], name: str, hint: str) -> DataError:
    return DataError(f"has no column '{name}' (columns: {', '.join(columns)})", path=origin, column=name, hint=hint)


def text_problem(value) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) for a value that cannot be text: a list, an object, a lone surrogate."""
    if isinstance(value, str):
        found = lone_surrogate(value)
        return (surrogate_problem(found), SURROGATE_HINT) if found else None
    if value is None or isinstance(value, (bool, int, float)):
        return None
    return (f"value is a {type(value).__name__}, expected text",
            "store one string per cell, or point source_column / target_column elsewhere")


def as_text(value) -> str | None:
    """A value text_problem accepts, as text: strings as written, numbers as JSON writes them, null/NaN as None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):  # pandas writes a missing text cell as NaN
        return None
    return json.dumps(value)


def cell_text(origin: str, line: int, column: str, value) -> str | None:
    """`value` as text, or a DataError naming its row and column."""
    problem = text_problem(value)
    if problem:
        raise DataError(problem[0], path=origin, line=line, column=column, hint=problem[1])
    return as_text(value)
