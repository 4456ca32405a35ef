"""The keys of `hf-encdec generate` and `hf-encdec evaluate`, each documented once, and their checks.

Both commands run a model over a file: the model, its decoding preset, batching and trust settings
are `JobOptions`, declared once; each command adds what its file needs. `--help` is generated from
these dataclasses, and `split_options` checks every value before the model loads.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, did_you_mean

DEFAULT_MAX_TOKENS = 6000  # padded source tokens a batch; measured by scripts/bench_generate.py on CPU
DEFAULT_WINDOW = 2000  # rows sorted together; also how much work a kill can lose
# Tokens a source keeps when neither the user, the model's positions nor its tokenizer set a limit:
# relative-position models (T5) have none, and their tokenizers often name none either (model_max_length
# is then ~1e30). Without one, a 1 MB line asks for an attention matrix of its length squared (terabytes).
# 1024 is twice T5's pretraining length and BART's position limit.
DEFAULT_SOURCE_LIMIT = 1024
BACKENDS = ("transformers", "ct2")


@dataclass(kw_only=True)
class JobOptions:
    """What generate and evaluate share: the model, how it decodes and batches, and what it may run."""

    model: str = field(metadata={"help": "Model directory (full, LoRA adapter or warm-started pair) or Hub id."})
    preset: str | None = field(default=None, metadata={"help": "Decoding preset; default: the model's "
                                                       "generation_config.json."})
    presets: str | None = field(default=None, metadata={"help": "YAML/JSON file of your own presets."})
    max_tokens: int | None = field(default=None, metadata={
        "help": f"Padded source tokens per batch (default {DEFAULT_MAX_TOKENS})."})
    batch_size: int | None = field(default=None, metadata={"help": "Fixed sources per batch instead of a budget."})
    source_column: str | None = field(default=None, metadata={"help": "Input column; default from the model's "
                                                              "run_config.yaml or the task's usual names."})
    source_prefix: str | None = field(default=None, metadata={"help": "Text before every source; default: the "
                                                              "model's training prefix."})
    overwrite: bool = field(default=False, metadata={"help": "Replace existing output files (never an input)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code (moved-out decoding methods)."})
    allow_pickle: bool = field(default=False, metadata={"help": "Load pickle-only weights (pytorch_model.bin) "
                                                        "with weights_only=True; off: unpickling can run code."})
    backend: str = field(default="transformers", metadata={
        "help": "transformers, or ct2: CTranslate2 (converted once, cached beside the model as <model>.ct2).",
        "choices": list(BACKENDS)})


@dataclass(kw_only=True)
class GenerateOptions(JobOptions):
    input: str = field(metadata={"help": ".txt (one source a line), .jsonl, .csv, .tsv or .parquet."})
    output: str = field(metadata={"help": ".jsonl (input fields + prediction) or .txt (one prediction a line)."})
    max_source_length: int | None = field(default=None, metadata={
        "help": "Longer sources are truncated (counted in the summary). Default: the model's position limit, else "
        f"the tokenizer's model_max_length, else {DEFAULT_SOURCE_LIMIT} (T5 and other relative-position models)."})
    on_error: str | None = field(default=None, metadata={
        "help": "Bad rows: fail or skip. Default: fail on unreadable rows, skip (and report) empty sources.",
        "choices": ["fail", "skip"]})
    window: int = field(default=DEFAULT_WINDOW, metadata={"help": "Rows sorted together (and committed together)."})
    seed: int = field(default=42, metadata={"help": "Seed of sampling presets."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


@dataclass(kw_only=True)
class EvaluateOptions(JobOptions):
    data: str = field(metadata={"help": "File with sources and references (the formats training reads)."})
    target_column: str | None = field(default=None, metadata={"help": "Default: the model's run_config.yaml."})
    metrics: list[str] | None = field(default=None, metadata={"help": "Default: the model's task metrics."})
    output: str | None = field(default=None, metadata={"help": "Write the metrics to this .json file."})
    predictions: str | None = field(default=None, metadata={"help": "Write source/reference/prediction .jsonl."})


def check_batching(max_tokens: int | None, batch_size: int | None, max_source_length: int | None) -> None:
    if max_tokens is not None and batch_size is not None:
        raise ConfigError("give max_tokens or batch_size, not both", key="max_tokens")
    for key, value in (("max_tokens", max_tokens), ("batch_size", batch_size), ("max_source_length", max_source_length)):
        if value is not None and value < 1:
            raise ConfigError(f"must be a positive number, got {value}", key=key)


def split_options(cls: type[JobOptions], values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat keys into (our options, GenerationConfig overrides), every value checked before the model loads."""
    from ..data.metrics import check_metric_names
    from .coercion import coerce, coerce_generation_field
    from .presets import check_fields, check_preset_fields, generation_fields

    typed = typing.get_type_hints(cls)
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    ours, overrides, known = {}, {}, generation_fields()
    for key, value in values.items():
        if key in typed:
            ours[key] = coerce(key, value, typed[key])
        elif key in known:
            overrides[key] = coerce_generation_field(key, value)
        else:
            raise ConfigError("unknown option", key=key, hint=did_you_mean(key, [*typed, *known]) or "see --help")
    for key in required:
        if ours.get(key) is None or not str(ours[key]).strip():
            raise ConfigError("is required", key=key, hint=f"give --{key} a value")
    for f in dataclasses.fields(cls):
        choices, value = f.metadata.get("choices"), ours.get(f.name)
        if choices and value is not None and value not in choices:
            hint = did_you_mean(value, choices) or f"choose one of {', '.join(choices)}"
            raise ConfigError(f"unknown value {value!r}", key=f.name, hint=hint)
    check_batching(ours.get("max_tokens"), ours.get("batch_size"), ours.get("max_source_length"))
    check_metric_names(ours.get("metrics") or [])
    check_fields(None, overrides)
    problems = check_preset_fields([], ours.get("presets"))  # the user's presets file, every preset in it
    if problems:
        raise problems[0]
    return ours, overrides
