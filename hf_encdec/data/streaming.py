"""Generation input, one row at a time: memory stays flat whatever the file size.

`data.read_records` loads a whole training file (it needs every row to split and report);
generation may run over millions of lines, so here every format is read as a stream:
text lines and JSON Lines line by line in binary (only "\\n" ends a line), CSV/TSV through
`csv.reader`, Parquet by record batches. A row that cannot be read (invalid JSON, wrong
field count, a lone surrogate) comes out as a `Row` with an `error` instead of stopping the
stream, so the caller decides whether to fail or skip. What stops the stream itself (a file
gone since it was checked, a truncated .gz, a damaged row group) is a DataError naming the
line or row where reading stopped.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import math
import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import DataError

FORMATS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
TEXT_COLUMN = "source"  # the column a .txt input's lines are given
# What reading an opened file can raise: the disk, a file removed under us, a truncated or corrupt .gz.
READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass
class Row:
    line: int  # 1-based line (text formats) or row number (parquet)
    record: dict | None  # None when the row could not be read
    error: str | None = None


def input_format(path: str) -> tuple[str, bool]:
    """(extension, gzipped), or a DataError naming the supported formats."""
    name = path.lower()
    gzipped = name.endswith(".gz")
    ext = os.path.splitext(name[:-3] if gzipped else name)[1]
    if ext not in FORMATS or (gzipped and ext == ".parquet"):
        raise DataError(f"unsupported input type '{ext or os.path.basename(path)}'", path=path,
                        hint="use .txt (one source a line), .jsonl, .csv, .tsv or .parquet")
    return ext, gzipped


def check_input(path: str) -> None:
    if not os.path.exists(path):
        raise DataError("file not found", path=path, hint="check the path")
    if os.path.isdir(path):
        raise DataError("is a directory, expected a file", path=path)
    if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would be empty on the second pass, a device endless
        raise DataError("is not a regular file (a pipe, socket or device)", path=path,
                        hint="save the input to a file first: it is read twice, once to check it and once to run")
    input_format(path)


def iter_rows(path: str) -> Iterator[Row]:
    ext, gzipped = input_format(path)
    if ext == ".parquet":
        return _parquet_rows(path)
    if ext in (".csv", ".tsv"):
        return _delimited_rows(path, gzipped, "\t" if ext == ".tsv" else ",")
    return _line_rows(path, gzipped, as_json=ext != ".txt")


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


def _line_rows(path: str, gzipped: bool, as_json: bool) -> Iterator[Row]:
    with _open_binary(path, gzipped) as f:
        for number, raw in enumerate(_guarded(path, f), start=1):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark from spreadsheet exports
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Row(number, None, f"is not valid UTF-8 (byte 0x{raw[e.start]:02x})")
                continue
            if not as_json:
                yield Row(number, {TEXT_COLUMN: text})
            elif text.strip():  # blank lines carry no record in JSON Lines
                yield _json_row(number, text)


def _json_row(number: int, text: str) -> Row:
    if number == 1 and text.lstrip().startswith("["):
        return Row(number, None, "is a JSON array; generation streams JSON Lines (one object a line)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return Row(number, None, f"invalid JSON ({e.msg} at character {e.pos + 1})")
    if not isinstance(record, dict):
        return Row(number, None, f"is a JSON {type(record).__name__}, expected an object")
    if "\\u" in text:  # valid UTF-8 holds no surrogates: only a \u escape can make one
        for key, value in record.items():
            surrogate = lone_surrogate(key) or lone_surrogate(value)
            if surrogate:
                return Row(number, None, f"holds an invalid Unicode character (a lone surrogate {surrogate}) "
                                         f"in column '{printable(key)}'")
    return Row(number, record)


def lone_surrogate(value) -> str | None:
    """The first lone surrogate in a value, nested ones and keys included, as its escape ("\\ud800"); else None.

    JSON may write one as an escape, but no UTF-8 text (the output, the tokenizer's input) can hold it.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"\\u{ord(value[e.start]):04x}"
        return None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((found for found in map(lone_surrogate, items) if found), None)


def printable(text: str) -> str:
    """`text` with lone surrogates escaped, so an error line that quotes it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _delimited_rows(path: str, gzipped: bool, delimiter: str) -> Iterator[Row]:
    with _delimited_reader(path, gzipped, delimiter) as reader:
        header, start = None, 1
        try:
            for fields in reader:
                if not fields:
                    pass
                elif header is None:
                    header = [name.strip() for name in fields]
                elif len(fields) != len(header):
                    yield Row(start, None, f"has {len(fields)} fields, the header has {len(header)}")
                else:
                    yield Row(start, dict(zip(header, fields)))
                start = reader.line_num + 1
        except csv.Error as e:  # the reader cannot go past a broken quote
            raise DataError(f"cannot be read past this line ({e})", path=path, line=reader.line_num,
                            hint="fix the quoting") from e
        except UnicodeDecodeError as e:
            raise _not_utf8(path, gzipped, reader.line_num + 1) from e


@contextlib.contextmanager
def _delimited_reader(path: str, gzipped: bool, delimiter: str) -> Iterator:
    """csv.reader as data.read_records reads CSV/TSV: TSV without quoting, CSV strict RFC 4180."""
    tsv = delimiter == "\t"
    csv.field_size_limit(2**31 - 1)
    with io.TextIOWrapper(_open_binary(path, gzipped), encoding="utf-8-sig", newline="") as text:
        yield csv.reader(_guarded(path, text), delimiter=delimiter, strict=not tsv,
                         quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)


def _not_utf8(path: str, gzipped: bool, reader_line: int) -> DataError:
    """The decoder works ahead of csv.reader's line count (by thousands of lines): find the bad byte's own line."""
    line, byte = reader_line, None
    with _open_binary(path, gzipped) as f:
        for number, raw in enumerate(_guarded(path, f), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line, byte = number, raw[e.start]
                break
    what = f" (byte 0x{byte:02x})" if byte is not None else ""
    return DataError(f"is not valid UTF-8{what}", path=path, line=line, hint="re-save the file as UTF-8")


def _parquet_rows(path: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    failures = (OSError, pa.ArrowException, UnicodeDecodeError)
    try:
        parquet = pq.ParquetFile(path)
    except failures as e:
        raise DataError(f"cannot read the parquet file ({e})", path=path, hint="check that it is complete") from e
    # Batches within one row group at a time: a damaged group then stops reading at its own first row.
    records = (record for group in range(parquet.num_row_groups)
               for batch in parquet.iter_batches(batch_size=1024, row_groups=[group]) for record in batch.to_pylist())
    for number, record in enumerate(_guarded(path, records, failures), start=1):
        yield Row(number, record)


def source_of(record: dict, column: str) -> str | None:
    """The source text of a record: None when missing (NaN is pandas' missing text); numbers as JSON writes them."""
    value = record.get(column)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return None


def first_columns(path: str, limit: int = 100) -> list[str]:
    """The input's columns: a CSV/TSV header, a parquet schema, or the keys of the first readable JSON rows."""
    ext, gzipped = input_format(path)
    if ext in (".csv", ".tsv"):
        with _delimited_reader(path, gzipped, "\t" if ext == ".tsv" else ",") as reader:
            try:
                return [name.strip() for name in next((fields for fields in reader if fields), [])]
            except (csv.Error, UnicodeDecodeError):
                return []  # iter_rows names the line
    if ext == ".parquet":
        return _parquet_schema(path)
    columns: dict[str, None] = {}
    for row in itertools.islice(iter_rows(path), limit):
        if row.record is not None:
            columns.update(dict.fromkeys(row.record))
    return list(columns)


def _parquet_schema(path: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (OSError, pa.ArrowException):
        return []  # iter_rows says why


def no_rows_error(path: str) -> DataError:
    """The input has no rows: say so, not that a column cannot be found."""
    ext, _ = input_format(path)
    if ext in (".csv", ".tsv") and first_columns(path):
        return DataError("has a header but no rows", path=path, hint="add rows below the header line")
    return DataError("has no rows", path=path, hint="add rows")
