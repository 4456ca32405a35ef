"""Build the tokenizer and model: a pretrained checkpoint, a warm-started pair, or a fresh one trained from scratch.

`build_model` chooses which from the model arguments. The model builder knows nothing about
files or training: it gets model arguments and, for a from-scratch model, the texts to train a
tokenizer on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable, Collection
from typing import Any

from . import warm_start
from .. import console
from ..config.model_config import SCRATCH_CONFIG_CLASSES, scratch_architecture_name
from ..errors import ConfigError, ModelError
from .sources import hub_kwargs, tokenizer_source

logger = logging.getLogger("hf_encdec.modeling")

# fp16 overflows in T5-family feed-forward layers and the loss turns NaN
# (transformers issues #10830, #14189); bf16 has the range to avoid it.
FP16_UNSAFE_MODEL_TYPES = {"t5", "mt5", "umt5", "longt5", "switch_transformers"}


@dataclass(frozen=True)
class ScratchArchitecture:
    """How to build one architecture from scratch: model class, start token, template (its config class and the
    check of model_config: config/model_config.py)."""

    model_class: str
    # T5 and Marian start decoding from the pad token, BART from </s> (their pretraining set-ups).
    decoder_start: str
    # BART wraps every sequence in <s> ... </s>; T5 and Marian only append </s>.
    template: str
    defaults: dict[str, Any]
    # Marian NMT has no <pad> token: its decoder starts from a zero vector. transformers' Marian
    # models add <pad> as the last id, with a zero embedding, as the decoder start; CTranslate2's
    # converter relies on both (it drops the last id and starts from zeros). Scratch Marian models
    # follow that convention, so that `--backend ct2` converts them exactly.
    marian_vocabulary: bool = False


SCRATCH_ARCHITECTURES: dict[str, ScratchArchitecture] = {
    "t5": ScratchArchitecture(
        "T5ForConditionalGeneration", "pad", "$A </s>",
        # num_decoder_layers is left out so that it follows num_layers (T5Config does that).
        {"d_model": 256, "d_ff": 1024, "d_kv": 32, "num_heads": 8, "num_layers": 3,
         "feed_forward_proj": "relu", "dropout_rate": 0.1},
    ),
    "bart": ScratchArchitecture(
        "BartForConditionalGeneration", "eos", "<s> $A </s>",
        {"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 1024, "decoder_ffn_dim": 1024,
         "max_position_embeddings": 1024, "dropout": 0.1},
    ),
    "marian": ScratchArchitecture(
        "MarianMTModel", "pad", "$A </s>",
        {"d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 1024, "decoder_ffn_dim": 1024,
         "max_position_embeddings": 1024, "dropout": 0.1, "share_encoder_decoder_embeddings": True},
        marian_vocabulary=True,
    ),
}

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}


def model_type_of(model_args: Any) -> str:
    """The model type, read from the config only (no weights), and the tokenizer folders checked: cheap enough
    for validation, so that a broken model folder fails before the data is read."""
    from .loading import tokenizer_folder

    if model_args.model_config is not None:
        return scratch_architecture(model_args.model_config)[0]
    if warm_start.is_warm_start(model_args):
        warm_start.load_configs(model_args)
        tokenizer_folder(*tokenizer_source(model_args))
        tokenizer_folder(model_args.decoder_name_or_path, "decoder_name_or_path")
        return "encoder-decoder"
    model_type = load_pretrained_config(model_args).model_type
    tokenizer_folder(*tokenizer_source(model_args))
    return model_type


def check_precision(model_type: str, training: dict[str, Any]) -> None:
    if training.get("fp16") and model_type in FP16_UNSAFE_MODEL_TYPES:
        raise ConfigError(
            f"fp16 is refused for {model_type} models: their activations overflow fp16 and the loss becomes NaN",
            key="fp16",
            hint="use --bf16 true on a GPU that supports it (Ampere or newer), or fp32",
        )


def scratch_architecture(model_config: dict[str, Any]) -> tuple[str, ScratchArchitecture]:
    name = scratch_architecture_name(model_config)
    return name, SCRATCH_ARCHITECTURES[name]


def build_model(model_args: Any, quantization_config: Any = None, *, tokenizer_texts: Callable[[], list[str]],
                max_positions: int):
    """Tokenizer and model as the model arguments ask: built from scratch (model_config), a warm-started pair
    (encoder_name_or_path), else a pretrained checkpoint (quantized for QLoRA).

    A from-scratch model trains its tokenizer on `tokenizer_texts()` (called for it alone) and holds
    sequences of `max_positions` tokens.
    """
    if model_args.model_config is not None:
        return build_scratch(model_args, tokenizer_texts(), max_positions)
    if not warm_start.is_warm_start(model_args):
        return load_pretrained(model_args, quantization_config)
    tokenizer, model = warm_start.load_warm_start(model_args, quantization_config)
    parts = warm_start.describe(model, model_args)
    random = [f"{part} (unused, frozen)" if part in parts["unused"] else part for part in parts["random_init"]]
    logger.info("warm start: encoder %s and decoder %s are pretrained; starting random: %s", parts["encoder"],
                parts["decoder"], ", ".join(random))
    return tokenizer, model


def load_pretrained_config(model_args: Any, key: str = "model_name_or_path"):
    from .loading import load_config

    name = model_args.model_name_or_path
    config = load_config(name, key=key, **hub_kwargs(model_args))
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"{name!r} is a {config.model_type} model, not an encoder-decoder",
            key=key,
            hint="use a seq2seq checkpoint (T5, BART, Marian, Pegasus, M2M-100 ...)",
        )
    return config


def load_pretrained(model_args: Any, quantization_config: Any = None, *, key: str = "model_name_or_path"):
    """Tokenizer and model from a Hub id or local directory, safetensors only (quantized for QLoRA)."""
    from transformers import AutoModelForSeq2SeqLM

    from .loading import load_model, load_tokenizer

    config = load_pretrained_config(model_args, key)
    common = hub_kwargs(model_args)
    tokenizer_name, tokenizer_key = tokenizer_source(model_args, key)
    tokenizer = load_tokenizer(tokenizer_name, key=tokenizer_key, use_fast=model_args.use_fast_tokenizer, **common)
    if tokenizer.pad_token is None:
        raise ModelError(f"tokenizer {tokenizer_name!r} has no pad token, so batches cannot be padded",
                         key=tokenizer_key, hint="use a tokenizer that defines pad_token")
    model = load_model(AutoModelForSeq2SeqLM, model_args.model_name_or_path, key=key,
                       allow_pickle=model_args.allow_pickle, hint="check that the folder holds model.safetensors",
                       config=config, quantization_config=quantization_config, **common)
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:  # its last ids would index past the embeddings: an IndexError mid-run
        raise ModelError(f"the tokenizer of {tokenizer_name!r} has {len(tokenizer)} tokens, more than the {embeddings} "
                         f"embeddings of {model_args.model_name_or_path!r}", key=tokenizer_key,
                         hint="use the tokenizer the model was trained with")
    return tokenizer, model


def train_tokenizer(texts: list[str], vocab_size: int, template: str, pad_last: bool = False):
    """A BPE tokenizer with SentencePiece-style word boundaries, trained on the given texts; its special
    tokens take the first ids, or with `pad_last` all but <pad>, which then takes the last one."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pad = SPECIAL_TOKENS["pad_token"]
    specials = [t for t in SPECIAL_TOKENS.values() if not (pad_last and t == pad)]
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.NFKC()
    # One token per digit: numbers are copied and reordered digit by digit, and merged digit
    # pieces ("201", "19") make that much harder for a small model to learn.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.decoder = decoders.Metaspace()
    # Its progress is drawn on stdout, which carries only results: blank lines there unless on a terminal.
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                             show_progress=console.interactive()))
    if pad_last:
        tokenizer.add_special_tokens([pad])
    used = [t for t in specials if t in template.split()]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tokenizer.token_to_id(t)) for t in used]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def build_scratch(model_args: Any, texts: list[str], max_positions: int):
    """Train a tokenizer on `texts` and build a randomly initialised model sized by model_config."""
    import torch
    import transformers

    name, arch = scratch_architecture(model_args.model_config)
    config_class = getattr(transformers, SCRATCH_CONFIG_CLASSES[name])
    sizes = {**arch.defaults, **{k: v for k, v in model_args.model_config.items() if k != "architecture"}}
    known = config_class().to_dict()
    tokenizer = train_tokenizer(texts, model_args.tokenizer_vocab_size, arch.template, arch.marian_vocabulary)
    if "max_position_embeddings" in known:
        sizes["max_position_embeddings"] = max(sizes.get("max_position_embeddings", 0), max_positions)
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "decoder_start_token_id": getattr(tokenizer, f"{arch.decoder_start}_token_id"),
    }
    if name == "marian":
        ids["decoder_vocab_size"] = len(tokenizer)
    config = config_class(**sizes, **ids)
    model = getattr(transformers, arch.model_class)(config)
    _set_generation_ids(model, ids)
    if arch.marian_vocabulary:
        with torch.no_grad():
            model.get_input_embeddings().weight[tokenizer.pad_token_id] = 0
        model.generation_config.suppress_tokens = [tokenizer.pad_token_id]  # as Opus-MT's bad_words_ids
    logger.info("built %s from scratch: %s parameters, vocabulary %d", name, console.count(model.num_parameters()),
                len(tokenizer))
    return tokenizer, model


def zero_start_embedding(model: Any) -> bool:
    """True for a Marian model whose decoder start (<pad>) embedding is zero, as Marian NMT's is."""
    if model.config.model_type != "marian" or model.config.pad_token_id is None:
        return False
    return not model.get_input_embeddings().weight[model.config.pad_token_id].any()


def keep_start_embedding_zero(model: Any) -> None:
    """Keep a Marian model's zero <pad> embedding at zero while training. The output layer shares it, and
    the softmax over all ids would otherwise train it like any word, away from what Marian NMT and
    CTranslate2 start decoding from. (It is never a target: labels hold -100 where padding is.)"""
    import torch

    if not zero_start_embedding(model):
        return
    weight, pad = model.get_input_embeddings().weight, model.config.pad_token_id
    if weight.requires_grad:
        weight.register_hook(lambda grad: grad.index_fill(0, torch.tensor([pad], device=grad.device), 0))


def _set_generation_ids(model: Any, ids: dict[str, int]) -> None:
    # transformers 5 reads special ids for generate() from generation_config only.
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, ids[key])


# Config fields that bound a sequence by its position embeddings (GPT-2-style configs map
# max_position_embeddings to their n_positions). Relative-position models (T5) have none.
POSITION_FIELDS = ("max_position_embeddings", "max_source_positions")


def _position_field(config: Any) -> tuple[int, str] | None:
    """(the position limit, the config field that sets it), or None: relative positions, no limit."""
    return next(((value, name) for name, value in ((name, getattr(config, name, None)) for name in POSITION_FIELDS)
                 if isinstance(value, int) and value > 0), None)


def _positions(config: Any) -> int | None:
    found = _position_field(config)
    return found[0] if found else None


def position_limit(model: Any) -> tuple[int, str] | None:
    """(longest sequence the model's position embeddings allow, the field that says so), or None (no limit)."""
    config = model.config
    if config.model_type == "encoder-decoder":  # a warm-started pair: the shorter of its two halves
        limits = [(found[0], f"{half}.{found[1]}") for half in ("encoder", "decoder")
                  if (found := _position_field(getattr(config, half)))]
        return min(limits, default=None)
    return _position_field(config)


def max_positions(model: Any) -> int | None:
    """Longest sequence the model's position embeddings allow (None: relative positions, no limit)."""
    found = position_limit(model)
    return found[0] if found else None


def source_positions(model: Any) -> int | None:
    """Longest source the encoder's position embeddings allow (None: relative positions, no limit)."""
    config = model.config
    return _positions(config.encoder if config.model_type == "encoder-decoder" else config)


# transformers' model_max_length for a tokenizer that names no limit (VERY_LARGE_INTEGER, about 1e30).
UNLIMITED_LENGTH = 1_000_000


def tokenizer_limit(tokenizer: Any) -> int | None:
    """The tokenizer's model_max_length when it names one (the length the model was pretrained on), else None."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < UNLIMITED_LENGTH else None


def fit_default_lengths(model: Any, data: Any, given: Collection[str]) -> None:
    """A max_source_length / max_target_length left at its default (1024) that the model's position embeddings
    cannot hold is lowered to their limit, with one line saying so. One the user set is left for check_lengths
    to refuse: the user asked for that length."""
    found = position_limit(model)
    if found is None:
        return
    limit, field = found
    for key in ("max_source_length", "max_target_length"):
        value = getattr(data, key)
        if key not in given and value > limit:
            setattr(data, key, limit)
            logger.info("%s %d -> %d: the model's position limit (%s)", key, value, limit, field)


def check_lengths(model: Any, max_source_length: int, max_target_length: int, *, tokenizer: Any = None) -> None:
    """Lengths beyond the position embeddings are refused; beyond the tokenizer's model_max_length only
    warned about (relative positions, T5's, allow them, but the model never saw such lengths)."""
    limit = max_positions(model)
    for key, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
        if limit is not None and value > limit:
            raise ConfigError(f"{value} is beyond the model's {limit} positions", key=key,
                              hint=f"set {key} to {limit} or less")
    pretrained = tokenizer_limit(tokenizer)
    if pretrained is not None and max_source_length > pretrained:
        logger.warning("max_source_length=%d is beyond the tokenizer's model_max_length=%d, the length the model "
                       "was pretrained on: longer sources are kept, but the model never saw such lengths",
                       max_source_length, pretrained)


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
