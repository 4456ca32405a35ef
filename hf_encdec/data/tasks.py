"""Task adapters: what differs between text2text, translation and summarization.

An adapter knows which columns to look for, which text goes before each source, how to
set up multilingual tokenizers, and which metrics and decoding suit the task. Adding a
task is one small class with `@register_task`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import ConfigError

TASKS: dict[str, type[TaskAdapter]] = {}


def register_task(cls: type[TaskAdapter]) -> type[TaskAdapter]:
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is already registered by {TASKS[cls.name].__name__}")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> TaskAdapter:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}", key="task", hint=f"choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]()


class TaskAdapter:
    name: ClassVar[str]
    # (source, target) column pairs tried in order when the recipe names no columns.
    column_candidates: ClassVar[tuple[tuple[str, str], ...]] = (
        ("source", "target"),
        ("input", "output"),
        ("input", "target"),
        ("src", "tgt"),
        ("question", "answer"),
    )
    default_metrics: ClassVar[tuple[str, ...]] = ("bleu", "chrf", "exact_match")
    best_metric: ClassVar[str] = "chrf"
    pipeline_tag: ClassVar[str] = "text2text-generation"
    default_preset: ClassVar[str] = "greedy"  # decoding of the final evaluation and generation_config.json

    def source_texts(self, sources: list[str], prefix: str | None) -> list[str]:
        return [prefix + s for s in sources] if prefix else sources

    def configure_tokenizer(self, tokenizer: Any, data: Any) -> dict[str, int]:
        """Set language codes on a multilingual tokenizer; return generation settings they imply.

        The settings (forced_bos_token_id, decoder_start_token_id) go on the *generation
        config*: transformers 5 raises when generation settings sit on `model.config`.
        """
        settings: dict[str, int] = {}
        if data.forced_bos_token:
            settings["forced_bos_token_id"] = _token_id(tokenizer, data.forced_bos_token, "forced_bos_token")
        return settings


def _token_id(tokenizer: Any, token: str, key: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        codes = [t for t in getattr(tokenizer, "additional_special_tokens", None) or []][:8]
        hint = f"tokens such as {', '.join(codes)}" if codes else "use a token from the tokenizer's vocabulary"
        raise ConfigError(f"{token!r} is not a token of this tokenizer", key=key, hint=hint)
    return token_id


@register_task
class Text2Text(TaskAdapter):
    name = "text2text"


@register_task
class Translation(TaskAdapter):
    name = "translation"
    default_metrics = ("bleu", "chrf")
    best_metric = "bleu"
    pipeline_tag = "translation"
    default_preset = "beam"

    def configure_tokenizer(self, tokenizer: Any, data: Any) -> dict[str, int]:
        settings = super().configure_tokenizer(tokenizer, data)
        # mBART, M2M-100 and NLLB tokenizers take the languages as attributes and tag
        # sources/targets with language codes; the target code must also start generation.
        if hasattr(tokenizer, "src_lang") and data.source_lang and data.target_lang:
            tokenizer.src_lang = data.source_lang
            tokenizer.tgt_lang = data.target_lang
            if "forced_bos_token_id" not in settings:
                if hasattr(tokenizer, "get_lang_id"):  # M2M-100 writes codes as __de__
                    settings["forced_bos_token_id"] = tokenizer.get_lang_id(data.target_lang)
                else:
                    settings["forced_bos_token_id"] = _token_id(tokenizer, data.target_lang, "target_lang")
        return settings


@register_task
class Summarization(TaskAdapter):
    name = "summarization"
    column_candidates = (
        ("text", "summary"),
        ("document", "summary"),
        ("article", "highlights"),
        ("dialogue", "summary"),
        ("source", "target"),
    )
    default_metrics = ("rouge",)
    best_metric = "rougeL"
    pipeline_tag = "summarization"
    default_preset = "beam-long"
