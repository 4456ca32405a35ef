"""Our Seq2SeqTrainer: the few places where the library's behaviour is not what a seq2seq run needs.

Each override says why it exists; everything else is transformers' own Trainer.
"""

from __future__ import annotations

import functools

from transformers import Seq2SeqTrainer


class EncDecTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with hf_encdec's batching, checkpointing and distributed fixes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The seq2seq models take **kwargs, so Trainer assumes their loss is divided by
        # `num_items_in_batch` (the tokens of the whole accumulated, all-process batch) and skips its
        # own scaling; but T5, BART, Marian and EncoderDecoderModel return a per-batch mean. The loss
        # and its gradient then came out multiplied by the accumulation steps, and by the number of
        # processes with `average_tokens_across_devices`. Declared as what it is, Trainer divides by
        # the accumulation steps and DDP averages over processes: the logged loss is the true mean.
        self.model_accepts_loss_kwargs = False

    def evaluation_loop(self, *args, **kwargs):
        # Seq2SeqTrainer.evaluate()/predict() gather with `accelerator.gather`, which keeps the rows
        # accelerate pads the last batches with so every process gets one: 13 examples on 2 processes
        # came back as 16. `gather_for_metrics` drops them, so every example is scored exactly once.
        self.gather_function = functools.partial(self.accelerator.gather_for_metrics,
                                                 use_gather_object=self.args.eval_use_gather_object)
        return super().evaluation_loop(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        # Sharded weights (FSDP, DeepSpeed ZeRO-3) are gathered layer by layer inside every forward,
        # so all processes must keep stepping until the longest generation ends (`synced_gpus`).
        # Seq2SeqTrainer sees ZeRO-3 and FSDP1 wrappers; accelerate's FSDP2 leaves no mark it checks.
        if self.is_fsdp_enabled and self.args.world_size > 1:
            # Seq2SeqTrainer reads `_gen_kwargs` (evaluate()'s settings) only when given none.
            gen_kwargs = {**getattr(self, "_gen_kwargs", {}), **gen_kwargs}
            gen_kwargs.setdefault("synced_gpus", True)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
