"""End-to-end training through the public API on tiny T5 / BART / Marian checkpoints."""

from __future__ import annotations

import json

import pytest
import yaml

import hf_encdec
from hf_encdec.errors import ConfigError

FAMILIES = ["t5", "bart", "marian"]


@pytest.mark.parametrize("family", FAMILIES)
def test_few_steps_reduce_loss_and_write_a_loadable_output_dir(family, tiny_models, quick_args):
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models[family]), "max_steps": 40,
                              "learning_rate": 3e-3, "warmup_steps": 0, "metrics": ["bleu", "exact_match"]})
    out = result.output_dir
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    log = json.loads((out / "metrics.json").read_text())
    assert set(log) >= {"train", "validation", "test", "signatures", "data"}
    assert {"bleu", "exact_match", "gen_len"} <= set(log["test"])
    assert "version:" in log["signatures"]["bleu"]
    assert log["data"]["train"]["rows"] == 200

    # Vanilla transformers loads everything, and generate() needs no ids from the caller.
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    generation = GenerationConfig.from_pretrained(out)
    # The length from the data (not the library's 20), saved as max_new_tokens: generate(max_new_tokens=N) overrides it.
    assert generation.max_length is None and generation.max_new_tokens not in (None, 19, 20)
    inputs = tokenizer(["red cat"], return_tensors="pt")
    assert model.generate(**inputs).shape[0] == 1
    assert (out / "model.safetensors").exists() and not (out / "training_args.bin").exists()
    assert yaml.safe_load((out / "run_config.yaml").read_text())["model_name_or_path"] == str(tiny_models[family])
    assert "hf-encdec" in (out / "README.md").read_text()

    losses = [entry["loss"] for entry in _log_history(out) if "loss" in entry]
    assert len(losses) >= 25
    assert sum(losses[-5:]) / 5 < 0.92 * sum(losses[:5]) / 5  # beyond noise: the token distribution is learnt


def _log_history(output_dir):
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def test_predictions_follow_the_test_file_in_order(tiny_models, quick_args, pair_files):
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["bart"])})
    rows = [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in pair_files["test"].read_text().splitlines()]
    assert [r["source"] for r in rows] == [e["source"] for e in expected]
    assert [r["reference"] for r in rows] == [e["target"] for e in expected]
    assert [r["line"] for r in rows] == list(range(1, len(expected) + 1))
    assert all(isinstance(r["prediction"], str) for r in rows)


def test_validation_split_is_carved_when_absent(tiny_models, quick_args):
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["marian"]),
                              "validation_file": None, "validation_split_size": 20})
    data = json.loads((result.output_dir / "metrics.json").read_text())["data"]
    assert data["validation"]["rows"] == 20 and data["train"]["rows"] == 180


def test_fp16_with_t5_is_refused_before_anything_is_written(tiny_models, quick_args, tmp_path):
    with pytest.raises(ConfigError, match="fp16 is refused") as err:
        hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "fp16": True})
    assert err.value.key == "fp16"
    assert not (tmp_path / "run").exists()


def test_finished_run_is_not_overwritten_unless_asked(tiny_models, quick_args):
    args = {**quick_args, "model_name_or_path": str(tiny_models["bart"]), "max_steps": 1, "test_file": None}
    hf_encdec.train(args)
    with pytest.raises(ConfigError, match="finished run"):
        hf_encdec.train(args)
    assert hf_encdec.train({**args, "overwrite_output_dir": True}).metrics["validation"]


@pytest.mark.parametrize("architecture", ["t5", "bart", "marian"])
def test_from_scratch_trains_a_tokenizer_and_model(architecture, quick_args):
    result = hf_encdec.train({**quick_args, "max_steps": 2, "tokenizer_vocab_size": 120,
                              "model_config": {"architecture": architecture, "d_model": 32, "d_ff": 64,
                                               "num_layers": 1} if architecture == "t5" else
                              {"architecture": architecture, "d_model": 32, "encoder_layers": 1,
                               "decoder_layers": 1, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}})
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(result.output_dir)
    assert model.config.model_type == architecture
    assert tokenizer.decode(tokenizer("red cat").input_ids, skip_special_tokens=True) == "red cat"


def test_unknown_scratch_config_field_is_named(quick_args):
    with pytest.raises(ConfigError, match="d_modle") as err:
        hf_encdec.train({**quick_args, "model_config": {"architecture": "t5", "d_modle": 32}})
    assert "d_model" in str(err.value)


def test_dataset_name_reads_a_local_dataset_folder(tiny_models, quick_args, pair_files, tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text(pair_files[split].read_text())
    args = {k: v for k, v in quick_args.items() if not k.endswith("_file")}
    result = hf_encdec.train({**args, "model_name_or_path": str(tiny_models["t5"]), "dataset_name": str(folder)})
    data = json.loads((result.output_dir / "metrics.json").read_text())["data"]
    assert (data["train"]["rows"], data["validation"]["rows"]) == (200, 30)
    assert "test" not in data


def test_early_stopping_ends_the_run_when_the_metric_stalls(tiny_models, quick_args):
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "max_steps": 20,
                              "learning_rate": 1e-12, "eval_strategy": "steps", "save_strategy": "steps",
                              "eval_steps": 1, "save_steps": 1, "early_stopping_patience": 2, "test_file": None})
    state = json.loads((result.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # the first evaluation sets the best score; two more without improvement
    assert state["best_model_checkpoint"] is not None
