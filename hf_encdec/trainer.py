"""Our Seq2SeqTrainer: the few places where the library's behaviour is not what a seq2seq run needs.

Each override says why it exists; everything else is transformers' own Trainer.
"""

from __future__ import annotations

from transformers import Seq2SeqTrainer


class EncDecTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with hf_encdec's batching, checkpointing and distributed fixes."""
