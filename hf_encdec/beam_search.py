"""Beam search whose batch shrinks as its examples finish.

transformers' beam search (`GenerationMixin._beam_search`) keeps every example's beams in the
forward pass until the last example of the batch is done: an example whose four hypotheses were
complete at step 12 is still decoded, as dead weight, at step 60. It also reorders the
cross-attention cache at every step, although the beams of one example share identical
encoder states, so reordering them among themselves changes nothing.

This is the library's loop, handed to `generate(custom_generate=beam_search)` so that generate()
still prepares the encoder outputs, the cache, the logits processors and the stopping criteria.
Each step it selects hypotheses with the library's own helpers (`_get_top_k_continuations`,
`_update_finished_beams`, `_check_early_stop_heuristic`), so scores, ties and results are the
library's; two things differ:

1. An example is done once its finished hypotheses can no longer change (the library then only
   masks its updates: all beams finished with `early_stopping=True`, or no running beam can beat
   the worst finished one). Its result is put aside and its rows leave the batch: the
   self-attention cache, the cross-attention cache, the encoder outputs and the masks.
2. Only the self-attention cache is reordered each step.

What the loop does not know to be per-row goes to the library's loop (shrinking.can_shrink).
"""

from __future__ import annotations

from typing import Any

from .shrinking import can_shrink, keep_rows, sharded


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
