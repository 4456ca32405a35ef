"""Greedy search with a shrinking batch returns exactly what the library's greedy search returns, with less work."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_encdec.models.decoding import beam_search
from hf_encdec.config.presets import make_preset
from hf_encdec.models.decoding import decoding_kwargs, greedy_search

SOURCES = [" ".join(["red", "cat", "dog", "sun", "moon", "tree", "river"][: 1 + i % 7]) for i in range(24)]


def run_both(model, batch, config):
    """(library result, our result, our decoder batch sizes) for one generate() call."""
    with torch.inference_mode():
        expected = model.generate(**batch, generation_config=config)
        sizes = []
        hook = model.get_decoder().register_forward_pre_hook(
            lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
        ours = model.generate(**batch, generation_config=config, custom_generate=greedy_search)
        hook.remove()
    return expected, ours, sizes


@pytest.mark.parametrize("family", ["t5"])  # the tiny Marian and BART end every row at one step
@pytest.mark.parametrize("extra", [{}, {"min_new_tokens": 6, "repetition_penalty": 1.2}])
def test_same_tokens_as_the_library_with_finished_rows_dropped(family, extra, tiny_models):
    """A tiny random model repeats one token forever; forbidding repeats (no_repeat_ngram_size=1) walks each
    row through its 34-token vocabulary to the end token, at a step that differs by row, as a trained
    model's rows finish at different steps."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[family])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models[family]).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    config = make_preset("greedy", base=model.generation_config,
                         overrides={"max_new_tokens": 40, "no_repeat_ngram_size": 1, **extra})
    expected, ours, sizes = run_both(model, batch, config)
    ends = {row.tolist().index(config.eos_token_id, 1) for row in expected if config.eos_token_id in row[1:]}
    assert len(ends) > 2  # the premise: rows end at different steps
    assert torch.equal(ours, expected)  # the same tokens, padding and width
    assert sizes[0] == len(SOURCES) and min(sizes) < len(SOURCES)  # finished rows were let go
    assert sizes == sorted(sizes, reverse=True)


def test_what_is_not_known_to_be_per_row_runs_the_library_loop(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["t5"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"]).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    config = make_preset("greedy", base=model.generation_config, overrides={
        "max_new_tokens": 40, "no_repeat_ngram_size": 1, "encoder_no_repeat_ngram_size": 2})
    expected, ours, sizes = run_both(model, batch, config)
    assert torch.equal(ours, expected)
    assert set(sizes) == {len(SOURCES)}


def test_each_decoding_method_gets_its_loop():
    assert decoding_kwargs(1, False) == {"custom_generate": greedy_search}
    assert decoding_kwargs(4, False) == {"custom_generate": beam_search}
    assert decoding_kwargs(1, True) == decoding_kwargs(4, True) == {}  # sampling: the library's draws, untouched
