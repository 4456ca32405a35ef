"""Named decoding presets: each one is a plain `GenerationConfig`.

A preset names the decoding fields (beams, sampling, n-gram blocking ...) and nothing else;
lengths, special token ids and forced language tokens come from the model's own
`generation_config.json`. Built-in presets live in `PRESETS` (`register_preset` rejects
duplicates); users add theirs as a mapping or a YAML/JSON file, and override single fields.
Every preset is validated when the config is read, long before any training: its field names,
types and ranges without importing transformers (library_fields.py), then the combination by
`GenerationConfig.validate` itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import strict_yaml
from ..errors import ConfigError, did_you_mean
from .library_fields import generation_field_types
from ..rundir import GENERATION_CONFIG, PRESET_DIR

PRESETS: dict[str, dict[str, Any]] = {}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Reset by every preset before its own fields apply, so a preset means the same decoding whatever
# the model's generation_config.json chose (a pretrained BART may ship num_beams=4, length_penalty=2).
DECODING_DEFAULTS: dict[str, Any] = {
    "do_sample": False, "num_beams": 1, "num_return_sequences": 1, "length_penalty": 1.0,
    "early_stopping": False, "no_repeat_ngram_size": 0, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
}

# transformers 5 moved these decoding methods out of the library into Hub "custom_generate"
# repositories, whose code runs only with trust_remote_code (generation/utils.py GENERATION_MODES_MAPPING).
MOVED_TO_HUB = {
    "contrastive_search": "contrastive search (penalty_alpha with top_k)",
    "group_beam_search": "diverse (group) beam search (num_beam_groups > 1)",
    "constrained_beam_search": "constrained beam search (constraints / force_words_ids)",
}

# Ranges GenerationConfig.validate() does not check; generate() fails on them mid-run: (field, test, requirement).
RANGES = [
    ("num_beams", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    ("num_return_sequences", lambda v: isinstance(v, int) and v >= 1, "a whole number >= 1"),
    ("temperature", lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    ("top_p", lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
    ("top_k", lambda v: isinstance(v, int) and v >= 0, "a whole number >= 0"),
    ("no_repeat_ngram_size", lambda v: isinstance(v, int) and v >= 0, "a whole number >= 0"),
    ("max_length", lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number >= 1"),
    ("max_new_tokens", lambda v: v is None or (isinstance(v, int) and v >= 1), "a whole number >= 1"),
    # RepetitionPenaltyLogitsProcessor: "has to be a strictly positive float"
    ("repetition_penalty", lambda v: v is None or v > 0, "a number > 0"),
    ("encoder_repetition_penalty", lambda v: v is None or v > 0, "a number > 0"),
    ("typical_p", lambda v: v is None or 0 < v <= 1, "a number in (0, 1]"),
    ("min_p", lambda v: v is None or 0 <= v <= 1, "a number in [0, 1]"),
    ("epsilon_cutoff", lambda v: v is None or 0 <= v < 1, "a number in [0, 1)"),
    ("eta_cutoff", lambda v: v is None or 0 <= v < 1, "a number in [0, 1)"),
    ("min_length", lambda v: v is None or v >= 0, "a whole number >= 0"),
    ("min_new_tokens", lambda v: v is None or v >= 0, "a whole number >= 0"),
]

# The value a documented field type takes (bool is an int in Python, but not a number of beams).
_TYPE_TESTS = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}
_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def register_preset(name: str, fields: dict[str, Any]) -> None:
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    PRESETS[name] = fields


register_preset("greedy", {})  # the cheapest: one hypothesis, argmax at every step
register_preset("beam", {"num_beams": 4, "length_penalty": 1.0, "early_stopping": True})
# Summaries: longer outputs (length_penalty > 1 favours them) without repeated trigrams (BART/CNN settings).
register_preset("beam-long", {"num_beams": 4, "length_penalty": 2.0, "no_repeat_ngram_size": 3,
                              "early_stopping": True})
register_preset("sample", {"do_sample": True, "top_p": 0.9, "top_k": 50, "temperature": 0.8})
# n-best lists: the K best beams, each with its length-normalised log-probability.
register_preset("nbest", {"num_beams": 5, "num_return_sequences": 5, "early_stopping": True})


def generation_fields() -> set[str]:
    return set(generation_field_types())


def load_user_presets(source: dict | str | None) -> dict[str, dict[str, Any]]:
    """User presets from a mapping (a recipe section) or a YAML/JSON file: {name: {field: value}}."""
    if source is None:
        return {}
    path = None
    if isinstance(source, (str, Path)):
        path = str(source)
        source = strict_yaml.read(path, key="presets", what="presets file")  # YAML reads JSON too
    if not isinstance(source, dict) or not all(isinstance(v, dict) for v in source.values()):
        raise ConfigError("presets must map each preset name to its fields", key="presets", path=path,
                          hint="e.g. {beam6: {num_beams: 6, length_penalty: 1.2}}")
    for name in source:
        if name in PRESETS:
            raise ConfigError(f"preset {name!r} is built in", key=f"presets.{name}", path=path,
                              hint="give your preset another name")
        if not NAME_PATTERN.match(str(name)):
            raise ConfigError(f"preset name {name!r} is not a file name", key=f"presets.{name}", path=path,
                              hint="use letters, digits, '-', '_' and '.'")
    return {str(name): dict(fields) for name, fields in source.items()}


def preset_names(user_presets: dict[str, dict] | None = None) -> list[str]:
    return [*PRESETS, *(user_presets or {})]


def make_preset(name: str, *, base=None, user_presets: dict[str, dict] | None = None,
                overrides: dict[str, Any] | None = None, trust_remote_code: bool = False):
    """The GenerationConfig of preset `name` on top of `base` (the model's), with `overrides` last."""
    fields = {**_preset_fields(name, user_presets), **(overrides or {})}
    return with_fields(name, base, {**DECODING_DEFAULTS, **fields}, set(fields), trust_remote_code)


def with_fields(name: str, base, fields: dict[str, Any], user_set: set[str], trust_remote_code: bool = False):
    """A copy of `base` (None: library defaults) with `fields` set, checked as preset `name`."""
    from transformers import GenerationConfig

    check_fields(name, {k: v for k, v in fields.items() if k in user_set})
    values = {k: v for k, v in (base.to_dict() if base is not None else {}).items()
              if not k.startswith("_") and k != "transformers_version"}
    values.update(fields)
    if "max_length" in user_set and "max_new_tokens" not in user_set and values.get("max_length"):
        # generate() fills an unset max_new_tokens from the model's generation_config.json, and max_new_tokens
        # wins: the length asked for is given as one (max_length counts the decoder start token).
        values["max_new_tokens"], values["max_length"] = max(1, values["max_length"] - 1), None
    try:
        config = GenerationConfig(**values)
    except ValueError as err:
        raise _config_error(name, err) from None
    check_config(name, config, user_set, trust_remote_code)
    return config


def _preset_fields(name: str, user_presets: dict[str, dict] | None) -> dict[str, Any]:
    presets = {**PRESETS, **(user_presets or {})}
    if name not in presets:
        hint = did_you_mean(name, presets) or f"choose one of {', '.join(presets)}"
        raise ConfigError(f"unknown preset {name!r}", key="preset", hint=hint)
    return presets[name]


def check_fields(name: str | None, fields: dict[str, Any]) -> None:
    """Names, documented types and ranges of preset `name`'s fields (None: the command line's overrides)."""
    origin = f"preset {name!r}: " if name is not None else ""
    known = generation_field_types()
    for field, value in fields.items():
        if field not in known:
            hint = did_you_mean(field, known) or "see transformers' GenerationConfig for the fields"
            raise ConfigError(f"{origin}GenerationConfig has no field {field!r}", key=field, hint=hint)
        declared = known[field]
        if declared is not None and value is not None and not _TYPE_TESTS[declared](value):
            raise ConfigError(f"{origin}{field} must be {_TYPE_WORDS[declared]}, got {value!r}", key=field)
    for field, valid, requirement in RANGES:  # generate() fails on these mid-run
        if field in fields and not valid(fields[field]):
            raise ConfigError(f"{origin}{field} must be {requirement}, got {fields[field]!r}", key=field)


def check_config(name: str, config, user_set: set[str], trust_remote_code: bool) -> None:
    """Reject combinations transformers would refuse (or silently ignore) at generate time."""
    mode = str(config.get_generation_mode().value)
    if mode in MOVED_TO_HUB and trust_remote_code:
        return  # validated by the Hub code; the core checks misread e.g. contrastive search's top_k
    if mode in MOVED_TO_HUB:
        raise ConfigError(
            f"preset {name!r} asks for {MOVED_TO_HUB[mode]}, which transformers 5 moved out of the library into "
            "Hub custom_generate code", key="preset",
            hint="use beam or sample, or set trust_remote_code true to run that Hub code")
    try:
        config.validate(strict=True, user_set_attributes=user_set | {"do_sample", "num_beams"})
    except ValueError as err:
        raise _config_error(name, err) from None


def _config_error(name: str, err: ValueError) -> ConfigError:
    text = " ".join(str(err).replace("GenerationConfig is invalid:", "").split()).lstrip("- ")
    text = re.sub(r"\s*If you.re using a pretrained model.*", "", text)  # not about a preset
    field = re.search(r"`(\w+)`", text)
    return ConfigError(f"preset {name!r}: {text}", key=field.group(1) if field else "preset")


def check_preset_fields(names: list[str], presets_source: dict | str | None,
                        overrides: dict[str, Any] | None = None) -> list[ConfigError]:
    """Config-time check of the named presets (with `overrides`) and every user preset, without transformers."""
    def check(name: str, user: dict[str, dict], extra: dict[str, Any] | None) -> None:
        check_fields(name, {**_preset_fields(name, user), **(extra or {})})

    return _each_preset(names, presets_source, overrides, check)


def check_preset_configs(names: list[str], presets_source: dict | str | None, trust_remote_code: bool,
                         overrides: dict[str, Any] | None = None) -> list[ConfigError]:
    """The same presets built as GenerationConfigs and validated by transformers: the combinations it refuses."""
    def check(name: str, user: dict[str, dict], extra: dict[str, Any] | None) -> None:
        make_preset(name, user_presets=user, trust_remote_code=trust_remote_code, overrides=extra)

    return _each_preset(names, presets_source, overrides, check)


def _each_preset(names, presets_source, overrides, check) -> list[ConfigError]:
    """check(name, user presets, overrides) for the named presets and every user preset; all problems at once."""
    try:
        user = load_user_presets(presets_source)
    except ConfigError as err:
        return [err]
    problems = []
    for name in dict.fromkeys([*names, *user]):
        try:
            check(name, user, overrides if name in names else None)
        except ConfigError as err:
            problems.append(err)
    return problems


def save_presets(configs: dict[str, Any], output_dir: Path) -> None:
    """Write OUTPUT_DIR/presets/<name>.json for every preset (vanilla GenerationConfig files)."""
    (output_dir / PRESET_DIR).mkdir(parents=True, exist_ok=True)
    for name, config in configs.items():
        save_generation_config(config, output_dir, f"{PRESET_DIR}/{name}.json")


def save_generation_config(config, folder: Path, file_name: str = GENERATION_CONFIG) -> None:
    """`config` saved with its length as max_new_tokens, so that vanilla generate(max_new_tokens=...) can override it.

    In memory a preset keeps max_length: Seq2SeqTrainer stamps the library's max_length (20) on the model's
    generation config after every evaluation batch, which next to a max_new_tokens would make generate()
    warn on each later batch. Saved, a max_length makes generate(max_new_tokens=N) warn that both are set
    (generation/utils.py _prepare_generated_length). The two are the same length for an encoder-decoder:
    max_length counts the decoder's start token, its only prompt token.
    """
    import copy

    saved = copy.deepcopy(config)
    saved.max_new_tokens, saved.max_length = new_tokens(saved), None
    saved.save_pretrained(str(folder), config_file_name=file_name)


def new_tokens(config) -> int | None:
    """The tokens a GenerationConfig lets generate() write: max_new_tokens, else max_length less the decoder's start
    token (an encoder-decoder's only prompt token); None when it sets neither."""
    if config.max_new_tokens is not None:
        return config.max_new_tokens
    return max(1, config.max_length - 1) if config.max_length is not None else None


def decoding_fields(config) -> dict[str, Any]:
    """What a preset decides, for metrics.json, the model card and evaluate --output: its decoding fields and length."""
    fields = {key: getattr(config, key) for key in DECODING_DEFAULTS}
    fields["max_new_tokens"] = new_tokens(config)
    return fields
