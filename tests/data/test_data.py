"""Tests for the data wing's readers and splits: reading files, picking columns, validating rows, splits, report."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from hf_encdec.data.reader import read_records
from hf_encdec.data.splits import (
    Split,
    carve_validation,
    format_data_report,
    length_stats,
    load_file_split,
    load_hub_split,
    select_pairs,
    validate_rows,
)
from hf_encdec.errors import DataError

CANDIDATES = [("source", "target"), ("input", "output"), ("text", "summary"), ("document", "summary"), ("article", "highlights")]
PAIRS = [("Hello world", "Hallo Welt"), ("A cat, a dog", "Eine Katze, ein Hund"), ("Good night", "Gute Nacht")]


def load(path, **overrides):
    options = dict(source_column=None, target_column=None, source_lang=None, target_lang=None, candidates=CANDIDATES, on_invalid="fail")
    options.update(overrides)
    return load_file_split("train", str(path), **options)


def pick(columns, records, **overrides):
    options = dict(source_column=None, target_column=None, source_lang=None, target_lang=None, candidates=CANDIDATES)
    options.update(overrides)
    return select_pairs("train", "data.jsonl", columns, records, list(range(1, len(records) + 1)), **options)


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding, newline="")
    return path


def write_jsonl(path, rows):
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def assert_one_line(error: DataError, *parts: str):
    text = str(error)
    assert "\n" not in text
    for part in parts:
        assert part in text, f"{part!r} not in {text!r}"


# ----------------------------------------------------------------------------- formats


def _write_format(tmp_path, fmt):
    rows = [{"source": s, "target": t} for s, t in PAIRS]
    if fmt == "csv":
        return write(tmp_path / "d.csv", 'source,target\nHello world,Hallo Welt\n"A cat, a dog","Eine Katze, ein Hund"\nGood night,Gute Nacht\n')
    if fmt == "tsv":
        return write(tmp_path / "d.tsv", "source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in PAIRS))
    if fmt == "json":
        return write(tmp_path / "d.json", json.dumps(rows, indent=2))
    if fmt == "jsonl":
        return write_jsonl(tmp_path / "d.jsonl", rows)
    if fmt == "json-lines-in-json":
        return write_jsonl(tmp_path / "d.json", rows)
    if fmt == "csv.gz":
        path = tmp_path / "d.csv.gz"
        path.write_bytes(gzip.compress(("source,target\n" + "".join(f'"{s}","{t}"\n' for s, t in PAIRS)).encode()))
        return path
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
        return tmp_path / "d.parquet"
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "json-lines-in-json", "csv.gz", "parquet"])
def test_every_format_gives_the_same_pairs(tmp_path, fmt):
    split = load(_write_format(tmp_path, fmt))
    assert list(zip(split.sources, split.targets)) == PAIRS
    assert len(split) == 3 and split.dropped == 0 and split.name == "train"


def test_line_numbers_per_format(tmp_path):
    assert load(_write_format(tmp_path, "csv")).lines == [2, 3, 4]
    assert load(_write_format(tmp_path, "json")).lines == [1, 2, 3]  # row index
    assert load(_write_format(tmp_path, "parquet")).lines == [1, 2, 3]
    path = write(tmp_path / "gaps.jsonl", '{"source": "a", "target": "b"}\n\n\n{"source": "c", "target": "d"}\n')
    assert load(path).lines == [1, 4]  # the real file line, blank lines counted


def test_csv_keeps_text_verbatim(tmp_path):
    path = write(tmp_path / "d.csv", "source,target\nNA,null\nNone,007\n1e3, padded \n")
    columns, records, lines = read_records(str(path))
    assert columns == ["source", "target"]
    assert records == [{"source": "NA", "target": "null"}, {"source": "None", "target": "007"}, {"source": "1e3", "target": " padded "}]
    assert lines == [2, 3, 4]


def test_csv_quoted_newlines_keep_following_line_numbers(tmp_path):
    text = 'source,target\n"first\nsecond, third",x\nplain,y\n"a ""quoted"" word","one\ntwo\nthree"\nlast,z\n'
    path = write(tmp_path / "d.csv", text)
    _, records, lines = read_records(str(path))
    assert records[0] == {"source": "first\nsecond, third", "target": "x"}
    assert records[2] == {"source": 'a "quoted" word', "target": "one\ntwo\nthree"}
    assert lines == [2, 4, 5, 8]


def test_csv_crlf_and_bom(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffsource,target\r\na,b\r\nc,d\r\n".encode())
    columns, records, lines = read_records(str(path))
    assert columns == ["source", "target"] and records[1] == {"source": "c", "target": "d"} and lines == [2, 3]


def test_csv_empty_field_is_empty_string(tmp_path):
    path = write(tmp_path / "d.csv", "source,target\na,\n")
    assert read_records(str(path))[1] == [{"source": "a", "target": ""}]


def test_tsv_keeps_quote_marks(tmp_path):
    path = write(tmp_path / "d.tsv", 'source\ttarget\n"Hi," she said.\t"Hallo", sagte sie.\n')
    assert read_records(str(path))[1] == [{"source": '"Hi," she said.', "target": '"Hallo", sagte sie.'}]


def test_json_keeps_nested_values(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "translation": {"en": "Hi", "de": "Hallo"}}])
    columns, records, _ = read_records(str(path))
    assert columns == ["id", "translation"] and records[0]["translation"] == {"en": "Hi", "de": "Hallo"}


# ----------------------------------------------------------------------------- read errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        read_records(str(tmp_path / "nope.csv"))
    assert_one_line(info.value, "nope.csv", "file not found")


def test_directory_and_unsupported_extension(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_records(str(tmp_path))
    with pytest.raises(DataError) as info:
        read_records(str(write(tmp_path / "d.txt", "hello\n")))
    assert_one_line(info.value, "d.txt", "'.txt'", ".csv", ".tsv", ".jsonl", ".parquet")


@pytest.mark.parametrize("name,text", [("e.csv", ""), ("e.jsonl", "\n \n"), ("e.json", "[]"), ("e.csv", "source,target\n")])
def test_empty_file(tmp_path, name, text):
    with pytest.raises(DataError) as info:
        read_records(str(write(tmp_path / name, text)))
    assert_one_line(info.value, name)
    assert "empty" in str(info.value) or "no rows" in str(info.value)


def test_malformed_jsonl_names_the_real_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"source": "a", "target": "b"}\n\n{"source": "c", "target": \n{"source": "e", "target": "f"}\n')
    with pytest.raises(DataError) as info:
        read_records(str(path))
    assert info.value.line == 3
    assert_one_line(info.value, f"{path}:3", "not valid JSON")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"source": "a", "target": "b"}\n["c", "d"]\n')
    with pytest.raises(DataError) as info:
        read_records(str(path))
    assert_one_line(info.value, f"{path}:2", "list", "object")


def test_pretty_printed_single_object_gets_a_hint(tmp_path):
    path = write(tmp_path / "d.json", '{\n  "source": "a",\n  "target": "b"\n}\n')
    with pytest.raises(DataError, match="JSON array"):
        read_records(str(path))


def test_non_utf8_byte_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"source,target\na,b\nc,caf\xe9\n")
    with pytest.raises(DataError) as info:
        read_records(str(path))
    assert info.value.line == 3
    assert_one_line(info.value, f"{path}:3", "UTF-8")


def test_csv_duplicate_header(tmp_path):
    with pytest.raises(DataError) as info:
        read_records(str(write(tmp_path / "d.csv", "source,target,source\na,b,c\n")))
    assert_one_line(info.value, "d.csv:1", "duplicate", "source")


def test_csv_empty_header_cell(tmp_path):
    with pytest.raises(DataError, match="header cell 2 is empty"):
        read_records(str(write(tmp_path / "d.csv", "source,,target\na,b,c\n")))


def test_csv_wrong_field_count_names_the_line(tmp_path):
    path = write(tmp_path / "d.csv", 'source,target\n"multi\nline",x\nok,y\ntoo,many,fields\n')
    with pytest.raises(DataError) as info:
        read_records(str(path))
    assert info.value.line == 5
    assert_one_line(info.value, f"{path}:5", "3 fields", "2")


def test_csv_bad_quoting_is_an_error_not_mangled_text(tmp_path):
    with pytest.raises(DataError) as info:
        read_records(str(write(tmp_path / "d.csv", 'source,target\na,b\n"Hi," she said,x\n')))
    assert_one_line(info.value, "d.csv:3", "CSV")


# ----------------------------------------------------------------------------- columns


def test_nested_translation_layout(tmp_path):
    rows = [{"translation": {"en": s, "de": t, "fr": "x"}} for s, t in PAIRS]
    split = load(write_jsonl(tmp_path / "wmt.jsonl", rows), source_lang="en", target_lang="de")
    assert list(zip(split.sources, split.targets)) == PAIRS
    reverse = load(tmp_path / "wmt.jsonl", source_lang="de", target_lang="en")
    assert reverse.sources[0] == "Hallo Welt"


def test_nested_translation_missing_language_lists_present(tmp_path):
    path = write_jsonl(tmp_path / "wmt.jsonl", [{"translation": {"en": "a", "de": "b"}}, {"translation": {"en": "c", "fr": "d"}}])
    with pytest.raises(DataError) as info:
        load(path, source_lang="en", target_lang="de")
    assert_one_line(info.value, "wmt.jsonl:2", "'de'", "en, fr")


def test_translation_without_languages_asks_for_them():
    with pytest.raises(DataError, match="source_lang and target_lang"):
        pick(["id", "translation", "meta"], [{"id": 1, "translation": {"en": "a", "de": "b"}, "meta": ""}])


def test_translation_used_when_given_columns_absent():
    split = pick(["translation"], [{"translation": {"en": "a", "de": "b"}}], source_column="src", target_column="tgt", source_lang="en", target_lang="de")
    assert (split.sources, split.targets) == (["a"], ["b"])


def test_flat_language_columns():
    records = [{"id": "1", "de": "Hallo", "en": "Hello"}]
    split = pick(["id", "de", "en"], records, source_lang="en", target_lang="de")
    assert (split.sources, split.targets) == (["Hello"], ["Hallo"])


@pytest.mark.parametrize("src,tgt", [("input", "output"), ("document", "summary"), ("article", "highlights")])
def test_auto_detect_from_candidates(src, tgt):
    split = pick(["id", tgt, src, "extra"], [{"id": "1", src: "S", tgt: "T", "extra": "e"}])
    assert (split.sources, split.targets) == (["S"], ["T"])


def test_candidates_are_tried_in_order():
    split = pick(["text", "document", "summary"], [{"text": "t", "document": "d", "summary": "s"}])
    assert split.sources == ["t"]


def test_two_column_fallback_in_file_order():
    split = pick(["en_text", "de_text"], [{"en_text": "a", "de_text": "b"}])
    assert (split.sources, split.targets) == (["a"], ["b"])


def test_one_given_column_completes_the_pair():
    records = [{"id": "1", "body": "S", "summary": "T"}]
    assert pick(["id", "body", "summary"], records, source_column="body").targets == ["T"]
    assert pick(["x", "y"], [{"x": "S", "y": "T"}], target_column="x").sources == ["T"]


def test_ambiguous_columns_list_them():
    with pytest.raises(DataError) as info:
        pick(["a", "b", "c"], [{"a": "1", "b": "2", "c": "3"}])
    assert_one_line(info.value, "data.jsonl", "cannot tell which columns are source and target", "a, b, c", "source_column")


def test_missing_given_column_names_it_and_lists_available(tmp_path):
    path = _write_format(tmp_path, "csv")
    with pytest.raises(DataError) as info:
        load(path, source_column="src", target_column="target")
    assert info.value.column == "src"
    assert_one_line(info.value, str(path), "'src'", "source, target")


def test_values_become_text_or_errors():
    records = [{"source": 7, "target": 2.5}, {"source": True, "target": None}, {"source": "x"}]
    split = pick(["source", "target"], records)
    assert split.sources == ["7", "true", "x"] and split.targets == ["2.5", None, None]
    with pytest.raises(DataError) as info:
        pick(["source", "target"], [{"source": "a", "target": "b"}, {"source": ["a"], "target": "b"}])
    assert_one_line(info.value, "data.jsonl:2", "column 'source'", "list")


def test_unlabelled_data_prefers_a_source_candidate_over_the_two_column_fallback():
    split = pick(["id", "text"], [{"id": "7", "text": "a"}], require_target=False)
    assert (split.sources, split.targets) == (["a"], [None])
    assert pick(["only"], [{"only": "a"}], require_target=False).sources == ["a"]
    labelled = pick(["en_text", "de_text"], [{"en_text": "a", "de_text": "b"}], require_target=False)
    assert labelled.targets == ["b"]


def test_target_optional_for_unlabelled_data():
    split = pick(["source", "id", "x"], [{"source": "a", "id": "1", "x": ""}], require_target=False)
    assert (split.sources, split.targets) == (["a"], [None])
    kept = validate_rows("test", "t.jsonl", split.sources, split.targets, split.lines, on_invalid="fail", require_target=False)
    assert kept.sources == ["a"]


# ----------------------------------------------------------------------------- validation


def test_invalid_rows_dropped_with_warning(tmp_path, caplog):
    path = write(tmp_path / "d.csv", "source,target\na,b\n,x\nc,   \nd,e\n")
    with caplog.at_level(logging.WARNING, logger="hf_encdec.data"):
        split = load(path, on_invalid="drop")
    assert (split.sources, split.targets, split.lines, split.dropped) == (["a", "d"], ["b", "e"], [2, 5], 2)
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "dropped 2 of 4" in message
    assert f"{path}:3 (empty source)" in message and f"{path}:4 (empty target)" in message


def test_missing_values_reported_as_missing(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_encdec.data"):
        split = validate_rows("train", "d.jsonl", ["a", None, "c"], ["x", "y", None], [1, 2, 3], on_invalid="drop")
    assert split.sources == ["a"] and split.dropped == 2
    assert "d.jsonl:2 (missing source)" in caplog.text and "d.jsonl:3 (missing target)" in caplog.text


def test_drop_warning_shows_at_most_five_examples(caplog):
    sources = ["ok"] + [""] * 8
    with caplog.at_level(logging.WARNING, logger="hf_encdec.data"):
        validate_rows("train", "d.jsonl", sources, ["t"] * 9, list(range(1, 10)), on_invalid="drop")
    assert "d.jsonl:6 " in caplog.text and "d.jsonl:7 " not in caplog.text and "dropped 8 of 9" in caplog.text


def test_invalid_rows_fail(tmp_path):
    path = write(tmp_path / "d.csv", "source,target\na,b\nc,\n,\n")
    with pytest.raises(DataError) as info:
        load(path, on_invalid="fail")
    assert info.value.line == 3
    assert_one_line(info.value, f"{path}:3", "2 of 3 rows", "empty target", "invalid_rows: drop")


def test_all_rows_invalid_is_an_error_even_when_dropping():
    with pytest.raises(DataError) as info:
        validate_rows("train", "d.jsonl", ["", " "], ["x", "y"], [4, 9], on_invalid="drop")
    assert_one_line(info.value, "d.jsonl:4", "all 2 rows")


def test_unknown_on_invalid_value():
    with pytest.raises(ValueError, match="invalid_rows"):
        validate_rows("train", "d.jsonl", ["a"], ["b"], [1], on_invalid="skip")


def test_max_samples_counts_valid_rows(tmp_path):
    path = write(tmp_path / "d.csv", "source,target\n,x\na,b\nc,d\ne,f\n")
    split = load(path, on_invalid="drop", max_samples=2)
    assert split.sources == ["a", "c"] and split.lines == [3, 4] and split.dropped == 1


# ----------------------------------------------------------------------------- hub


def _local_dataset(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"input": s, "output": t} for s, t in PAIRS] + [{"input": "x", "output": ""}])
    write_jsonl(folder / "validation.jsonl", [{"input": "v", "output": "w"}])
    return folder


def test_load_hub_split_from_a_local_folder(tmp_path, caplog):
    folder = _local_dataset(tmp_path)
    options = dict(source_column=None, target_column=None, source_lang=None, target_lang=None, candidates=CANDIDATES, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="hf_encdec.data"):
        train = load_hub_split("train", str(folder), None, "train", on_invalid="drop", **options)
    assert list(zip(train.sources, train.targets)) == PAIRS and train.dropped == 1
    assert train.origin == f"{folder}[train]" and train.lines == [1, 2, 3]
    assert f"{folder}[train]:4 (empty target)" in caplog.text
    validation = load_hub_split("validation", str(folder), None, "validation", on_invalid="fail", max_samples=5, **options)
    assert validation.sources == ["v"]
    with pytest.raises(DataError) as info:
        load_hub_split("test", str(folder), None, "test", on_invalid="fail", **options)
    assert_one_line(info.value, f"{folder}[test]", "cannot load", "split")
    with pytest.raises(DataError, match="dataset_name"):
        load_hub_split("train", str(tmp_path / "absent"), None, "train", on_invalid="fail", **options)


# ----------------------------------------------------------------------------- validation split


def _train(n):
    return Split("train", "t.jsonl", [f"s{i}" for i in range(n)], [f"t{i}" for i in range(n)], [i + 10 for i in range(n)], dropped=3)


def test_carve_validation_is_reproducible():
    first = carve_validation(_train(100), 0.1, seed=42)
    again = carve_validation(_train(100), 0.1, seed=42)
    other = carve_validation(_train(100), 0.1, seed=7)
    assert first == again
    assert first[1].sources != other[1].sources


@pytest.mark.parametrize("size,expected", [(0.1, 10), (0.25, 25), (0.001, 1), (1, 1), (30, 30), (30.0, 30)])
def test_carve_validation_sizes_disjoint_and_covering(size, expected):
    train, validation = carve_validation(_train(100), size, seed=0)
    assert len(validation) == expected and len(train) == 100 - expected
    assert validation.name == "validation" and train.name == "train" and validation.origin == "t.jsonl"
    assert set(train.sources) | set(validation.sources) == set(_train(100).sources)
    assert not set(train.sources) & set(validation.sources)
    for split in (train, validation):  # line numbers travel with their rows, order is kept
        assert split.lines == [int(s[1:]) + 10 for s in split.sources] and split.lines == sorted(split.lines)
    assert train.dropped == 3 and validation.dropped == 0


def test_carve_validation_independent_of_hash_seed():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import hf_encdec

    code = (
        "from hf_encdec.data.splits import Split, carve_validation as c\n"
        "s = Split('train', 'x', [str(i) for i in range(50)], ['t'] * 50, list(range(50)))\n"
        "print(c(s, 0.2, 3)[1].sources)"
    )
    root = str(Path(hf_encdec.__file__).parent.parent)
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        outputs.add(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout)
    assert len(outputs) == 1 and outputs != {""}


@pytest.mark.parametrize("n,size", [(1, 0.5), (0, 0.5), (10, 10), (10, 0), (10, 2.5)])
def test_carve_validation_errors(n, size):
    with pytest.raises(DataError) as info:
        carve_validation(_train(n), size, seed=0)
    assert info.value.key == "validation_split_size"
    assert_one_line(info.value, "validation_split_size")


# ----------------------------------------------------------------------------- report


def test_length_stats_nearest_rank():
    stats = length_stats(list(range(100, 0, -1)), max_length=95)
    assert stats == {"p50": 50, "p90": 90, "p99": 99, "max": 100, "over_max": 5}
    assert length_stats([7], 5) == {"p50": 7, "p90": 7, "p99": 7, "max": 7, "over_max": 1}
    assert length_stats([], 5)["over_max"] == 0
    assert length_stats([1, 2, 3, 4], 10)["p50"] == 2


def test_format_data_report_shows_truncation():
    splits = {"train": _train(4), "validation": Split("validation", "v.jsonl", ["a", "b"], ["c", "d"], [1, 2])}
    report = format_data_report(
        splits,
        source_lengths={"train": [3, 9, 12, 5], "validation": [2, 4]},
        target_lengths={"train": [1, 2, 3, 40], "validation": [1, 1]},
        max_source_length=8,
        max_target_length=32,
    )
    lines = report.splitlines()
    assert lines[0].split()[:3] == ["split", "rows", "dropped"]
    assert lines[1].split() == ["train", "4", "3", "5/12/12/12", "2/40/40/40"]
    assert ("train: will truncate 2 of 4 sources (longer than max_source_length=8) and 1 of 4 targets (longer than "
            "max_target_length=32)") in lines
    assert not [line for line in lines if line.startswith("validation:")]  # nothing truncated: no line


def test_parallel_text_files_by_language_pattern(tmp_path):
    import gzip

    from hf_encdec.data.splits import load_file_split

    with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as f:
        f.write("A dog runs.\nNA\n007\n")
    (tmp_path / "train.de").write_text("Ein Hund rennt.\nNA\n007\n", encoding="utf-8")
    (tmp_path / "train.de.gz").write_bytes(gzip.compress("Ein Hund rennt.\nNA\n007\n".encode()))
    split = load_file_split("train", str(tmp_path / "train.{lang}.gz"), source_column=None, target_column=None,
                            source_lang="en", target_lang="de", candidates=[], on_invalid="fail")
    assert split.sources == ["A dog runs.", "NA", "007"]
    assert split.targets == ["Ein Hund rennt.", "NA", "007"]
    assert split.lines == [1, 2, 3]


def test_parallel_text_files_must_align(tmp_path):
    from hf_encdec.data.reader import read_parallel

    (tmp_path / "t.en").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "t.de").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="3 lines but its de side has 2"):
        read_parallel(str(tmp_path / "t.{lang}"), "en", "de")
    with pytest.raises(DataError, match="not found"):
        read_parallel(str(tmp_path / "t.{lang}"), "en", "fr")


def test_parallel_text_files_with_windows_line_endings_read_clean(tmp_path):
    from hf_encdec.data.splits import load_file_split

    (tmp_path / "t.en").write_bytes(b"A dog runs.\r\nA cat  \r\nlast\r\n")
    (tmp_path / "t.de").write_bytes(b"Ein Hund rennt.\r\nEine Katze  \r\nletzte")  # no newline at the end
    split = load_file_split("train", str(tmp_path / "t.{lang}"), source_column=None, target_column=None,
                            source_lang="en", target_lang="de", candidates=[], on_invalid="fail")
    assert split.sources == ["A dog runs.", "A cat  ", "last"]
    assert split.targets == ["Ein Hund rennt.", "Eine Katze  ", "letzte"]


def test_parallel_text_files_need_two_languages_and_two_files(tmp_path):
    from hf_encdec.data.reader import read_parallel
    from hf_encdec.errors import ConfigError

    (tmp_path / "t.en").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_parallel(str(tmp_path / "t.{lang}"), "en", "en")
    assert info.value.key == "target_lang"
    assert_one_line(info.value, "source_lang and target_lang are both 'en'", "one file as both sides")
    (tmp_path / "t.de").symlink_to(tmp_path / "t.en")
    with pytest.raises(DataError) as info:
        read_parallel(str(tmp_path / "t.{lang}"), "en", "de")
    assert_one_line(info.value, "t.en", "is the same file as", "t.de")


def test_one_language_for_both_sides_of_a_translation_column_is_refused():
    from hf_encdec.errors import ConfigError

    with pytest.raises(ConfigError, match="both 'en'"):
        pick(["translation"], [{"translation": {"en": "a", "de": "b"}}], source_lang="en", target_lang="en")
    with pytest.raises(ConfigError, match="source_column and target_column are both 'source'"):
        pick(["source", "target"], [{"source": "a", "target": "b"}], source_column="source", target_column="source")


@pytest.mark.parametrize("layout", ["columns", "translation"])
def test_a_lone_surrogate_names_its_row_and_column(layout):
    records = [{"source": "a", "target": "b"}, {"source": "ok", "target": "caf\udce9"}]
    options = {}
    if layout == "translation":
        records = [{"translation": {"en": r["source"], "de": r["target"]}} for r in records]
        options = {"source_lang": "en", "target_lang": "de"}
    with pytest.raises(DataError) as info:
        pick(["translation"] if layout == "translation" else ["source", "target"], records, **options)
    column = "translation.de" if layout == "translation" else "target"
    assert_one_line(info.value, "data.jsonl:2", f"column '{column}'", "lone surrogate, U+DCE9, at character 4")


def test_a_lone_surrogate_escape_in_a_json_file_is_a_data_error(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"source": "a", "target": "b"}\n{"source": "\\ud83d", "target": "b"}\n')
    with pytest.raises(DataError) as info:
        load(path)
    assert_one_line(info.value, f"{path}:2", "column 'source'", "lone surrogate")
    assert len(load(write(tmp_path / "ok.jsonl", '{"source": "\\ud83d\\ude00", "target": "b"}\n'))) == 1  # a pair


@pytest.mark.parametrize("name, content", [("d.csv", b"source,target\na,b\nc\0,d\n"),
                                           ("d.jsonl", "\n".join(['{"source": "a", "target": "b"}'] * 2)
                                            .encode("utf-16-le"))])
def test_nul_bytes_are_refused_with_their_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_records(str(path))
    assert_one_line(info.value, f"{path}:{3 if name == 'd.csv' else 1}", "NUL byte", "re-save the file as UTF-8")
