"""RunConfig: precedence, type coercion, rejection of bad keys, round trip through run_config.yaml."""

from __future__ import annotations

import pytest
import yaml

from hf_encdec.config.coercion import parse_overrides
from hf_encdec.config.run_config import RunConfig, load_config
from hf_encdec.errors import ConfigError

BASE = {"model_name_or_path": "some/model", "train_file": "train.jsonl"}


def write_recipe(tmp_path, values) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_command_line_overrides_recipe_which_overrides_defaults(tmp_path):
    recipe = write_recipe(tmp_path, {**BASE, "learning_rate": "1e-3", "max_source_length": 64})
    config = load_config(recipe, parse_overrides(["--learning_rate", "3e-4"]))
    assert config.training["learning_rate"] == pytest.approx(3e-4)
    assert config.data.max_source_length == 64  # from the recipe
    assert config.data.max_target_length == 128  # the default
    assert config.training["predict_with_generate"] is True  # our default for a Trainer key


def test_recipe_data_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    recipe = write_recipe(tmp_path / "sub", {**BASE, "train_file": "data/train.jsonl"})
    config = load_config(recipe)
    assert config.data.train_file == str((tmp_path / "sub" / "data" / "train.jsonl").resolve())


def test_values_are_coerced_by_declared_type():
    overrides = parse_overrides(["--max_steps=10", "--logging_first_step", "--metrics", "bleu,chrf", "--source_prefix", "007",
                                 "--model_config", "{architecture: t5, d_model: 64}"])
    config = RunConfig.from_dict({"train_file": "x.jsonl", **overrides})
    assert config.training["max_steps"] == 10
    assert config.training["logging_first_step"] is True
    assert config.run.metrics == ["bleu", "chrf"]
    assert config.data.source_prefix == "007"  # text stays text
    assert config.model.model_config == {"architecture": "t5", "d_model": 64}


def test_aliases_from_the_reference_scripts():
    config = RunConfig.from_dict({**BASE, "text_column": "document", "summary_column": "abstract", "num_beams": 4,
                                  "val_max_target_length": 60})
    assert (config.data.source_column, config.data.target_column) == ("document", "abstract")
    assert config.training["generation_num_beams"] == 4
    assert config.training["generation_max_length"] == 60


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({**BASE, "learning_rat": 1e-4})
    assert err.value.key == "learning_rat"
    assert "did you mean 'learning_rate'" in str(err.value)


def test_wrong_type_is_rejected_with_the_key():
    with pytest.raises(ConfigError, match="max_steps.*expected int"):
        RunConfig.from_dict({**BASE, "max_steps": "many"})


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({**BASE, "max_step": 3, "per_device_train_batch_size": "x", "sourc_column": "a"})
    text = str(err.value)
    assert text.startswith("3 problems")
    for key in ("max_step", "per_device_train_batch_size", "sourc_column"):
        assert key in text
    assert "\n" not in text


@pytest.mark.parametrize("values, key", [
    ({"train_file": "t.jsonl"}, "model_name_or_path"),
    ({**BASE, "model_config": {"architecture": "t5"}}, "model_name_or_path"),
    ({"model_name_or_path": "m"}, "train_file"),
    ({**BASE, "max_source_length": 0}, "max_source_length"),
    ({**BASE, "validation_split_size": -1}, "validation_split_size"),
    ({**BASE, "task": "summarisation"}, "task"),
    ({**BASE, "task": "translation"}, "source_lang"),
    ({**BASE, "metrics": ["blue"]}, "metrics"),
    ({**BASE, "early_stopping_patience": 2, "eval_strategy": "no"}, "early_stopping_patience"),
    ({**BASE, "invalid_rows": "ignore"}, "invalid_rows"),
])
def test_contradictions_and_bad_values_name_the_key(values, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(values)
    assert err.value.key == key, str(err.value)


def test_trainer_argument_conflicts_are_config_errors():
    with pytest.raises(ConfigError, match="Seq2SeqTrainingArguments"):
        RunConfig.from_dict({**BASE, "load_best_model_at_end": True, "eval_strategy": "steps",
                             "save_strategy": "epoch"})


def test_resolved_config_round_trips_and_keeps_secrets_out(tmp_path):
    config = RunConfig.from_dict({**BASE, "token": "hf_secret", "hub_token": "hf_secret2", "learning_rate": "2e-4",
                                  "source_prefix": "summarize: "})
    path = tmp_path / "run_config.yaml"
    config.save(path)
    assert "hf_secret" not in path.read_text()
    again = load_config(str(path))
    assert again.to_flat_dict() == config.to_flat_dict()


def test_bad_recipe_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_file: a\n  model: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(bad))
    assert err.value.line is not None
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(listing))


class FakeMultilingualTokenizer:
    """The attributes mBART/NLLB tokenizers expose for language codes."""

    unk_token_id = 3
    additional_special_tokens = ["en_XX", "de_DE"]
    src_lang = "en_XX"
    tgt_lang = "en_XX"

    def convert_tokens_to_ids(self, token):
        return {"en_XX": 10, "de_DE": 11}.get(token, self.unk_token_id)


def test_translation_sets_language_codes_and_forces_the_target_language():
    from hf_encdec.data.tasks import get_task

    config = RunConfig.from_dict({**BASE, "task": "translation", "source_lang": "en_XX", "target_lang": "de_DE"})
    tokenizer = FakeMultilingualTokenizer()
    settings = get_task("translation").configure_tokenizer(tokenizer, config.data)
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("en_XX", "de_DE")
    assert settings == {"forced_bos_token_id": 11}


def test_unknown_language_code_is_a_config_error():
    from hf_encdec.data.tasks import get_task

    config = RunConfig.from_dict({**BASE, "task": "translation", "source_lang": "en_XX", "target_lang": "xx_YY"})
    with pytest.raises(ConfigError, match="xx_YY") as err:
        get_task("translation").configure_tokenizer(FakeMultilingualTokenizer(), config.data)
    assert "de_DE" in str(err.value)


@pytest.mark.parametrize(("given", "expected"), [
    ({"save_steps": 10}, {"save_strategy": "steps", "eval_strategy": "epoch"}),
    ({"eval_steps": 50}, {"eval_strategy": "steps", "save_strategy": "epoch"}),
    ({"save_steps": 10, "save_strategy": "no"}, {"save_strategy": "no"}),  # a strategy given is kept
    ({"evaluation_strategy": "epoch", "eval_steps": 5}, {"eval_strategy": "epoch"}),
    # Keeping the best checkpoint needs both on one schedule: one count sets both.
    ({"eval_steps": 50, "early_stopping_patience": 2},
     {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 50, "save_steps": 50}),
    ({"save_steps": 30, "eval_steps": 10, "load_best_model_at_end": True},
     {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 10, "save_steps": 30}),
])
def test_a_step_count_without_its_strategy_means_steps(given, expected):
    training = RunConfig.from_dict({**BASE, **given}).training
    assert {key: training[key] for key in expected} == expected


def test_the_defaults_say_which_step_counts_switch_them(capsys):
    from hf_encdec.cli import main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "'epoch'; steps when save_steps is given" in out and "'epoch'; steps when eval_steps is given" in out


@pytest.mark.parametrize("report_to", ["all", "none", ["none"], "tensorboard", ["tensorboard"], "kubeflow"])
def test_installed_or_packageless_reporting_integrations_are_accepted(report_to, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec  # tensorboard installed or not on this machine: here it is
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorboard" else real(name, *a))
    assert RunConfig.from_dict({**BASE, "report_to": report_to}).training["report_to"] == report_to


@pytest.mark.parametrize("source", ["command line", "recipe null"])
def test_report_to_none_on_the_command_line_or_null_means_no_integration(source, tmp_path):
    # `--report_to none` reads as null on the command line; the Trainer refuses None after the model loads.
    if source == "command line":
        config = load_config(None, parse_overrides(["--model_name_or_path", "m", "--train_file", "t.jsonl",
                                                     "--report_to", "none"]))
    else:
        config = load_config(str(write_recipe(tmp_path, {**BASE, "report_to": None})))
    assert config.training["report_to"] == "none"
    assert config.training_arguments().report_to == []


@pytest.mark.parametrize(("report_to", "fragment"), [
    ("tensorbord", "did you mean 'tensorboard'"),
    (["all", "tensorboard"], "stand alone"),
])
def test_unknown_reporting_integrations_are_refused(report_to, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        RunConfig.from_dict({**BASE, "report_to": report_to})
    assert err.value.key == "report_to"


def test_a_reporting_integration_that_is_not_installed_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    hidden = {"tensorboard", "tensorboardX"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(ConfigError, match="reporting to tensorboard needs tensorboard or tensorboardX") as err:
        RunConfig.from_dict({**BASE, "report_to": "tensorboard"})
    assert err.value.key == "report_to" and 'pip install -e ".[tensorboard]"' in err.value.hint


def test_save_steps_alone_saves_every_n_steps_through_the_cli(tiny_models, pair_files, tmp_path):
    from hf_encdec.cli import main

    out = tmp_path / "run"
    assert main(["train", "--model_name_or_path", str(tiny_models["t5"]), "--train_file", str(pair_files["train"]),
                 "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2", "--eval_strategy", "no",
                 "--per_device_train_batch_size", "16", "--max_source_length", "16", "--max_target_length", "16",
                 "--disable_tqdm", "true", "--save_total_limit", "null"]) == 0
    assert yaml.safe_load((out / "run_config.yaml").read_text())["save_strategy"] == "steps"
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}


def test_one_parser_reads_command_line_values_for_our_keys_and_generation_fields():
    from hf_encdec.config.coercion import BareFlag, coerce_generation_field

    values = parse_overrides(["--num_beams", "4", "--suppress_tokens", "[5, 7]", "--eos_token_id", "2",
                              "--preset", "null", "--do_sample"])
    assert values["preset"] is None and isinstance(values["do_sample"], BareFlag)
    assert coerce_generation_field("num_beams", values["num_beams"]) == 4  # documented `int`
    assert coerce_generation_field("suppress_tokens", values["suppress_tokens"]) == [5, 7]  # richer: read as YAML
    assert coerce_generation_field("eos_token_id", values["eos_token_id"]) == 2
    assert coerce_generation_field("do_sample", values["do_sample"]) is True
    assert coerce_generation_field("num_beams", True) is True  # the Python API's values: check_fields judges them
    with pytest.raises(ConfigError, match="needs a value"):
        coerce_generation_field("num_beams", BareFlag())
    with pytest.raises(ConfigError, match="expected int"):
        coerce_generation_field("num_beams", "two")


def test_generate_and_evaluate_share_their_common_keys_declared_once():
    import dataclasses

    from hf_encdec.config.job_keys import EvaluateOptions, GenerateOptions, JobOptions

    shared = {f.name: f for f in dataclasses.fields(JobOptions)}
    for options in (GenerateOptions, EvaluateOptions):
        fields = {f.name: f for f in dataclasses.fields(options)}
        assert all(fields[name].metadata == field.metadata for name, field in shared.items())


def test_the_trainer_arguments_carry_the_batching_keys_as_declared_with_early_stopping_built_in():
    import dataclasses

    from hf_encdec.config.keys import BatchingArguments
    from hf_encdec.config.training_args import EncDecTrainingArguments

    declared = {f.name: f for f in dataclasses.fields(BatchingArguments)}["max_tokens"]
    carried = {f.name: f for f in dataclasses.fields(EncDecTrainingArguments)}["max_tokens"]
    assert (carried.default, carried.metadata) == (declared.default, declared.metadata)
    config = RunConfig.from_dict({**BASE, "early_stopping_patience": 2, "max_tokens": 256})
    arguments = config.training_arguments()
    assert arguments.load_best_model_at_end and arguments.metric_for_best_model == "chrf"
    assert (arguments.max_tokens, arguments.train_sampling_strategy) == (256, "token_budget")
