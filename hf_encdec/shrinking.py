"""Decoding loops whose batch shrinks as its rows finish: greedy search here, beam search in beam_search.py.

transformers' decoding loops keep every row of a batch in the forward pass until the last one
ends: a row that emitted its end-of-sequence token at step 5 is still computed, as padding, at
step 80. On a trained Multi30k model with length-sorted batches, more than half of the
decoder's work went to such finished rows, and the library has no switch to drop them.

Our loops are handed to `model.generate(custom_generate=...)`, so generate() still prepares the
encoder outputs, the cache, the logits processors and the stopping criteria; the loops do what
the library's do, step for step, and take finished rows out of the cache, the encoder outputs
and the masks. The outputs are the library's (the tests compare them token for token).
Anything not known to be per-row (an unknown logits processor, sampling, attentions in the
output, a static cache, processes that must step together) runs the library's loop instead.
"""

from __future__ import annotations

from typing import Any

# Logits processors and stopping criteria that look at each row alone, so dropping other rows
# cannot change what they do. The encoder-based ones keep the whole batch's encoder ids: left out.
ROW_WISE_PROCESSORS = {
    "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor", "RepetitionPenaltyLogitsProcessor",
    "NoRepeatNGramLogitsProcessor", "SequenceBiasLogitsProcessor", "NoBadWordsLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "InfNanRemoveLogitsProcessor",
    "ExponentialDecayLengthPenalty", "LogitNormalization", "SuppressTokensAtBeginLogitsProcessor",
    "SuppressTokensLogitsProcessor", "TemperatureLogitsWarper",
}
ROW_WISE_CRITERIA = {"MaxLengthCriteria", "EosTokenCriteria", "StopStringCriteria", "MaxTimeCriteria"}
UNSUPPORTED = ("do_sample", "output_attentions", "output_hidden_states", "output_logits", "low_memory")
# Greedy search drops finished rows once they are this share of the batch: each drop copies the
# cache. Measured on length-sorted batches of 48 (one thread): on the trained Multi30k Marian, 1/4
# took 1.57 s where 1/8 took 1.65 s, 1/2 1.62 s and the library 2.65 s; on a random T5 whose rows
# mostly run to the length limit, every share was within noise of the library.
DROP_SHARE = 1 / 4


def decoding_kwargs(num_beams: int | None, do_sample: bool | None) -> dict[str, Any]:
    """What to add to `model.generate(...)`: a shrinking loop for greedy and beam search, nothing for sampling."""
    if do_sample:
        return {}
    if (num_beams or 1) > 1:
        from .beam_search import beam_search

        return {"custom_generate": beam_search}
    return {"custom_generate": greedy_search}


def can_shrink(model, logits_processor, stopping_criteria, config, model_kwargs) -> bool:
    from transformers import DynamicCache, EncoderDecoderCache

    cache = model_kwargs.get("cache")
    return (
        model.config.is_encoder_decoder
        and not any(getattr(config, key, False) for key in UNSUPPORTED)
        and not sharded(model)
        and isinstance(cache, EncoderDecoderCache)
        and isinstance(cache.self_attention_cache, DynamicCache)
        and isinstance(cache.cross_attention_cache, DynamicCache)
        and all(type(p).__name__ in ROW_WISE_PROCESSORS for p in logits_processor)
        and all(type(c).__name__ in ROW_WISE_CRITERIA for c in stopping_criteria)
    )


def sharded(model) -> bool:
    """Weights gathered inside every forward (FSDP, ZeRO-3 on several processes): all processes must keep
    stepping together (`synced_gpus`). generate() does not tell a custom loop, so we ask as it does."""
    import torch
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    from transformers.integrations.fsdp import is_fsdp_managed_module

    several = torch.distributed.is_available() and torch.distributed.is_initialized() and (
        torch.distributed.get_world_size() > 1)
    return several and (is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model))


def keep_rows(model_kwargs: dict[str, Any], rows, old_rows: int) -> None:
    """Keep only `rows` of the cross-attention cache, the encoder outputs and any per-row model input.
    (The self-attention cache is the caller's: beam search reorders it in the same step.)"""
    import torch

    model_kwargs["cache"].cross_attention_cache.batch_select_indices(rows)
    for key, value in list(model_kwargs.items()):
        if key == "encoder_outputs":
            for field, tensor in value.items():
                if torch.is_tensor(tensor) and tensor.shape[0] == old_rows:
                    value[field] = tensor[rows]
        elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == old_rows:
            model_kwargs[key] = value[rows]


def greedy_search(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                  **model_kwargs):
    """The library's greedy loop (`_sample` without sampling), with finished rows dropped on the way."""
    import torch
    from transformers.generation.utils import GenerateEncoderDecoderOutput

    if synced_gpus or not can_shrink(model, logits_processor, stopping_criteria, generation_config, model_kwargs):
        return type(model)._sample(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                   synced_gpus=synced_gpus or sharded(model), **model_kwargs)
    pad = generation_config._pad_token_tensor
    pads_finished = any(hasattr(criterion, "eos_token_id") for criterion in stopping_criteria)
    results = [None] * input_ids.shape[0]
    alive = torch.arange(input_ids.shape[0], device=input_ids.device)  # original row of each row left
    unfinished = torch.ones_like(alive, dtype=torch.bool)
    outputs = model._prefill(input_ids, generation_config, model_kwargs,
                             is_first_iteration=not generation_config.is_assistant)
    while True:
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=True)
        logits = outputs.logits[:, -1, :].float()  # a view: after the first step the logits are one position
        del outputs
        next_tokens = logits_processor(input_ids, logits).argmax(dim=-1)
        if pads_finished:  # as the library does: a finished row gets padding until the batch ends
            next_tokens = torch.where(unfinished, next_tokens, pad)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        unfinished &= ~stopping_criteria(input_ids, None)
        if not unfinished.any():
            break
        finished = ~unfinished
        if finished.sum() >= max(1, DROP_SHARE * len(alive)):
            for row, tokens in zip(alive[finished].tolist(), input_ids[finished]):
                results[row] = tokens
            keep = unfinished.nonzero().flatten()
            model_kwargs["cache"].self_attention_cache.batch_select_indices(keep)
            keep_rows(model_kwargs, keep, len(alive))
            input_ids, alive, unfinished = input_ids[keep], alive[keep], unfinished[keep]
        inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=1, **model_kwargs)
        outputs = model(**inputs, return_dict=True)
    for row, tokens in zip(alive.tolist(), input_ids):
        results[row] = tokens
    # The library's width: every row padded to the step the last row ended at.
    sequences = torch.nn.utils.rnn.pad_sequence(results, batch_first=True,
                                                padding_value=int(pad) if pad is not None else 0)
    if generation_config.return_dict_in_generate:
        return GenerateEncoderDecoderOutput(sequences=sequences)
    return sequences
