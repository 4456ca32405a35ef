"""Our Seq2SeqTrainer: the few places where the library's behaviour is not what a seq2seq run needs.

Each override says why it exists; everything else is transformers' own Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from . import sampling


@dataclass
class EncDecTrainingArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus token-budget batching (`train_sampling_strategy: token_budget`)."""

    max_tokens: int | None = field(
        default=None,
        metadata={"help": "Padded source + target tokens per training batch (train_sampling_strategy token_budget)."},
    )


def token_level_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy summed over the batch's target tokens and divided by the Trainer's token count.

    T5, BART, Marian and EncoderDecoderModel take **kwargs in forward(), so the Trainer passes them
    `num_items_in_batch` and trusts their loss to be normalised over the whole accumulated batch; they
    ignore it and return this micro-batch's mean (transformers #37766). The gradient then came out
    `gradient_accumulation_steps` times too large, and batches of different sizes weighed the same.
    """
    from transformers.loss.loss_utils import fixed_cross_entropy

    logits = outputs["logits"]
    return fixed_cross_entropy(logits.flatten(0, 1), labels.flatten().to(logits.device), num_items_in_batch)


class _SamplerEpoch(TrainerCallback):
    """Tells the token-budget sampler the epoch.

    The Trainer's own `set_epoch` call does not reach it when training resumes mid-epoch on several
    processes (accelerate wraps it in SkipBatchSampler(BatchSamplerShard(...))), and the batches of
    the resumed epoch must be the ones the interrupted run saw.
    """

    def __init__(self, sampler: sampling.TokenBudgetBatchSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch or 0))  # a resumed run's state.epoch is e.g. 2.37: epoch 2


class EncDecTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with hf_encdec's batching, checkpointing and distributed fixes."""

    def get_train_dataloader(self):
        # Token-budget batches vary in size: a batch sampler, which the Trainer has no setting for.
        max_tokens = getattr(self.args, "max_tokens", None)
        if self.args.train_sampling_strategy != "token_budget" or self.train_dataset is None or not max_tokens:
            return super().get_train_dataloader()
        loader, sampler = sampling.token_budget_dataloader(self, self.train_dataset, max_tokens)
        self.remove_callback(_SamplerEpoch)
        self.add_callback(_SamplerEpoch(sampler))
        return loader

    def _get_train_sampler(self, train_dataset=None):
        # The library's group_by_length groups by source length only; seq2seq batches pad targets too.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "__len__"):
            return sampling.length_grouped_sampler(self, dataset)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # Longest first, so each generate() call pads little; evaluation_loop restores the dataset order.
        if eval_dataset is None or not hasattr(eval_dataset, "__len__") or self.args.batch_eval_metrics \
                or not self.args.eval_do_concat_batches:
            return super()._get_eval_sampler(eval_dataset)
        return sampling.LengthSortedSampler(*sampling.dataset_lengths(eval_dataset))

    def evaluation_loop(self, dataloader, *args, **kwargs):
        sampler = sampling.find_length_sorted_sampler(dataloader)
        if sampler is None:
            return super().evaluation_loop(dataloader, *args, **kwargs)
        compute_metrics = self.compute_metrics
        if compute_metrics is not None:  # metrics compare predictions with references in dataset order
            self.compute_metrics = lambda prediction: compute_metrics(_in_input_order(prediction, sampler.order))
        try:
            output = super().evaluation_loop(dataloader, *args, **kwargs)
        finally:
            self.compute_metrics = compute_metrics
        return output._replace(predictions=sampling.in_input_order(output.predictions, sampler.order),
                               label_ids=sampling.in_input_order(output.label_ids, sampler.order))


def _in_input_order(prediction, order):
    from transformers import EvalPrediction

    return EvalPrediction(**{name: sampling.in_input_order(getattr(prediction, name), order)
                             for name in ("predictions", "label_ids", "inputs", "losses")})
