"""RunConfig: every key of a run, documented once, validated before any heavy work.

A run is described by flat keys (the names of the HF example scripts and of
`Seq2SeqTrainingArguments`). Our own keys live in three dataclasses grouped by concern;
every `Seq2SeqTrainingArguments` field is accepted as well and kept in `RunConfig.training`.
Sources, lowest precedence first: dataclass defaults < recipe YAML < command line.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, did_you_mean
from .tasks import TASKS

SECRET_KEYS = {"token", "hub_token"}
# Data paths in a recipe are relative to the recipe file, so a recipe folder can be moved whole.
RECIPE_RELATIVE_KEYS = ("train_file", "validation_file", "test_file", "presets")


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

# Names from run_translation.py / run_summarization.py (and older transformers) that we spell differently.
ALIASES: dict[str, str] = {
    "text_column": "source_column",
    "summary_column": "target_column",
    "val_max_target_length": "generation_max_length",
    "num_beams": "generation_num_beams",
    "evaluation_strategy": "eval_strategy",
}


# Seq2SeqTrainingArguments accepts zero or negative values for these and fails later, mid-setup, with a traceback.
POSITIVE_TRAINING_KEYS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                          "num_train_epochs", "eval_steps", "save_steps", "logging_steps")


def _training_value_problems(training: dict[str, Any]) -> list[ConfigError]:
    problems = []
    for key, value in training.items():  # torch takes a NaN learning rate and fails mid-setup
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(ConfigError(f"must be a finite number, got {value}", key=key))
    for key in POSITIVE_TRAINING_KEYS:
        value = training.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            problems.append(ConfigError(f"must be positive, got {value}", key=key))
    if training.get("max_steps") == 0:
        problems.append(ConfigError("must be positive (or -1 to train num_train_epochs), got 0", key="max_steps"))
    return problems


def _training_fields() -> dict[str, Any]:
    """Name -> type annotation of every Seq2SeqTrainingArguments field."""
    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


def _our_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Flat key -> (group name, field, type annotation) for our own keys."""
    fields = {}
    for group, cls in GROUPS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            fields[f.name] = (group, f, hints[f.name])
    return fields


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _union_members(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML or command-line value to the key's declared type, or raise ConfigError.

    Command-line values arrive as strings and PyYAML reads `3e-4` as a string (YAML 1.1),
    so numbers are parsed here by declared type rather than trusted to the YAML parser.
    """
    members = _union_members(annotation)
    if value is None:
        if type(None) in members:
            return None
        raise ConfigError("needs a value, got null", key=key, hint=f"give a {_type_name(annotation)}")
    for member in members:
        converted = _convert(value, member)
        if converted is not _NO:
            return converted
    expected = " or ".join(_type_name(m) for m in members if m is not type(None))
    raise ConfigError(f"expected {expected}, got {value!r}", key=key)


_NO = object()


def _convert(value: Any, target: Any) -> Any:
    origin = typing.get_origin(target)
    if target is Any:
        return value
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        return _NO
    if target is int:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            return _NO
    if target is float:
        if isinstance(value, bool):
            return _NO
        try:
            return float(value)
        except (TypeError, ValueError):
            return _NO
    if target is str or (isinstance(target, type) and issubclass(target, (str, os.PathLike, enum.Enum))):
        if isinstance(value, enum.Enum):
            return value.value
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else _NO
    if target is list or origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return list(value) if isinstance(value, (list, tuple)) else _NO
    if target is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                return _NO
        return value if isinstance(value, dict) else _NO
    return value  # complex library types (GenerationConfig, DebugOption lists): let the library validate


@dataclass
class RunConfig:
    model: ModelArguments
    data: DataArguments
    run: RunArguments
    training: dict[str, Any]
    adapter: AdapterArguments = field(default_factory=AdapterArguments)
    batching: BatchingArguments = field(default_factory=BatchingArguments)

    @property
    def output_dir(self) -> Path:
        return Path(self.training["output_dir"])

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, origin: str = "config") -> RunConfig:
        """Build and validate a config from flat keys; report every problem at once."""
        ours, training_types = _our_fields(), _training_fields()
        grouped: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        training = dict(TRAINING_DEFAULTS)
        problems: list[ConfigError] = []
        for raw_key, value in values.items():
            key = ALIASES.get(raw_key, raw_key)
            try:
                if key in ours:
                    group, _, annotation = ours[key]
                    grouped[group][key] = coerce(key, value, annotation)
                elif key in training_types:
                    training[key] = coerce(key, value, training_types[key])
                else:
                    hint = did_you_mean(raw_key, [*ours, *training_types, *ALIASES]) or "see `hf-encdec train --help`"
                    raise ConfigError("unknown key", key=raw_key, hint=hint)
            except ConfigError as err:
                problems.append(err)
        if not problems:
            config = cls(
                model=ModelArguments(**grouped["model"]),
                data=DataArguments(**grouped["data"]),
                run=RunArguments(**grouped["run"]),
                training=training,
                adapter=AdapterArguments(**grouped["adapter"]),
                batching=BatchingArguments(**grouped["batching"]),
            )
            problems = config.problems()
        if len(problems) == 1:
            raise problems[0]
        if problems:
            details = "; ".join(p.one_line() for p in problems)
            raise ConfigError(f"{len(problems)} problems in {origin}: {details}")
        return config

    def problems(self) -> list[ConfigError]:
        """Contradictions and out-of-range values, all of them, before anything heavy runs."""
        problems = []
        m, d, r, t = self.model, self.data, self.run, self.training
        warm_start = m.encoder_name_or_path is not None or m.decoder_name_or_path is not None
        if (m.model_name_or_path is not None) + (m.model_config is not None) + warm_start != 1:
            problems.append(
                ConfigError(
                    "give exactly one of model_name_or_path (fine-tune), model_config (train from scratch) and "
                    "encoder_name_or_path + decoder_name_or_path (warm start)",
                    key="model_name_or_path",
                )
            )
        if t.get("do_train", True) and not (d.train_file or d.dataset_name):
            problems.append(ConfigError("no training data", key="train_file", hint="set train_file or dataset_name"))
        if d.train_file and d.dataset_name:
            problems.append(
                ConfigError("give train_file or dataset_name, not both", key="dataset_name")
            )
        for part in (m, d, r, self.batching):
            for f in dataclasses.fields(part):
                value = getattr(part, f.name)
                if f.metadata.get("positive") and value is not None and value <= 0:
                    problems.append(ConfigError(f"must be positive, got {value}", key=f.name))
        for key, value in (("invalid_rows", d.invalid_rows), ("task", d.task)):
            choices = _our_fields()[key][1].metadata["choices"]
            if value not in choices:
                hint = did_you_mean(value, choices) or f"choose one of {', '.join(choices)}"
                problems.append(ConfigError(f"unknown value {value!r}", key=key, hint=hint))
        if d.task == "translation" and not (d.source_lang and d.target_lang) and not (d.source_column and d.target_column):
            problems.append(
                ConfigError("translation needs source_lang and target_lang (or source_column and target_column)",
                            key="source_lang")
            )
        if r.metrics is not None:
            from .metrics import check_metric_names

            try:
                check_metric_names(r.metrics)
            except ConfigError as err:
                problems.append(err)
        if r.early_stopping_patience and t.get("eval_strategy") == "no":
            problems.append(
                ConfigError("early stopping needs evaluations", key="early_stopping_patience",
                            hint="set eval_strategy to epoch or steps")
            )
        problems.extend(_training_value_problems(t))
        problems.extend(self._batching_problems())
        problems.extend(self._adapter_problems())
        problems.extend(self._preset_problems())
        if not problems:
            problems.extend(self._training_argument_problems())
        return problems

    def _adapter_problems(self) -> list[ConfigError]:
        m, a = self.model, self.adapter
        problems = []
        if (m.encoder_name_or_path is None) != (m.decoder_name_or_path is None):
            missing = "decoder_name_or_path" if m.decoder_name_or_path is None else "encoder_name_or_path"
            problems.append(ConfigError("a warm start needs both encoder_name_or_path and decoder_name_or_path",
                                        key=missing, hint=f"set {missing} too"))
        choices = _our_fields()["peft"][1].metadata["choices"]
        if a.peft is not None and a.peft not in choices:
            hint = did_you_mean(a.peft, choices) or f"choose one of {', '.join(choices)}, or null for full fine-tuning"
            problems.append(ConfigError(f"unknown value {a.peft!r}", key="peft", hint=hint))
        if a.peft and m.model_config is not None:
            problems.append(ConfigError("adapters need pretrained weights; a from-scratch model trains every weight",
                                        key="peft", hint="remove peft, or fine-tune a pretrained model"))
        for key in ("lora_r", "lora_alpha"):
            if getattr(a, key) <= 0:
                problems.append(ConfigError(f"must be positive, got {getattr(a, key)}", key=key))
        if not 0 <= a.lora_dropout < 1:
            problems.append(ConfigError(f"must be in [0, 1), got {a.lora_dropout}", key="lora_dropout"))
        if a.merge_lora and not a.peft:
            problems.append(ConfigError("there is no adapter to merge", key="merge_lora", hint="set peft: lora"))
        if a.load_in_4bit and a.load_in_8bit:
            problems.append(ConfigError("choose one of load_in_4bit and load_in_8bit", key="load_in_8bit"))
        if (a.load_in_4bit or a.load_in_8bit) and not a.peft:
            problems.append(ConfigError("quantized weights cannot be fine-tuned directly",
                                        key="load_in_4bit" if a.load_in_4bit else "load_in_8bit",
                                        hint="set peft: lora (QLoRA)"))
        return problems

    def _batching_problems(self) -> list[ConfigError]:
        b = self.batching
        choices = _our_fields()["train_sampling_strategy"][1].metadata["choices"]
        if b.train_sampling_strategy is not None and b.train_sampling_strategy not in choices:
            hint = did_you_mean(b.train_sampling_strategy, choices) or f"choose one of {', '.join(choices)}"
            return [ConfigError(f"unknown value {b.train_sampling_strategy!r}", key="train_sampling_strategy",
                                hint=hint)]
        if b.strategy() == "token_budget" and not b.max_tokens:
            return [ConfigError("token_budget sampling needs a budget", key="max_tokens",
                                hint="set max_tokens (e.g. 4096), or choose another train_sampling_strategy")]
        if b.max_tokens and b.strategy() != "token_budget":
            return [ConfigError(f"max_tokens only applies to token_budget sampling, not {b.strategy()}",
                                key="max_tokens",
                                hint="remove max_tokens, or set train_sampling_strategy: token_budget")]
        if b.max_tokens and self.data.pad_to_max_length:
            return [ConfigError("pad_to_max_length pads every batch to the longest possible shape; a token budget "
                                "needs dynamic padding", key="pad_to_max_length",
                                hint="remove pad_to_max_length (or max_tokens)")]
        return []

    def _preset_problems(self) -> list[ConfigError]:
        from .presets import check_presets

        task = TASKS.get(self.data.task)  # an unknown task is reported on its own
        names = [self.run.eval_preset, self.run.preset or (task.default_preset if task else "greedy")]
        beams = self.training.get("generation_num_beams")
        return check_presets(names, self.run.presets, self.model.trust_remote_code,
                             {"num_beams": beams} if beams else None)

    def _training_argument_problems(self) -> list[ConfigError]:
        try:
            self.training_arguments()
        except (ValueError, TypeError) as err:
            return [ConfigError(f"rejected by Seq2SeqTrainingArguments: {err}")]
        return []

    def training_arguments(self, **overrides: Any):
        from .trainer import EncDecTrainingArguments

        import torch

        batching = {"train_sampling_strategy": self.batching.strategy(), "max_tokens": self.batching.max_tokens}
        # Pinned memory only speeds copies to a GPU; without one, torch warns at every evaluation.
        pinning = {} if "dataloader_pin_memory" in self.training else {
            "dataloader_pin_memory": torch.cuda.is_available()}
        # hf-encdec pushes (hub.py), not the Trainer: its push would run before our outputs are written,
        # and a hub_token inside the arguments would be pickled into every checkpoint's training_args.bin.
        return EncDecTrainingArguments(**{**pinning, **self.training, **batching, **overrides, "push_to_hub": False,
                                          "hub_token": None})

    def to_flat_dict(self) -> dict[str, Any]:
        """Every key, resolved, secrets left out: reproduces the run when passed back."""
        flat: dict[str, Any] = {}
        for part in (self.model, self.data, self.run, self.adapter, self.batching):
            flat.update(dataclasses.asdict(part))
        flat.update(self.training)
        for key in RECIPE_RELATIVE_KEYS:  # absolute, so the saved config works from any directory
            if isinstance(flat.get(key), str):
                flat[key] = str(Path(flat[key]).absolute())
        return {k: v for k, v in flat.items() if k not in SECRET_KEYS and v is not None}

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_flat_dict(), sort_keys=False, allow_unicode=True))


def read_recipe(path: str) -> dict[str, Any]:
    """Load a recipe YAML as flat keys, with its data paths made absolute."""
    recipe = Path(path)
    if not recipe.is_file():
        raise ConfigError("recipe file not found", path=path, hint="check the path")
    try:
        values = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", path=path, line=line) from None
    except UnicodeDecodeError:
        raise ConfigError("recipe is not UTF-8 text", path=path) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError("a recipe must be a mapping of keys to values", path=path)
    for key in RECIPE_RELATIVE_KEYS:
        value = values.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            values[key] = str((recipe.parent / value).resolve())
    return values


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and a bare `--flag` (true) into flat keys."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}", hint="keys are given as --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        values[key] = _cli_value(value)
        i += 1
    return values


def _cli_value(text: str) -> Any:
    """`null` means None; the rest stays a string for coerce() to convert by declared type."""
    if text.lower() in ("null", "none", "~"):
        return None
    if text[:1] in "[{":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def load_config(recipe: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Recipe (optional) < overrides, validated."""
    values = read_recipe(recipe) if recipe else {}
    values.update(overrides or {})
    return RunConfig.from_dict(values, origin=recipe or "command line")


def read_saved_config(path: Path) -> RunConfig:
    """A finished run's run_config.yaml as recorded, not re-validated against this machine.

    Validation would reject, say, a bf16 GPU run read on a CPU machine; a reader (the model card)
    only needs the values.
    """
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    ours = _our_fields()
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    training = dict(TRAINING_DEFAULTS)
    for key, value in values.items():
        if key in ours:
            grouped[ours[key][0]][key] = value
        else:
            training[key] = value
    return RunConfig(model=ModelArguments(**grouped["model"]), data=DataArguments(**grouped["data"]),
                     run=RunArguments(**grouped["run"]), training=training,
                     batching=BatchingArguments(**grouped["batching"]))
