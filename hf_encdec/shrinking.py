"""Greedy decoding whose batch shrinks as its rows finish.

transformers' greedy loop keeps every row of a batch in the forward pass until the last one
ends: a row that emitted its end-of-sequence token at step 5 is still computed (as padding) at
step 80. Measured on a trained Multi30k model with length-sorted batches, more than half of
the decoder's work went to such finished rows. The library has no way to drop them, so we stop
the batch once half its rows are done and continue the rest as a smaller batch: generate() is
called again with the unfinished rows' tokens so far as `decoder_input_ids`. Greedy decoding
is deterministic, so the continuation picks the tokens the long loop would have picked; each
call costs one extra encoder pass and one parallel pass over the prefix, and the halving keeps
the number of calls to about log2(batch size).

Only plain greedy search shrinks this way: beam search and sampling carry state (beams, random
draws) that a new call cannot take over, and a few settings count steps from the start of a call.
Beam search shrinks inside a single call instead (beam_search.py).
"""

from __future__ import annotations

import copy
from typing import Any

# Settings measured from the first decoding step of a call: a continuation would apply them again.
STEP_RELATIVE = ("min_new_tokens", "begin_suppress_tokens", "exponential_decay_length_penalty")
# Below this many rows a new call costs more than the finished rows it would drop.
MIN_ROWS = 8


def can_shrink(config) -> bool:
    if (config.num_beams or 1) > 1 or config.do_sample or config.output_scores:
        return False
    return all(getattr(config, key, None) is None for key in STEP_RELATIVE)


def shrinking_config(config, model):
    """A copy that returns bare token ids, its length limit counted from the decoder start so that
    continuations stop where a single call would have (generate() counts max_new_tokens from the end
    of `decoder_input_ids`)."""
    config = copy.deepcopy(config)
    config.return_dict_in_generate = False
    if config.max_new_tokens is not None:
        config.max_length, config.max_new_tokens = config.max_new_tokens + 1, None
    elif config.max_length is None:  # the library's default: 20 new tokens, within the model's positions
        positions = getattr(model.config, "max_position_embeddings", None)
        config.max_length = min(21, positions) if positions else 21
    return config


class StopWhenHalfFinished:
    """A stopping criterion that ends the whole call once half the rows (and at least one) are finished."""

    def __init__(self, eos_token_ids: Any):
        import torch

        self.eos = torch.as_tensor(eos_token_ids).flatten()

    def finished(self, sequences):
        import torch

        return torch.isin(sequences[:, 1:], self.eos.to(sequences.device)).any(dim=1)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        rows = input_ids.shape[0]
        done = int(self.finished(input_ids).sum())
        stop = rows >= MIN_ROWS and 2 * done >= rows and done < rows
        return torch.full((rows,), stop, dtype=torch.bool, device=input_ids.device)


def generate_shrinking(model, inputs: dict[str, Any], config) -> list:
    """One token tensor per row (decoder start first), as `model.generate(**inputs)` would give, with
    finished rows let go on the way. `config` comes from `shrinking_config`."""
    from transformers import StoppingCriteriaList

    criterion = StopWhenHalfFinished(config.eos_token_id)
    sequences = model.generate(**inputs, generation_config=config,
                               stopping_criteria=StoppingCriteriaList([criterion]))
    rows = list(sequences)
    pending = (~criterion.finished(sequences) & (sequences.shape[1] < config.max_length)).nonzero().flatten()
    if len(pending):
        subset = _rows(inputs, pending)
        subset["decoder_input_ids"] = sequences[pending]
        for index, row in zip(pending.tolist(), generate_shrinking(model, subset, config)):
            rows[index] = row
    return rows


def _rows(inputs: dict[str, Any], index) -> dict[str, Any]:
    """The chosen rows of a padded encoder batch, without the padding columns only other rows needed."""
    subset = {key: value[index] for key, value in inputs.items() if key != "decoder_input_ids"}
    mask = subset.get("attention_mask")
    if mask is not None:
        keep = mask.any(dim=0)
        subset = {key: value[:, keep] for key, value in subset.items()}
    return subset
