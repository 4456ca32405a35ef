"""Our Seq2SeqTrainer: the few places where the library's behaviour is not what a seq2seq run needs.

Each override says why it exists; everything else is transformers' own Trainer.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Seq2SeqTrainer

from . import checkpoints


class EncDecTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with hf_encdec's batching, checkpointing and distributed fixes."""

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
