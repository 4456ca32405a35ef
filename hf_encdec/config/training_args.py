"""Our training arguments: Seq2SeqTrainingArguments plus the batching keys the library lacks, built in one place.

The keys themselves are declared once, in keys.py (BatchingArguments); `EncDecTrainingArguments`
carries the ones the Trainer reads. `build_training_arguments` is the one builder: config
validation, the launcher's set-up, the Trainer and the model card's defaults all call it.
Importing this module loads transformers, so run_config.py imports it only when the arguments are built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from transformers import Seq2SeqTrainingArguments

from .keys import BatchingArguments
from .library_fields import training_argument_types

# transformers 5.x renamed these TrainingArguments and warns (FutureWarning) at every run given the old
# names, which run_translation.py users and our recipes pass: handed on under the name the library reads.
RENAMED_TRAINING_KEYS = {"gradient_checkpointing": "activation_checkpointing",
                         "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


def _batching_field(name: str) -> dataclasses.Field:
    """BatchingArguments' field `name`, carried by the Trainer's arguments with the same default and help."""
    declared = next(f for f in dataclasses.fields(BatchingArguments) if f.name == name)
    return dataclasses.field(default=declared.default, metadata=declared.metadata)


@dataclass
class EncDecTrainingArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus token-budget batching (`train_sampling_strategy: token_budget`)."""

    max_tokens: int | None = _batching_field("max_tokens")


def build_training_arguments(training: dict[str, Any], batching: BatchingArguments | None = None,
                             **overrides: Any) -> EncDecTrainingArguments:
    """The Trainer's arguments from a run's Seq2SeqTrainingArguments keys and batching keys, `overrides` last."""
    import torch

    batching = batching or BatchingArguments()
    sampling = {"train_sampling_strategy": batching.strategy(), "max_tokens": batching.max_tokens}
    # Pinned memory only speeds copies to a GPU; without one, torch warns at every evaluation.
    pinning = {} if "dataloader_pin_memory" in training else {"dataloader_pin_memory": torch.cuda.is_available()}
    # hf-encdec pushes (publish/hub.py), not the Trainer: its push would run before our outputs are written,
    # and a hub_token inside the arguments would be pickled into every checkpoint's training_args.bin.
    return EncDecTrainingArguments(**{**pinning, **_current_names(training), **sampling, **overrides,
                                      "push_to_hub": False, "hub_token": None})


def _current_names(training: dict[str, Any]) -> dict[str, Any]:
    known = training_argument_types()
    renamed = {old: new for old, new in RENAMED_TRAINING_KEYS.items() if new in known and new not in training}
    return {renamed.get(key, key): value for key, value in training.items()}
