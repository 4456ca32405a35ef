"""The keys of a run, grouped by concern, each documented once (help, choices, limits in `metadata`).

`hf-encdec train --help` is generated from these dataclasses; `RunConfig` (run_config.py) holds one
of each plus every `Seq2SeqTrainingArguments` field, and validates them together. The Trainer's
arguments carry the batching keys as declared here (training_args.py); generate's and evaluate's
keys are job_keys.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.tasks import TASKS


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local directory of a pretrained seq2seq model."}
    )
    model_config: dict | None = field(
        default=None,
        metadata={
            "help": "Train from scratch: {architecture: t5|bart|marian, <config sizes>...}. "
            "A tokenizer is trained on the training data."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer to use instead of the model's own."}
    )
    tokenizer_vocab_size: int = field(
        default=8000,
        metadata={"positive": True, "help": "Vocabulary size of the tokenizer trained for a from-scratch model."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models are cached."})
    token: str | None = field(default=None, metadata={"help": "Hub token (never written to run_config.yaml)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code shipped with a Hub model. Off unless you trust it."}
    )
    allow_pickle: bool = field(
        default=False,
        metadata={"help": "Load a checkpoint that only has pickle weights (pytorch_model.bin), with "
                  "weights_only=True. Off: unpickling can run code hidden in the file."},
    )
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use a fast (Rust) tokenizer."})
    encoder_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Warm start: the encoder of an EncoderDecoderModel (BERT, RoBERTa ...), with decoder_name_or_path."},
    )
    decoder_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Warm start: the decoder (BERT, RoBERTa, GPT-2 ...); its cross-attention starts random."},
    )


@dataclass
class DataArguments:
    task: str = field(
        default="text2text",
        metadata={"help": "Task adapter: column defaults, metrics, decoding.", "choices": sorted(TASKS)},
    )
    train_file: str | None = field(default=None, metadata={"help": "csv, tsv, json, jsonl or parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Omit to carve one from train."})
    test_file: str | None = field(default=None, metadata={"help": "Scored at the end; predictions saved."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id or local dataset folder."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the dataset."})
    train_split: str = field(default="train", metadata={"help": "Split name for training (dataset_name)."})
    validation_split: str | None = field(
        default="validation", metadata={"help": "Split name for validation (dataset_name); null to carve one."}
    )
    test_split: str | None = field(default="test", metadata={"help": "Split name for test (dataset_name)."})
    source_column: str | None = field(default=None, metadata={"help": "Column holding the input text."})
    target_column: str | None = field(default=None, metadata={"help": "Column holding the output text."})
    source_lang: str | None = field(default=None, metadata={"help": "Source language (e.g. en, en_XX)."})
    target_lang: str | None = field(default=None, metadata={"help": "Target language (e.g. de, de_DE)."})
    source_prefix: str | None = field(default=None, metadata={"help": "Text put before every source (T5)."})
    forced_bos_token: str | None = field(
        default=None, metadata={"help": "Token forced first in generation (mBART/NLLB target language)."}
    )
    lang: str | None = field(default=None, metadata={"help": "Language of the data (model card metadata)."})
    max_source_length: int = field(
        default=1024, metadata={"positive": True, "help": "Longer sources are truncated (reported)."}
    )
    max_target_length: int = field(
        default=128, metadata={"positive": True, "help": "Longer targets are truncated (reported)."}
    )
    validation_split_size: float = field(
        default=0.05,
        metadata={"positive": True, "help": "Carved validation size: a fraction (<1) or a row count (>=1)."},
    )
    invalid_rows: str = field(
        default="drop",
        metadata={"help": "Rows with an empty source or target: drop (and report) or fail.", "choices": ["drop", "fail"]},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"positive": True, "help": "Use only the first N training rows."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"positive": True, "help": "Use only the first N validation rows."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"positive": True, "help": "Use only the first N test rows."}
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to the max lengths (dynamic padding is faster)."}
    )
    ignore_pad_token_for_loss: bool = field(
        default=True, metadata={"help": "Label padding is -100 so the loss ignores it."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using the datasets cache."})


@dataclass
class RunArguments:
    metrics: list[str] | None = field(
        default=None, metadata={"help": "bleu, chrf, ter, rouge, exact_match; default from the task."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"positive": True, "help": "Stop after N evaluations without improvement (keeps the best model)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that holds a finished run."}
    )
    resume: bool = field(
        default=True,
        metadata={"help": "Continue an unfinished run in output_dir from its last complete checkpoint; "
                  "false refuses to (resume_from_checkpoint: PATH picks one)."},
    )
    num_sample_predictions: int = field(default=5, metadata={"help": "Sample predictions printed at the end."})
    license: str | None = field(
        default=None, metadata={"help": "License of the trained model, for the model card (e.g. apache-2.0, mit)."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the base model to name in the model card and its metadata when "
                  "model_name_or_path is a local folder"},
    )
    preset: str | None = field(
        default=None,
        metadata={"help": "Decoding preset of the final evaluation, saved as generation_config.json "
                  "(greedy, beam, beam-long, sample, nbest or your own); default from the task."},
    )
    eval_preset: str = field(default="greedy", metadata={"help": "Decoding preset of evaluations during training."})
    presets: dict | str | None = field(
        default=None, metadata={"help": "Your presets, {name: {GenerationConfig field: value}}, or a YAML/JSON file."}
    )


@dataclass
class AdapterArguments:
    peft: str | None = field(
        default=None,
        metadata={"help": "Parameter-efficient fine-tuning method; null trains every weight.", "choices": ["lora", "ia3"]},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank: adapter size (4-64 is usual)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling; the update is scaled by lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str | list[str] = field(
        default="auto",
        metadata={"help": "Modules to adapt (lora and ia3): auto (attention per architecture, cross-attention "
                  "included), all-linear, or a list of module names such as [q, v]."},
    )
    train_cross_attention: bool = field(
        default=True,
        metadata={"help": "Warm-started pairs: train the randomly initialised cross-attention fully next to the "
                  "adapters (adapters alone would leave it near random)."},
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "Also save the adapter merged into the base model, under OUTPUT_DIR/merged."}
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base model in 4 bits (CUDA only)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "Load the base model in 8 bits (CUDA only)."})


@dataclass
class BatchingArguments:
    max_tokens: int | None = field(
        default=None,
        metadata={"positive": True,
                  "help": "Token budget of a training batch: batch size x (longest source + longest target), so "
                  "short examples share large batches and long ones small; per_device_train_batch_size is then "
                  "unused. An example over the budget gets a batch of its own. Turns on token_budget sampling."},
    )
    train_sampling_strategy: str | None = field(
        default=None,
        metadata={"help": "How training batches are drawn: token_budget (needs max_tokens), random, "
                  "group_by_length (by max of source and target length), sequential, batch_rebalance; "
                  "default token_budget when max_tokens is set, else random.",
                  "choices": ["token_budget", "random", "group_by_length", "sequential", "batch_rebalance"]},
    )

    def strategy(self) -> str:
        if self.train_sampling_strategy:
            return self.train_sampling_strategy
        return "token_budget" if self.max_tokens else "random"


GROUPS: dict[str, type] = {"model": ModelArguments, "data": DataArguments, "run": RunArguments,
                           "adapter": AdapterArguments, "batching": BatchingArguments}

# Our defaults where Seq2SeqTrainingArguments' defaults do not suit seq2seq fine-tuning.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/hf-encdec",
    "predict_with_generate": True,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_steps": 50,
    "save_total_limit": 2,
    "report_to": "none",
}

# report_to integration -> (modules it imports, each as alternatives "a|b", and how to install them). The
# Trainer imports them only once the data and the model have loaded; config validation checks them first.
REPORTING_INTEGRATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard|tensorboardX",), 'pip install tensorboard, or pip install -e ".[tensorboard]"'),
    "wandb": (("wandb",), 'pip install wandb, or pip install -e ".[wandb]"'),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "comet_ml": (("comet_ml",), "pip install comet_ml"),
    "neptune": (("neptune",), "pip install neptune"),
    "azure_ml": (("azureml",), "pip install azureml-core"),
    "trackio": (("trackio",), "pip install trackio"),
    "codecarbon": (("codecarbon",), "pip install codecarbon"),
    "clearml": (("clearml",), "pip install clearml"),
    "dagshub": (("dagshub", "mlflow"), "pip install dagshub mlflow"),  # DagsHub logs through MLflow
    "flyte": (("flytekit", "flytekitplugins.deck"), "pip install flytekit flytekitplugins-deck"),
    "dvclive": (("dvclive",), "pip install dvclive"),
    "swanlab": (("swanlab",), "pip install swanlab"),
    "kubeflow": ((), ""),  # reports through an environment variable's server, no package
}

# A step count given without its strategy switches that strategy to `steps`: run_translation.py users pass
# `--save_steps 500` expecting step saving (the library's default save strategy is `steps`, ours `epoch`).
STEP_COUNTS: dict[str, str] = {"save_steps": "save_strategy", "eval_steps": "eval_strategy"}
# What `hf-encdec train --help` adds to a default.
TRAINING_DEFAULT_NOTES: dict[str, str] = {
    "eval_strategy": "; steps when eval_steps is given",
    "save_strategy": "; steps when save_steps is given",
}


def implied_strategies(given: dict[str, Any], best_model: bool) -> dict[str, Any]:
    """The strategies (and step counts) that the step counts in `given` imply, for keys not in `given`.

    Picking the best checkpoint (load_best_model_at_end, early stopping) needs evaluations and saves
    on one schedule, so there a step count given for one of them sets both, unless the other's
    strategy is given: `--eval_steps 50 --early_stopping_patience 3` evaluates and saves every 50 steps.
    """
    counts = {count: given[count] for count in STEP_COUNTS if given.get(count) is not None}
    implied: dict[str, Any] = {STEP_COUNTS[count]: "steps" for count in counts if STEP_COUNTS[count] not in given}
    if best_model and implied:
        for count, strategy in STEP_COUNTS.items():
            if strategy not in given:
                implied[strategy] = "steps"
                if count not in counts:
                    implied[count] = next(iter(counts.values()))
    return implied


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _fraction(v: float) -> bool:
    return 0 <= v < 1


def _seed(v: float) -> bool:
    return v == int(v) and 0 <= v < 2**32


# Seq2SeqTrainingArguments values that torch, numpy or the Trainer reject only mid-setup or mid-training
# (with a traceback), or take and misbehave with: (test, requirement in words).
TRAINING_LIMITS: dict[str, tuple] = {
    "learning_rate": (_non_negative, "a number >= 0"),  # torch.optim: "Invalid learning rate"
    "weight_decay": (_non_negative, "a number >= 0"),  # torch.optim: "Invalid weight_decay value"
    "adam_beta1": (_fraction, "in [0, 1)"),  # torch.optim.AdamW: "Invalid beta parameter at index 0"
    "adam_beta2": (_fraction, "in [0, 1)"),
    "adam_epsilon": (_non_negative, "a number >= 0"),  # torch.optim.AdamW: "Invalid epsilon value"
    "max_grad_norm": (_non_negative, "a number >= 0 (0 turns clipping off)"),  # negative: clipping flips signs
    "label_smoothing_factor": (_fraction, "in [0, 1)"),  # 1 would make every target token equally likely
    "warmup_steps": (_non_negative, "a number >= 0 (below 1: a fraction of the training steps)"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "num_train_epochs": (_positive, "positive"),
    "per_device_train_batch_size": (_positive, "positive"),
    "per_device_eval_batch_size": (_positive, "positive"),
    "gradient_accumulation_steps": (_positive, "positive"),
    "eval_accumulation_steps": (_positive, "positive"),
    "eval_steps": (_positive, "positive"),
    "save_steps": (_positive, "positive"),
    "logging_steps": (_positive, "positive"),
    "max_steps": (lambda v: v > 0 or v == -1, "positive (or -1 to train num_train_epochs)"),
    "save_total_limit": (_non_negative, "a number >= 0"),
    "dataloader_num_workers": (_non_negative, "a number >= 0"),
    "generation_max_length": (_positive, "positive"),
    "generation_num_beams": (_positive, "positive"),
    "seed": (_seed, "a whole number in [0, 2**32)"),  # numpy.random.seed rejects the rest
    "data_seed": (_seed, "a whole number in [0, 2**32)"),
}

# Names from run_translation.py / run_summarization.py (and older transformers) that we spell differently.
ALIASES: dict[str, str] = {
    "text_column": "source_column",
    "summary_column": "target_column",
    "val_max_target_length": "generation_max_length",
    "num_beams": "generation_num_beams",
    "evaluation_strategy": "eval_strategy",
}
