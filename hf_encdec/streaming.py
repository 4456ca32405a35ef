"""Generation input, one row at a time: memory stays flat whatever the file size.

`data.read_records` loads a whole training file (it needs every row to split and report);
generation may run over millions of lines, so here every format is read as a stream:
text lines and JSON Lines line by line in binary (only "\\n" ends a line), CSV/TSV through
`csv.reader`, Parquet by record batches. A row that cannot be read (invalid JSON, wrong
field count) comes out as a `Row` with an `error` instead of stopping the stream, so the
caller decides whether to fail or skip.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import DataError

FORMATS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
TEXT_COLUMN = "source"  # the column a .txt input's lines are given


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
    input_format(path)


def iter_rows(path: str) -> Iterator[Row]:
    ext, gzipped = input_format(path)
    if ext == ".parquet":
        return _parquet_rows(path)
    if ext in (".csv", ".tsv"):
        return _delimited_rows(path, gzipped, "\t" if ext == ".tsv" else ",")
    return _line_rows(path, gzipped, as_json=ext != ".txt")


def _open_binary(path: str, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _line_rows(path: str, gzipped: bool, as_json: bool) -> Iterator[Row]:
    with _open_binary(path, gzipped) as f:
        for number, raw in enumerate(f, start=1):
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
    return Row(number, record)


def _delimited_rows(path: str, gzipped: bool, delimiter: str) -> Iterator[Row]:
    tsv = delimiter == "\t"  # TSV without quoting, CSV strict RFC 4180: as data.read_records reads them
    csv.field_size_limit(2**31 - 1)
    with io.TextIOWrapper(_open_binary(path, gzipped), encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter, strict=not tsv,
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
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
        except (csv.Error, UnicodeDecodeError) as e:  # the reader cannot go past these
            raise DataError(f"cannot be read past this line ({e})", path=path, line=reader.line_num,
                            hint="fix the quoting or re-save the file as UTF-8") from e


def _parquet_rows(path: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read the parquet file ({e})", path=path, hint="check that it is complete") from e
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, record)


def source_of(record: dict, column: str) -> str | None:
    """The source text of a record: None when missing; numbers as JSON writes them."""
    value = record.get(column)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return None


def first_columns(path: str, limit: int = 100) -> list[str]:
    """Column names seen in the first readable rows (for picking a default source column)."""
    columns: dict[str, None] = {}
    for count, row in enumerate(iter_rows(path)):
        if row.record is not None:
            columns.update(dict.fromkeys(row.record))
        if count >= limit:
            break
    return list(columns)
