"""One training run, top to bottom: config -> data -> model -> Seq2SeqTrainer -> outputs.

Read `train()` first; every step is a function below it, in the order it runs.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoints
from .. import console, distributed, rundir
from ..publish import hub
from ..data import splits as data_lib
from ..models.adapters import apply_peft, quantization_config, save_merged
from ..config.run_config import RunConfig, load_config
from ..config.run_inputs import check_apart_from_inputs
from ..errors import ConfigError
from ..models.build import (
    build_model,
    check_lengths,
    check_precision,
    count_parameters,
    fit_default_lengths,
    keep_start_embedding_zero,
    model_type_of,
)
from ..config.presets import load_user_presets, make_preset, preset_names, save_presets
from ..data.tasks import TaskAdapter, get_task

logger = logging.getLogger("hf_encdec.training")

@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    samples: list[dict[str, str]]
    hub_url: str | None = None


def train(config: RunConfig | dict[str, Any] | str) -> TrainResult:
    """Fine-tune (or train from scratch) and write the output directory of DESIGN.md."""
    started = time.perf_counter()
    distributed.join_cpu_processes()  # before validation builds the first TrainingArguments
    config = as_config(config)
    arguments = distributed.prepare_training(config)
    task = get_task(config.data.task)
    model_type = model_type_of(config.model)
    check_precision(model_type, config.training)
    quantization = quantization_config(config.adapter)
    choose_precision(config, model_type)  # before the resume check: the chosen precision is part of the run
    resume_from = check_output_dir(config)
    previous_outputs = rundir.previous_outputs(config.output_dir)  # each of them ours: checked just now
    hub_target = hub.check_push_access(config) if config.training.get("push_to_hub") else None

    splits = load_splits(config, task)
    tokenizer, model = model_to_train(config, task, splits["train"], quantization)
    generation_settings = task.configure_tokenizer(tokenizer, config.data)
    fit_default_lengths(model, config.data, config.given)  # before run_config.yaml records the lengths
    check_lengths(model, config.data.max_source_length, config.data.max_target_length, tokenizer=tokenizer)

    start_output_dir(config)
    lengths = token_lengths(splits, tokenizer, task, config)
    logger.info("data report:\n%s\n%s", data_lib.format_data_report(
        splits, lengths["source"], lengths["target"], config.data.max_source_length, config.data.max_target_length,
        batching=describe_batching(config, lengths)), distributed.effective_batch(arguments))
    set_generation_defaults(model, config, lengths["target"], generation_settings)
    presets, final_preset = resolve_presets(model.generation_config, config, task)
    model.generation_config = copy.deepcopy(presets[config.run.eval_preset])
    trainer = build_trainer(config, task, model, tokenizer, splits)
    if hub_target:
        hub.follow_checkpoints(trainer, hub_target, str(config.training.get("hub_strategy", "end")))

    trainer.train(resume_from_checkpoint=resume_from)
    model.generation_config = copy.deepcopy(presets[final_preset])  # saved as generation_config.json
    metrics = {"train": trainer.state.log_history[-1] if trainer.state.log_history else {},
               "model": describe_model(model, config)}
    predictions: dict[str, list[dict[str, str]]] = {}
    scored = [name for name in ("validation", "test") if name in splits]
    logger.info("scoring the final model on %s (preset %s)", " and ".join(scored), final_preset)
    for name in scored:
        metrics[name], predictions[name] = predict_split(trainer, config, task, splits[name])
    save_outputs(trainer, config, task, metrics, splits, lengths, presets=presets, final_preset=final_preset,
                 test_predictions=predictions.get("test"), previous_outputs=previous_outputs)
    samples_from = "test" if "test" in predictions else "validation"
    samples = predictions[samples_from][: config.run.num_sample_predictions]
    hub_url = hub.push_after_training(config.output_dir, hub_target) if hub_target else None
    if trainer.is_world_process_zero():  # every process ran the run; one tells how it went
        from .trainer import metric_scores

        logger.info("%s", console.summary(metrics["train"], {name: metrics[name] for name in scored}, samples,
                                          samples_from, time.perf_counter() - started, metric_scores()))
        console.result_logger.info("model saved to %s", config.output_dir)
        if hub_url:
            console.result_logger.info("pushed to %s", hub_url)
    return TrainResult(config.output_dir, metrics, samples, hub_url)


def as_config(config: RunConfig | dict[str, Any] | str) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, str):
        return load_config(config)
    return RunConfig.from_dict(config, origin="train()")


def check_output_dir(config: RunConfig) -> str | None:
    """Refuse a run that would overwrite an input, a file we did not write or a finished run (unless told to).

    Returns the checkpoint to resume from, if any.
    """
    out = _output_dir(config)
    check_apart_from_inputs(config, out)
    if out.exists() and not out.is_dir():
        raise ConfigError("output_dir is a file", key="output_dir", path=str(out), hint="choose a directory path")
    existing = out.parent if not out.exists() else out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir is inside {existing}, which is a file", key="output_dir", path=str(out),
                          hint="choose a directory path")
    if not _writable(existing):
        raise ConfigError("output_dir is not writable", key="output_dir", path=str(out),
                          hint="choose a directory you can write to")
    rundir.refuse_foreign(rundir.foreign_entries(out),
                          hint="move it elsewhere or choose another --output_dir; overwrite_output_dir only "
                               "replaces what an hf-encdec run wrote")
    if config.run.overwrite_output_dir:
        current = distributed.state()
        if current.is_main_process:
            _forget_previous_run(out)
        current.wait_for_everyone()  # no rank looks for checkpoints while they are being removed
    elif rundir.is_finished(out):
        raise ConfigError("output_dir holds a finished run", key="output_dir", path=str(out),
                          hint="pass --overwrite_output_dir true or choose another --output_dir")
    return checkpoints.choose_resume(config)


def _output_dir(config: RunConfig) -> Path:
    value = config.training.get("output_dir")
    if value is None or not str(value).strip():
        raise ConfigError("needs a folder path, got an empty one", key="output_dir",
                          hint="e.g. --output_dir runs/my-run")
    return config.output_dir


def _writable(path: Path) -> bool:
    """Tried, not asked: os.access says yes to root on read-only or virtual filesystems."""
    import tempfile

    if not path.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _forget_previous_run(out: Path) -> None:
    # Only what a run of ours wrote is removed (foreign_entries found none): output_dir may hold the user's files.
    # The earlier run's model stays until this run's replaces it, at the very end.
    (out / rundir.METRICS).unlink(missing_ok=True)
    for checkpoint in checkpoints.checkpoint_dirs(out):
        shutil.rmtree(checkpoint)
    for staging in (rundir.STAGING_DIR, rundir.FINAL_STAGING_DIR):
        shutil.rmtree(out / staging, ignore_errors=True)


def start_output_dir(config: RunConfig) -> None:
    """Written once everything is validated, so a failed start leaves no output directory."""
    if distributed.state().is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        config.save(config.output_dir / rundir.RUN_CONFIG)


def choose_precision(config: RunConfig, model_type: str) -> None:
    """bf16 and TF32 matmuls on GPUs that support them, unless the user chose."""
    import torch

    training = config.training
    if not uses_gpu(config):
        return
    if "tf32" not in training and torch.cuda.get_device_capability() >= (8, 0):  # Ampere and later
        training["tf32"] = True
        logger.info("TF32 matmuls: this GPU supports them (set --tf32 false for full fp32 precision)")
    if "bf16" not in training and "fp16" not in training and torch.cuda.is_bf16_supported():
        training["bf16"] = True
        logger.info("bf16 mixed precision: this GPU supports it (set --bf16 false to train in fp32)")


def uses_gpu(config: RunConfig) -> bool:
    import torch

    return torch.cuda.is_available() and not config.training.get("use_cpu")


def describe_batching(config: RunConfig, lengths: dict[str, dict[str, list[int]]]) -> str:
    """The data report's line on training batches: how they are cut, and the padding to expect."""
    from .samplers import batching_report

    d = config.data
    return batching_report(
        config.batching.strategy(), [min(n, d.max_source_length) for n in lengths["source"]["train"]],
        [min(n, d.max_target_length) for n in lengths["target"]["train"]],  # tokenization truncates
        batch_size=int(config.training.get("per_device_train_batch_size", 8)), max_tokens=config.batching.max_tokens,
        seed=config.training.get("data_seed") or config.training.get("seed", 42),
        pad_multiple=8 if uses_gpu(config) else 1,
        pad_to=(d.max_source_length, d.max_target_length) if d.pad_to_max_length else None)


def load_splits(config: RunConfig, task: TaskAdapter) -> dict[str, data_lib.Split]:
    """train / validation / test, validated; a validation split is carved from train when absent."""
    d = config.data
    columns = {"source_column": d.source_column, "target_column": d.target_column,
               "source_lang": d.source_lang, "target_lang": d.target_lang,
               "candidates": task.column_candidates, "on_invalid": d.invalid_rows}
    limits = {"train": d.max_train_samples, "validation": d.max_eval_samples, "test": d.max_predict_samples}
    splits: dict[str, data_lib.Split] = {}
    if d.dataset_name:
        hub_splits = {"train": d.train_split, "validation": d.validation_split, "test": d.test_split}
        for name, split in hub_splits.items():
            if split is None or (name != "train" and not _hub_split_exists(d, split)):
                continue
            splits[name] = data_lib.load_hub_split(
                name, d.dataset_name, d.dataset_config_name, split, revision=None, token=config.model.token,
                cache_dir=config.model.cache_dir, max_samples=limits[name], **columns)
    else:
        files = {"train": d.train_file, "validation": d.validation_file, "test": d.test_file}
        for name, path in files.items():
            if path:
                splits[name] = data_lib.load_file_split(name, path, max_samples=limits[name], **columns)
    if "validation" not in splits:
        seed = config.training.get("data_seed") or config.training.get("seed", 42)
        splits["train"], splits["validation"] = data_lib.carve_validation(splits["train"], d.validation_split_size, seed)
        logger.info("no validation data: carved %d rows from train (validation_split_size=%s, seed=%d)",
                    len(splits["validation"]), d.validation_split_size, seed)
    return splits


def _hub_split_exists(d: Any, split: str) -> bool:
    from datasets import get_dataset_split_names

    try:
        return split in get_dataset_split_names(d.dataset_name, d.dataset_config_name)
    except (OSError, ValueError):  # unreachable: loading the train split reports it with a clear message
        return False


def model_to_train(config: RunConfig, task: TaskAdapter, train: data_lib.Split, quantization=None):
    """The model builder's tokenizer and model, made ready to train: Marian's start embedding kept zero, LoRA."""

    def tokenizer_texts() -> list[str]:
        return task.source_texts(train.sources, config.data.source_prefix) + train.targets

    longest = max(config.data.max_source_length, config.data.max_target_length)
    tokenizer, model = build_model(config.model, quantization, tokenizer_texts=tokenizer_texts, max_positions=longest)
    keep_start_embedding_zero(model)
    if config.adapter.peft:
        model = apply_peft(model, config.adapter, config.gradient_checkpointing())
    trainable, total = count_parameters(model)
    logger.info("model: %s, %s parameters, %s trainable (%.2f%%)", model.config.model_type, console.count(total),
                console.count(trainable), 100 * trainable / total)
    return tokenizer, model


def describe_model(model, config: RunConfig) -> dict[str, Any]:
    """Parameter counts, the adapter and a pair's pretrained/random parts: for metrics.json and the card."""
    from ..models import adapters, warm_start

    trainable, total = count_parameters(model)
    report: dict[str, Any] = {"trainable_parameters": trainable, "total_parameters": total}
    if config.adapter.peft:
        report["peft"] = adapters.describe(model)
    if warm_start.is_warm_start(config.model):
        report["warm_start"] = warm_start.describe(model, config.model)
    return report


def token_lengths(splits, tokenizer, task: TaskAdapter, config: RunConfig) -> dict[str, dict[str, list[int]]]:
    """Untruncated token lengths per split, for the data report and the generation length."""
    lengths: dict[str, dict[str, list[int]]] = {"source": {}, "target": {}}
    for name, split in splits.items():
        sources = task.source_texts(split.sources, config.data.source_prefix)
        lengths["source"][name] = [len(ids) for ids in tokenizer(sources)["input_ids"]]
        lengths["target"][name] = [len(ids) for ids in tokenizer(text_target=split.targets)["input_ids"]]
    return lengths


def set_generation_defaults(model, config: RunConfig, target_lengths: dict[str, list[int]],
                            settings: dict[str, int]) -> None:
    """Evaluation decodes as long as the data needs, never the 20-token library default."""
    longest = max(max(lengths, default=1) for lengths in target_lengths.values())
    # 20% head-room over the longest target seen, for unseen inputs; capped by the configured limit.
    max_target_tokens = min(config.data.max_target_length, int(longest * 1.2) + 1)
    generation = model.generation_config
    # max_length counts the decoder start token too. It is the length while training (Seq2SeqTrainer passes
    # generation_max_length as max_length) and is saved as max_new_tokens (presets.save_generation_config).
    generation.max_length = config.training.get("generation_max_length") or max_target_tokens + 1
    generation.max_new_tokens = None  # a checkpoint's own (SeamlessM4T's 256) would take precedence over max_length
    generation.num_beams = config.training.get("generation_num_beams") or 1
    for key, value in settings.items():
        setattr(generation, key, value)


def resolve_presets(base, config: RunConfig, task: TaskAdapter) -> tuple[dict[str, Any], str]:
    """Every preset (built-in and the user's) on the model's generation settings; and the final one's name.

    `num_beams` / `generation_num_beams` on the command line overrides the evaluation and final
    presets, as it does in run_translation.py; the other saved presets keep their own beams.
    """
    user = load_user_presets(config.run.presets)
    final = config.run.preset or task.default_preset
    beams = config.training.get("generation_num_beams")
    overrides = {"num_beams": beams} if beams else {}
    trust = config.model.trust_remote_code
    presets = {name: make_preset(name, base=base, user_presets=user, trust_remote_code=trust,
                                 overrides=overrides if name in (final, config.run.eval_preset) else None)
               for name in preset_names(user)}
    return presets, final


def tokenize_split(split: data_lib.Split, tokenizer, task: TaskAdapter, config: RunConfig):
    from datasets import Dataset

    d = config.data
    padding = "max_length" if d.pad_to_max_length else False
    dataset = Dataset.from_dict({"source": task.source_texts(split.sources, d.source_prefix), "target": split.targets})

    def tokenize(batch: dict[str, list[str]]) -> dict[str, Any]:
        features = tokenizer(batch["source"], max_length=d.max_source_length, truncation=True, padding=padding)
        labels = tokenizer(text_target=batch["target"], max_length=d.max_target_length, truncation=True,
                           padding=padding)["input_ids"]
        if padding and d.ignore_pad_token_for_loss:
            # With fixed-length padding the pad ids sit inside the labels: hide them from the loss.
            labels = [[t if t != tokenizer.pad_token_id else -100 for t in label] for label in labels]
        features["labels"] = labels
        return features

    return dataset.map(tokenize, batched=True, remove_columns=["source", "target"],
                       num_proc=d.preprocessing_num_workers, load_from_cache_file=not d.overwrite_cache,
                       desc=f"tokenizing {split.name}")


class GenerationMetrics:
    """compute_metrics for Seq2SeqTrainer: generated ids -> text -> metrics against the raw references.

    Scoring against the original target strings (not decoded labels) keeps unknown tokens and
    tokenizer normalisation from flattering the score; evaluation runs in dataset order.
    """

    def __init__(self, tokenizer, metric_names: list[str], references: list[str]):
        self.tokenizer = tokenizer
        self.metric_names = metric_names
        self.references = references
        self.predictions: list[str] = []

    def __call__(self, eval_prediction) -> dict[str, float]:
        import numpy as np

        from ..data.metrics import compute_metrics

        ids = eval_prediction.predictions
        ids = ids[0] if isinstance(ids, tuple) else ids
        ids = np.where(ids != -100, ids, self.tokenizer.pad_token_id)
        self.predictions = [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        scores = compute_metrics(self.metric_names, self.predictions, self.references[: len(self.predictions)])
        special = set(self.tokenizer.all_special_ids)
        scores["gen_len"] = round(float(np.mean([sum(t not in special for t in row) for row in ids.tolist()])), 4)
        return scores


def metric_names(config: RunConfig, task: TaskAdapter) -> list[str]:
    return config.run.metrics or list(task.default_metrics)


def build_trainer(config: RunConfig, task: TaskAdapter, model, tokenizer, splits):
    from transformers import EarlyStoppingCallback

    from .collator import Seq2SeqCollator, decoder_inputs_from_labels
    from .trainer import EncDecTrainer, token_level_loss

    callbacks = []
    if config.run.early_stopping_patience:  # the arguments keep the best checkpoint (RunConfig.training_arguments)
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.run.early_stopping_patience))
    args = config.training_arguments()
    collator = Seq2SeqCollator(
        tokenizer, decoder_inputs=decoder_inputs_from_labels(model),
        label_pad_token_id=-100 if config.data.ignore_pad_token_for_loss else tokenizer.pad_token_id,
        pad_to_multiple_of=8 if uses_gpu(config) else None,  # tensor-core friendly shapes
    )
    # Label smoothing has its own loss (LabelSmoother), normalised over the accumulated batch already.
    loss = token_level_loss if not args.label_smoothing_factor else None
    return EncDecTrainer(
        model=model, args=args, data_collator=collator, processing_class=tokenizer, callbacks=callbacks,
        compute_loss_func=loss,
        train_dataset=tokenize_split(splits["train"], tokenizer, task, config),
        eval_dataset=tokenize_split(splits["validation"], tokenizer, task, config),
        compute_metrics=GenerationMetrics(tokenizer, metric_names(config, task), splits["validation"].targets),
    )


def predict_split(trainer, config: RunConfig, task: TaskAdapter, split: data_lib.Split):
    """Final scores and predictions of one split, with the model as trained (or the best one)."""
    trainer.compute_metrics = GenerationMetrics(trainer.processing_class, metric_names(config, task), split.targets)
    dataset = tokenize_split(split, trainer.processing_class, task, config)
    output = trainer.predict(dataset, metric_key_prefix=split.name)
    prefix = f"{split.name}_"
    metrics = {k.removeprefix(prefix): v for k, v in output.metrics.items()}
    rows = [{"line": line, "source": source, "reference": reference, "prediction": prediction}
            for line, source, reference, prediction in
            zip(split.lines, split.sources, split.targets, trainer.compute_metrics.predictions)]
    return metrics, rows


def save_outputs(trainer, config: RunConfig, task: TaskAdapter, metrics: dict[str, Any], splits, lengths, *,
                 presets: dict[str, Any], final_preset: str, test_predictions: list[dict[str, Any]] | None,
                 previous_outputs: set[str]) -> None:
    """Every final output written whole in a staging folder, then moved into output_dir; metrics.json last.

    A failure leaves no finished-looking run behind: until metrics.json is renamed into place there is none.
    """
    out = config.output_dir
    staging = out / rundir.FINAL_STAGING_DIR
    with checkpoints.saving(out, staging, "the final model"):
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        trainer.save_model(str(staging))  # every rank: sharded saves gather the weights collectively
        if trainer.is_world_process_zero():
            _write_outputs(trainer, config, task, metrics, splits, lengths, staging, presets, final_preset,
                           test_predictions)
            checkpoints.move_into_place(staging, out, previous_outputs)


def _write_outputs(trainer, config: RunConfig, task: TaskAdapter, metrics: dict[str, Any], splits, lengths,
                   staging: Path, presets: dict[str, Any], final: str,
                   test_predictions: list[dict[str, Any]] | None) -> None:
    from ..publish.card import run_environment, write_model_card
    from ..data.metrics import metric_signatures
    from ..publish.plots import write_plots
    from ..config.presets import decoding_fields, save_generation_config

    trainer.state.save_to_json(str(staging / rundir.TRAINER_STATE))  # the loss curve and evaluation history
    # In place of the one save_model wrote (none for an adapter): the final preset, its length as max_new_tokens.
    save_generation_config(presets[final], staging)
    if config.adapter.merge_lora:
        save_merged(trainer.model, trainer.processing_class, staging / rundir.MERGED_DIR)
        save_generation_config(presets[final], staging / rundir.MERGED_DIR)
    save_presets(presets, staging)
    if test_predictions is not None:
        (staging / rundir.PREDICTIONS).write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in test_predictions), encoding="utf-8")
    data_stats = {name: {"origin": split.origin, "rows": len(split), "dropped": split.dropped,
                         "source_tokens": data_lib.length_stats(lengths["source"][name], config.data.max_source_length),
                         "target_tokens": data_lib.length_stats(lengths["target"][name], config.data.max_target_length)}
                  for name, split in splits.items()}
    write_plots(trainer.state.log_history, staging)  # before the card, which links them
    metrics = {**metrics, "signatures": metric_signatures(metric_names(config, task)), "data": data_stats,
               "preset": {"name": final, **decoding_fields(presets[final])},
               "eval_preset": {"name": config.run.eval_preset, **decoding_fields(presets[config.run.eval_preset])},
               "environment": run_environment(uses_gpu(config), distributed.state().num_processes)}
    write_model_card(config.output_dir, config, task, metrics, folder=staging)
    (staging / rundir.METRICS).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
