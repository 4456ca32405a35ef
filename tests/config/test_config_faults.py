"""The config boundary under misuse: YAML, command-line values, value ranges and presets.

Every mistake here must be one ConfigError naming the key (and the file and line where there is one),
found without importing torch or transformers, so that it reaches the user in well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from hf_encdec.config.coercion import _union_members
from hf_encdec.config.coercion import parse_overrides
from hf_encdec.config.run_config import RunConfig, load_config
from hf_encdec.errors import ConfigError
from hf_encdec.config.library_fields import LibraryType, generation_field_types, training_argument_types

REPO = Path(__file__).resolve().parents[2]
BASE = {"model_name_or_path": "some/model", "train_file": "train.jsonl"}


def recipe(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


# ----------------------------------------------------------------------------- the library's fields, read from source


def _builtin_shape(annotation) -> set:
    """The builtin types a union admits (transformers' own types left out: we only read their names)."""
    shape = set()
    for member in _union_members(annotation):
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and not issubclass(origin, LibraryType) and origin.__module__ == "builtins":
            shape.add(origin)
    return shape


def test_training_fields_read_from_source_match_the_imported_class():
    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    real = {f.name: hints[f.name] for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}
    read = training_argument_types()
    assert set(read) == set(real)
    for name, annotation in real.items():
        assert _builtin_shape(read[name]) == _builtin_shape(annotation), name


def test_generation_fields_read_from_source_match_the_imported_class():
    from transformers import GenerationConfig

    names = {n for n in GenerationConfig().to_dict() if not n.startswith("_") and n != "transformers_version"}
    types = generation_field_types()
    assert set(types) == names
    assert (types["num_beams"], types["repetition_penalty"], types["do_sample"]) == (int, float, bool)
    assert types["early_stopping"] is None  # documented as `bool` or `str`: not narrowed to one


# ----------------------------------------------------------------------------- recipe files


@pytest.mark.parametrize("text, line, fragment", [
    ("model_name_or_path: x\ntrain_file: a\nlearning_rate: 1e-4\nlearning_rate: 3e-4\n", 4, "given twice"),
    ("model_name_or_path: x\ntrain_file: a\nmodel_config:\n  d_model: 4\n  d_model: 8\n", 5, "given twice"),
    ("model_name_or_path: x\n3: 4\n", 2, "is not text"),
    ("model_name_or_path: x\non: true\n", 2, "is not text"),  # YAML 1.1 reads `on` as a boolean
    ("presets:\n  b6: {num_beams: 6}\n  b6: {num_beams: 5}\n", 3, "given twice"),
    ("model_name_or_path: x\ntrain_file: [a\n", 3, "invalid YAML"),
])
def test_recipe_mistakes_name_the_file_and_line(tmp_path, text, line, fragment):
    path = recipe(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (err.value.path, err.value.line) == (path, line), str(err.value)
    assert fragment in str(err.value)


def test_recipe_that_is_not_utf8_or_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="not UTF-8.*0xe9") as err:
        load_config(recipe(tmp_path, b"model_name_or_path: x\nsource_prefix: caf\xe9\n"))
    assert err.value.line == 2
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


def test_a_recipe_with_a_byte_order_mark_reads(tmp_path):
    config = load_config(recipe(tmp_path, b"\xef\xbb\xbfmodel_name_or_path: x\ntrain_file: a.jsonl\n"))
    assert config.model.model_name_or_path == "x"


# ----------------------------------------------------------------------------- command-line values


def test_command_line_text_that_looks_like_yaml_stays_text():
    config = RunConfig.from_dict({**BASE, **parse_overrides(["--source_prefix", "[fix] ", "--forced_bos_token",
                                                              "{de}"])})
    assert (config.data.source_prefix, config.data.forced_bos_token) == ("[fix] ", "{de}")


def test_command_line_lists_and_mappings_parse_where_the_key_takes_them():
    config = RunConfig.from_dict({**BASE, **parse_overrides(["--metrics", "[bleu, chrf]", "--presets",
                                                              json.dumps({"b6": {"num_beams": 6}})])})
    assert config.run.metrics == ["bleu", "chrf"]
    assert config.run.presets == {"b6": {"num_beams": 6}}


@pytest.mark.parametrize("flags, key", [
    (["--presets", '{"b6": {"num_beams": 6}'], "presets"),  # unclosed JSON
    (["--model_config", "{architecture: t5, d_model: [}"], "model_config"),
    (["--presets", '{"b6": {"num_beams": 6}, "b6": {"num_beams": 4}}'], "presets"),  # a duplicate inside JSON
])
def test_malformed_command_line_mappings_name_the_key(flags, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({**BASE, **parse_overrides(flags)})
    assert err.value.key == key, str(err.value)


# ----------------------------------------------------------------------------- value ranges


@pytest.mark.parametrize("key, value", [
    ("learning_rate", -1e-4), ("adam_beta1", 2), ("adam_beta2", 1.0), ("adam_epsilon", -1e-8),
    ("weight_decay", -0.1), ("max_grad_norm", -1), ("warmup_ratio", 1.5), ("warmup_steps", -3),
    ("label_smoothing_factor", 1.0), ("seed", -1), ("seed", 2**32), ("data_seed", 1.5),
    ("num_train_epochs", 0), ("max_steps", -5), ("save_total_limit", -1), ("dataloader_num_workers", -2),
    ("generation_num_beams", 0), ("output_dir", ""), ("output_dir", "  "),
])
def test_out_of_range_training_values_name_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({**BASE, key: value})
    assert err.value.key == key, str(err.value)


@pytest.mark.parametrize("key, value", [("learning_rate", 0), ("max_grad_norm", 0), ("warmup_steps", 0.1),
                                        ("max_steps", -1), ("seed", 0), ("adam_beta1", 0.0)])
def test_boundary_values_that_are_valid_are_accepted(key, value):
    RunConfig.from_dict({**BASE, key: value})


@pytest.mark.parametrize("values, key", [
    ({"load_best_model_at_end": True, "metric_for_best_model": "bleuu"}, "metric_for_best_model"),
    ({"task": "summarization", "load_best_model_at_end": True, "metric_for_best_model": "bleu"},
     "metric_for_best_model"),
    ({"early_stopping_patience": 2, "metrics": ["chrf"], "task": "translation", "source_lang": "en",
      "target_lang": "de"}, "early_stopping_patience"),  # the task picks best by bleu, which is not computed
])
def test_a_best_model_metric_no_evaluation_reports_is_refused_before_training(values, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({**BASE, **values})
    assert err.value.key == key, str(err.value)


def test_best_model_metrics_that_evaluations_report_are_accepted():
    RunConfig.from_dict({**BASE, "load_best_model_at_end": True, "metric_for_best_model": "eval_chrf"})
    RunConfig.from_dict({**BASE, "task": "summarization", "early_stopping_patience": 2})  # rougeL from rouge
    RunConfig.from_dict({**BASE, "load_best_model_at_end": True})  # the Trainer's default: the loss


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("fields, key", [
    ({"repetition_penalty": "high"}, "repetition_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"num_beams": True}, "num_beams"),
    ({"num_beams": 2.5}, "num_beams"),
    ({"do_sample": "yes"}, "do_sample"),
    ({"max_new_tokens": "64"}, "max_new_tokens"),
    ({"typical_p": 2}, "typical_p"),
])
def test_preset_values_of_the_wrong_type_or_range_fail_when_the_config_is_read(fields, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({**BASE, "preset": "mine", "presets": {"mine": fields}})
    assert err.value.key == key, str(err.value)


def test_presets_file_mistakes_name_the_file(tmp_path):
    bad = tmp_path / "presets.yaml"
    bad.write_bytes(b"b6:\n  num_beams: 6\n  length_penalty: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        RunConfig.from_dict({**BASE, "presets": str(bad)})
    assert (err.value.path, err.value.line) == (str(bad), 3)
    bad.write_text('{"b6": {"num_beams": 6}, "b6": {"num_beams": 2}}')
    with pytest.raises(ConfigError, match="given twice"):
        RunConfig.from_dict({**BASE, "presets": str(bad)})


# ----------------------------------------------------------------------------- speed: no heavy import before the check


TRAIN = ["train", "--model_name_or_path", "x", "--train_file", "a.jsonl"]
GENERATE = ["generate", "--model", "no-such-model", "--input", "in.txt", "--output", "out.jsonl"]
EVALUATE = ["evaluate", "--model", "no-such-model", "--data", "in.txt"]
CONFIG_MISTAKES = [  # (command line, the key the error names)
    (TRAIN + ["--learnig_rate", "1e-4"], "learnig_rate"),
    (TRAIN + ["--max_steps", "many"], "max_steps"),
    (TRAIN + ["--learning_rate", "-1"], "learning_rate"),
    (TRAIN + ["--adam_beta1", "2"], "adam_beta1"),
    (TRAIN + ["--output_dir", ""], "output_dir"),
    (TRAIN + ["--preset", "mine", "--presets", '{"mine": {"repetition_penalty": "high"}}'], "repetition_penalty"),
    (TRAIN + ["--presets", '{"mine": {"num_beams": 2'], "presets"),
    (TRAIN + ["--task", "translaton"], "task"),
    (TRAIN + ["--report_to", "tensorbord"], "report_to"),
    (TRAIN + ["--base_model", "/models/t5-small"], "base_model"),  # a path: the card needs the Hub id
    (TRAIN + ["--base_model", "not a valid id!"], "base_model"),
    (TRAIN + ["--metrics", "bleu,rouge", "--load_best_model_at_end", "--metric_for_best_model", "chrf"],
     "metric_for_best_model"),
    (GENERATE + ["--num_beems", "3"], "num_beems"),
    (GENERATE + ["--repetition_penalty", "high"], "repetition_penalty"),
    (GENERATE + ["--top_p", "3"], "top_p"),
    (GENERATE + ["--suppress_tokens", "[1,"], "suppress_tokens"),
    (GENERATE + ["--max_tokens", "0"], "max_tokens"),
    (GENERATE + ["--max_tokens", "100", "--batch_size", "8"], "max_tokens"),
    (GENERATE + ["--backend", "ct3"], "backend"),
    (GENERATE + ["--on_error", "ignore"], "on_error"),
    (EVALUATE + ["--num_beams", "two"], "num_beams"),
    (EVALUATE + ["--metrics", "blue"], "metrics"),
]


def test_config_mistakes_are_reported_before_torch_or_transformers_load(tmp_path):
    """One line naming the key, before the 5-9 s import of torch and transformers (timed in the closing note)."""
    (tmp_path / "in.txt").write_text("red cat\n")
    script = (
        "import json, sys\n"
        "from hf_encdec.cli import main\n"
        "codes = [main(argv) for argv in json.loads(sys.argv[1])]\n"
        "print(json.dumps({'codes': codes, 'heavy': sorted({'torch', 'transformers'} & set(sys.modules))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps([argv for argv, _ in CONFIG_MISTAKES])],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [2] * len(CONFIG_MISTAKES), "heavy": []}, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("hf-encdec: error: ")]
    assert len(lines) == len(CONFIG_MISTAKES), done.stderr
    for line, (_, key) in zip(lines, CONFIG_MISTAKES):
        assert f"key '{key}'" in line, line


@pytest.mark.parametrize("model_config, key", [
    ({"architecture": "t5", "num_layer": 3}, "model_config.num_layer"),  # T5Config would take the typo silently
    ({"architecture": "t5", "d_model": "big"}, "model_config.d_model"),
    ({"architecture": "bart", "dropout": "high"}, "model_config.dropout"),
    ({"architecture": "marian", "encoder_layers": 2.5}, "model_config.encoder_layers"),
    ({"architecture": "gpt"}, "model_config.architecture"),
])
def test_scratch_model_configs_are_checked_before_any_data_is_read(model_config, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"train_file": "missing.jsonl", "model_config": model_config})
    assert err.value.key == key, str(err.value)


def test_a_whole_number_for_a_float_size_is_accepted():
    RunConfig.from_dict({"train_file": "t.jsonl", "model_config": {"architecture": "bart", "dropout": 0}})


# ----------------------------------------------------------------------------- flags without values, empty paths


@pytest.mark.parametrize("argv, key", [
    (TRAIN + ["--output_dir"], "output_dir"),  # trained into ./true before
    (["train", "--train_file", "a.jsonl", "--model_config", "t5"], "model_config"),
    (["train", "--train_file", "a.jsonl", "--model_config", "{architecture: t5, d_model: -4}"],
     "model_config.d_model"),
    (GENERATE + ["--num_beams"], "num_beams"),
    (["generate", "--input", "in.txt", "--output", "o.jsonl", "--model"], "model"),
    (["generate", "--model", "", "--input", "in.txt", "--output", "o.jsonl"], "model"),
    (["generate", "--model", "m", "--input", "", "--output", "o.jsonl"], "input"),
    (["merge", "--model"], "model"),
])
def test_a_flag_without_its_value_or_an_empty_path_is_one_line(argv, key, tmp_path, monkeypatch, capsys):
    from hf_encdec.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("red cat\n")
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("hf-encdec: error: ") and f"key '{key}'" in lines[-1], lines
    assert not (tmp_path / "true").exists()


def test_a_bare_flag_still_turns_a_boolean_on():
    config = RunConfig.from_dict({**BASE, **parse_overrides(["--logging_first_step", "--overwrite_output_dir"])})
    assert config.training["logging_first_step"] is True and config.run.overwrite_output_dir is True
