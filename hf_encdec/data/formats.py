"""Every data file, one row at a time: the one reader behind training, generate and evaluate.

Memory stays flat whatever the file size: text lines and JSON Lines are read line by line in
binary (only "\\n" ends a line), CSV/TSV through `csv.reader`, Parquet by record batches. Only a
JSON array is parsed whole, and only for a caller that asks (training keeps every row anyway).
A row that cannot be read (invalid JSON, wrong field count, bytes that are not UTF-8, a lone
surrogate) comes out as a `Row` with an `error` and a `hint` instead of stopping the stream, so
the caller decides whether to fail or skip. What stops the stream itself (a truncated .gz, a
broken CSV quote, a damaged row group) is a DataError naming the line or row where reading
stopped. Text stays text: CSV/TSV values are the strings as written ("NA", "007" and "" are not
turned into NaN or 7.0, as pandas and the datasets CSV loader would do).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import DataError

FORMATS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
TEXT_COLUMN = "source"  # the column a .txt file's lines are given
# What reading an opened file can raise: the disk, a file removed under us, a truncated or corrupt .gz.
READ_ERRORS = (OSError, EOFError, zlib.error)
RESAVE_AS_UTF8 = "re-save the file as UTF-8"
NUL_BYTE = "holds a NUL byte, so it is not UTF-8 text (UTF-16, or a binary file?)"
SURROGATE_HINT = "fix the text: a \\ud800-\\udfff escape must be half of a surrogate pair"


@dataclass
class Row:
    line: int  # 1-based line (text formats, JSON Lines, CSV/TSV) or row number (JSON array, parquet)
    record: dict | None  # None when the row could not be read
    error: str | None = None  # what is wrong with the row
    hint: str | None = None  # how to fix it


def check_file(path: str, formats: tuple[str, ...] = FORMATS) -> tuple[str, bool]:
    """(extension, gzipped) of a data file that exists and has one of `formats`, else a DataError."""
    if not os.path.exists(path):
        raise DataError("file not found", path=path,
                        hint="check the path; a relative path starts at the working directory")
    if os.path.isdir(path):
        raise DataError("is a directory, expected a data file", path=path,
                        hint=f"point at one file ({_supported(formats)})")
    return file_format(path, formats)


def file_format(path: str, formats: tuple[str, ...] = FORMATS) -> tuple[str, bool]:
    """(extension, gzipped), or a DataError naming the supported formats."""
    name = path.lower()
    gzipped = name.endswith(".gz")
    ext = os.path.splitext(name[:-3] if gzipped else name)[1]
    if ext not in formats or (gzipped and ext == ".parquet"):
        kind = (ext + ".gz" if gzipped else ext) or os.path.basename(path)
        raise DataError(f"unsupported file type '{kind}'", path=path, hint=f"use one of {_supported(formats)}")
    return ext, gzipped


def _supported(formats: tuple[str, ...]) -> str:
    return ", ".join(formats) + " (text formats may also end in .gz)"


def iter_rows(path: str, *, whole_arrays: bool = False) -> Iterator[Row]:
    """The rows of a data file. A JSON array is read whole when `whole_arrays`, else its first row is an error."""
    ext, gzipped = file_format(path)
    if ext == ".parquet":
        return _parquet_rows(path)
    if ext in (".csv", ".tsv"):
        return _delimited_rows(path, gzipped, "\t" if ext == ".tsv" else ",")
    if ext == ".txt":
        return text_lines(path)
    return _json_rows(path, gzipped, whole_arrays)


def text_lines(path: str) -> Iterator[Row]:
    """A plain-text file's lines as rows of one TEXT_COLUMN, whatever the file is named (train.en.gz)."""
    for number, text, problem in _decoded_lines(path, path.lower().endswith(".gz")):
        yield Row(number, None, *problem) if problem else Row(number, {TEXT_COLUMN: text})


def _decoded_lines(path: str, gzipped: bool) -> Iterator[tuple[int, str | None, tuple[str, str] | None]]:
    """(line number, text, problem) per line, without its "\\n" or "\\r\\n" (files from Windows end lines with both)."""
    with _open_binary(path, gzipped) as f:
        for number, raw in enumerate(_guarded(path, f), start=1):
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark from spreadsheet exports
            if b"\0" in raw:  # never in UTF-8 text: a UTF-16 export or a binary file
                yield number, None, (NUL_BYTE, RESAVE_AS_UTF8)
                continue
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield number, None, (f"is not valid UTF-8 (byte 0x{raw[e.start]:02x})", RESAVE_AS_UTF8)


def _open_binary(path: str, gzipped: bool):
    try:
        return gzip.open(path, "rb") if gzipped else open(path, "rb")
    except OSError as e:  # removed or made unreadable since it was checked
        raise DataError(f"cannot be read ({e.strerror or e})", path=path, hint="check the path and its permissions") \
            from e


def _guarded(path: str, items: Iterable, failures: tuple[type[BaseException], ...] = READ_ERRORS) -> Iterator:
    """`items`, with a read failure turned into a DataError at the first line (or row) not read."""
    iterator, done = iter(items), 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except failures as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise DataError(f"cannot be read from here on ({reason})", path=path, line=done + 1,
                            hint="the file is truncated or damaged: re-create it") from e
        done += 1
        yield item


# ----------------------------------------------------------------------------- JSON


def _json_rows(path: str, gzipped: bool, whole_arrays: bool) -> Iterator[Row]:
    array: list[str] | None = None  # the lines of a JSON array, parsed once they are all read
    first = True
    for number, text, problem in _decoded_lines(path, gzipped):
        if problem:
            yield Row(number, None, *problem)
        elif array is not None:
            array.append(text)
        elif not text.strip():  # blank lines carry no record in JSON Lines
            continue
        elif first and text.lstrip().startswith("["):
            if not whole_arrays:
                yield Row(number, None, "is a JSON array; generation streams JSON Lines (one object a line)",
                          'write one object a line, e.g. {"source": ...}')
            array = [""] * (number - 1) + [text]  # blank lines before it keep the parser's line numbers
        else:
            yield _json_line_row(path, gzipped, number, text, first)
        first = False
    if array is not None:
        yield from _array_rows("\n".join(array))


def _json_line_row(path: str, gzipped: bool, number: int, text: str, first: bool) -> Row:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        where = e.msg if e.msg.endswith(" at") else f"{e.msg} at"  # "Unterminated string starting at"
        hint = _pretty_printed_hint(path, gzipped) if first else None
        return Row(number, None, f"is not valid JSON ({where} character {e.pos + 1})",
                   hint or "each line must be one complete JSON object")
    if not isinstance(record, dict):
        return Row(number, None, f"is a JSON {type(record).__name__}, expected an object",
                   'write one object per line, e.g. {"source": ..., "target": ...}')
    return _checked_record(number, record) if "\\u" in text else Row(number, record)


def _pretty_printed_hint(path: str, gzipped: bool) -> str | None:
    """A first line that is not JSON may open one object written over several lines: say so."""
    with _open_binary(path, gzipped) as f:
        try:
            json.loads(f.read())
        except (ValueError, *READ_ERRORS):
            return None
    return "the file is one JSON object over several lines; write a JSON array of objects or one object per line"


def _array_rows(text: str) -> Iterator[Row]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        yield Row(e.lineno, None, f"is not valid JSON ({e.msg})",
                  "fix the JSON, or write one object per line (JSON Lines)")
        return
    for index, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield _checked_record(index, item)
        else:
            yield Row(index, None, f"item {index} of the array is a {type(item).__name__}, expected an object",
                      'write each row as {"source": ..., "target": ...}')


def _checked_record(number: int, record: dict) -> Row:
    """A JSON record, or an error row where a \\u escape left a lone surrogate (no UTF-8 text can hold one)."""
    for key, value in record.items():
        found = lone_surrogate(key) or lone_surrogate(value)
        if found:
            return Row(number, None, f"{surrogate_problem(found)} in column '{printable(key)}'", SURROGATE_HINT)
    return Row(number, record)


def lone_surrogate(value) -> str | None:
    """The first lone surrogate in a value, nested ones and keys included ("a lone surrogate, U+D800, at
    character 4"); None when there is none. JSON may write one as an escape; tokenizers and UTF-8 output cannot."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"a lone surrogate, U+{ord(value[e.start]):04X}, at character {e.start + 1}"
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((found for found in map(lone_surrogate, items) if found), None)


def surrogate_problem(found: str) -> str:
    return f"holds an invalid Unicode character ({found})"


def printable(text: str) -> str:
    """`text` with lone surrogates escaped, so an error line that quotes it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ----------------------------------------------------------------------------- CSV / TSV


def _delimited_rows(path: str, gzipped: bool, delimiter: str) -> Iterator[Row]:
    tsv = delimiter == "\t"
    with _delimited_reader(path, gzipped, delimiter) as reader:
        header, start = None, 1
        try:
            for fields in reader:
                if not fields:  # a blank line carries no record
                    pass
                elif header is None:
                    header = _checked_header(path, fields, start)
                elif len(fields) != len(header):
                    yield Row(start, None, f"has {len(fields)} fields, the header has {len(header)}",
                              "a TSV field cannot hold a tab or newline" if tsv else
                              "quote fields that hold a comma or newline")
                else:
                    yield Row(start, dict(zip(header, fields)))
                start = reader.line_num + 1  # a quoted field may span lines: the next record starts here
        except csv.Error as e:  # the reader cannot go past a broken quote
            raise DataError(f"is not valid CSV ({e})", path=path, line=reader.line_num,
                            hint="check the quotes on this line") from e
        except UnicodeDecodeError as e:
            raise _not_utf8(path, gzipped, reader.line_num + 1) from e


@contextlib.contextmanager
def _delimited_reader(path: str, gzipped: bool, delimiter: str) -> Iterator:
    # TSV is read without quote handling (the IANA format, as MT corpora use it), so a sentence
    # that starts with a quote mark stays intact. CSV follows RFC 4180 quoting, strictly, so a
    # stray quote is an error rather than silently mangled text.
    tsv = delimiter == "\t"
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB a field) is too small for long documents
    with io.TextIOWrapper(_open_binary(path, gzipped), encoding="utf-8-sig", newline="") as text:
        yield csv.reader(_without_nul(path, _guarded(path, text)), delimiter=delimiter, strict=not tsv,
                         quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)


def _without_nul(path: str, lines: Iterable[str]) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if "\0" in line:
            raise DataError(NUL_BYTE, path=path, line=number, hint=RESAVE_AS_UTF8)
        yield line


def _checked_header(path: str, header: list[str], line: int) -> list[str]:
    header = [name.strip() for name in header]
    if "" in header:
        raise DataError(f"header cell {header.index('') + 1} is empty", path=path, line=line,
                        hint="give every column a name in the first line")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"duplicate column names in the header: {', '.join(duplicates)}", path=path, line=line,
                        hint="give every column a unique name")
    return header


def _not_utf8(path: str, gzipped: bool, reader_line: int) -> DataError:
    """The decoder works ahead of csv.reader's line count (by thousands of lines): find the bad byte's own line."""
    for number, _, problem in _decoded_lines(path, gzipped):
        if problem:
            return DataError(problem[0], path=path, line=number, hint=problem[1])
    return DataError("is not valid UTF-8", path=path, line=reader_line, hint=RESAVE_AS_UTF8)


# ----------------------------------------------------------------------------- Parquet


def _parquet_rows(path: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    failures = (OSError, pa.ArrowException, UnicodeDecodeError)
    try:
        parquet = pq.ParquetFile(path)
    except failures as e:
        raise DataError(f"cannot read the parquet file ({e})", path=path, hint="check that the file is complete") from e
    # Batches within one row group at a time: a damaged group then stops reading at its own first row.
    records = (record for group in range(parquet.num_row_groups)
               for batch in parquet.iter_batches(batch_size=1024, row_groups=[group]) for record in batch.to_pylist())
    for number, record in enumerate(_guarded(path, records, failures), start=1):
        yield Row(number, record)


def _parquet_schema(path: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (OSError, pa.ArrowException):
        return []  # iter_rows says why


# ----------------------------------------------------------------------------- columns


def first_columns(path: str, limit: int = 100) -> list[str]:
    """The file's columns: a CSV/TSV header, a parquet schema, or the keys of the first readable JSON rows."""
    ext, gzipped = file_format(path)
    if ext in (".csv", ".tsv"):
        with _delimited_reader(path, gzipped, "\t" if ext == ".tsv" else ",") as reader:
            try:
                return [name.strip() for name in next((fields for fields in reader if fields), [])]
            except (csv.Error, UnicodeDecodeError, DataError):
                return []  # iter_rows names the line
    if ext == ".parquet":
        return _parquet_schema(path)
    return columns_of(row.record for row in itertools.islice(iter_rows(path), limit) if row.record is not None)


def columns_of(records: Iterable[dict]) -> list[str]:
    """Every key of the records, in first-seen order."""
    return list(dict.fromkeys(key for record in records for key in record))


def no_rows_error(path: str) -> DataError:
    """The file has no rows: say so, not that a column cannot be found."""
    if path.lower().removesuffix(".gz").endswith((".csv", ".tsv")) and first_columns(path):
        return DataError("has a header but no rows", path=path, hint="add rows below the header line")
    return DataError("has no rows: the file is empty", path=path, hint="add rows, or point at another file")
