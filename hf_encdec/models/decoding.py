"""Decoding loops whose batch shrinks as its rows finish: greedy search and beam search.

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


# ----------------------------------------------------------------------------- beam search
# Beam search whose batch shrinks as its examples finish.
#
# transformers' beam search (`GenerationMixin._beam_search`) keeps every example's beams in the
# forward pass until the last example of the batch is done: an example whose four hypotheses were
# complete at step 12 is still decoded, as dead weight, at step 60. It also reorders the
# cross-attention cache at every step, although the beams of one example share identical
# encoder states, so reordering them among themselves changes nothing.
#
# This is the library's loop, handed to `generate(custom_generate=beam_search)` so that generate()
# still prepares the encoder outputs, the cache, the logits processors and the stopping criteria.
# Each step it selects hypotheses with the library's own helpers (`_get_top_k_continuations`,
# `_update_finished_beams`, `_check_early_stop_heuristic`), so scores, ties and results are the
# library's; two things differ:
#
# 1. An example is done once its finished hypotheses can no longer change (the library then only
#    masks its updates: all beams finished with `early_stopping=True`, or no running beam can beat
#    the worst finished one). Its result is put aside and its rows leave the batch: the
#    self-attention cache, the cross-attention cache, the encoder outputs and the masks.
# 2. Only the self-attention cache is reordered each step.
#
# What the loop does not know to be per-row goes to the library's loop (can_shrink).


def beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                **model_kwargs):
    """`model._beam_search` with finished examples dropped; same arguments, same sequences and scores
    (`beam_indices` and per-step `scores` are not returned: rows change under them)."""
    if synced_gpus or not can_shrink(model, logits_processor, stopping_criteria, generation_config, model_kwargs):
        return type(model)._beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                        synced_gpus or sharded(model), **model_kwargs)
    search = _ShrinkingBeamSearch(model, input_ids, generation_config)
    return search.run(logits_processor, stopping_criteria, model_kwargs)


class _ShrinkingBeamSearch:
    """The state of `_beam_search`, per example (dim 0), plus the original index of each example still running."""

    def __init__(self, model, input_ids, config):
        import torch

        self.model, self.config = model, config
        self.num_beams = config.num_beams
        self.max_length = config.max_length
        self.prompt_length = self.cur_len = input_ids.shape[1]
        self.batch_size = input_ids.shape[0] // self.num_beams
        eos = config._eos_token_tensor
        self.beams_to_keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * self.num_beams
        device = input_ids.device
        self.top_num_beam_mask = torch.arange(self.beams_to_keep, device=device) < self.num_beams

        # The library's padding value, precedence and all (a pad id of 0 gives way to the end-of-sequence id).
        fill = (config._pad_token_tensor or eos[0]) if eos is not None else -1
        shape = (self.batch_size, self.num_beams)
        self.running_sequences = torch.full((*shape, self.max_length), fill, dtype=torch.int64, device=device)
        self.running_sequences[:, :, : self.cur_len] = input_ids.view(*shape, -1)
        self.sequences = self.running_sequences.clone()
        self.running_beam_scores = torch.zeros(shape, device=device)
        self.running_beam_scores[:, 1:] = -1e9  # only the first beam's tokens at step 1: the beams start equal
        self.beam_scores = torch.full(shape, -1e9, device=device)
        self.is_sent_finished = torch.zeros(shape, dtype=torch.bool, device=device)
        self.improvable = torch.ones((self.batch_size, 1), dtype=torch.bool, device=device)
        self.running_beam_indices = torch.full((*shape, self.max_length - self.cur_len), -1, dtype=torch.int32,
                                               device=device)
        self.beam_indices = self.running_beam_indices.clone()
        self.alive = torch.arange(self.batch_size, device=device)  # original example index of each row group
        # Results of done examples, by original index.
        self.done_sequences = self.sequences.clone()
        self.done_scores = self.beam_scores.clone()
        self.done_lengths = torch.zeros(shape, dtype=torch.int64, device=device)

    def run(self, logits_processor, stopping_criteria, model_kwargs):
        import torch

        model = self.model
        outputs = model._prefill(self.flat(self.running_sequences[:, :, : self.cur_len]), self.config, model_kwargs,
                                 is_first_iteration=not self.config.is_assistant)
        while True:
            model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=True)
            logits = outputs.logits[:, -1, :].float()  # a view: after the first step the logits are one position
            del outputs
            all_hit_criteria = self.step(logits, logits_processor, stopping_criteria)
            done = ~self.improvable[:, 0]
            if self.config.early_stopping is True:
                done |= self.is_sent_finished.all(dim=1)
            if all_hit_criteria or bool(done.all()):
                self.put_aside(torch.ones_like(done))
                return self.result()
            beam_idx = self.flat(self.running_beam_indices[..., self.cur_len - 1 - self.prompt_length])
            if done.any():
                self.put_aside(done)
                beam_idx = self.drop(done, beam_idx, model_kwargs)
            model_kwargs["cache"].self_attention_cache.reorder_cache(beam_idx)
            inputs = model.prepare_inputs_for_generation(self.flat(self.running_sequences[:, :, : self.cur_len]),
                                                         next_sequence_length=1, **model_kwargs)
            outputs = model(**inputs, return_dict=True)

    def step(self, logits, logits_processor, stopping_criteria) -> bool:
        """One step of the library's loop (its parts b to g), on the examples still running. True when every
        continuation hit a stopping criterion (the length limit): the search is over."""
        import torch

        model, batch, beams = self.model, self.running_sequences.shape[0], self.num_beams
        log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
        log_probs = logits_processor(self.flat(self.running_sequences[:, :, : self.cur_len]), log_probs)
        log_probs = log_probs.view(batch, beams, -1) + self.running_beam_scores[:, :, None]
        log_probs = log_probs.reshape(batch, -1)
        topk_log_probs, topk_sequences, topk_beam_indices = model._get_top_k_continuations(
            accumulated_log_probs=log_probs, running_sequences=self.running_sequences,
            running_beam_indices=self.running_beam_indices, cur_len=self.cur_len,
            decoder_prompt_len=self.prompt_length, do_sample=False, beams_to_keep=self.beams_to_keep,
            num_beams=beams, batch_size=batch)
        hits = stopping_criteria(self.flat(topk_sequences[:, :, : self.cur_len + 1]), None)
        hits = hits.view(batch, self.beams_to_keep)
        self.running_sequences, self.running_beam_scores, self.running_beam_indices = (
            model._get_running_beams_for_next_iteration(
                topk_log_probs=topk_log_probs, topk_running_sequences=topk_sequences,
                topk_running_beam_indices=topk_beam_indices, next_token_hits_stopping_criteria=hits,
                num_beams=beams))
        self.sequences, self.beam_scores, self.beam_indices, self.is_sent_finished = model._update_finished_beams(
            sequences=self.sequences, topk_running_sequences=topk_sequences, beam_scores=self.beam_scores,
            topk_log_probs=topk_log_probs, beam_indices=self.beam_indices,
            topk_running_beam_indices=topk_beam_indices, is_early_stop_heuristic_unsatisfied=self.improvable,
            is_sent_finished=self.is_sent_finished, next_token_hits_stopping_criteria=hits,
            top_num_beam_mask=self.top_num_beam_mask, num_beams=beams, cur_len=self.cur_len,
            decoder_prompt_len=self.prompt_length, length_penalty=self.config.length_penalty,
            early_stopping=self.config.early_stopping)
        self.cur_len += 1
        self.improvable = model._check_early_stop_heuristic(
            is_early_stop_heuristic_unsatisfied=self.improvable, running_beam_scores=self.running_beam_scores,
            beam_scores=self.beam_scores, is_sent_finished=self.is_sent_finished, cur_len=self.cur_len,
            max_length=self.max_length, decoder_prompt_len=self.prompt_length,
            early_stopping=self.config.early_stopping, length_penalty=self.config.length_penalty)
        return bool(hits.all())

    def put_aside(self, done) -> None:
        """Keep the finished hypotheses of the `done` examples under their original index."""
        rows = self.alive[done]
        self.done_sequences[rows] = self.sequences[done]
        self.done_scores[rows] = self.beam_scores[done]
        # Generated tokens of each hypothesis, as the library counts them: steps with a beam index.
        self.done_lengths[rows] = (self.beam_indices[done] >= 0).sum(dim=-1)

    def drop(self, done, beam_idx, model_kwargs):
        """Take the done examples out of the batch. Returns the cache reorder index for the rows left (it
        points into the old rows, so reordering and dropping are one index_select)."""
        import torch

        keep = (~done).nonzero().flatten()
        for name in ("running_sequences", "running_beam_scores", "running_beam_indices", "sequences",
                     "beam_scores", "beam_indices", "is_sent_finished", "improvable", "alive"):
            setattr(self, name, getattr(self, name)[keep])
        rows = (keep[:, None] * self.num_beams + torch.arange(self.num_beams, device=keep.device)).flatten()
        keep_rows(model_kwargs, rows, done.shape[0] * self.num_beams)
        return beam_idx.view(done.shape[0], self.num_beams)[keep].flatten()

    def result(self) -> Any:
        from transformers.generation.utils import GenerateBeamEncoderDecoderOutput

        returned = self.config.num_return_sequences
        sequences = self.flat(self.done_sequences[:, :returned])
        length = self.prompt_length + int(self.done_lengths[:, :returned].max())
        sequences = sequences[:, :length]
        if not self.config.return_dict_in_generate:
            return sequences
        scores = self.flat(self.done_scores[:, :returned]) if self.config.output_scores else None
        return GenerateBeamEncoderDecoderOutput(sequences=sequences, sequences_scores=scores)

    @staticmethod
    def flat(tensor):
        """[batch, beams, ...] -> [batch * beams, ...]"""
        return tensor.reshape(-1, *tensor.shape[2:])
