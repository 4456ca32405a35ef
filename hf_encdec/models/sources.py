"""Where a model's parts come from, read off the model arguments: the checkpoint that names the
tokenizer, and the Hub settings every load of a checkpoint passes.

Below both the model builder and the warm start, which each load a tokenizer named this way.
"""

from __future__ import annotations

from typing import Any


def tokenizer_source(model_args: Any, key: str = "model_name_or_path") -> tuple[str, str]:
    """Where the (encoder's) tokenizer comes from, and the key that named it: tokenizer_name, else the model
    (`key`), or a warm-started pair's encoder."""
    if model_args.tokenizer_name:
        return model_args.tokenizer_name, "tokenizer_name"
    if model_args.encoder_name_or_path is not None:
        return model_args.encoder_name_or_path, "encoder_name_or_path"
    return model_args.model_name_or_path, key


def hub_kwargs(model_args: Any) -> dict[str, Any]:
    """The revision, token, cache folder and remote-code permission a config, tokenizer or model loads with."""
    return {"revision": model_args.model_revision, "token": model_args.token, "cache_dir": model_args.cache_dir,
            "trust_remote_code": model_args.trust_remote_code}
