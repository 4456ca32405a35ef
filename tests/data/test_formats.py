"""Tests for hf_encdec.data.formats (the one stream) and hf_encdec.data.columns (the one column picker)."""

from __future__ import annotations

import gzip
import json

import pytest

from hf_encdec.data.columns import as_text, pick_columns, text_problem
from hf_encdec.data.formats import first_columns, iter_rows, no_rows_error, text_lines
from hf_encdec.data.reader import read_records
from hf_encdec.errors import DataError

CANDIDATES = [("source", "target"), ("input", "output"), ("text", "summary")]


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


@pytest.mark.parametrize("name, content, line, fragment", [
    ("bad.jsonl", '{"source": "a", "target": "b"}\n{"source": "c", "target": \n', 2, "is not valid JSON"),
    ("list.jsonl", '{"source": "a", "target": "b"}\n["c", "d"]\n', 2, "is a JSON list, expected an object"),
    ("latin.jsonl", b'{"source": "a", "target": "b"}\n{"source": "caf\xe9", "target": "x"}\n', 2, "byte 0xe9"),
    ("nul.jsonl", b'{"source": "a", "target": "b"}\n{"source": "a\0", "target": "x"}\n', 2, "NUL byte"),
    ("fields.csv", "source,target\na,b\nc,d,e\n", 3, "has 3 fields, the header has 2"),
    ("surrogate.jsonl", '{"source": "a", "target": "b"}\n{"source": "x\\ud800", "target": "y"}\n', 2,
     "a lone surrogate, U+D800, at character 2) in column 'source'"),
])
def test_training_and_the_stream_report_a_bad_row_alike(tmp_path, name, content, line, fragment):
    path = write(tmp_path / name, content)
    bad = next(row for row in iter_rows(path) if row.error)
    assert bad.line == line and fragment in bad.error and bad.hint
    with pytest.raises(DataError) as info:
        read_records(path)
    assert (info.value.line, info.value.message, info.value.hint) == (line, bad.error, bad.hint)


def test_a_json_array_is_read_whole_only_on_request(tmp_path):
    path = write(tmp_path / "a.jsonl", '\n[{"source": "a"},\n {"source": "b"}]\n')
    refused = list(iter_rows(path))
    assert refused[0].line == 2 and "JSON array" in refused[0].error
    rows = list(iter_rows(path, whole_arrays=True))
    assert [(row.line, row.record) for row in rows] == [(1, {"source": "a"}), (2, {"source": "b"})]
    broken = write(tmp_path / "b.json", '\n\n[{"source": "a"},\n {"source": }]\n')
    assert next(iter_rows(broken, whole_arrays=True)).line == 4  # the file's line, blank lines counted


def test_text_lines_keep_blank_lines_and_drop_line_ends(tmp_path):
    path = write(tmp_path / "in.txt.gz", gzip.compress(b"\xef\xbb\xbfone\r\n\ntwo  \nlast"))
    assert [(row.line, row.record) for row in text_lines(path)] == [
        (1, {"source": "one"}), (2, {"source": ""}), (3, {"source": "two  "}), (4, {"source": "last"})]
    assert [row.record for row in iter_rows(path)] == [row.record for row in text_lines(path)]


def test_a_csv_header_is_checked_for_every_reader(tmp_path):
    path = write(tmp_path / "d.csv", "id,source,id\n1,a,2\n")
    with pytest.raises(DataError, match="duplicate column names in the header: id"):
        list(iter_rows(path))


def test_first_columns_and_the_no_rows_error(tmp_path):
    assert first_columns(write(tmp_path / "d.tsv", "\n id \tsource\n")) == ["id", "source"]
    assert first_columns(write(tmp_path / "d.jsonl", '{"a": 1}\nnot json\n{"b": 2, "a": 3}\n')) == ["a", "b"]
    assert "header but no rows" in str(no_rows_error(str(tmp_path / "d.tsv")))
    assert "has no rows" in str(no_rows_error(write(tmp_path / "e.jsonl", "\n")))


def test_values_become_text_one_way():
    assert [as_text(v) for v in ("007", 7, 2.5, True, None, float("nan"))] == ["007", "7", "2.5", "true", None, None]
    assert text_problem(["a"])[0] == "value is a list, expected text"
    assert "U+DC00, at character 3" in text_problem("ab\udc00")[0]
    assert text_problem({"k": "v"}) and text_problem("plain") is None


def _source(columns, given=None, trained=None):
    return pick_columns("in.jsonl", columns, source_column=given, target_column=None,
                        guesses=[(trained, None), *CANDIDATES], source_only=True)


def test_a_source_only_pick_takes_the_first_guessed_source_never_a_pair():
    assert _source(["id", "input", "output", "source"]) == ("source", None)  # not the (input, output) pair
    assert _source(["id", "text", "sentence"], trained="sentence") == ("sentence", None)
    assert _source(["only"]) == ("only", None)
    assert _source(["id", "body"], given="body") == ("body", None)
    with pytest.raises(DataError) as info:
        _source(["id", "body"])  # two columns are no pair when only a source is read
    assert "cannot tell which column is the source (columns: id, body)" in str(info.value)
    with pytest.raises(DataError) as info:
        _source(["id", "body"], given="src")
    assert info.value.column == "src" and "set source_column" in str(info.value)


def test_a_pair_pick_falls_back_to_the_only_two_columns():
    assert pick_columns("d.csv", ["en_text", "de_text"], source_column=None, target_column=None,
                        guesses=CANDIDATES) == ("en_text", "de_text")
    assert json.dumps(pick_columns("d.csv", ["id", "text"], source_column=None, target_column=None,
                                   guesses=CANDIDATES, require_target=False)) == '["text", null]'
