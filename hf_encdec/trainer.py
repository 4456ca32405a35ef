"""Our Seq2SeqTrainer: the few places where the library's behaviour is not what a seq2seq run needs.

Each override says why it exists; everything else is transformers' own Trainer.
"""

from __future__ import annotations

import functools
from pathlib import Path

from transformers import Seq2SeqTrainer

from . import checkpoints


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

    # Set only while _save_checkpoint runs: the folder the library's save writes its checkpoint into.
    _checkpoint_staging: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The library's save, redirected into a staging folder that the main process marks and renames.

        Every rank writes into the same staging folder (as upstream writes into checkpoint-N), so
        model, optimizer, RNG and scaler files stay the library's; see checkpoints.py for why.
        """
        run_dir = Path(super()._get_output_dir(trial))
        staged = run_dir / checkpoints.STAGING_DIR / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            checkpoints.clear_staged(run_dir, self.state.global_step)
        self.accelerator.wait_for_everyone()
        self._checkpoint_staging = str(staged.parent)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging = None
        self.accelerator.wait_for_everyone()  # every rank's files are in `staged`
        if self.args.should_save:
            self._publish_checkpoint(staged, run_dir)
        self.accelerator.wait_for_everyone()  # no rank reads checkpoint-N (load best, push) before it exists

    def _publish_checkpoint(self, staged: Path, run_dir: Path) -> None:
        from transformers.trainer import TRAINER_STATE_NAME

        final = run_dir / staged.name
        if self.state.best_model_checkpoint == str(staged):  # the library named the staging path
            self.state.best_model_checkpoint = str(final)
            self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
        checkpoints.publish(staged, run_dir)
        checkpoints.rotate(run_dir, self.args.save_total_limit, [self.state.best_model_checkpoint])

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Stop at the first non-finite loss, before the optimizer step spreads it into the weights."""
        import torch

        loss = super().training_step(model, inputs, num_items_in_batch)
        # The library already syncs on this value every step (logging_nan_inf_filter): no extra stall.
        if not torch.isfinite(loss).all():
            raise checkpoints.non_finite_loss(self.state.global_step + 1, self.args,
                                              Path(super()._get_output_dir(None)))
        return loss
