"""rundir: the one reader of a saved run (run_config.yaml, adapter_config.json) and "is this run finished"."""

from __future__ import annotations

import pytest
import yaml

from hf_encdec import rundir
from hf_encdec.config.run_config import RunConfig, read_saved_config
from hf_encdec.errors import ModelError


def test_a_saved_run_config_reads_back_every_key_it_holds(tmp_path):
    config = RunConfig.from_dict({"model_name_or_path": "some/model", "train_file": "train.jsonl", "peft": "lora",
                                  "lora_r": 4, "source_prefix": "translate: ", "output_dir": str(tmp_path)})
    config.save(tmp_path / rundir.RUN_CONFIG)
    values = rundir.read_run_config(tmp_path)
    assert values == yaml.safe_load(yaml.safe_dump(config.to_flat_dict()))
    assert values["peft"] == "lora" and values["lora_r"] == 4  # the adapter section too
    typed = read_saved_config(tmp_path)
    assert typed.adapter == config.adapter and typed.data.source_prefix == "translate: "


def test_a_run_config_of_another_version_still_reads(tmp_path):
    (tmp_path / rundir.RUN_CONFIG).write_text("task: text2text\nsource_prefix: 'reverse: '\n"
                                              "key_of_a_later_version: 3\n")
    assert rundir.read_run_config(tmp_path) == {"task": "text2text", "source_prefix": "reverse: ",
                                                "key_of_a_later_version": 3}
    assert read_saved_config(tmp_path).data.source_prefix == "reverse: "


def test_no_run_config_reads_as_no_settings(tmp_path):
    assert rundir.read_run_config(tmp_path) == {}
    (tmp_path / rundir.RUN_CONFIG).write_text("")
    assert rundir.read_run_config(tmp_path) == {}


@pytest.mark.parametrize("content, fragments", [
    ("source_prefix: [x\n", ["run_config.yaml:2", "not valid YAML"]),
    ("- a\n", ["run_config.yaml", "holds a list, expected a mapping"]),
    (b"source_prefix: caf\xe9\n", ["run_config.yaml", "not UTF-8"]),
], ids=["invalid-yaml", "not-a-mapping", "not-utf8"])
def test_a_bad_run_config_is_one_line_naming_the_file(tmp_path, content, fragments):
    file = tmp_path / rundir.RUN_CONFIG
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ModelError) as err:
        rundir.read_run_config(tmp_path, key="resume_from_checkpoint")
    line = err.value.one_line()
    assert "\n" not in line and str(file) in line and err.value.key == "resume_from_checkpoint"
    assert all(fragment in line for fragment in fragments), line
    assert not rundir.started_by_us(tmp_path)  # unreadable: not provably a run of ours


def test_a_run_is_finished_once_its_metrics_are_in_place(tmp_path):
    assert not rundir.is_finished(tmp_path / "missing")
    (tmp_path / rundir.RUN_CONFIG).write_text(f"output_dir: {tmp_path}\ntask: text2text\n")
    assert rundir.started_by_us(tmp_path) and not rundir.is_finished(tmp_path)  # started, stopped before the end
    assert rundir.read_metrics(tmp_path) == {}
    (tmp_path / rundir.METRICS).write_text('{"eval_bleu": 12.5}\n')
    assert rundir.is_finished(tmp_path) and rundir.read_metrics(tmp_path) == {"eval_bleu": 12.5}


def test_the_saved_adapter_names_its_base(tmp_path):
    assert rundir.read_adapter_config(tmp_path) is None and rundir.adapter_base(tmp_path) is None  # a full model
    (tmp_path / rundir.ADAPTER_CONFIG).write_text('{"peft_type": "LORA", "base_model_name_or_path": "t5-small"}')
    assert rundir.read_adapter_config(tmp_path)["peft_type"] == "LORA"
    assert rundir.adapter_base(tmp_path) == "t5-small"
    (tmp_path / rundir.ADAPTER_CONFIG).write_text('{"peft_type": "LORA", "base_model_name_or_path": null}')
    assert rundir.adapter_base(tmp_path) is None


@pytest.mark.parametrize("content, fragment", [('{"peft_type": ', "not valid JSON"),
                                               ('["LORA"]', "holds a list, expected peft's settings")],
                         ids=["invalid-json", "not-an-object"])
def test_a_bad_adapter_config_is_one_line_naming_the_file(tmp_path, content, fragment):
    (tmp_path / rundir.ADAPTER_CONFIG).write_text(content)
    with pytest.raises(ModelError) as err:
        rundir.adapter_base(tmp_path)
    line = err.value.one_line()
    assert str(tmp_path / rundir.ADAPTER_CONFIG) in line and fragment in line, line


def test_every_name_of_the_layout_is_an_output_name():
    names = [rundir.MODEL_CONFIG, rundir.GENERATION_CONFIG, rundir.ADAPTER_CONFIG, rundir.DECODER_TOKENIZER_DIR,
             rundir.MERGED_DIR, rundir.PRESET_DIR, rundir.RUN_CONFIG, rundir.METRICS, rundir.PREDICTIONS,
             rundir.TRAINER_STATE, rundir.PLOTS_DIR, rundir.CARD, rundir.checkpoint_name(3), rundir.STAGING_DIR,
             rundir.FINAL_STAGING_DIR, "model.safetensors", "tokenizer.json", "spiece.model"]
    assert all(rundir.is_output_name(name) for name in names)
    assert not rundir.is_output_name("notes.txt")


def test_the_library_names_are_spelled_as_the_libraries_spell_them():
    from peft.utils import CONFIG_NAME as PEFT_CONFIG_NAME
    from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
    from transformers.utils import CONFIG_NAME, GENERATION_CONFIG_NAME

    assert (rundir.MODEL_CONFIG, rundir.GENERATION_CONFIG, rundir.ADAPTER_CONFIG, rundir.TRAINER_STATE,
            rundir.TRAINING_ARGS) == (CONFIG_NAME, GENERATION_CONFIG_NAME, PEFT_CONFIG_NAME, TRAINER_STATE_NAME,
                                      TRAINING_ARGS_NAME)
