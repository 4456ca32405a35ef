"""RunConfig: every key of a run, validated together before any heavy work.

A run is described by flat keys (the names of the HF example scripts and of
`Seq2SeqTrainingArguments`). Our own keys live in the dataclasses of keys.py, grouped by
concern; every `Seq2SeqTrainingArguments` field is accepted as well and kept in
`RunConfig.training`. Sources, lowest precedence first: dataclass defaults < recipe YAML <
command line; values are converted to their declared types by coercion.py.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import strict_yaml
from .keys import (
    ALIASES,
    GROUPS,
    REPORTING_INTEGRATIONS,
    TRAINING_DEFAULTS,
    TRAINING_LIMITS,
    implied_strategies,
    AdapterArguments,
    BatchingArguments,
    DataArguments,
    ModelArguments,
    RunArguments,
)
from .coercion import coerce
from ..errors import ConfigError, did_you_mean
from .library_fields import training_argument_types
from ..data.tasks import TASKS

SECRET_KEYS = {"token", "hub_token"}
# Data paths in a recipe are relative to the recipe file, so a recipe folder can be moved whole.
RECIPE_RELATIVE_KEYS = ("train_file", "validation_file", "test_file", "presets")


def _training_value_problems(training: dict[str, Any]) -> list[ConfigError]:
    """Seq2SeqTrainingArguments values outside the range torch or the Trainer accept (arguments.TRAINING_LIMITS)."""
    problems = []
    for key, value in training.items():  # torch takes a NaN learning rate and fails mid-setup
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(ConfigError(f"must be a finite number, got {value}", key=key))
        elif key in TRAINING_LIMITS and isinstance(value, (int, float)) and not isinstance(value, bool):
            valid, requirement = TRAINING_LIMITS[key]
            if not valid(value):
                problems.append(ConfigError(f"must be {requirement}, got {value}", key=key))
    if not str(training.get("output_dir") or "").strip():
        problems.append(ConfigError("needs a folder path, got an empty one", key="output_dir",
                                    hint="e.g. --output_dir runs/my-run"))
    return problems


def is_local_path(name: str) -> bool:
    """A name that means this machine's files (a path, or a folder that exists here), not a Hub id."""
    return name.startswith(("/", ".", "~")) or Path(name).exists()


def _looks_like_hub_id(name: str) -> bool:
    """A Hub id that is not also a local path (base_model names the base model for others to find)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not is_local_path(name)


def _report_to_problems(report_to: Any) -> list[ConfigError]:
    """Unknown or uninstalled reporting integrations: the Trainer meets them after the model has loaded."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    choices = [*REPORTING_INTEGRATIONS, "all", "none"]
    if len(names) > 1 and {"all", "none"} & set(names):
        return [ConfigError(f"all and none stand alone, got {', '.join(names)}", key="report_to")]
    problems = []
    for name in names:
        if name in ("all", "none"):  # all: those installed
            continue
        if name not in REPORTING_INTEGRATIONS:
            problems.append(ConfigError(f"unknown integration {name!r}", key="report_to",
                                        hint=did_you_mean(name, choices) or f"choose from {', '.join(choices)}"))
            continue
        modules, install = REPORTING_INTEGRATIONS[name]
        missing = [m.replace("|", " or ") for m in modules if not any(map(_installed, m.split("|")))]
        if missing:
            problems.append(ConfigError(f"reporting to {name} needs {' and '.join(missing)}, which is not installed",
                                        key="report_to", hint=install))
    return problems


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a submodule (flytekitplugins.deck) of a package that is missing
        return False


def _our_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Flat key -> (group name, field, type annotation) for our own keys."""
    fields = {}
    for group, cls in GROUPS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            fields[f.name] = (group, f, hints[f.name])
    return fields


@dataclass
class RunConfig:
    model: ModelArguments
    data: DataArguments
    run: RunArguments
    training: dict[str, Any]
    adapter: AdapterArguments = field(default_factory=AdapterArguments)
    batching: BatchingArguments = field(default_factory=BatchingArguments)
    given: frozenset[str] = field(default=frozenset(), compare=False)  # the keys the user set (aliases resolved)

    @property
    def output_dir(self) -> Path:
        return Path(self.training["output_dir"])

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, origin: str = "config") -> RunConfig:
        """Build and validate a config from flat keys; report every problem at once."""
        ours, training_types = _our_fields(), training_argument_types()
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
        if training.get("report_to") is None:  # `--report_to none` reads as null; the Trainer refuses None
            training["report_to"] = "none"
        given = frozenset(ALIASES.get(key, key) for key in values)
        best_model = bool(training.get("load_best_model_at_end") or grouped["run"].get("early_stopping_patience"))
        training.update(implied_strategies({key: training[key] for key in given if key in training}, best_model))
        if not problems:
            config = cls(
                model=ModelArguments(**grouped["model"]),
                data=DataArguments(**grouped["data"]),
                run=RunArguments(**grouped["run"]),
                training=training,
                adapter=AdapterArguments(**grouped["adapter"]),
                batching=BatchingArguments(**grouped["batching"]),
                given=given,
            )
            # The cheap checks first, so that a typo is reported before transformers is even imported.
            problems = config.problems() or config.library_problems()
        if len(problems) == 1:
            raise problems[0]
        if problems:
            details = "; ".join(p.one_line() for p in problems)
            raise ConfigError(f"{len(problems)} problems in {origin}: {details}")
        return config

    def problems(self) -> list[ConfigError]:
        """Contradictions and out-of-range values, all of them, without importing torch or transformers."""
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
        problems.extend(self._metric_problems())
        if r.base_model is not None and not _looks_like_hub_id(r.base_model):
            problems.append(ConfigError(f"needs the base model's Hub id (OWNER/NAME), got {r.base_model!r}",
                                        key="base_model", hint="e.g. --base_model google-t5/t5-small; the local "
                                        "folder stays model_name_or_path"))
        if r.early_stopping_patience and t.get("eval_strategy") == "no":
            problems.append(
                ConfigError("early stopping needs evaluations", key="early_stopping_patience",
                            hint="set eval_strategy to epoch or steps")
            )
        problems.extend(_training_value_problems(t))
        problems.extend(_report_to_problems(t.get("report_to")))
        problems.extend(self._batching_problems())
        problems.extend(self._adapter_problems())
        problems.extend(self._preset_problems())
        return problems

    def _metric_problems(self) -> list[ConfigError]:
        """Unknown metric names, and a best-model metric no evaluation reports (the Trainer raises a KeyError
        at the end of the first evaluation, after an epoch of training)."""
        from ..data.metrics import METRIC_KEYS, check_metric_names

        r, t = self.run, self.training
        try:
            check_metric_names(r.metrics or [])
        except ConfigError as err:
            return [err]
        task = TASKS.get(self.data.task)
        best = t.get("metric_for_best_model") or (task.best_metric if r.early_stopping_patience and task else None)
        if task is None or best is None or not (r.early_stopping_patience or t.get("load_best_model_at_end")):
            return []
        reported = ["loss", "gen_len", *(k for name in r.metrics or task.default_metrics for k in METRIC_KEYS[name])]
        if best.removeprefix("eval_") in reported:
            return []
        key = "metric_for_best_model" if t.get("metric_for_best_model") else "early_stopping_patience"
        return [ConfigError(f"the best model is chosen by {best!r}, which no evaluation reports (they report "
                            f"{', '.join(reported)})", key=key,
                            hint=did_you_mean(best, reported) or "set metric_for_best_model to one of them")]

    def library_problems(self) -> list[ConfigError]:
        """What only the libraries can tell: GenerationConfig's and Seq2SeqTrainingArguments' own validation."""
        from .presets import check_preset_configs

        return (check_preset_configs(*self._preset_request()) or self._scratch_model_problems()
                or self._training_argument_problems())

    def _scratch_model_problems(self) -> list[ConfigError]:
        from .model_config import check_scratch_config

        try:
            if self.model.model_config is not None:
                check_scratch_config(self.model.model_config)
        except ConfigError as err:
            return [err]
        return []

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
        from .presets import check_preset_fields

        names, presets, _, overrides = self._preset_request()
        return check_preset_fields(names, presets, overrides)

    def _preset_request(self) -> tuple[list[str], dict | str | None, bool, dict[str, Any] | None]:
        """(the presets this run decodes with, the user's presets, trust_remote_code, overrides of both)."""
        task = TASKS.get(self.data.task)  # an unknown task is reported on its own
        names = [self.run.eval_preset, self.run.preset or (task.default_preset if task else "greedy")]
        beams = self.training.get("generation_num_beams")
        return names, self.run.presets, self.model.trust_remote_code, {"num_beams": beams} if beams else None

    def _training_argument_problems(self) -> list[ConfigError]:
        try:
            self.training_arguments()
        except (ValueError, TypeError) as err:
            return [ConfigError(f"rejected by Seq2SeqTrainingArguments: {err}")]
        return []

    def training_arguments(self):
        """The Trainer's arguments for this run, as validation checks them and the Trainer runs with them."""
        from .training_args import build_training_arguments

        return build_training_arguments(self.training, self.batching, **self._best_model())

    def _best_model(self) -> dict[str, Any]:
        """Early stopping keeps the best checkpoint, by the task's metric unless metric_for_best_model names one."""
        task = TASKS.get(self.data.task)
        if not self.run.early_stopping_patience or task is None:
            return {}
        return {"load_best_model_at_end": True,
                "metric_for_best_model": self.training.get("metric_for_best_model") or task.best_metric}

    def gradient_checkpointing(self) -> bool:
        return bool(self.training.get("activation_checkpointing") or self.training.get("gradient_checkpointing"))

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
        from ..rundir import write_atomically

        write_atomically(path, [yaml.safe_dump(self.to_flat_dict(), sort_keys=False, allow_unicode=True)])


def read_recipe(path: str) -> dict[str, Any]:
    """Load a recipe YAML as flat keys, with its data paths made absolute."""
    recipe = Path(path)
    values = strict_yaml.read(recipe, what="recipe file")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError("a recipe must be a mapping of keys to values", path=path)
    for key in RECIPE_RELATIVE_KEYS:
        value = values.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            values[key] = str((recipe.parent / value).resolve())
    return values


def load_config(recipe: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Recipe (optional) < overrides, validated."""
    values = read_recipe(recipe) if recipe else {}
    values.update(overrides or {})
    return RunConfig.from_dict(values, origin=recipe or "command line")


def read_saved_config(folder: Path) -> RunConfig:
    """A finished run's run_config.yaml (rundir.read_run_config) as a RunConfig, not re-validated against this machine.

    Validation would reject, say, a bf16 GPU run read on a CPU machine; a reader (the model card)
    only needs the values.
    """
    from ..rundir import read_run_config

    values = read_run_config(folder)
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
                     adapter=AdapterArguments(**grouped["adapter"]), batching=BatchingArguments(**grouped["batching"]))
