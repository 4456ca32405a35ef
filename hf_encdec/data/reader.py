"""Training's view of a data file: every row of the one stream (formats.iter_rows) in memory.

read_file ──> read_records (one file) | read_parallel (a {lang} pair of plain-text files)

Training needs every row at once (to split, validate and report), so the first row the stream
cannot read is an error here, where generate may skip it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import ConfigError, DataError
from .formats import TEXT_COLUMN, Row, check_file, columns_of, iter_rows, no_rows_error, text_lines

# Formats that hold a pair a row; a .txt file has one column.
TRAINING_FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
PARALLEL_PLACEHOLDER = "{lang}"


def read_file(path: str, source_lang: str | None, target_lang: str | None) -> tuple[list[str], list[dict], list[int]]:
    """(columns, records, lines) of a data file, or of a {lang} pair of plain-text files."""
    if PARALLEL_PLACEHOLDER in str(path):
        return read_parallel(str(path), source_lang, target_lang)
    return read_records(path)


def read_records(path: str) -> tuple[list[str], list[dict], list[int]]:
    """Read a data file into (column names, records, line numbers); the extension names the format."""
    path = str(path)
    check_file(path, TRAINING_FORMATS)
    records, lines = _every_row(path, iter_rows(path, whole_arrays=True))
    return columns_of(records), records, lines


def read_parallel(pattern: str, source_lang: str | None, target_lang: str | None):
    """Two line-aligned plain-text files, one sentence a line (the MT corpus layout, e.g. Multi30k).

    `pattern` names both files with a {lang} placeholder: `train.{lang}.gz` with source_lang en and
    target_lang de reads train.en.gz and train.de.gz. Columns are the two language codes.
    """
    if not (source_lang and target_lang):
        raise ConfigError(f"a {PARALLEL_PLACEHOLDER} file pattern needs source_lang and target_lang",
                          key="source_lang", path=pattern)
    check_languages(source_lang, target_lang, f"the {PARALLEL_PLACEHOLDER} pattern would read one file as both sides")
    paths = [pattern.replace(PARALLEL_PLACEHOLDER, lang) for lang in (source_lang, target_lang)]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError("file not found", path=path, hint=f"{pattern} is read once per language")
    if os.path.samefile(*paths):
        raise DataError(f"is the same file as {paths[1]}: sources and targets would be one text", path=paths[0],
                        hint=f"point {pattern} at one file per language")
    source, target = ([record[TEXT_COLUMN] for record in _every_row(path, text_lines(path))[0]] for path in paths)
    if len(source) != len(target):
        raise DataError(f"has {len(source)} lines but its {target_lang} side has {len(target)}",
                        path=pattern.replace(PARALLEL_PLACEHOLDER, source_lang),
                        hint="parallel files must be line-aligned")
    records = [{source_lang: s, target_lang: t} for s, t in zip(source, target)]
    return [source_lang, target_lang], records, list(range(1, len(records) + 1))


def check_languages(source_lang: str, target_lang: str, why: str) -> None:
    if source_lang == target_lang:
        raise ConfigError(f"source_lang and target_lang are both '{source_lang}': {why}", key="target_lang",
                          hint="set target_lang to the language of the targets")


def _every_row(path: str, rows: Iterable[Row]) -> tuple[list[dict], list[int]]:
    """(records, lines) of a stream, the first unreadable row an error."""
    records, lines = [], []
    for row in rows:
        if row.error:
            raise DataError(row.error, path=path, line=row.line, hint=row.hint)
        records.append(row.record)
        lines.append(row.line)
    if not records:
        raise no_rows_error(path)
    return records, lines
