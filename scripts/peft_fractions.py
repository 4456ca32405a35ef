"""Trainable-parameter fractions of hf-encdec's adapters on published architectures, offline.

    python scripts/peft_fractions.py [--lora_r 8] [--families t5-small bart-base ...]

Each model is built from its published configuration with random weights (fractions depend
on shapes only, so nothing is downloaded), then wrapped the way `hf-encdec train` wraps it:
LoRA with `lora_target_modules: auto` and `all-linear`, and IA3 with `auto`. Warm-started
pairs train their cross-attention fully, as in training.
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    GPT2Config,
    MarianConfig,
    MarianMTModel,
    T5Config,
    T5ForConditionalGeneration,
)

from hf_encdec.models.adapters import apply_peft
from hf_encdec.config.keys import AdapterArguments
from hf_encdec.models.build import count_parameters


def _pair(decoder_config):
    decoder_config.update({"is_decoder": True, "add_cross_attention": True})
    return EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(), decoder_config))


# The sizes of google-t5/t5-small, facebook/bart-base, Helsinki-NLP/opus-mt-en-de and base BERT / GPT-2.
FAMILIES = {
    "t5-small": lambda: T5ForConditionalGeneration(T5Config()),
    "bart-base": lambda: BartForConditionalGeneration(BartConfig(
        d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12, decoder_attention_heads=12,
        encoder_ffn_dim=3072, decoder_ffn_dim=3072)),
    "opus-mt-en-de": lambda: MarianMTModel(MarianConfig(vocab_size=58101, decoder_vocab_size=58101, d_model=512,
                                                        encoder_layers=6, decoder_layers=6,
                                                        encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                                                        encoder_attention_heads=8, decoder_attention_heads=8)),
    "bert2bert-base": lambda: _pair(BertConfig()),
    "bert2gpt2-base": lambda: _pair(GPT2Config()),
}

SETTINGS = {"lora auto": {"peft": "lora"}, "lora all-linear": {"peft": "lora", "lora_target_modules": "all-linear"},
            "ia3 auto": {"peft": "ia3"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"{'model':<16} {'parameters':>12} " + " ".join(f"{name:>16}" for name in SETTINGS))
    for family in args.families:
        cells = []
        for settings in SETTINGS.values():
            model = apply_peft(FAMILIES[family](), AdapterArguments(lora_r=args.lora_r, **settings), False)
            trainable, total = count_parameters(model)
            cells.append(f"{100 * trainable / total:>15.2f}%")
        base_total = count_parameters(FAMILIES[family]())[1]
        print(f"{family:<16} {base_total / 1e6:>11.1f}M " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
