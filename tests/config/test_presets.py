"""Decoding presets: built-ins, user presets, overrides, config-time validation, saving with training."""

from __future__ import annotations

import json

import pytest

import hf_encdec
from hf_encdec.errors import ConfigError
from hf_encdec.config.presets import PRESETS, load_user_presets, make_preset, save_presets

BASE = {"model_name_or_path": "some/model", "train_file": "train.jsonl"}


def test_builtin_presets_are_vanilla_generation_configs(tmp_path):
    from transformers import GenerationConfig

    configs = {name: make_preset(name) for name in PRESETS}
    save_presets(configs, tmp_path)
    assert {"greedy", "beam", "beam-long", "sample", "nbest"} <= set(PRESETS)
    beam = GenerationConfig.from_pretrained(str(tmp_path), "presets/beam.json")
    assert (beam.num_beams, beam.early_stopping, beam.do_sample) == (4, True, False)
    nbest = GenerationConfig.from_pretrained(str(tmp_path), "presets/nbest.json")
    assert nbest.num_return_sequences > 1 and nbest.num_return_sequences <= nbest.num_beams
    assert GenerationConfig.from_pretrained(str(tmp_path), "presets/sample.json").do_sample is True
    assert GenerationConfig.from_pretrained(str(tmp_path), "presets/beam-long.json").no_repeat_ngram_size == 3


def test_a_preset_resets_decoding_but_keeps_the_models_lengths_and_ids():
    from transformers import GenerationConfig

    base = GenerationConfig(max_length=33, num_beams=6, length_penalty=2.0, decoder_start_token_id=0,
                            forced_bos_token_id=7)
    greedy = make_preset("greedy", base=base)
    assert (greedy.num_beams, greedy.length_penalty) == (1, 1.0)
    assert (greedy.max_length, greedy.decoder_start_token_id, greedy.forced_bos_token_id) == (33, 0, 7)
    assert make_preset("beam", base=base, overrides={"num_beams": 6}).num_beams == 6


@pytest.mark.parametrize("overrides, key", [
    ({"num_beams": 0}, "num_beams"),
    ({"top_p": 1.5}, "top_p"),
    ({"num_return_sequences": 9}, "num_return_sequences"),
    ({"temperature": 0.5}, "temperature"),  # sampling setting on a beam preset: ignored silently by generate
    ({"num_beems": 3}, "num_beems"),
])
def test_invalid_fields_are_named(overrides, key):
    with pytest.raises(ConfigError) as err:
        make_preset("beam", overrides=overrides)
    assert err.value.key == key


@pytest.mark.parametrize("fields, what", [
    ({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5}, "diverse"),
    ({"penalty_alpha": 0.6, "top_k": 4}, "contrastive"),
    ({"num_beams": 4, "force_words_ids": [[5]]}, "constrained"),
])
def test_methods_moved_out_of_transformers_need_remote_code(fields, what):
    with pytest.raises(ConfigError, match=what) as err:
        make_preset("mine", user_presets={"mine": fields})
    assert "trust_remote_code" in str(err.value)
    make_preset("mine", user_presets={"mine": fields}, trust_remote_code=True)


def test_user_presets_from_a_file_and_name_clashes(tmp_path):
    path = tmp_path / "presets.yaml"
    path.write_text("beam6:\n  num_beams: 6\n  length_penalty: 1.2\n")
    assert make_preset("beam6", user_presets=load_user_presets(str(path))).num_beams == 6
    with pytest.raises(ConfigError, match="built in"):
        load_user_presets({"beam": {"num_beams": 3}})
    with pytest.raises(ConfigError, match="not found"):
        load_user_presets(str(tmp_path / "missing.yaml"))


def test_bad_presets_fail_when_the_config_is_read():
    with pytest.raises(ConfigError, match="unknown preset 'bem'.*did you mean 'beam'"):
        hf_encdec.RunConfig.from_dict({**BASE, "preset": "bem"})
    with pytest.raises(ConfigError) as err:
        hf_encdec.RunConfig.from_dict({**BASE, "presets": {"wide": {"num_beams": 2, "num_return_sequences": 3}}})
    assert err.value.key == "num_return_sequences"
    with pytest.raises(ConfigError, match="num_return_sequences"):
        hf_encdec.RunConfig.from_dict({**BASE, "preset": "nbest", "num_beams": 2})


def test_training_evaluates_with_one_preset_and_saves_every_preset(tiny_models, quick_args):
    from transformers import GenerationConfig

    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "preset": "wide",
                              "presets": {"wide": {"num_beams": 3, "length_penalty": 0.8}}})
    out = result.output_dir
    default = GenerationConfig.from_pretrained(str(out))
    assert (default.num_beams, default.length_penalty) == (3, 0.8)  # the final preset is the default
    for name in [*PRESETS, "wide"]:
        saved = GenerationConfig.from_pretrained(str(out), f"presets/{name}.json")
        assert saved.max_length == default.max_length  # from the data, in every preset
    assert GenerationConfig.from_pretrained(str(out), "presets/greedy.json").num_beams == 1
    assert json.loads((out / "metrics.json").read_text())["test"]
