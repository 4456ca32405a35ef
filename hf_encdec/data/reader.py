"""Loading and validating custom seq2seq data: a file or a Hub dataset becomes a `Split`.

read_records ──> select_pairs ──> validate_rows ──> Split   (load_file_split / load_hub_split)
carve_validation makes a validation split when the user gave none; length_stats and
format_data_report show how many rows will be truncated (we never truncate silently).

Text stays text: CSV/TSV values are the strings as written ("NA", "007" and "" are not
turned into NaN or 7.0, as pandas and the datasets CSV loader would do).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import random
from dataclasses import dataclass

from ..errors import ConfigError, DataError

logger = logging.getLogger("hf_encdec.data")

TEXT_FORMATS = (".csv", ".tsv", ".json", ".jsonl")
SUPPORTED = ".csv, .tsv, .json, .jsonl, .parquet (text formats may also end in .gz)"
PARALLEL_PLACEHOLDER = "{lang}"
SHOW_EXAMPLES = 5  # how many bad rows a warning or error names


@dataclass
class Split:
    name: str  # "train" | "validation" | "test"
    origin: str  # the file path as given, or "DATASET_NAME[split]"
    sources: list[str]
    targets: list[str]
    lines: list[int]  # 1-based line (files) or row index (JSON array, parquet, Hub) of each row
    dropped: int = 0  # invalid rows removed by validate_rows

    def __len__(self) -> int:
        return len(self.sources)


# ----------------------------------------------------------------------------- reading


def read_records(path: str) -> tuple[list[str], list[dict], list[int]]:
    """Read a data file into (column names, records, line numbers); the extension names the format."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError("file not found", path=path,
                        hint="check the path; a relative path starts at the working directory")
    if os.path.isdir(path):
        raise DataError("is a directory, expected a data file", path=path, hint=f"point at one file ({SUPPORTED})")
    ext, gzipped = _extension(path)
    if ext == ".parquet" and not gzipped:
        return _read_parquet(path)
    if ext not in TEXT_FORMATS:
        kind = (ext + ".gz" if gzipped else ext) or os.path.basename(path)
        raise DataError(f"unsupported file type '{kind}'", path=path, hint=f"use one of {SUPPORTED}")
    text = _read_text(path, gzipped)
    if not text.strip():
        raise DataError("file is empty", path=path, hint="add rows, or remove the file from the config")
    if ext in (".csv", ".tsv"):
        return _read_delimited(path, text, "\t" if ext == ".tsv" else ",")
    if text.lstrip().startswith("["):  # a JSON array, whether the file is called .json or .jsonl
        return _read_json_array(path, text)
    return _read_json_lines(path, text)


def read_parallel(pattern: str, source_lang: str | None, target_lang: str | None):
    """Two line-aligned plain-text files, one sentence a line (the MT corpus layout, e.g. Multi30k).

    `pattern` names both files with a {lang} placeholder: `train.{lang}.gz` with source_lang en and
    target_lang de reads train.en.gz and train.de.gz. Columns are the two language codes.
    """
    if not (source_lang and target_lang):
        raise ConfigError(f"a {PARALLEL_PLACEHOLDER} file pattern needs source_lang and target_lang",
                          key="source_lang", path=pattern)
    _check_languages(source_lang, target_lang, f"the {PARALLEL_PLACEHOLDER} pattern would read one file as both sides")
    paths = [pattern.replace(PARALLEL_PLACEHOLDER, lang) for lang in (source_lang, target_lang)]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError("file not found", path=path, hint=f"{pattern} is read once per language")
    if os.path.samefile(*paths):
        raise DataError(f"is the same file as {paths[1]}: sources and targets would be one text", path=paths[0],
                        hint=f"point {pattern} at one file per language")
    source, target = (_read_lines(path) for path in paths)
    if len(source) != len(target):
        raise DataError(f"has {len(source)} lines but its {target_lang} side has {len(target)}",
                        path=pattern.replace(PARALLEL_PLACEHOLDER, source_lang),
                        hint="parallel files must be line-aligned")
    records = [{source_lang: s, target_lang: t} for s, t in zip(source, target)]
    return [source_lang, target_lang], records, list(range(1, len(records) + 1))


def _read_lines(path: str) -> list[str]:
    """A plain-text file's lines, without their "\n" or "\r\n" (files from Windows end lines with both)."""
    text = _read_text(path, path.lower().endswith(".gz"))
    lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    return [line.removesuffix("\r") for line in lines]


def _check_languages(source_lang: str, target_lang: str, why: str) -> None:
    if source_lang == target_lang:
        raise ConfigError(f"source_lang and target_lang are both '{source_lang}': {why}", key="target_lang",
                          hint="set target_lang to the language of the targets")


def _extension(path: str) -> tuple[str, bool]:
    name = path.lower()
    gzipped = name.endswith(".gz")
    return os.path.splitext(name[:-3] if gzipped else name)[1], gzipped


def _read_text(path: str, gzipped: bool) -> str:
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # permissions, a corrupt or truncated .gz
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise DataError(f"cannot read the file ({reason})", path=path,
                        hint="check that it is readable and not corrupt") from e
    if b"\0" in raw:  # never in UTF-8 text: a UTF-16 export or a binary file
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise DataError("holds a NUL byte, so it is not UTF-8 text (UTF-16, or a binary file?)", path=path, line=line,
                        hint="re-save the file as UTF-8")
    try:
        return raw.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a byte-order mark
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"is not valid UTF-8 (byte 0x{raw[e.start]:02x})", path=path, line=line,
                        hint="re-save the file as UTF-8") from e


def _read_parquet(path: str) -> tuple[list[str], list[dict], list[int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read the parquet file ({e})", path=path,
                        hint="check that the file is complete") from e
    if table.num_rows == 0:
        raise DataError("file has no rows", path=path, hint="add rows, or remove the file from the config")
    return list(table.column_names), table.to_pylist(), list(range(1, table.num_rows + 1))


def _read_delimited(path: str, text: str, delimiter: str) -> tuple[list[str], list[dict], list[int]]:
    # TSV is read without quote handling (the IANA format, as MT corpora use it), so a sentence
    # that starts with a quote mark stays intact. CSV follows RFC 4180 quoting, strictly, so a
    # stray quote is an error rather than silently mangled text.
    tsv = delimiter == "\t"
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB a field) is too small for long documents
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=not tsv,
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header, records, lines = None, [], []
    start = 1
    try:
        for row in reader:
            if not row:  # a blank line carries no record
                pass
            elif header is None:
                header = _check_header(path, row, start)
            elif len(row) != len(header):
                hint = "a TSV field cannot hold a tab or newline" if tsv else "quote fields that hold a comma or newline"
                raise DataError(f"has {len(row)} fields, the header has {len(header)}", path=path, line=start, hint=hint)
            else:
                records.append(dict(zip(header, row)))
                lines.append(start)
            start = reader.line_num + 1  # a quoted field may span lines: the next record starts here
    except csv.Error as e:
        raise DataError(f"is not valid CSV ({e})", path=path, line=reader.line_num,
                        hint="check the quotes on this line") from e
    if not records:
        raise DataError("has a header but no rows", path=path, hint="add rows below the header line")
    return header, records, lines


def _check_header(path: str, header: list[str], line: int) -> list[str]:
    header = [name.strip() for name in header]
    if "" in header:
        raise DataError(f"header cell {header.index('') + 1} is empty", path=path, line=line,
                        hint="give every column a name in the first line")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"duplicate column names in the header: {', '.join(duplicates)}", path=path, line=line,
                        hint="give every column a unique name")
    return header


def _read_json_array(path: str, text: str) -> tuple[list[str], list[dict], list[int]]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"is not valid JSON ({e.msg})", path=path, line=e.lineno,
                        hint="fix the JSON, or write one object per line (JSON Lines)") from e
    if not rows:
        raise DataError("JSON array is empty", path=path, hint="add objects to the array")
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"item {index} of the array is a {type(row).__name__}, expected an object", path=path,
                            line=index, hint='write each row as {"source": ..., "target": ...}')
    return _columns_of(rows), rows, list(range(1, len(rows) + 1))


def _read_json_lines(path: str, text: str) -> tuple[list[str], list[dict], list[int]]:
    records, lines = [], []
    # split on "\n" only: str.splitlines() also splits at U+2028 and friends, which JSON strings may hold
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            where = e.msg if e.msg.endswith(" at") else f"{e.msg} at"  # "Unterminated string starting at"
            raise DataError(f"is not valid JSON ({where} character {e.pos + 1})", path=path, line=number,
                            hint=_json_lines_hint(text)) from e
        if not isinstance(record, dict):
            raise DataError(f"is a JSON {type(record).__name__}, expected an object", path=path, line=number,
                            hint='write one object per line, e.g. {"source": ..., "target": ...}')
        records.append(record)
        lines.append(number)
    return _columns_of(records), records, lines


def _json_lines_hint(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return "each line must be one complete JSON object"
    return "the file is one JSON object over several lines; write a JSON array of objects or one object per line"


def _columns_of(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for record in records for key in record))  # first-seen order


# ----------------------------------------------------------------------------- columns


def select_pairs(
    name: str, origin: str, columns: list[str], records: list[dict], lines: list[int], *,
    source_column: str | None, target_column: str | None,
    source_lang: str | None, target_lang: str | None,
    candidates: list[tuple[str, str]], require_target: bool = True,
) -> Split:
    """Pick the source and target of every record (missing values stay None for validate_rows)."""
    if _use_translation(columns, records, source_column, target_column, source_lang, target_lang):
        return _translation_pairs(name, origin, records, lines, source_lang, target_lang)
    guesses = ([(source_lang, target_lang)] if source_lang and target_lang else []) + list(candidates)
    src, tgt = _pick_columns(origin, columns, source_column, target_column, guesses, require_target)
    sources = [_text(origin, line, src, record.get(src)) for record, line in zip(records, lines)]
    targets = [_text(origin, line, tgt, record.get(tgt)) if tgt else None for record, line in zip(records, lines)]
    return Split(name, origin, sources, targets, list(lines))


def _use_translation(columns, records, source_column, target_column, source_lang, target_lang) -> bool:
    """The WMT layout {"translation": {"en": ..., "de": ...}}, unless the given columns exist."""
    if "translation" not in columns or not (source_lang and target_lang):
        return False
    if source_column in columns and target_column in columns:
        return False
    return any(isinstance(record.get("translation"), dict) for record in records)


def _translation_pairs(name, origin, records, lines, source_lang, target_lang) -> Split:
    _check_languages(source_lang, target_lang, "each 'translation' would give its source as its target")
    sources, targets = [], []
    for record, line in zip(records, lines):
        pair = record.get("translation")
        if pair is None:  # a missing row: validate_rows reports or drops it
            sources.append(None)
            targets.append(None)
            continue
        if not isinstance(pair, dict):
            raise DataError(f"'translation' is a {type(pair).__name__}, expected an object of languages", path=origin,
                            line=line, column="translation", hint='write {"translation": {"en": ..., "de": ...}}')
        for lang, out in ((source_lang, sources), (target_lang, targets)):
            if lang not in pair:
                present = ", ".join(map(str, pair)) or "none"
                raise DataError(f"has no language '{lang}' (present: {present})", path=origin, line=line,
                                column="translation", hint="set source_lang and target_lang to languages in the data")
            out.append(_text(origin, line, f"translation.{lang}", pair[lang]))
    return Split(name, origin, sources, targets, list(lines))


def _pick_columns(origin, columns, source_column, target_column, guesses, require_target):
    """The given columns, else the first guessed pair present (language columns, candidates), else the only two."""
    for given in (source_column, target_column):
        if given is not None and given not in columns:
            raise DataError(f"has no column '{given}' (columns: {', '.join(columns)})", path=origin, column=given,
                            hint="set source_column / target_column to one of the columns")
    if source_column and target_column:
        if source_column == target_column:
            raise ConfigError(f"source_column and target_column are both '{source_column}': each target would be "
                              "its source", key="target_column", hint="set target_column to the column of the targets")
        return source_column, target_column
    for src, tgt in guesses:  # a given column stands in for its side of each guess
        src, tgt = source_column or src, target_column or tgt
        if src in columns and tgt in columns and src != tgt:
            return src, tgt
    if not require_target:  # unlabelled data (e.g. a test file to translate): a source column is enough
        src = source_column or next((s for s, _ in guesses if s in columns), None)
        if src or len(columns) == 1:
            return src or columns[0], target_column
    others = [c for c in columns if c not in (source_column, target_column)]
    if len(columns) == 2 and others:  # exactly two columns: the first is the source, the second the target
        return source_column or others[0], target_column or others[-1]
    hint = "set source_column and target_column"
    if "translation" in columns:
        hint = "set source_lang and target_lang for the 'translation' column"
    raise DataError(f"cannot tell which columns are source and target (columns: {', '.join(columns)})", path=origin,
                    hint=hint)


def _text(origin: str, line: int, column: str, value) -> str | None:
    """A value as text: strings as written, numbers as JSON writes them, null/NaN as missing."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON may escape half a surrogate pair ("\ud800"); tokenizers crash on it
            raise DataError(f"holds an invalid Unicode character (a lone surrogate, U+{ord(value[e.start]):04X}, at "
                            f"character {e.start + 1})", path=origin, line=line, column=column,
                            hint="fix the text: a \\ud800-\\udfff escape must be half of a surrogate pair") from e
        return value
    if value is None:
        return value
    if isinstance(value, float) and math.isnan(value):  # pandas writes a missing text cell as NaN
        return None
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise DataError(f"value is a {type(value).__name__}, expected text", path=origin, line=line, column=column,
                    hint="store one string per cell, or point source_column / target_column elsewhere")


# ----------------------------------------------------------------------------- validation


def validate_rows(
    split_name: str, origin: str, sources: list, targets: list, lines: list[int], *,
    on_invalid: str, require_target: bool = True,
) -> Split:
    """Drop (or fail on) rows whose source or target is missing or blank."""
    if on_invalid not in ("drop", "fail"):
        raise ConfigError(f"invalid value '{on_invalid}', expected 'drop' or 'fail'", key="invalid_rows",
                          hint="set invalid_rows: drop or invalid_rows: fail")
    problems = [_problem(source, target, require_target) for source, target in zip(sources, targets)]
    bad = [i for i, why in enumerate(problems) if why]
    if not bad:
        return Split(split_name, origin, list(sources), list(targets), list(lines))
    examples = ", ".join(f"{origin}:{lines[i]} ({problems[i]})" for i in bad[:SHOW_EXAMPLES])
    first = bad[0]
    if on_invalid == "fail":
        raise DataError(f"{len(bad)} of {len(sources)} rows are invalid: {examples}", path=origin,
                        line=lines[first], hint="fix the rows or set invalid_rows: drop")
    if len(bad) == len(sources):
        raise DataError(f"all {len(sources)} rows are invalid, the first has {problems[first]}", path=origin,
                        line=lines[first], hint="check source_column / target_column and the file's contents")
    logger.warning("%s: dropped %d of %d %s rows with an empty or missing source/target: %s",
                   origin, len(bad), len(sources), split_name, examples)
    keep = [i for i, why in enumerate(problems) if not why]
    return _subset(Split(split_name, origin, sources, targets, lines), split_name, keep, dropped=len(bad))


def _problem(source, target, require_target: bool) -> str | None:
    roles = [("source", source), ("target", target)] if require_target else [("source", source)]
    for role, value in roles:
        if value is None:
            return f"missing {role}"
        if not value.strip():
            return f"empty {role}"
    return None


# ----------------------------------------------------------------------------- splits


def load_file_split(
    name: str, path: str, *, source_column: str | None, target_column: str | None,
    source_lang: str | None, target_lang: str | None, candidates: list[tuple[str, str]],
    on_invalid: str, max_samples: int | None = None, require_target: bool = True,
) -> Split:
    """Read a file, pick columns, validate, then keep the first max_samples valid rows."""
    columns, records, lines = read_file(path, source_lang, target_lang)
    return build_split(name, str(path), columns, records, lines, on_invalid=on_invalid, max_samples=max_samples,
                        require_target=require_target, source_column=source_column, target_column=target_column,
                        source_lang=source_lang, target_lang=target_lang, candidates=candidates)


def load_hub_split(
    name: str, dataset_name: str, dataset_config_name: str | None, split: str, *,
    revision: str | None = None, token: str | bool | None = None, cache_dir: str | None = None,
    source_column: str | None, target_column: str | None,
    source_lang: str | None, target_lang: str | None, candidates: list[tuple[str, str]],
    on_invalid: str, max_samples: int | None = None, require_target: bool = True,
) -> Split:
    """One split of a Hub dataset, or of a local folder / saved dataset that load_dataset accepts."""
    import datasets

    origin = f"{dataset_name}[{split}]"
    try:
        ds = datasets.load_dataset(dataset_name, dataset_config_name, split=split, revision=revision, token=token,
                                   cache_dir=cache_dir)
    except (OSError, ValueError) as e:  # not found, no network, unknown split or config
        reason = " ".join(str(e).split())[:300]
        raise DataError(f"cannot load the dataset ({type(e).__name__}: {reason})", path=origin,
                        hint="check dataset_name, dataset_config_name and the split; offline, point dataset_name "
                             "at a local folder of data files, or use train_file") from e
    if len(ds) == 0:
        raise DataError("split has no rows", path=origin, hint="choose another split or dataset")
    records = ds.to_list()
    return build_split(name, origin, list(ds.column_names), records, list(range(1, len(records) + 1)),
                        on_invalid=on_invalid, max_samples=max_samples, require_target=require_target,
                        source_column=source_column, target_column=target_column,
                        source_lang=source_lang, target_lang=target_lang, candidates=candidates)


def read_file(path: str, source_lang: str | None, target_lang: str | None) -> tuple[list[str], list[dict], list[int]]:
    """(columns, records, lines) of a data file, or of a {lang} pair of plain-text files."""
    if PARALLEL_PLACEHOLDER in str(path):
        return read_parallel(str(path), source_lang, target_lang)
    return read_records(path)


def build_split(name, origin, columns, records, lines, *, on_invalid, max_samples, require_target, **pick) -> Split:
    """Records into a Split: pick the columns (`pick`: select_pairs' keys), validate, keep max_samples."""
    pairs = select_pairs(name, origin, columns, records, lines, require_target=require_target, **pick)
    split = validate_rows(name, origin, pairs.sources, pairs.targets, pairs.lines, on_invalid=on_invalid,
                          require_target=require_target)
    if max_samples is not None and len(split) > max_samples:  # after validation: max_samples counts usable rows
        split = _subset(split, name, list(range(max_samples)), split.dropped)
    return split


def carve_validation(train: Split, size: float, seed: int) -> tuple[Split, Split]:
    """Split train into (train, validation) reproducibly: size < 1 is a fraction, else a row count."""
    n, key = len(train), "validation_split_size"
    if n < 2:
        raise DataError(f"the training data has {n} row(s), too few to carve a validation split from",
                        path=train.origin, key=key, hint="add rows or give a validation_file")
    if size <= 0 or (size >= 1 and size != int(size)):
        raise DataError(f"invalid value {size}: use a fraction below 1 or a whole number of rows", key=key,
                        hint="e.g. validation_split_size: 0.05")
    count = max(1, math.ceil(n * size)) if size < 1 else int(size)
    if count >= n:
        raise DataError(f"a validation split of {count} rows leaves no training rows (train has {n})",
                        path=train.origin, key=key, hint="use a smaller validation_split_size or a validation_file")
    order = list(range(n))
    random.Random(seed).shuffle(order)  # a seeded RNG of our own: the same split on every run and machine
    held_out = set(order[:count])
    kept = [i for i in range(n) if i not in held_out]  # both halves keep the file's order
    return _subset(train, train.name, kept, train.dropped), _subset(train, "validation", sorted(held_out), 0)


def _subset(split: Split, name: str, rows: list[int], dropped: int) -> Split:
    return Split(name, split.origin, [split.sources[i] for i in rows], [split.targets[i] for i in rows],
                 [split.lines[i] for i in rows], dropped)


# ----------------------------------------------------------------------------- report


def length_stats(lengths: list[int], max_length: int) -> dict:
    """Nearest-rank percentiles of token lengths, and how many exceed max_length."""
    ordered = sorted(lengths)

    def rank(p: float) -> int:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else 0

    over = sum(n > max_length for n in ordered)
    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": rank(100), "over_max": over}


def format_data_report(
    splits: dict[str, Split], source_lengths: dict[str, list[int]], target_lengths: dict[str, list[int]],
    max_source_length: int, max_target_length: int, batching: str | None = None,
) -> str:
    """A small table of rows and token lengths per split, a line for each split that will truncate
    rows, and `batching`: how training batches are cut and the padding to expect."""
    table = [f"{'split':<12}{'rows':>8}{'dropped':>9}  {'source p50/p90/p99/max':<24}target p50/p90/p99/max"]
    notes = []
    for name, split in splits.items():
        src = length_stats(source_lengths.get(name, []), max_source_length)
        tgt = length_stats(target_lengths.get(name, []), max_target_length)
        src_text = _quartet(src) if source_lengths.get(name) else "-"
        tgt_text = _quartet(tgt) if target_lengths.get(name) else "-"
        table.append(f"{name:<12}{len(split):>8}{split.dropped:>9}  {src_text:<24}{tgt_text}")
        over = [f"{n} of {len(split)} {what} (longer than {limit})" for n, what, limit in
                ((src["over_max"], "sources", f"max_source_length={max_source_length}"),
                 (tgt["over_max"], "targets", f"max_target_length={max_target_length}")) if n]
        if over:  # a line only where something is cut: a report of zeros hides the one that matters
            notes.append(f"{name}: will truncate {' and '.join(over)}")
    return "\n".join(table + notes + ([batching] if batching else []))


def _quartet(stats: dict) -> str:
    return f"{stats['p50']}/{stats['p90']}/{stats['p99']}/{stats['max']}"
