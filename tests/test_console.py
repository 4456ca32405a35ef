"""What a run shows: the lines a user reads on the command line and through the Python API.

Captured output is not a terminal, so these runs print plain lines, never bars that redraw.
"""

from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager

import pytest
from conftest import write_jsonl

import hf_encdec
from hf_encdec import console
from hf_encdec.cli import main

ESCAPES = re.compile(r"\r|\x1b\[")


def _train_argv(model, pair_files, out, *extra: str) -> list[str]:
    return ["train", "--model_name_or_path", str(model), "--train_file", str(pair_files["train"]),
            "--output_dir", str(out), "--max_eval_samples", "8", "--per_device_train_batch_size", "16",
            "--max_source_length", "16", "--max_target_length", "16", "--save_strategy", "no", *extra]


def _api_args(model, pair_files, out) -> dict:
    return {"model_name_or_path": str(model), "train_file": str(pair_files["train"]), "output_dir": str(out),
            "max_steps": 1, "max_eval_samples": 4, "eval_strategy": "no", "save_strategy": "no"}


def test_a_captured_run_reads_as_lines_one_per_evaluation_and_one_summary(tiny_models, pair_files, tmp_path, capsys):
    # Short rows only in validation: train has sources over max_source_length=4, validation none.
    short = write_jsonl(tmp_path / "short.jsonl", [("red cat", "cat red"), ("sun", "sun")] * 4)
    out = tmp_path / "run"
    code = main(_train_argv(tiny_models["t5"], pair_files, out, "--validation_file", str(short), "--max_steps", "4",
                            "--eval_strategy", "steps", "--eval_steps", "2", "--logging_steps", "2",
                            "--max_source_length", "4"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert not ESCAPES.search(captured.out + captured.err)  # no bar redrawn into a log
    assert "{'loss'" not in captured.err and "'eval_loss'" not in captured.err  # not the Trainer's raw dicts
    assert captured.out == f"model saved to {out}\n"

    lines = captured.err.splitlines()
    train_lines = [line for line in lines if line.startswith("train  step")]
    assert [line.split()[2] for line in train_lines] == ["2/4", "4/4"]
    assert all(re.search(r"loss \d+\.\d{3}  .*lr \d\.\d\de-\d\d  .*tok/s  eta ", line) for line in train_lines)
    eval_lines = [line for line in lines if line.startswith("eval   step")]
    assert [line.split()[2] for line in eval_lines] == ["2/4", "4/4"]
    for line in eval_lines:  # the task's metrics, rounded; no throughput keys
        assert re.search(r"epoch \d\.\d\d  loss \d+\.\d{3}  bleu \d+\.\d+  chrf \d+\.\d+  exact_match \d+\.\d\d  ", line)
        assert "samples_per_second" not in line

    truncation = [line for line in lines if "will truncate" in line]
    assert len(truncation) == 1 and truncation[0].startswith("train: will truncate ")
    assert "sources (longer than max_source_length=4)" in truncation[0] and "targets" not in truncation[0]

    assert captured.err.count("finished in") == 1
    header = lines.index(next(line for line in lines if line.startswith("finished in")))
    assert lines[header + 1].split() == ["loss", "bleu", "chrf", "exact_match", "gen_len"]
    assert lines[header + 2].split()[0] == "validation" and len(lines[header + 2].split()) == 6
    assert not re.search(r"\d\.\d{5}", captured.err)  # rounded: no 16-digit floats
    assert "validation predictions, the first" in captured.err


def test_quiet_prints_only_the_result_and_verbose_more(tiny_models, pair_files, tmp_path, capsys):
    argv = _train_argv(tiny_models["t5"], pair_files, tmp_path / "run", "--max_steps", "1", "--eval_strategy", "no",
                       "--logging_steps", "1")
    assert main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.out == f"model saved to {tmp_path / 'run'}\n" and quiet.err == ""

    assert main([*argv, "--verbose", "--overwrite_output_dir", "true"]) == 0
    verbose = capsys.readouterr()
    assert "data report:" in verbose.err and "finished in" in verbose.err
    assert verbose.out == quiet.out


def test_quiet_and_verbose_together_are_refused(capsys):
    assert main(["train", "--quiet", "--verbose"]) == 2
    assert "choose one" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--verbose=1", "--quiet=yes", "--debug=true"])
def test_a_global_flag_given_a_value_is_refused_by_name(flag, capsys):
    assert main(["generate", flag, "--model", "m", "--input", "i.txt", "--output", "o.txt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag.split('=')[0]} takes no value" in err


def test_generate_on_captured_output_prints_lines_not_bars(tiny_models, pair_files, tmp_path, capsys):
    assert main(["generate", "--model", str(tiny_models["t5"]), "--input", str(pair_files["test"]),
                 "--output", str(tmp_path / "out.jsonl"), "--max_new_tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert not ESCAPES.search(captured.err) and "Loading weights" not in captured.err
    assert captured.out.startswith(f"wrote {tmp_path / 'out.jsonl'}: 30 rows")  # the result, on stdout


def test_on_a_terminal_training_draws_a_live_bar(tiny_models, pair_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(console.TERMINAL_ENV, "1")  # as our launcher tells the processes it starts
    assert main(_train_argv(tiny_models["t5"], pair_files, tmp_path / "run", "--max_steps", "2",
                            "--eval_strategy", "no", "--logging_steps", "1")) == 0
    err = capsys.readouterr().err
    assert re.search(r"\rtrain: +\d+%\|", err)  # tqdm redraws in place
    assert "train  step 2/2" in err  # the logged lines are kept above the bar


# ----------------------------------------------------------------------------- the Python API


@contextmanager
def _logging_unconfigured():
    """As in a program that never configured logging: pytest's capture handlers on the root logger set aside."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = saved


def test_the_python_api_reports_by_default_and_the_standard_level_silences_it(tiny_models, pair_files, tmp_path,
                                                                             capsys):
    with _logging_unconfigured():
        result = hf_encdec.train(_api_args(tiny_models["t5"], pair_files, tmp_path / "a"))
    err = capsys.readouterr().err
    assert "data report:" in err and err.count("finished in") == 1 and f"model saved to {result.output_dir}" in err
    assert logging.getLogger("hf_encdec").handlers == []  # left as it was

    logging.getLogger("hf_encdec").setLevel(logging.WARNING)
    with _logging_unconfigured():
        hf_encdec.train(_api_args(tiny_models["t5"], pair_files, tmp_path / "b"))
    assert capsys.readouterr().err == ""


def test_a_configured_logging_is_the_callers(tiny_models, pair_files, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hf_encdec"):
        hf_encdec.train(_api_args(tiny_models["t5"], pair_files, tmp_path / "a"), verbosity="quiet")
        assert logging.getLogger("hf_encdec").level == logging.INFO  # the caller's level, restored
    assert "data report:" not in caplog.text and f"model saved to {tmp_path / 'a'}" in caplog.text


# ----------------------------------------------------------------------------- library noise


def test_a_warm_starts_expected_load_reports_and_warnings_are_hidden_unless_verbose(tiny_pair_models):
    from transformers import EncoderDecoderModel

    reports = _Records()
    logging.getLogger("transformers.modeling_utils").addHandler(reports)
    try:
        for verbosity in ("normal", "verbose"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with console.reporting(verbosity):
                    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(tiny_pair_models["bert"]),
                                                                                str(tiny_pair_models["gpt2"]))
                    assert model.is_gradient_checkpointing is False  # peft reads the deprecated name
            future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
            if verbosity == "normal":
                assert reports.messages == [] and future == []
            else:
                assert sum("LOAD REPORT" in m for m in reports.messages) == 2 and future
            reports.messages.clear()
    finally:
        logging.getLogger("transformers.modeling_utils").removeHandler(reports)


def test_a_load_report_with_unexpected_rows_stays_visible(tiny_models):
    from transformers import T5ForConditionalGeneration

    reports = _Records()
    logging.getLogger("transformers.modeling_utils").addHandler(reports)
    try:
        with console.reporting("normal"):  # a layer the checkpoint lacks starts random: the user must see it
            T5ForConditionalGeneration.from_pretrained(tiny_models["t5"], num_layers=3)
    finally:
        logging.getLogger("transformers.modeling_utils").removeHandler(reports)
    assert any("LOAD REPORT" in m and "encoder.block.2" in m for m in reports.messages)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# ----------------------------------------------------------------------------- lines and timing


def test_plain_progress_prints_each_tenth_at_most_every_30_seconds(monkeypatch, caplog):
    clock = [0.0]
    monkeypatch.setattr(console.time, "perf_counter", lambda: clock[0])
    bar = console.PlainProgress(100, "generating", "rows")
    with caplog.at_level(logging.INFO, logger="hf_encdec"):
        for _ in range(100):
            clock[0] += 1.0  # a row a second: a tenth every 10 s, so a line every 30 rows
            bar.update(1)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "generating: 30/100 rows", "generating: 60/100 rows", "generating: 90/100 rows"]
    assert "eta 1m 10s" in caplog.records[0].getMessage()


def test_a_long_run_gets_one_estimated_duration_line(monkeypatch, caplog):
    from types import SimpleNamespace

    from hf_encdec.training.trainer import ConsoleCallback, TokenCount

    clock = [0.0]
    monkeypatch.setattr("hf_encdec.training.trainer.time.perf_counter", lambda: clock[0])
    args = SimpleNamespace(disable_tqdm=True, eval_strategy="steps", world_size=1)
    state = SimpleNamespace(global_step=0, max_steps=1000, is_world_process_zero=True, epoch=0.0)
    callback = ConsoleCallback(TokenCount())
    with caplog.at_level(logging.INFO, logger="hf_encdec"):
        callback.on_train_begin(args, state, None)
        for _ in range(40):
            callback.on_step_begin(args, state, None)
            clock[0] += 2.0 if state.global_step else 30.0  # a slow first step is left out of the timing
            state.global_step += 1
            callback.on_step_end(args, state, None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimated duration")]
    assert lines == ["estimated duration: about 34 min (timed over 15 steps; evaluations add to it)"]  # 30 s of them


def test_numbers_are_rounded_for_reading():
    assert [console.number(v) for v in (1.62009596824646, 21.8365, 0.0, 109.73, 0.000123, 7)] == [
        "1.620", "21.84", "0.000", "109.7", "1.23e-04", "7"]
    assert console.number(0.00198, "learning_rate") == "1.98e-03" and console.number(0.2128, "epoch") == "0.21"
    assert console.table({"validation": {"loss": 1.6, "chrf": 21.8}, "test": {"loss": 1.64}}) == [
        "             loss   chrf", "validation  1.600  21.80", "test        1.640      -"]


def test_the_missing_tied_weights_of_a_resumed_checkpoint_are_hidden_and_other_missing_keys_shown():
    reports = _Records()
    trainer_logger = logging.getLogger("transformers.trainer")
    trainer_logger.addHandler(reports)
    try:
        with console.reporting("normal"):
            for keys in (["encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"],
                         ["model.decoder.embed_tokens.weight", "lm_head.weight"],
                         ["lm_head.weight", "decoder.block.0.layer.0.SelfAttention.q.weight"]):
                trainer_logger.warning(f"There were missing keys in the checkpoint model loaded: {keys}.")
    finally:
        trainer_logger.removeHandler(reports)
    assert len(reports.messages) == 1 and "SelfAttention" in reports.messages[0]
