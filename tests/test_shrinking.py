"""Greedy decoding with a shrinking batch gives exactly what one generate() call gives, with less work."""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_encdec.presets import make_preset
from hf_encdec.shrinking import MIN_ROWS, can_shrink, generate_shrinking, shrinking_config

SOURCES = [" ".join(["red", "cat", "dog", "sun", "moon", "tree", "river"][: 1 + i % 7]) for i in range(24)]


def test_shrinking_matches_one_call_and_drops_finished_rows(tiny_models):
    """A tiny random model repeats one token forever; forbidding repeats (no_repeat_ngram_size=1) walks each
    row through its 34-token vocabulary to the end token, at a step that differs by row, as a trained
    model's rows finish at different steps. It also checks that continuations see their prefix."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["t5"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"]).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    config = make_preset("greedy", base=model.generation_config,
                         overrides={"max_new_tokens": 40, "no_repeat_ngram_size": 1})
    with torch.inference_mode():
        expected = model.generate(**batch, generation_config=config)
        batch_sizes = []
        hook = model.get_decoder().register_forward_pre_hook(
            lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
        rows = generate_shrinking(model, dict(batch), shrinking_config(config, model))
        hook.remove()
    ends = {row.tolist().index(config.eos_token_id, 1) for row in expected if config.eos_token_id in row[1:]}
    assert len(ends) > 2  # the premise: rows end at different steps
    assert tokenizer.batch_decode(rows, skip_special_tokens=True) == tokenizer.batch_decode(
        expected, skip_special_tokens=True)
    pad = config.pad_token_id
    assert [int((r[1:] != pad).sum()) for r in rows] == [int((r[1:] != pad).sum()) for r in expected]
    assert batch_sizes[0] == len(SOURCES) and min(batch_sizes) < len(SOURCES)  # finished rows were let go
    assert sum(batch_sizes) < len(SOURCES) * (expected.shape[1] - 1)


def test_only_plain_greedy_shrinks(tiny_models):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"])
    base = model.generation_config
    assert can_shrink(make_preset("greedy", base=base))
    for preset in ("beam", "sample", "nbest"):
        assert not can_shrink(make_preset(preset, base=base))
    assert not can_shrink(make_preset("greedy", base=base, overrides={"min_new_tokens": 3}))
    assert MIN_ROWS > 1


def test_length_limit_counts_from_the_decoder_start(tiny_models):
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"])
    config = make_preset("greedy", base=model.generation_config, overrides={"max_new_tokens": 7})
    absolute = shrinking_config(config, model)
    assert (absolute.max_length, absolute.max_new_tokens) == (8, None)
    assert config.max_new_tokens == 7  # the caller's config is left alone
