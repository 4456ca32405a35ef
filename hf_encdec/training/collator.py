"""The training collator: padded batches that carry their decoder inputs, for every model family.

hf-encdec computes the loss itself (trainer.token_level_loss, or the Trainer's label smoother), so the
Trainer pops `labels` before the forward pass, and a model that would have shifted them into its decoder
inputs never sees them: it then has neither decoder_input_ids nor decoder_inputs_embeds and fails
("You cannot specify both decoder_input_ids and decoder_inputs_embeds"). DataCollatorForSeq2Seq builds
the decoder inputs only through `model.prepare_decoder_input_ids_from_labels`, which M2M-100 / NLLB,
NLLB-MoE, Blenderbot, Blenderbot-small and SeamlessM4T lack in transformers 5.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

from transformers import DataCollatorForSeq2Seq

from ..errors import ModelError


@dataclass
class Seq2SeqCollator(DataCollatorForSeq2Seq):
    """DataCollatorForSeq2Seq (given no model) whose batches hold `decoder_inputs(labels)` beside the labels."""

    decoder_inputs: Callable | None = None

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        if "labels" in batch and self.decoder_inputs is not None:
            # A copy: FSMT's shift turns the -100s of the tensor it is given into <pad> in place, and the
            # loss would then train every padding position as a target.
            batch["decoder_input_ids"] = self.decoder_inputs(batch["labels"].clone())
        return batch


def decoder_inputs_from_labels(model: Any) -> Callable:
    """labels -> decoder inputs, as the family builds them: its prepare_decoder_input_ids_from_labels (T5's
    _shift_right, mBART's and FSMT's wrapped </s>, ...), else what its forward() does with labels: its module's
    shift_tokens_right with the config's pad and decoder start ids (M2M-100, NLLB-MoE, Blenderbot, SeamlessM4T)."""
    if hasattr(model, "prepare_decoder_input_ids_from_labels"):  # a PEFT wrapper passes it on to its model
        return model.prepare_decoder_input_ids_from_labels
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    shift = getattr(sys.modules[type(base).__module__], "shift_tokens_right", None)
    if shift is None:
        raise ModelError(f"cannot build decoder inputs for {base.config.model_type} models: they have neither "
                         "prepare_decoder_input_ids_from_labels nor shift_tokens_right", key="model_name_or_path",
                         hint="fine-tune a supported family (T5, BART, Marian, M2M-100/NLLB, Pegasus ...)")
    pad, start = base.config.pad_token_id, base.config.decoder_start_token_id
    return lambda labels: shift(labels, pad, start)
