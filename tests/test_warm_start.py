"""Warm-started EncoderDecoderModel pairs (BERT2BERT, BERT2GPT2) through the public API, reloaded with vanilla transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hf_encdec
from hf_encdec.cli import main
from hf_encdec.errors import ConfigError, ModelError

PAIRS = {"bert2bert": ("bert", "bert"), "bert2gpt2": ("bert", "gpt2")}


def _pair_args(tiny_pair_models, pair: str) -> dict:
    encoder, decoder = PAIRS[pair]
    return {"encoder_name_or_path": str(tiny_pair_models[encoder]),
            "decoder_name_or_path": str(tiny_pair_models[decoder]), "max_source_length": 16,
            "max_target_length": 48}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_warm_start_trains_and_generates_after_a_vanilla_reload(pair, tiny_pair_models, quick_args):
    result = hf_encdec.train({**quick_args, **_pair_args(tiny_pair_models, pair), "max_steps": 30,
                              "learning_rate": 3e-3, "warmup_steps": 0, "max_eval_samples": 8, "test_file": None})
    out = result.output_dir
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5

    encoder_tokenizer = AutoTokenizer.from_pretrained(out)
    decoder_tokenizer = AutoTokenizer.from_pretrained(out / "decoder_tokenizer")
    assert encoder_tokenizer.cls_token == "[CLS]"  # the input side is always BERT here
    model = EncoderDecoderModel.from_pretrained(out)
    assert type(AutoModelForSeq2SeqLM.from_pretrained(out)) is EncoderDecoderModel
    start = decoder_tokenizer.cls_token_id if pair == "bert2bert" else decoder_tokenizer.bos_token_id
    end = decoder_tokenizer.sep_token_id if pair == "bert2bert" else decoder_tokenizer.eos_token_id
    generation = model.generation_config
    assert (generation.decoder_start_token_id, generation.eos_token_id) == (start, end)
    assert generation.pad_token_id == decoder_tokenizer.pad_token_id not in (None, start, end)
    assert model.config.decoder_start_token_id == start and model.config.pad_token_id == generation.pad_token_id

    outputs = model.generate(**encoder_tokenizer(["red cat", "blue dog bird"], return_tensors="pt", padding=True))
    assert outputs[:, 0].tolist() == [start, start]
    assert all(isinstance(t, str) for t in decoder_tokenizer.batch_decode(outputs, skip_special_tokens=True))

    report = json.loads((out / "metrics.json").read_text())["model"]["warm_start"]
    assert any("crossattention" in part for part in report["random_init"])
    card = (out / "README.md").read_text()
    # The card names local checkpoints by folder name only: no local paths go to the Hub.
    assert "crossattention" in card and "a local model: `bert`" in card
    assert str(tiny_pair_models["bert"]) not in card


def test_a_pad_token_is_added_to_a_decoder_tokenizer_without_one(tiny_pair_models, quick_args):
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_pair_models["gpt2"]).pad_token is None
    result = hf_encdec.train({**quick_args, **_pair_args(tiny_pair_models, "bert2gpt2"), "max_steps": 1,
                              "test_file": None})
    decoder_tokenizer = AutoTokenizer.from_pretrained(result.output_dir / "decoder_tokenizer")
    config = json.loads((result.output_dir / "config.json").read_text())
    assert decoder_tokenizer.pad_token is not None
    assert config["decoder"]["vocab_size"] == config["vocab_size"] == len(decoder_tokenizer)


def test_mismatched_hidden_sizes_get_a_trained_projection(tiny_pair_models, quick_args):
    result = hf_encdec.train({**quick_args, **_pair_args(tiny_pair_models, "bert2gpt2"), "max_steps": 1,
                              "test_file": None})
    from transformers import EncoderDecoderModel

    model = EncoderDecoderModel.from_pretrained(result.output_dir)
    assert (model.enc_to_dec_proj.in_features, model.enc_to_dec_proj.out_features) == (32, 48)
    assert "enc_to_dec_proj" in result.metrics["model"]["warm_start"]["random_init"]


def test_warm_start_needs_both_halves(tiny_pair_models, quick_args):
    with pytest.raises(ConfigError, match="decoder_name_or_path"):
        hf_encdec.train({**quick_args, "encoder_name_or_path": str(tiny_pair_models["bert"])})


def test_an_encoder_decoder_checkpoint_is_refused_as_a_half(tiny_pair_models, tiny_models, quick_args, tmp_path):
    with pytest.raises(ModelError, match="already an encoder-decoder") as err:
        hf_encdec.train({**quick_args, "encoder_name_or_path": str(tiny_pair_models["bert"]),
                         "decoder_name_or_path": str(tiny_models["t5"])})
    assert err.value.key == "decoder_name_or_path"
    assert not (tmp_path / "run").exists()


MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


@pytest.mark.skipif(not (MULTI30K / "train.en.gz").exists(), reason="Multi30k is not beside the repository")
def test_bert2bert_recipe_runs_against_local_checkpoints(tiny_pair_models, tmp_path, recipe_smoke_args):
    bert = str(tiny_pair_models["bert"])
    recipe = str(Path(__file__).resolve().parents[1] / "tasks" / "bert2bert.yaml")
    code = main(["train", recipe, "--encoder_name_or_path", bert, "--decoder_name_or_path", bert,
                 "--output_dir", str(tmp_path / "b2b"), *recipe_smoke_args])
    assert code == 0
    assert json.loads((tmp_path / "b2b" / "metrics.json").read_text())["data"]["train"]["rows"] == 64
