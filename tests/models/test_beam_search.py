"""Beam search with a shrinking batch returns exactly what the library's beam search returns, with less work."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_encdec.models.decoding import beam_search
from hf_encdec.config.presets import make_preset

SOURCES = [" ".join(["red", "cat", "dog", "sun", "moon", "tree", "river"][: 1 + i % 7]) for i in range(12)]


def decoder_batch_sizes(model):
    """Rows of each decoder forward pass, recorded until the returned hook is removed."""
    sizes = []
    hook = model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    return sizes, hook


def both_ways(model, batch, config):
    """(library result, our result, our decoder batch sizes) for one generate() call."""
    with torch.inference_mode():
        expected = model.generate(**batch, generation_config=config)
        sizes, hook = decoder_batch_sizes(model)
        ours = model.generate(**batch, generation_config=config, custom_generate=beam_search)
        hook.remove()
    return expected, ours, sizes


# A tiny random model repeats one token forever; forbidding repeated tokens (no_repeat_ngram_size=1) walks
# each hypothesis through the 34-token vocabulary to the end token, at a step that differs by example.
CASES = {
    "beam": {},
    "beam-long": {},
    "nbest": {},
    "beam-no-early-stop": {"early_stopping": False},
    "beam-never-stop-early": {"early_stopping": "never", "length_penalty": 2.0},
}


@pytest.mark.parametrize("family", ["t5", "bart", "marian"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_hypotheses_and_scores_as_the_library_with_finished_examples_dropped(family, case, tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[family])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models[family]).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    preset = case if case in ("beam", "beam-long", "nbest") else "beam"
    config = make_preset(preset, base=model.generation_config,
                         overrides={"max_new_tokens": 40, "no_repeat_ngram_size": 1, **CASES[case]})
    config.return_dict_in_generate, config.output_scores = True, True
    expected, ours, sizes = both_ways(model, batch, config)

    assert torch.equal(ours.sequences, expected.sequences)
    assert torch.allclose(ours.sequences_scores, expected.sequences_scores, atol=1e-5)
    rows = len(SOURCES) * config.num_beams
    assert sizes[0] == rows and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("family", ["t5", "marian"])  # this tiny BART never emits its end token: no example ends early
def test_done_examples_leave_the_batch(family, tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[family])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models[family]).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    config = make_preset("beam", base=model.generation_config, overrides={"max_new_tokens": 40, "no_repeat_ngram_size": 1})
    expected, ours, sizes = both_ways(model, batch, config)
    assert torch.equal(ours, expected)
    eos = config.eos_token_id
    assert len({row.tolist().index(eos, 1) for row in expected if eos in row[1:]}) > 1  # the premise
    rows = len(SOURCES) * config.num_beams
    assert min(sizes) < rows
    assert sum(sizes) < rows * len(sizes)


def test_a_warm_started_pair_shrinks_too(tmp_path):
    from conftest import _tokenizer
    from transformers import BertConfig, BertLMHeadModel, BertModel, EncoderDecoderModel

    torch.manual_seed(8)  # a seed whose random pair finishes examples at different steps (most finish all at one)
    tokenizer = _tokenizer("t5")
    sizes = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
             "intermediate_size": 64, "pad_token_id": tokenizer.pad_token_id}
    model = EncoderDecoderModel(encoder=BertModel(BertConfig(**sizes)),
                                decoder=BertLMHeadModel(BertConfig(**sizes, is_decoder=True, add_cross_attention=True)))
    model.eval()
    config = make_preset("beam", base=model.generation_config, overrides={
        "max_new_tokens": 40, "no_repeat_ngram_size": 1, "decoder_start_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id})
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    batch.pop("token_type_ids", None)
    expected, ours, sizes = both_ways(model, batch, config)
    assert torch.equal(ours, expected)
    assert min(sizes) < len(SOURCES) * config.num_beams


@pytest.mark.parametrize("override", [{"encoder_no_repeat_ngram_size": 2},
                                      {"output_attentions": True, "return_dict_in_generate": True}])
def test_what_is_not_known_to_be_per_row_runs_the_library_loop(override, tiny_models):
    """Encoder-based processors keep the whole batch's encoder ids, and attentions would change shape as
    rows leave: these run transformers' own beam search, unchanged."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["t5"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"]).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    config = make_preset("beam", base=model.generation_config,
                         overrides={"max_new_tokens": 40, "no_repeat_ngram_size": 1, **override})
    expected, ours, sizes = both_ways(model, batch, config)
    if config.return_dict_in_generate:
        expected, ours = expected.sequences, ours.sequences
    assert torch.equal(ours, expected)
    assert set(sizes) == {len(SOURCES) * config.num_beams}


def test_generate_and_the_final_evaluation_decode_with_it(tiny_models, quick_args, pair_files, monkeypatch):
    """Both places our users run beam search: `hf_encdec.generate` and a training run's final evaluation.
    Their padded, length-sorted batches give what plain transformers gives one source at a time."""
    import json

    import hf_encdec
    from hf_encdec.models import decoding as module

    runs = []
    original = module._ShrinkingBeamSearch.run
    monkeypatch.setattr(module._ShrinkingBeamSearch, "run", lambda self, *args: runs.append(1) or original(self, *args))
    presets = {"beam-unique": {"num_beams": 4, "early_stopping": True, "no_repeat_ngram_size": 1}}
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "preset": "beam-unique",
                              "presets": presets})
    assert runs  # the final evaluation went through the shrinking loop
    out = result.output_dir
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    sources = [row["source"] for row in rows]
    with torch.inference_mode():  # the saved generation_config.json is the preset
        one_by_one = [tokenizer.decode(model.generate(**tokenizer([s], return_tensors="pt"))[0],
                                       skip_special_tokens=True).strip() for s in sources]
    assert [row["prediction"] for row in rows] == one_by_one

    runs.clear()
    assert hf_encdec.generate(model, sources, tokenizer=tokenizer, max_tokens=30) == one_by_one
    assert runs
