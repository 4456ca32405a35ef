"""Warm-started EncoderDecoderModel pairs: BERT2BERT, RoBERTa2RoBERTa, BERT2GPT2 ...

Two pretrained checkpoints become one seq2seq model; the decoder gains cross-attention layers,
which start random. The special tokens are the part users keep getting wrong (transformers
issues #8218, #4647, #14989), so they are chosen here from the tokenizers and written on both
the model config and the generation config: a saved pair then generates with no ids passed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError
from .sources import hub_kwargs, tokenizer_source
from ..rundir import DECODER_TOKENIZER_DIR

logger = logging.getLogger("hf_encdec.warm_start")

# Added to a decoder tokenizer without a pad token (GPT-2). Padding with eos instead would
# hide the first decoder input: EncoderDecoderModel masks every decoder input equal to pad,
# and GPT-2's start token is its eos.
ADDED_PAD_TOKEN = "<pad>"


def is_warm_start(model_args: Any) -> bool:
    return model_args.encoder_name_or_path is not None


def load_configs(model_args: Any) -> tuple[Any, Any]:
    """Encoder and decoder configs (no weights), checked to suit their roles: cheap enough for validation."""
    from .loading import load_config

    configs = []
    for key in ("encoder_name_or_path", "decoder_name_or_path"):
        name = getattr(model_args, key)
        config = load_config(name, key=key, **hub_kwargs(model_args))
        if getattr(config, "is_encoder_decoder", False):
            raise ModelError(f"{name!r} is already an encoder-decoder ({config.model_type})", key=key,
                             hint="fine-tune it with model_name_or_path instead")
        configs.append(config)
    return configs[0], configs[1]


class PairTokenizer:
    """The encoder's tokenizer for sources, the decoder's for targets and decoding.

    Training code treats it as one tokenizer (`tokenizer(sources)`, `tokenizer(text_target=...)`,
    `batch_decode`, `pad_token_id`), so a pair needs no special case downstream. Targets are
    encoded as the decoder must learn them: without a leading start token (the model prepends
    `decoder_start_token_id` itself) and always ending in eos, which GPT-2's tokenizer never adds.
    Anything else is the encoder tokenizer's (language codes, `pad()` for the inputs).
    """

    def __init__(self, encoder: Any, decoder: Any, eos_token_id: int):
        self.encoder = encoder
        self.decoder = decoder
        self.eos_token_id = eos_token_id

    def __call__(self, text=None, text_target=None, **kwargs):
        if text_target is None:
            return self.encoder(text, **kwargs)
        return self.encode_targets(text_target, **kwargs)

    def encode_targets(self, texts: list[str], max_length: int | None = None, truncation: bool = False,
                       padding: bool | str = False):
        limit = {"max_length": max_length - 1, "truncation": True} if truncation and max_length else {}
        ids = [row + [self.eos_token_id] for row in
               self.decoder(texts, add_special_tokens=False, **limit)["input_ids"]]
        return self.decoder.pad({"input_ids": ids}, padding=padding, max_length=max_length,
                                return_attention_mask=False)

    @property
    def pad_token_id(self) -> int:
        return self.decoder.pad_token_id

    @property
    def all_special_ids(self) -> list[int]:
        return self.decoder.all_special_ids

    def decode(self, *args, **kwargs) -> str:
        return self.decoder.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.decoder.batch_decode(*args, **kwargs)

    def save_pretrained(self, directory, **kwargs):
        """The encoder's tokenizer at the top (it reads the inputs), the decoder's in a subfolder."""
        from pathlib import Path

        saved = self.encoder.save_pretrained(directory, **kwargs)
        return saved + self.decoder.save_pretrained(Path(directory) / DECODER_TOKENIZER_DIR, **kwargs)

    def __getattr__(self, name: str):
        # Only called for names the pair lacks; while unpickling (multiprocess tokenization)
        # `encoder` itself is missing and must not recurse.
        if name in ("encoder", "decoder") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.encoder, name)


def load_warm_start(model_args: Any, quantization_config: Any = None):
    """A PairTokenizer and an EncoderDecoderModel with its special tokens wired and its random weights found."""
    load_configs(model_args)
    encoder_tokenizer = _tokenizer(*tokenizer_source(model_args), model_args)
    if encoder_tokenizer.pad_token is None:
        raise ModelError(f"the encoder tokenizer {model_args.encoder_name_or_path!r} has no pad token",
                         key="encoder_name_or_path", hint="use an encoder whose tokenizer defines pad_token")
    decoder_tokenizer = _tokenizer(model_args.decoder_name_or_path, "decoder_name_or_path", model_args)
    model, missing = _load_pair(model_args, quantization_config)
    if decoder_tokenizer.pad_token is None:
        decoder_tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
        add_token_rows(model.decoder, len(decoder_tokenizer))
        logger.info("the decoder tokenizer has no pad token: added %s and resized the decoder embeddings to %d",
                    ADDED_PAD_TOKEN, len(decoder_tokenizer))
    ids = special_token_ids(decoder_tokenizer)
    wire_special_tokens(model, ids)
    freeze_pooler(model)
    model.random_weights = find_random_weights(model, missing)
    return PairTokenizer(encoder_tokenizer, decoder_tokenizer, ids["eos_token_id"]), model


def _load_pair(model_args: Any, quantization_config: Any) -> tuple[Any, set[str]]:
    """The pair, and the full names of the weights that no checkpoint held.

    The halves are loaded here rather than by `from_encoder_decoder_pretrained`, which drops the
    loaders' reports: what each checkpoint lacked (cross-attention, a missing LM head) is known
    only from them. The configs are set as that method sets them.
    """
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    from .loading import library_errors, weights_loading

    encoder_config, decoder_config = load_configs(model_args)
    encoder_config.is_decoder, encoder_config.add_cross_attention = False, False
    decoder_config.is_decoder, decoder_config.add_cross_attention = True, True
    quantization = {"quantization_config": quantization_config} if quantization_config is not None else {}
    halves, missing = {}, set()
    with library_errors(model_args.encoder_name_or_path, model_args.decoder_name_or_path, key="decoder_name_or_path",
                        what="the pair", hint="the decoder must support cross-attention (BERT, RoBERTa, GPT-2 ...) "
                                              "and both checkpoints need safetensors weights"):
        for part, loader, config in (("encoder", AutoModel, encoder_config),
                                     ("decoder", AutoModelForCausalLM, decoder_config)):
            name = getattr(model_args, f"{part}_name_or_path")
            loading = weights_loading(name, model_args.allow_pickle, key=f"{part}_name_or_path")
            halves[part], info = loader.from_pretrained(name, config=config, output_loading_info=True,
                                                        **hub_kwargs(model_args), **loading, **quantization)
            missing.update(f"{part}.{key}" for key in info["missing_keys"])
        model = EncoderDecoderModel(encoder=halves["encoder"], decoder=halves["decoder"])
    # Weights of the pair itself (enc_to_dec_proj) come from no checkpoint.
    missing.update(name for name, _ in model.named_parameters() if not name.startswith(("encoder.", "decoder.")))
    return model, missing


def add_token_rows(decoder: Any, size: int) -> None:
    """Resize the decoder's embeddings; the new rows are the mean of the old ones, exactly.

    transformers adds a little random noise to that mean: an adapter run, which does not save the
    frozen embeddings, would then get other rows each time its base is rebuilt.
    """
    import torch

    old = decoder.get_input_embeddings().weight.shape[0]
    decoder.resize_token_embeddings(size)
    layers = (decoder.get_input_embeddings(), decoder.get_output_embeddings())
    with torch.no_grad():  # a tied LM head shares its weight with the embeddings: set once
        for weight in {id(m.weight): m.weight for m in layers if m is not None}.values():
            if weight.shape[0] == size:
                weight[old:] = weight[:old].mean(dim=0)


# Modules that start random (when the checkpoint lacks them) and feed nothing in a seq2seq pair, so they
# are frozen rather than trained: a BERT/RoBERTa encoder's [CLS] pooler (freeze_pooler says why).
UNUSED_MODULES = ("encoder.pooler",)


def freeze_pooler(model: Any) -> None:
    """BERT/RoBERTa encoders keep their [CLS] pooler, which feeds nothing in a seq2seq pair.

    Left trainable it never gets a gradient: under DDP that stalls gradient reduction unless
    every step searches for unused parameters (and fails outright with gradient checkpointing).
    """
    pooler = getattr(model.encoder, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)


def _tokenizer(name: str, key: str, model_args: Any):
    from .loading import load_tokenizer

    return load_tokenizer(name, key=key, use_fast=model_args.use_fast_tokenizer, **hub_kwargs(model_args))


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Start, end and pad ids of a decoder, from its tokenizer.

    BERT-style tokenizers have no bos/eos: a sequence is [CLS] ... [SEP], so [CLS] starts
    decoding and [SEP] ends it. GPT-2 has no [CLS]: bos starts and eos ends.
    """
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if start is None or eos is None:
        raise ModelError("the decoder tokenizer defines no start token ([CLS] or bos) or no end token ([SEP] or eos)",
                         key="decoder_name_or_path", hint="use a decoder whose tokenizer defines them")
    return {"decoder_start_token_id": start, "bos_token_id": start, "eos_token_id": eos,
            "pad_token_id": tokenizer.pad_token_id}


def wire_special_tokens(model: Any, ids: dict[str, int]) -> None:
    """The model config needs them for the loss (labels shift right); generate() reads only generation_config."""
    for key in ("decoder_start_token_id", "pad_token_id"):
        setattr(model.config, key, ids[key])
    model.config.vocab_size = model.config.decoder.vocab_size
    for key, value in ids.items():
        setattr(model.generation_config, key, value)


@dataclass(frozen=True)
class RandomWeights:
    """The weights of a pair that no checkpoint held, as the outermost modules that hold nothing else.

    `modules`: full module names, every weight in them random (the decoder's cross-attention, the LM
    head of a decoder checkpoint saved without one, `enc_to_dec_proj`); `unused`: those of them that
    feed nothing (UNUSED_MODULES); `shared`: random weights that share a module with pretrained ones,
    as (random weight, pretrained weight), which no module can carry alone (BERT's LM-head bias,
    whose module holds the output weights tied to the word embeddings).
    """

    modules: tuple[str, ...]
    unused: tuple[str, ...]
    shared: tuple[tuple[str, str], ...]

    def trained(self) -> list[str]:
        """Modules an adapter run trains fully and saves with the adapter (peft modules_to_save)."""
        return [name for name in self.modules if name not in self.unused]

    def patterns(self) -> list[str]:
        """Every random module and weight, with layer numbers as `*`: for the log, metrics.json and the card."""
        return layer_patterns([*self.modules, *(weight for weight, _ in self.shared)])


def layer_patterns(names: list[str]) -> list[str]:
    """Module names with layer numbers as `*`, each pattern once: `decoder.bert.encoder.layer.*.crossattention`."""
    return list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", name) for name in names))


def find_random_weights(model: Any, missing: set[str]) -> RandomWeights:
    """Group the weights the loaders reported missing into modules, tied names included."""
    named = list(model.named_parameters(remove_duplicate=False))
    random_ids = {id(p) for name, p in named if name in missing}
    modules = dict(model.named_modules(remove_duplicate=False))
    whole = {name for name, module in modules.items() if name and _all_random(module, random_ids)}
    outermost = [name for name in modules if name in whole and name.rpartition(".")[0] not in whole]
    shared, seen = [], set()
    for name, parameter in named:  # every name of a tied weight: each use must be carried by a random module
        if id(parameter) in random_ids and not _inside(name, outermost) and id(parameter) not in seen:
            seen.add(id(parameter))
            owner = name.rpartition(".")[0]
            pretrained = next(f"{owner}.{n}" for n, p in modules[owner].named_parameters(remove_duplicate=False)
                              if id(p) not in random_ids)
            shared.append((name, pretrained))
    unused = [name for name in outermost if _inside(name, UNUSED_MODULES)]
    return RandomWeights(tuple(outermost), tuple(unused), tuple(shared))


def _inside(name: str, modules: Any) -> bool:
    return any(name == module or name.startswith(module + ".") for module in modules)


def _all_random(module: Any, random_ids: set[int]) -> bool:
    ids = [id(p) for _, p in module.named_parameters(remove_duplicate=False)]
    return bool(ids) and all(i in random_ids for i in ids)


def describe(model: Any, model_args: Any) -> dict[str, Any]:
    """Which parts of the pair are pretrained and which start random: for the log, metrics.json and the card."""
    random = model.random_weights
    return {"encoder": model_args.encoder_name_or_path, "decoder": model_args.decoder_name_or_path,
            "random_init": random.patterns(),
            "unused": layer_patterns(list(random.unused))}


def load_tokenizers(directory: str, key: str = "model") -> tuple[Any, Any]:
    """Input and output tokenizers of a saved run: the same one unless it is a pair with a decoder tokenizer."""
    from .loading import load_tokenizer

    tokenizer = load_tokenizer(directory, key=key)
    return tokenizer, saved_decoder_tokenizer(directory, key) or tokenizer


def saved_decoder_tokenizer(directory: str, key: str = "model") -> Any | None:
    """A saved pair's own decoder tokenizer (BERT2GPT2), or None where the decoder reads the encoder's."""
    from pathlib import Path

    from .loading import load_tokenizer

    decoder_dir = Path(directory) / DECODER_TOKENIZER_DIR
    return load_tokenizer(str(decoder_dir), key=key) if decoder_dir.is_dir() else None
