"""Faults at the `generate` / `evaluate` boundaries, injected one at a time: each costs one line and exit code 2,
the user's files keep their bytes, and nothing half-written is left under a final name.

Boundaries: the output paths (never an input, however reached), the output lock (one job per output), the
ledger's fingerprint (a re-run continues only what it would have written), the input stream (every format's
damage reported where it is), the disk (full while appending or moving the ledger on), evaluate's references.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_error_catalogue import _assert_user_error

from hf_encdec.generation import jobs, resumable
from hf_encdec.cli import main

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["red cat", "blue dog sun", "moon", "tree house river", "small bird", "green apple bread"]


def _generate(model, input_path, output, *extra) -> list[str]:
    return ["generate", "--model", str(model), "--input", str(input_path), "--output", str(output),
            "--max_new_tokens", "4", "--progress", "false", *map(str, extra)]


def _lines(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def _run(capsys, argv: list[str], fragments: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    _assert_user_error(code, err, fragments)
    return err.strip().splitlines()[-1]


def _no_model_load(monkeypatch) -> None:
    """The check under test must stop the job before the model loads."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the fault was found")

    monkeypatch.setattr(jobs, "load_model", refuse)


@pytest.fixture
def t5(tiny_models) -> Path:
    return tiny_models["t5"]


@pytest.fixture
def txt(tmp_path) -> Path:
    return _lines(tmp_path / "in.txt", SOURCES)


# ----------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_same_as_input_is_refused_even_with_overwrite(overwrite, t5, txt, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    before = txt.read_bytes()
    line = _run(capsys, _generate(t5, txt, txt, *(["--overwrite"] if overwrite else [])),
                ["key 'output'", "is the same file as --input", "--overwrite never replaces an input"])
    assert line.count(str(txt)) == 2  # both paths named
    assert txt.read_bytes() == before and not list(txt.parent.glob("in.txt.*"))


@pytest.mark.parametrize("link", ["symlink", "hardlink", "dotdot"])
def test_output_reaching_the_input_through_a_link_is_refused(link, t5, txt, tmp_path, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    before = txt.read_bytes()
    output = tmp_path / "out.txt"
    if link == "symlink":
        output.symlink_to(txt)
    elif link == "hardlink":
        os.link(txt, output)
    else:
        (tmp_path / "sub").mkdir()
        output = tmp_path / "sub" / ".." / "in.txt"
    _run(capsys, _generate(t5, txt, output, "--overwrite"), ["is the same file as --input"])
    assert txt.read_bytes() == before


def test_output_inside_the_model_folder_or_on_the_presets_file_is_refused(t5, txt, tmp_path, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    _run(capsys, _generate(t5, txt, t5 / "predictions.jsonl"), ["is inside --model", str(t5)])
    assert not (t5 / "predictions.jsonl").exists()
    presets = tmp_path / "presets.txt"
    presets.write_text("{}")
    _run(capsys, _generate(t5, txt, presets, "--presets", presets, "--overwrite"), ["same file as --presets"])
    assert presets.read_text() == "{}"


def test_input_that_is_the_outputs_ledger_is_refused(t5, tmp_path, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    ledger = tmp_path / "out.txt.progress.json"  # a .json input the ledger of out.txt would replace
    ledger.write_text("".join(json.dumps({"source": s}) + "\n" for s in SOURCES))
    before = ledger.read_bytes()
    _run(capsys, _generate(t5, ledger, tmp_path / "out.txt"), ["out.txt.progress.json", "same file as --input"])
    assert ledger.read_bytes() == before


@pytest.mark.parametrize("kind", ["directory", "fifo", "missing-folder", "folder-is-a-file", "not-writable"])
def test_unusable_output_paths_are_refused_before_the_model_loads(kind, t5, txt, tmp_path, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    output, fragment = tmp_path / "out.jsonl", {"directory": "is a directory", "fifo": "not a regular file",
                                                "missing-folder": "folder does not exist",
                                                "folder-is-a-file": "folder is a file",
                                                "not-writable": "not writable"}[kind]
    if kind == "directory":
        output.mkdir()
    elif kind == "fifo":
        os.mkfifo(output)
    elif kind == "missing-folder":
        output = tmp_path / "nope" / "out.jsonl"
    elif kind == "folder-is-a-file":
        output = txt / "out.jsonl"
    else:
        output = _read_only(tmp_path) / "out.jsonl"
    _run(capsys, _generate(t5, txt, output, "--overwrite"), ["key 'output'", fragment])


def _read_only(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permission bits; /proc takes no new files
        return Path("/proc")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


def test_input_that_is_a_pipe_is_refused(t5, tmp_path, capsys, monkeypatch):
    _no_model_load(monkeypatch)
    fifo = tmp_path / "in.txt"
    os.mkfifo(fifo)
    _run(capsys, _generate(t5, fifo, tmp_path / "out.txt"), ["in.txt", "not a regular file", "save the input"])


@pytest.mark.parametrize("clash", ["output-is-data", "predictions-is-data", "output-is-predictions",
                                   "predictions-in-model", "output-is-a-directory", "missing-folder"])
def test_evaluate_outputs_are_checked_before_the_model_loads(clash, tiny_models, pair_files, tmp_path, capsys,
                                                             monkeypatch):
    _no_model_load(monkeypatch)
    data = tmp_path / "test.jsonl"
    shutil.copy(pair_files["test"], data)
    before = data.read_bytes()
    output, predictions, fragment = {
        "output-is-data": (data, None, "same file as --data"),
        "predictions-is-data": (None, data, "same file as --data"),
        "output-is-predictions": (tmp_path / "m.json", tmp_path / "m.json", "same file as --output"),
        "predictions-in-model": (None, tiny_models["t5"] / "p.jsonl", "inside --model"),
        "output-is-a-directory": (tmp_path, None, "is a directory"),
        "missing-folder": (tmp_path / "no" / "m.json", None, "folder does not exist"),
    }[clash]
    argv = ["evaluate", "--model", str(tiny_models["t5"]), "--data", str(data)]
    argv += ["--output", str(output)] if output else []
    argv += ["--predictions", str(predictions)] if predictions else []
    _run(capsys, argv, [fragment])
    assert data.read_bytes() == before and not (tiny_models["t5"] / "p.jsonl").exists()


# ----------------------------------------------------------------------------- one job per output


def test_a_second_job_on_the_same_output_stops_at_once_naming_the_first(t5, txt, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out.txt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hf_encdec.generation.resumable import ResumableOutput; "
         f"o = ResumableOutput({str(output)!r}); o.lock(); print('locked', flush=True); sys.stdin.read(); o.close()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == "locked\n"
        with monkeypatch.context() as patched:
            _no_model_load(patched)
            _run(capsys, _generate(t5, txt, output), ["another job is writing this output", f"pid {holder.pid}"])
        assert (tmp_path / "out.txt.lock").exists()  # the first job's lock is left alone
    finally:
        holder.communicate("", timeout=60)
    assert not (tmp_path / "out.txt.lock").exists()
    assert main(_generate(t5, txt, output)) == 0
    assert len(output.read_text().splitlines()) == len(SOURCES) and not list(tmp_path.glob("out.txt.*"))


def test_a_lock_in_the_same_process_conflicts_and_a_stale_lock_file_does_not(t5, txt, tmp_path, capsys):
    output = tmp_path / "out.txt"
    first = resumable.ResumableOutput(str(output))
    first.lock()
    try:
        _run(capsys, _generate(t5, txt, output), [f"pid {os.getpid()}"])
    finally:
        first.close()
    (tmp_path / "out.txt.lock").write_text("pid 999999 on gone, started long ago\n")  # a killed job's leftover
    assert main(_generate(t5, txt, output)) == 0
    assert not (tmp_path / "out.txt.lock").exists()


# ----------------------------------------------------------------------------- the ledger's fingerprint


def _interrupted(model: Path, input_path: Path, output: Path, monkeypatch, *extra) -> None:
    """A run stopped (Ctrl-C) after its first window: the partial file and the ledger stay."""
    real = resumable.ResumableOutput.append

    def append_then_stop(self, text, rows):
        real(self, text, rows)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(resumable.ResumableOutput, "append", append_then_stop)
        assert main(_generate(model, input_path, output, "--window", 2, *extra)) == 130
    ledger = json.loads(output.with_name(output.name + ".progress.json").read_text())
    assert ledger["rows"] == 2 and not output.exists()


def _replace_weights(model: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    replaced = AutoModelForSeq2SeqLM.from_pretrained(model)
    with torch.no_grad():
        for weight in replaced.parameters():
            weight.mul_(-1.0)
    replaced.save_pretrained(model)


@pytest.mark.parametrize("change, fragment", [
    ("weights", "model.safetensors) changed since then"),
    ("input", "the input file changed since then"),
    ("preset", "the decoding settings changed since then"),
])
def test_a_rerun_after_a_change_is_refused_naming_what_changed(change, fragment, t5, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(t5, model)
    input_path = _lines(tmp_path / "in.txt", SOURCES)
    output = tmp_path / "out.txt"
    _interrupted(model, input_path, output, monkeypatch)
    partial = (tmp_path / "out.txt.partial").read_bytes()
    extra = []
    if change == "weights":
        _replace_weights(model)
    elif change == "input":
        _lines(input_path, [*SOURCES[:-1], "a changed last row"])
    else:
        extra = ["--repetition_penalty", "1.3"]
    capsys.readouterr()
    _run(capsys, _generate(model, input_path, output, "--window", 2, *extra), [fragment, "--overwrite"])
    assert (tmp_path / "out.txt.partial").read_bytes() == partial and not output.exists()
    assert main(_generate(model, input_path, output, "--window", 2, "--overwrite", *extra)) == 0
    assert len(output.read_text().splitlines()) == len(SOURCES)


def test_a_ledger_without_parts_is_refused_as_other_settings(t5, txt, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out.txt"
    _interrupted(t5, txt, output, monkeypatch)
    ledger = tmp_path / "out.txt.progress.json"
    old = json.loads(ledger.read_text())
    ledger.write_text(json.dumps({"fingerprint": "0" * 64, "rows": old["rows"], "bytes": old["bytes"]}))
    _run(capsys, _generate(t5, txt, output, "--window", 2), ["interrupted run with other settings", "--overwrite"])


def test_the_same_settings_continue_after_an_interruption(t5, txt, tmp_path, capsys, monkeypatch):
    _interrupted(t5, txt, tmp_path / "killed.txt", monkeypatch)
    assert main(_generate(t5, txt, tmp_path / "killed.txt", "--window", 2)) == 0
    assert "already done" in capsys.readouterr().err
    assert main(_generate(t5, txt, tmp_path / "full.txt", "--window", 2)) == 0
    assert (tmp_path / "killed.txt").read_bytes() == (tmp_path / "full.txt").read_bytes()


# ----------------------------------------------------------------------------- a full disk


def _disk_fills(monkeypatch, name_part: str, after: int = 0) -> None:
    """os.write raises ENOSPC on files whose name holds `name_part`, after `after` successful writes there."""
    real, count = os.write, [0]

    def write(fd, data):
        if name_part in os.readlink(f"/proc/self/fd/{fd}"):
            count[0] += 1
            if count[0] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("where", ["partial", "ledger"])
def test_a_full_disk_keeps_the_finished_rows_and_the_rerun_continues(where, t5, txt, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out.txt"
    with monkeypatch.context() as patched:
        # The partial file's second window, or the ledger's third version (the first two: start, window 1).
        _disk_fills(patched, ".partial" if where == "partial" else ".progress.json.", after=1 if where == "partial"
                    else 2)
        line = _run(capsys, _generate(t5, txt, output, "--window", 2), ["no space left on the device",
                                                                       "the first 2 rows are kept", "re-run"])
    assert "out.txt.partial" in line and not output.exists()
    assert json.loads((tmp_path / "out.txt.progress.json").read_text())["rows"] == 2
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "out.txt.lock").exists()
    assert main(_generate(t5, txt, output, "--window", 2)) == 0
    assert main(_generate(t5, txt, tmp_path / "full.txt", "--window", 2)) == 0
    assert output.read_bytes() == (tmp_path / "full.txt").read_bytes()


def test_a_full_disk_before_the_first_row_is_one_line_and_leaves_nothing(t5, txt, tmp_path, capsys, monkeypatch):
    _disk_fills(monkeypatch, "out.txt.lock")
    _run(capsys, _generate(t5, txt, tmp_path / "out.txt"), ["no space left", "kept as they were"])
    assert not list(tmp_path.glob("out.txt*"))


def test_a_damaged_ledger_starts_over(t5, txt, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out.txt"
    _interrupted(t5, txt, output, monkeypatch)
    (tmp_path / "out.txt.progress.json").write_text('{"bytes": "many"}')
    assert main(_generate(t5, txt, output, "--window", 2)) == 0
    assert "starting over" in capsys.readouterr().err and len(output.read_text().splitlines()) == len(SOURCES)


def test_a_full_disk_while_evaluate_writes_leaves_no_half_file(tiny_models, pair_files, tmp_path, capsys,
                                                               monkeypatch):
    metrics = tmp_path / "metrics.json"
    metrics.write_text("earlier\n")
    _disk_fills(monkeypatch, ".metrics.json.")
    _run(capsys, ["evaluate", "--model", str(tiny_models["t5"]), "--data", str(pair_files["test"]),
                  "--max_new_tokens", "2", "--metrics", "exact_match", "--output", str(metrics), "--overwrite"],
         ["metrics.json", "no space left"])
    assert metrics.read_text() == "earlier\n" and not list(tmp_path.glob(".*"))


# ----------------------------------------------------------------------------- evaluate's references


def test_evaluate_without_a_reference_column_names_the_columns(tiny_models, tmp_path, capsys):
    data = tmp_path / "no-refs.jsonl"
    data.write_text("".join(json.dumps({"source": s, "uid": f"u{i}"}) + "\n" for i, s in enumerate(SOURCES)))
    argv = ["evaluate", "--model", str(tiny_models["t5"]), "--data", str(data), "--max_new_tokens", "2"]
    _run(capsys, argv, ["no-refs.jsonl", "has no reference column", "source, uid", "--target_column"])
    _run(capsys, [*argv, "--target_column", "reference"], ["has no column 'reference'", "--target_column"])


def test_evaluate_scores_against_a_given_reference_column(tiny_models, tmp_path, capsys):
    data = tmp_path / "refs.jsonl"
    data.write_text("".join(json.dumps({"uid": f"u{i}", "source": s, "gold": s}) + "\n" for i, s in enumerate(SOURCES)))
    predictions = tmp_path / "p.jsonl"
    assert main(["evaluate", "--model", str(tiny_models["t5"]), "--data", str(data), "--max_new_tokens", "2",
                 "--metrics", "exact_match", "--target_column", "gold", "--predictions", str(predictions)]) == 0
    assert [json.loads(line)["reference"] for line in predictions.read_text().splitlines()] == SOURCES


def test_evaluate_refuses_a_lone_surrogate_in_a_reference(tiny_models, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"source": "red cat", "target": "cat red"}\n{"source": "dog", "target": "x\\ud800"}\n')
    _run(capsys, ["evaluate", "--model", str(tiny_models["t5"]), "--data", str(data)],
         ["bad.jsonl:2", "column 'target'", "lone surrogate, U+D800"])


# ----------------------------------------------------------------------------- the input stream


def _parquet_damaged_in_group_2(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": i, "source": SOURCES[i % 6]} for i in range(30)]), path,
                   row_group_size=10, compression="NONE")
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    data[column.data_page_offset:column.data_page_offset + column.total_compressed_size] = \
        b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))


def _gzip_truncated(path: Path) -> None:
    packed = gzip.compress("".join(json.dumps({"source": f"red cat {i}"}) + "\n" for i in range(20000)).encode())
    path.write_bytes(packed[: len(packed) // 2])


def _csv_bad_byte_on_line_801(path: Path) -> None:
    rows = [b"id,source\n", *(b"%d,red cat blue dog sun moon tree %d\n" % (i, i) for i in range(2, 1000))]
    rows[800] = b"800,caf\xe9 latin-1\n"  # rows[800] is line 801
    path.write_bytes(b"".join(rows))


@pytest.mark.parametrize("name, build, fragments", [
    ("damaged.parquet", _parquet_damaged_in_group_2, ["damaged.parquet:11", "cannot be read from here on"]),
    ("cut.jsonl.gz", _gzip_truncated, ["cut.jsonl.gz:", "cannot be read from here on", "truncated"]),
    ("latin.csv", _csv_bad_byte_on_line_801, ["latin.csv:801", "not valid UTF-8", "0xe9"]),
    ("empty.jsonl", lambda p: p.write_text(""), ["empty.jsonl", "has no rows"]),
    ("header.csv", lambda p: p.write_text("id,source\n"), ["header.csv", "has a header but no rows"]),
    ("list.jsonl", lambda p: p.write_text('{"source": ["a", "b"]}\n'),
     ["list.jsonl:1", "value is a list, expected text", "--on_error skip"]),
    ("surrogate.jsonl", lambda p: p.write_text('{"source": "ok"}\n{"x": "\\ud800", "source": "a"}\n'),
     ["surrogate.jsonl:2", "invalid Unicode character (a lone surrogate, U+D800, at character 1) in column 'x'"]),
    ("array.jsonl", lambda p: p.write_text('[{"source": "a"}]\n'), ["array.jsonl:1", "JSON array"]),
])
def test_damaged_inputs_are_one_line_naming_where(name, build, fragments, t5, tmp_path, capsys):
    path = tmp_path / name
    build(path)
    before = path.read_bytes()
    _run(capsys, _generate(t5, path, tmp_path / "out.jsonl"), fragments)
    assert path.read_bytes() == before and not list(tmp_path.glob("out.jsonl*"))


def test_a_lone_surrogate_row_can_be_skipped(t5, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"source": "red cat"}\n{"source": "dog", "meta": {"k": ["\\udfff"]}}\n{"source": "sun"}\n')
    output = tmp_path / "out.jsonl"
    assert main(_generate(t5, path, output, "--on_error", "skip")) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [row["prediction"] is None for row in rows] == [False, True, False]
    assert rows[1] == {"line": 2, "prediction": None, "error": rows[1]["error"]}
    assert "lone surrogate, U+DFFF" in rows[1]["error"] and "column 'meta'" in rows[1]["error"]


def test_an_input_removed_between_the_check_and_the_run(t5, txt, tmp_path, capsys, monkeypatch):
    real = jobs.scan_input

    def scan_then_remove(path, column, on_error):
        total = real(path, column, on_error)
        os.unlink(path)
        return total

    monkeypatch.setattr(jobs, "scan_input", scan_then_remove)
    _run(capsys, _generate(t5, txt, tmp_path / "out.txt"), ["in.txt", "cannot be read", "No such file"])
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "out.txt.lock").exists()


def test_an_input_changed_during_the_run_is_not_finished(t5, txt, tmp_path, capsys, monkeypatch):
    real = resumable.ResumableOutput.append

    def append_and_edit(self, text, rows):
        real(self, text, rows)
        with open(txt, "a") as f:
            f.write("one more row\n")

    monkeypatch.setattr(resumable.ResumableOutput, "append", append_and_edit)
    _run(capsys, _generate(t5, txt, tmp_path / "out.txt"), ["in.txt", "changed while it was being read"])
    assert not (tmp_path / "out.txt").exists() and (tmp_path / "out.txt.partial").exists()
