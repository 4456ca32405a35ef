"""The command line as a user meets it: exit codes, one-line errors, no half-written outputs."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from hf_encdec import cli
from hf_encdec.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_user_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("hf-encdec: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def base_args(tiny_models, pair_files, tmp_path):
    return ["--model_name_or_path", str(tiny_models["t5"]), "--output_dir", str(tmp_path / "out"),
            "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true"]


def test_help_does_not_import_torch():
    code = ("import sys; from hf_encdec.cli import main; main(['--help']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_command_runs_through_the_public_api():
    """cli.py parses (config/) and reports; running a command is the API's, so the two cannot drift."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(cli.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("training", "generation", "publish", "models")}
    import hf_encdec

    assert {"train", "generate_file", "evaluate", "merge", "push"} <= set(hf_encdec.__all__)


def test_train_help_lists_keys(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for key in ("--model_name_or_path", "--source_column", "--invalid_rows", "--text_column"):
        assert key in out


def test_console_script_and_module_entry_points(tmp_path):
    for command in (["hf-encdec"], [sys.executable, "-m", "hf_encdec"]):
        done = subprocess.run([*command, "train", "--learning_rat", "1"], capture_output=True, text=True)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            "hf-encdec: error: key 'learning_rat': unknown key (did you mean 'learning_rate'?)"]


def test_unknown_command(capsys):
    code, _, err = run_cli(capsys, "trian")
    assert_one_line_user_error(code, err, "did you mean 'train'")


def test_missing_file(capsys, base_args, tmp_path):
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(capsys, "train", *base_args, "--train_file", str(missing))
    assert_one_line_user_error(code, err, str(missing), "not found")
    assert not (tmp_path / "out").exists()


def test_missing_column(capsys, base_args, pair_files, tmp_path):
    code, _, err = run_cli(capsys, "train", *base_args, "--train_file", str(pair_files["train"]),
                           "--source_column", "text")
    assert_one_line_user_error(code, err, "text", "source", "target")
    assert not (tmp_path / "out").exists()


def test_empty_file(capsys, base_args, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli(capsys, "train", *base_args, "--train_file", str(empty))
    assert_one_line_user_error(code, err, str(empty), "empty")


def test_malformed_jsonl_line_is_named(capsys, base_args, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = [json.dumps({"source": f"a {i}", "target": f"b {i}"}) for i in range(5)]
    rows[3] = '{"source": "oops", "target": '
    bad.write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(capsys, "train", *base_args, "--train_file", str(bad))
    assert_one_line_user_error(code, err, f"{bad}:4")


def test_unknown_key_in_recipe(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\ntrain_file: t.jsonl\nlearnig_rate: 1e-4\n")
    code, _, err = run_cli(capsys, "train", str(recipe))
    assert_one_line_user_error(code, err, "learnig_rate", "did you mean 'learning_rate'")


def test_nonexistent_model(capsys, pair_files, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model_name_or_path", str(tmp_path / "no-model"),
                           "--train_file", str(pair_files["train"]), "--output_dir", str(tmp_path / "out"))
    assert_one_line_user_error(code, err, "model_name_or_path", "no-model")
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file(capsys, base_args, pair_files, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run_cli(capsys, "train", *base_args, "--train_file", str(pair_files["train"]),
                           "--output_dir", str(target))
    assert_one_line_user_error(code, err, "output_dir", "is a file")


def test_debug_shows_the_traceback(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model_name_or_path", "x", "--train_file", "t.jsonl",
                           "--max_stepz", "1", "--debug")
    assert code == 2
    assert "Traceback" in err


def test_a_successful_run_prints_where_the_model_is(capsys, base_args, pair_files, tmp_path):
    code, out, err = run_cli(capsys, "train", *base_args, "--train_file", str(pair_files["train"]),
                             "--test_file", str(pair_files["test"]))
    assert code == 0
    assert out == f"model saved to {tmp_path / 'out'}\n"  # stdout: the result alone; the story is on stderr
    assert "test predictions" in err and "->" in err


def _failing_command(err: BaseException):
    def command(args):
        raise err
    return command


@pytest.mark.parametrize("err, fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/x"), "/data/out/x: no space left on the device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/out/x"), "no space left on the device"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/y"), "/data/out/y: permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/z"), "/mnt/ro/z: permission denied"),
])
def test_a_refused_write_no_boundary_caught_is_one_line(monkeypatch, capsys, err, fragment):
    monkeypatch.setitem(cli.COMMANDS, "train", _failing_command(err))
    assert cli.main(["train"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf-encdec: error: ") and fragment in lines[0], lines


def test_a_full_disk_wrapped_by_a_library_is_still_recognised(monkeypatch, capsys):
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("file write failed") from inner
    except RuntimeError as wrapped:
        monkeypatch.setitem(cli.COMMANDS, "train", _failing_command(wrapped))
    assert cli.main(["train"]) == 2
    assert "no space left on the device" in capsys.readouterr().err


def test_other_failures_stay_internal_errors(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "train", _failing_command(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train"])
