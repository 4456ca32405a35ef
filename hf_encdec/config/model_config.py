"""The model_config key (train from scratch): its architecture, and its sizes checked against transformers' class.

The config classes take unknown keys silently (a typo'd `num_layer` would train the default size)
and any type (`d_model: big` fails inside torch, after the data is read and the tokenizer trained),
so every key is checked with the rest of the config. How each architecture is built (model class,
decoder start token, tokenizer template, default sizes) is models/build.py's.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, did_you_mean

# The architectures model_config may name, and the transformers config class whose fields their sizes are.
SCRATCH_CONFIG_CLASSES: dict[str, str] = {"t5": "T5Config", "bart": "BartConfig", "marian": "MarianConfig"}


def scratch_architecture_name(model_config: dict[str, Any]) -> str:
    name = model_config.get("architecture")
    if name not in SCRATCH_CONFIG_CLASSES:
        raise ConfigError(
            f"unknown architecture {name!r}",
            key="model_config.architecture",
            hint=f"choose one of {', '.join(SCRATCH_CONFIG_CLASSES)}",
        )
    return name


def check_scratch_config(model_config: dict[str, Any]) -> None:
    """Every model_config key a field of the architecture's config class, of its type."""
    import transformers

    config_class = SCRATCH_CONFIG_CLASSES[scratch_architecture_name(model_config)]
    known = getattr(transformers, config_class)().to_dict()
    for key, value in model_config.items():
        if key == "architecture":
            continue
        if key not in known:
            raise ConfigError(f"{config_class} has no field {key!r}", key=f"model_config.{key}",
                              hint=did_you_mean(key, known) or "see the config class documentation")
        default = known[key]
        expected = type(default) if isinstance(default, (bool, int, float, str)) else None
        numeric = expected is float and isinstance(value, int) and not isinstance(value, bool)
        if expected is not None and not numeric and type(value) is not expected:
            raise ConfigError(f"expected {expected.__name__} (like the default {default!r}), got {value!r}",
                              key=f"model_config.{key}")
        if expected is int and default > 0 and value <= 0:  # layer and head counts, sizes: torch fails on them later
            raise ConfigError(f"must be positive, got {value}", key=f"model_config.{key}")
        if expected is float and value < 0:  # dropout rates, scales
            raise ConfigError(f"must be >= 0, got {value}", key=f"model_config.{key}")
