"""Our Seq2SeqTrainer: the few places where the library's behaviour is not what a seq2seq run needs.

Each override says why it exists; everything else is transformers' own Trainer.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
from transformers import Seq2SeqTrainer, TrainerCallback

from . import checkpoints, samplers
from .. import console
from ..data.metrics import METRIC_KEYS
from ..rundir import TRAINER_STATE
from ..models.decoding import decoding_kwargs

logger = logging.getLogger("hf_encdec.train")


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

    def __init__(self, sampler: samplers.TokenBudgetBatchSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch or 0))  # a resumed run's state.epoch is e.g. 2.37: epoch 2


class TokenCount:
    """Source and target tokens (padding left out) trained on since the last `take`.

    Summed on the device, so counting adds no synchronisation; `take` reads it when a line is printed.
    """

    def __init__(self):
        self.pending = 0

    def add(self, inputs) -> None:
        mask, labels = inputs.get("attention_mask"), inputs.get("labels")
        if mask is not None:
            self.pending = self.pending + mask.sum()
        if labels is not None:
            self.pending = self.pending + (labels != -100).sum()

    def take(self) -> int:
        taken, self.pending = int(self.pending), 0
        return taken


def metric_scores() -> set[str]:
    """Every score the registered metrics report, which the console prints with two decimals as sacreBLEU does."""
    return {key for keys in METRIC_KEYS.values() for key in keys}


class ConsoleCallback(TrainerCallback):
    """What a run shows while it trains, in place of the library's ProgressCallback / PrinterCallback.

    A live bar on a terminal (steps, epoch, loss, learning rate, tokens/s, ETA) and one for each
    evaluation (elsewhere, a line now and then while a long evaluation runs); one line per logging
    step and one aligned line per evaluation, through the `hf_encdec` logger (so --quiet, the
    main-process rule and a caller's logging apply); and once, after the first steps of a long run,
    its estimated duration.
    """

    ESTIMATE_AFTER_STEPS, ESTIMATE_AFTER_SECONDS, LONG_RUN_SECONDS = 30, 30.0, 120.0

    def __init__(self, tokens: TokenCount):
        self.tokens = tokens
        self.training_bar = self.prediction_bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.perf_counter(), state.global_step
        self.stepping = 0.0  # seconds inside training steps since the last line: tokens/s leaves evaluations out
        self.first_step: tuple[float, int] | None = None  # (time, step) at the end of the first step: timed after it
        self.estimated = False
        self.tokens.take()  # the count starts with this session
        if state.is_world_process_zero and not args.disable_tqdm and console.interactive():
            self.training_bar = console.progress(state.max_steps, "train", "step", initial=state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.stepping += time.perf_counter() - self.step_began
        if not state.is_world_process_zero:
            return
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.training_bar.n)
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step = (now, state.global_step)
        elif not self.estimated:
            self._estimate_duration(args, state, now)

    def _estimate_duration(self, args, state, now: float) -> None:
        started, first = self.first_step
        timed = state.global_step - first
        if timed < self.ESTIMATE_AFTER_STEPS and now - started < self.ESTIMATE_AFTER_SECONDS:
            return
        self.estimated = True
        left = (state.max_steps - state.global_step) * (now - started) / timed
        if left > self.LONG_RUN_SECONDS:
            evaluations = "; evaluations add to it" if args.eval_strategy != "no" else ""
            logger.info("estimated duration: %s (timed over %d steps%s)", console.about(left + now - self.start),
                        timed, evaluations)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Evaluations have their line in on_evaluate, the final train summary goes to the end summary.
        if not state.is_world_process_zero or not logs or any(key.endswith("_runtime") for key in logs):
            return
        logs = {key: value for key, value in logs.items() if key != "total_flos"}
        now = time.perf_counter()
        tokens_per_second = self.tokens.take() * args.world_size / self.stepping if self.stepping else None
        self.stepping = 0.0
        done = state.global_step - self.start_step
        left = (state.max_steps - state.global_step) * (now - self.start) / done if done else None
        logger.info("%s", console.train_line(state.global_step, state.max_steps, logs, tokens_per_second, left))
        if self.training_bar is not None:
            self.training_bar.set_postfix_str(console.bar_postfix(logs, tokens_per_second))

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero or args.disable_tqdm:
            return
        if self.prediction_bar is None:
            total = len(eval_dataloader) if eval_dataloader is not None and hasattr(eval_dataloader, "__len__") \
                else None
            self.prediction_bar = console.progress(total, "eval", "batch")
        self.prediction_bar.update(1)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._close_prediction_bar()
        if state.is_world_process_zero and metrics:
            logger.info("%s", console.eval_line(state.global_step, state.max_steps, metrics, metric_scores()))

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self._close_prediction_bar()  # final scores: the end summary shows them

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None

    def _close_prediction_bar(self) -> None:
        if self.prediction_bar is not None:
            self.prediction_bar.close()
            self.prediction_bar = None


class EncDecTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with hf_encdec's batching, checkpointing, distributed fixes and console."""

    def __init__(self, *args, **kwargs):
        from transformers.trainer import DEFAULT_PROGRESS_CALLBACK, PrinterCallback

        super().__init__(*args, **kwargs)
        # The library prints each log as a dict of strings and nests tqdm bars that leave escapes in log files.
        self.remove_callback(DEFAULT_PROGRESS_CALLBACK)
        self.remove_callback(PrinterCallback)
        self.token_count = TokenCount()
        self.add_callback(ConsoleCallback(self.token_count))
        # The seq2seq models take **kwargs, so Trainer assumes their loss is divided by
        # `num_items_in_batch` and skips its own scaling; but they return a per-batch mean
        # (transformers #37766). build_trainer passes `token_level_loss` as compute_loss_func, which
        # normalises over the whole optimizer step; with label smoothing (no compute_loss_func) this
        # flag makes Trainer divide by the accumulation steps and not multiply by the process count.
        self.model_accepts_loss_kwargs = False

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        # Seq2SeqTrainer reads `_gen_kwargs` (evaluate()'s settings) only when given none.
        gen_kwargs = {**getattr(self, "_gen_kwargs", {}), **gen_kwargs}
        # Sharded weights (FSDP, DeepSpeed ZeRO-3) are gathered layer by layer inside every forward,
        # so all processes must keep stepping until the longest generation ends (`synced_gpus`).
        # Seq2SeqTrainer sees ZeRO-3 and FSDP1 wrappers; accelerate's FSDP2 leaves no mark it checks.
        if self.is_fsdp_enabled and self.args.world_size > 1:
            gen_kwargs.setdefault("synced_gpus", True)
        elif not prediction_loss_only and self.args.predict_with_generate:
            # Greedy and beam search batches that shrink as their rows finish (models/decoding.py).
            config = self.model.generation_config
            gen_kwargs.update(decoding_kwargs(gen_kwargs.get("num_beams", config.num_beams),
                                              gen_kwargs.get("do_sample", config.do_sample)))
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    # Set only while _save_checkpoint runs: the folder the library's save writes its checkpoint into.
    _checkpoint_staging: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The library's save, redirected into a staging folder that the main process marks and renames.

        Every rank writes into the same staging folder (as upstream writes into checkpoint-N), so
        model, optimizer, RNG and scaler files stay the library's; see checkpoints.py for why. A
        full disk or a refused write ends the run with one line, the earlier checkpoints kept.
        """
        run_dir = Path(super()._get_output_dir(trial))
        staged = checkpoints.staged_checkpoint(run_dir, self.state.global_step)
        with checkpoints.saving(run_dir, staged, staged.name):
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
        final = run_dir / staged.name
        if self.state.best_model_checkpoint == str(staged):  # the library named the staging path
            self.state.best_model_checkpoint = str(final)
            self.state.save_to_json(str(staged / TRAINER_STATE))
        checkpoints.publish(staged, run_dir)
        checkpoints.rotate(run_dir, self.args.save_total_limit, [self.state.best_model_checkpoint])

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Stop at the first non-finite loss, before the optimizer step spreads it into the weights."""
        import torch

        self.token_count.add(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The library already syncs on this value every step (logging_nan_inf_filter): no extra stall.
        if not torch.isfinite(loss).all():
            raise checkpoints.non_finite_loss(self.state.global_step + 1, self.args,
                                              Path(super()._get_output_dir(None)))
        return loss

    def get_train_dataloader(self):
        # Token-budget batches vary in size: a batch sampler, which the Trainer has no setting for.
        max_tokens = getattr(self.args, "max_tokens", None)
        if self.args.train_sampling_strategy != "token_budget" or self.train_dataset is None or not max_tokens:
            return super().get_train_dataloader()
        loader, sampler = self._token_budget_dataloader(self.train_dataset, max_tokens)
        self.remove_callback(_SamplerEpoch)
        self.add_callback(_SamplerEpoch(sampler))
        return loader

    def _token_budget_dataloader(self, dataset, max_tokens: int):
        """The training DataLoader, with token-budget batches instead of a fixed batch size."""
        from torch.utils.data import DataLoader
        from transformers.trainer_utils import seed_worker

        args = self.args
        dataset = self._remove_unused_columns(dataset, description="training")
        sampler = samplers.TokenBudgetBatchSampler(
            *dataset_lengths(dataset), max_tokens, seed=args.data_seed if args.data_seed is not None else args.seed,
            num_replicas=max(1, args.world_size), accumulation_steps=args.gradient_accumulation_steps,
            pad_multiple=getattr(self.data_collator, "pad_to_multiple_of", None) or 1)
        samplers.logger.info("token-budget batches: %d a epoch of at most %d padded tokens, %.1f%% padding",
                             len(sampler), max_tokens, 100 * sampler.padding_fraction())
        # Trainer._get_dataloader's settings, with a batch_sampler in place of batch_size and sampler.
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=self.data_collator, num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor, in_order=args.dataloader_in_order,
            worker_init_fn=functools.partial(seed_worker, num_workers=args.dataloader_num_workers,
                                             rank=args.process_index))
        return self.accelerator.prepare(loader), sampler

    def _get_train_sampler(self, train_dataset=None):
        # The library's group_by_length groups by source length only; seq2seq batches pad targets too:
        # its LengthGroupedSampler, on max(source, target) length.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "__len__"):
            from transformers.trainer_pt_utils import LengthGroupedSampler

            source, target = dataset_lengths(dataset)
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=np.maximum(source, target).tolist())
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # Longest first, so each generate() call pads little; evaluation_loop restores the dataset order.
        if eval_dataset is None or not hasattr(eval_dataset, "__len__") or self.args.batch_eval_metrics \
                or not self.args.eval_do_concat_batches:
            return super()._get_eval_sampler(eval_dataset)
        return samplers.LengthSortedSampler(*dataset_lengths(eval_dataset))

    def evaluation_loop(self, dataloader, *args, **kwargs):
        # Seq2SeqTrainer.evaluate()/predict() gather with `accelerator.gather`, which keeps the rows
        # accelerate pads the last batches with so every process gets one: 13 examples on 2 processes
        # came back as 16. `gather_for_metrics` drops them, so every example is scored exactly once.
        self.gather_function = functools.partial(self.accelerator.gather_for_metrics,
                                                 use_gather_object=self.args.eval_use_gather_object)
        sampler = find_length_sorted_sampler(dataloader)
        if sampler is None:
            return super().evaluation_loop(dataloader, *args, **kwargs)
        compute_metrics = self.compute_metrics
        if compute_metrics is not None:  # metrics compare predictions with references in dataset order
            self.compute_metrics = lambda prediction: compute_metrics(_in_input_order(prediction, sampler.order))
        try:
            output = super().evaluation_loop(dataloader, *args, **kwargs)
        finally:
            self.compute_metrics = compute_metrics
        return output._replace(predictions=samplers.in_input_order(output.predictions, sampler.order),
                               label_ids=samplers.in_input_order(output.label_ids, sampler.order))


def _in_input_order(prediction, order):
    from transformers import EvalPrediction

    return EvalPrediction(**{name: samplers.in_input_order(getattr(prediction, name), order)
                             for name in ("predictions", "label_ids", "inputs", "losses")})


def dataset_lengths(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) token counts of a tokenized dataset: its `input_ids` and `labels` rows."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        import pyarrow.compute as pc

        table = dataset.with_format("arrow")[:]  # honours select()/shuffle() index mappings

        def lengths(column: str) -> np.ndarray:
            if column not in table.column_names:
                return np.zeros(len(table), dtype=np.int64)
            return pc.list_value_length(table[column]).to_numpy(zero_copy_only=False).astype(np.int64)

        return lengths("input_ids"), lengths("labels")
    rows = [dataset[i] for i in range(len(dataset))]
    return (np.array([len(row.get("input_ids", ())) for row in rows], dtype=np.int64),
            np.array([len(row.get("labels", ())) for row in rows], dtype=np.int64))


def find_length_sorted_sampler(dataloader) -> samplers.LengthSortedSampler | None:
    """The LengthSortedSampler under a (possibly accelerate-wrapped) DataLoader, if there is one."""
    node = dataloader
    for _ in range(6):  # DataLoaderShard -> BatchSamplerShard -> BatchSampler -> sampler
        if isinstance(node, samplers.LengthSortedSampler):
            return node
        node = getattr(node, "batch_sampler", None) or getattr(node, "sampler", None)
        if node is None:
            return None
    return None
