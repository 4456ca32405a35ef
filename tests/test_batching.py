"""Token-budget batching: every example exactly once, within the budget, longest first; the cost the caller's."""

from __future__ import annotations

import random

import pytest

from hf_encdec.batching import batch_by_size, cut_batches


@pytest.mark.parametrize("max_tokens, max_sentences", [(64, None), (None, 5), (40, 3), (7, None)])
def test_every_example_once_and_within_the_budget(max_tokens, max_sentences):
    rng = random.Random(1)
    lengths = [rng.choice([1, 2, 3, 5, 8, 13, 30]) for _ in range(200)]
    batches = batch_by_size(lengths, max_tokens=max_tokens, max_sentences=max_sentences)
    assert sorted(i for b in batches for i in b) == list(range(200))  # nothing dropped, nothing twice
    for batch in batches:
        widest = max(lengths[i] for i in batch)
        if max_sentences:
            assert len(batch) <= max_sentences
        if max_tokens and len(batch) > 1:
            assert len(batch) * widest <= max_tokens
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first


def test_token_budget_gives_short_inputs_larger_batches_and_long_ones_their_own():
    lengths = [2] * 40 + [50, 60]
    batches = batch_by_size(lengths, max_tokens=40)
    assert batches[0] == [41] and batches[1] == [40]  # longer than the budget: alone, never dropped
    assert [len(b) for b in batches[2:]] == [20, 20]


def test_required_multiple_keeps_batch_sizes_round_and_ties_in_input_order():
    batches = batch_by_size([4] * 21, max_tokens=40, required_batch_size_multiple=8)
    assert [len(b) for b in batches] == [8, 8, 5]
    assert [i for b in batches for i in b] == list(range(21))


def test_the_cutter_closes_a_batch_by_the_callers_cost_over_the_longest_of_each_column():
    source, target = [2, 2, 2, 6, 2, 2], [1, 1, 5, 1, 1, 1]

    def encoder_plus_decoder(size, longest_source, longest_target):
        return size * (longest_source + longest_target)

    # The third example raises the longest target (3 * (2 + 5) = 21 fits), the fourth the longest source (4 * 11).
    assert cut_batches(range(6), [source, target], encoder_plus_decoder, max_cost=21) == [[0, 1, 2], [3, 4, 5]]
    assert cut_batches(range(6), [source, target], encoder_plus_decoder, max_cost=20) == [[0, 1], [2], [3, 4], [5]]
    assert cut_batches(range(6), [source, target], encoder_plus_decoder, max_size=4) == [[0, 1, 2, 3], [4, 5]]


def test_the_cutter_carries_what_passes_the_multiple_into_the_next_batch():
    # Five fit (5 * 2 <= 10), the sixth does not: four are kept (a multiple of 2), the fifth starts the next batch.
    batches = cut_batches(range(7), [[2] * 7], lambda size, longest: size * longest, max_cost=10, multiple=2)
    assert batches == [[0, 1, 2, 3], [4, 5, 6]]
