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


MULTI30K = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"


@pytest.mark.skipif(not (MULTI30K / "train.en.gz").exists(), reason="Multi30k is not beside the repository")
def test_bert2bert_recipe_runs_against_local_checkpoints(tiny_pair_models, tmp_path, recipe_smoke_args):
    bert = str(tiny_pair_models["bert"])
    recipe = str(Path(__file__).resolve().parents[2] / "tasks" / "bert2bert.yaml")
    code = main(["train", recipe, "--encoder_name_or_path", bert, "--decoder_name_or_path", bert,
                 "--output_dir", str(tmp_path / "b2b"), *recipe_smoke_args])
    assert code == 0
    assert json.loads((tmp_path / "b2b" / "metrics.json").read_text())["data"]["train"]["rows"] == 64


@pytest.fixture(scope="module")
def headless_checkpoints(tiny_pair_models, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints saved without an LM head, as AutoModel saves them: BERT (with its pooler, as
    bert-base-uncased's encoder carries one), GPT-2 with the head tied to the embeddings, GPT-2 untied."""
    from transformers import AutoTokenizer, BertModel, GPT2Model

    root = tmp_path_factory.mktemp("headless")
    bert = BertModel.from_pretrained(tiny_pair_models["bert"])
    gpt2 = GPT2Model.from_pretrained(tiny_pair_models["gpt2"])
    folders = {"bert": root / "bert", "gpt2": root / "gpt2", "gpt2-untied": root / "gpt2-untied"}
    bert.save_pretrained(folders["bert"])
    gpt2.save_pretrained(folders["gpt2"])
    gpt2.config.tie_word_embeddings = False
    gpt2.save_pretrained(folders["gpt2-untied"])
    for name, source in (("bert", "bert"), ("gpt2", "gpt2"), ("gpt2-untied", "gpt2")):
        AutoTokenizer.from_pretrained(tiny_pair_models[source]).save_pretrained(folders[name])
    return folders


def _headless_args(quick_args, encoder, decoder) -> dict:
    return {**quick_args, "encoder_name_or_path": str(encoder), "decoder_name_or_path": str(decoder),
            "max_source_length": 16, "max_target_length": 48}


@pytest.mark.parametrize(("encoder", "decoder", "random"), [
    # BertForMaskedLM weights have no pooler: it starts random, and feeds nothing.
    ("mlm-bert", "gpt2", ["decoder.transformer.h.*.crossattention", "decoder.transformer.h.*.ln_cross_attn",
                          "enc_to_dec_proj", "encoder.pooler"]),
    # A GPT2Model checkpoint loses nothing as a decoder: its LM head is the embeddings.
    ("bert", "gpt2", ["decoder.transformer.h.*.crossattention", "decoder.transformer.h.*.ln_cross_attn",
                      "enc_to_dec_proj"]),
    ("bert", "gpt2-untied", ["decoder.transformer.h.*.crossattention", "decoder.transformer.h.*.ln_cross_attn",
                             "decoder.lm_head", "enc_to_dec_proj"]),
    # A BertModel decoder lacks the LM-head transform and the output bias.
    ("bert", "bert", ["decoder.cls.predictions.transform", "decoder.bert.encoder.layer.*.crossattention",
                      "decoder.cls.predictions.bias"]),
])
def test_every_weight_that_starts_random_is_listed(encoder, decoder, random, headless_checkpoints,
                                                   tiny_pair_models, quick_args, caplog):
    checkpoints = {**headless_checkpoints, "mlm-bert": tiny_pair_models["bert"]}
    with caplog.at_level("INFO", logger="hf_encdec"):
        result = hf_encdec.train({**_headless_args(quick_args, checkpoints[encoder], checkpoints[decoder]),
                                  "max_steps": 1, "test_file": None})
    report = result.metrics["model"]["warm_start"]
    assert sorted(report["random_init"]) == sorted(random)
    assert report["unused"] == (["encoder.pooler"] if encoder == "mlm-bert" else [])
    line = next(r.getMessage() for r in caplog.records if "starting random:" in r.getMessage())
    assert all(part in line for part in random)
    card = (result.output_dir / "README.md").read_text()
    assert all(f"`{part}`" in card for part in random)
    assert all(f"`{part}` (unused, frozen)" in card for part in report["unused"])


def test_lora_trains_and_saves_a_random_lm_head_and_reloads_the_same(headless_checkpoints, tiny_pair_models,
                                                                     quick_args):
    bert, gpt2 = headless_checkpoints["bert"], headless_checkpoints["gpt2-untied"]
    result = hf_encdec.train({**_headless_args(quick_args, bert, gpt2), "peft": "lora", "max_steps": 12,
                              "learning_rate": 1e-2, "max_eval_samples": 6, "max_predict_samples": 6})
    out = result.output_dir
    saved = json.loads((out / "adapter_config.json").read_text())["modules_to_save"]
    assert {"decoder.lm_head", "enc_to_dec_proj"} <= set(saved)
    assert any("crossattention" in name for name in saved) and any("ln_cross_attn" in name for name in saved)

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    sources = [row["source"] for row in rows]
    first, second = hf_encdec.generate(str(out), sources), hf_encdec.generate(str(out), sources)
    assert first == second == [row["prediction"] for row in rows]

    # Vanilla peft on the base as transformers builds it (the pad token added as hf-encdec adds it).
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, EncoderDecoderModel, GenerationConfig

    decoder_tokenizer = AutoTokenizer.from_pretrained(out / "decoder_tokenizer")
    base = EncoderDecoderModel.from_encoder_decoder_pretrained(str(bert), str(gpt2))
    base.decoder.resize_token_embeddings(len(decoder_tokenizer))
    model = PeftModel.from_pretrained(base, out).eval()
    batch = AutoTokenizer.from_pretrained(out)(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = model.generate(**batch, generation_config=GenerationConfig.from_pretrained(out))
    assert [t.strip() for t in decoder_tokenizer.batch_decode(ids, skip_special_tokens=True)] == first


def test_an_adapter_refuses_a_random_weight_it_cannot_save(headless_checkpoints, quick_args, tmp_path):
    bert = headless_checkpoints["bert"]
    with pytest.raises(ConfigError, match="decoder.cls.predictions.bias starts random") as err:
        hf_encdec.train({**_headless_args(quick_args, bert, bert), "peft": "ia3"})
    assert err.value.key == "peft" and "LM head" in err.value.hint
    assert not (tmp_path / "run").exists()


def test_random_weights_cannot_stay_frozen_under_an_adapter(tiny_pair_models, quick_args, tmp_path):
    bert = tiny_pair_models["bert"]
    with pytest.raises(ConfigError, match="crossattention start random") as err:
        hf_encdec.train({**_headless_args(quick_args, bert, bert), "peft": "lora", "train_cross_attention": False})
    assert err.value.key == "train_cross_attention"
    assert not (tmp_path / "run").exists()
