"""Parameter-efficient fine-tuning with peft: LoRA and IA3 through the same recipe keys.

peft does the adapting; this module picks what to adapt. peft's default targets only know a
few seq2seq families and adapt only q/v by name, so `lora_target_modules: auto` is resolved
here from a per-model_type table to the full names of the modules, which makes the choice
visible in the log and lets an unknown name fail before training. In a warm-started pair every
module that starts random (the cross-attention, an LM head the decoder checkpoint lacked) is
trained fully and saved with the adapter (peft `modules_to_save`) rather than adapted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError
from ..rundir import ADAPTER_CONFIG, GENERATION_CONFIG, MERGED_DIR, adapter_base, owned, read_run_config, started_by_us

logger = logging.getLogger("hf_encdec.adapters")


@dataclass(frozen=True)
class Projections:
    """Leaf module names of one architecture's attention and feed-forward projections."""

    query: tuple[str, ...]
    value: tuple[str, ...]
    key: tuple[str, ...]
    ffn_out: tuple[str, ...]


_T5 = Projections(query=("q",), value=("v",), key=("k",), ffn_out=("wo",))
_BART = Projections(query=("q_proj",), value=("v_proj",), key=("k_proj",), ffn_out=("fc2",))
_BERT = Projections(query=("query",), value=("value",), key=("key",), ffn_out=("output.dense",))

# model_type -> projections. One attention class serves self- and cross-attention in every
# family below, so the same names adapt both (for pairs the decoder type decides).
PROJECTIONS: dict[str, Projections] = {
    # T5Attention is both SelfAttention and EncDecAttention; mT5/UMT5/LongT5 keep the names.
    "t5": _T5, "mt5": _T5, "umt5": _T5, "longt5": _T5,
    # BartAttention as self_attn and encoder_attn; the rest copy BART's modules.
    "bart": _BART, "mbart": _BART, "marian": _BART, "pegasus": _BART, "pegasus_x": _BART,
    "m2m_100": _BART, "nllb-moe": _BART, "blenderbot": _BART, "blenderbot-small": _BART, "plbart": _BART,
    # BertSelfAttention serves `attention` and the decoder's `crossattention`.
    "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "camembert": _BERT, "electra": _BERT,
    # GPT-2 fuses q/k/v of self-attention in c_attn; its cross-attention splits q_attn from c_attn (k/v).
    "gpt2": Projections(query=("c_attn", "q_attn"), value=("c_attn",), key=("c_attn",), ffn_out=("mlp.c_proj",)),
}


def _supported() -> str:
    return ", ".join(sorted(PROJECTIONS))


def model_types(model: Any) -> list[str]:
    """The model_types whose names the model's modules use: both halves of a warm-started pair."""
    config = model.config
    if config.model_type == "encoder-decoder":
        return [config.encoder.model_type, config.decoder.model_type]
    return [config.model_type]


def auto_names(model: Any, method: str) -> tuple[set[str], set[str]]:
    """(target leaf names, feed-forward leaf names) for `auto`: LoRA adapts query and value
    (the LoRA paper's choice), IA3 rescales keys, values and the feed-forward output (the IA3 paper's)."""
    targets: set[str] = set()
    feedforward: set[str] = set()
    for model_type in model_types(model):
        if model_type not in PROJECTIONS:
            raise ConfigError(f"no automatic target modules for model type {model_type!r}", key="lora_target_modules",
                              hint=f"give module names, or all-linear; auto knows {_supported()}")
        p = PROJECTIONS[model_type]
        if method == "ia3":
            targets.update(p.key + p.value + p.ffn_out)
            feedforward.update(p.ffn_out)
        else:
            targets.update(p.query + p.value)
    return targets, feedforward


def _matches(name: str, leaf: str) -> bool:
    # peft's rule for a target name: the module's full name or its dotted suffix.
    return name == leaf or name.endswith("." + leaf)


def _linear_modules(model: Any) -> dict[str, Any]:
    """Linear layers that adapters can wrap, the output projection (LM head) excluded as peft's all-linear does."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return {name: module for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head}


def resolve_targets(model: Any, spec: str | list[str], method: str, skip: list[str]) -> tuple[list[str], list[str]]:
    """Full module names to adapt, and those of them that are feed-forward (IA3), outside the `skip` prefixes."""
    linear = _linear_modules(model)
    kept = {name for name in linear if not any(name == s or name.startswith(s + ".") for s in skip)}
    names = [spec] if isinstance(spec, str) else list(spec)
    names = [n.strip() for part in names for n in part.split(",") if n.strip()]
    feedforward: set[str] = set()
    if names == ["all-linear"]:
        return sorted(kept), []
    if names == ["auto"]:
        wanted, feedforward = auto_names(model, method)
    else:
        wanted = set(names)
        existing = sorted({name.rsplit(".", 1)[-1] for name in linear})
        for leaf in names:
            if not any(_matches(name, leaf) for name in linear):
                raise ConfigError(f"no linear module is named {leaf!r} in this model", key="lora_target_modules",
                                  hint=f"modules that exist: {', '.join(existing)}; or use auto or all-linear")
        if method == "ia3":  # IA3 scales a feed-forward layer's input, other layers' output
            feedforward = wanted & {leaf for p in PROJECTIONS.values() for leaf in p.ffn_out}
    targets = sorted(name for name in kept if any(_matches(name, leaf) for leaf in wanted))
    if not targets:
        raise ConfigError("every target module starts random in this pair and is trained fully already",
                          key="lora_target_modules", hint="target modules outside the random ones (cross-attention ...)")
    return targets, sorted(name for name in targets if any(_matches(name, leaf) for leaf in feedforward))


def random_modules_to_train(model: Any, adapter_args: Any) -> list[str]:
    """Full names of the modules of a warm-started pair that start random, to train fully and save.

    Frozen, a random weight would not be saved with the adapter, and every reload of the run
    would draw it again; so each is trained and saved (peft `modules_to_save`) or refused here.
    """
    from .warm_start import layer_patterns

    random = getattr(model, "random_weights", None)  # set by warm_start.load_warm_start
    if random is None:
        return []
    if random.shared:
        weight, pretrained = random.shared[0]
        raise ConfigError(f"{weight} starts random (its checkpoint has none) and shares a module with the "
                          f"pretrained {pretrained}, so an adapter can neither train nor save it", key="peft",
                          hint="use a decoder checkpoint saved with its LM head (e.g. BertLMHeadModel or "
                               "BertForMaskedLM weights), or remove peft to train every weight")
    if random.trained() and not adapter_args.train_cross_attention:
        raise ConfigError(f"{', '.join(layer_patterns(random.trained()))} start random; frozen, they would not be saved "
                          "with the adapter and each reload would draw them again", key="train_cross_attention",
                          hint="remove train_cross_attention: false (true trains them fully and saves them)")
    return random.trained()


def peft_config(model: Any, adapter_args: Any):
    from peft import IA3Config, LoraConfig, TaskType

    full = random_modules_to_train(model, adapter_args)
    random = getattr(model, "random_weights", None)
    skip = full + list(random.unused) if random else full  # no adapter on what is trained fully or feeds nothing
    targets, feedforward = resolve_targets(model, adapter_args.lora_target_modules, adapter_args.peft, skip)
    common = {"task_type": TaskType.SEQ_2_SEQ_LM, "target_modules": targets, "modules_to_save": full or None}
    if adapter_args.peft == "ia3":
        return IA3Config(feedforward_modules=feedforward, **common)
    return LoraConfig(r=adapter_args.lora_r, lora_alpha=adapter_args.lora_alpha,
                      lora_dropout=adapter_args.lora_dropout, **common)


def apply_peft(model: Any, adapter_args: Any, gradient_checkpointing: bool):
    """The model wrapped by peft: only adapters (and a pair's cross-attention) train."""
    import warnings

    from peft import get_peft_model, prepare_model_for_kbit_training

    config = peft_config(model, adapter_args)
    if adapter_args.load_in_4bit or adapter_args.load_in_8bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        # Frozen embeddings give checkpointed layers inputs without grad, and the adapters inside
        # them would get none; this makes the embedding outputs require grad.
        model.enable_input_require_grads()
    with warnings.catch_warnings():
        # GPT-2's Conv1D stores weights transposed; peft sets fan_in_fan_out itself and warns.
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        model = get_peft_model(model, config)
    adapted = adapted_modules(model)
    logger.info("%s on %d modules (%s)", adapter_args.peft, len(adapted),
                ", ".join(sorted({n.rsplit(".", 1)[-1] for n in adapted})))
    if config.modules_to_save:
        logger.info("trained fully, not adapted: %s (they start random in the warm-started pair)",
                    ", ".join(sorted(config.modules_to_save)))
    return model


def adapted_modules(model: Any) -> list[str]:
    """Full names of the modules that carry an adapter.

    Read from the model, not from the peft config: peft rewrites a long target list as the
    shortest suffixes that match the same modules.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    prefix = "base_model.model."
    return sorted(name.removeprefix(prefix) for name, module in model.named_modules()
                  if isinstance(module, BaseTunerLayer))


def describe(model: Any) -> dict[str, Any]:
    """What was adapted: for metrics.json and the model card."""
    config = model.peft_config["default"]
    return {"method": config.peft_type.value.lower(), "target_modules": adapted_modules(model),
            "modules_to_save": sorted(config.modules_to_save or [])}


def quantization_config(adapter_args: Any):
    """QLoRA: a BitsAndBytesConfig for `from_pretrained` (transformers 5 removed the load_in_* arguments)."""
    if not (adapter_args.load_in_4bit or adapter_args.load_in_8bit):
        return None
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    key = "load_in_4bit" if adapter_args.load_in_4bit else "load_in_8bit"
    if not torch.cuda.is_available():
        raise ConfigError("quantized loading (bitsandbytes) needs a CUDA GPU and none is available", key=key,
                          hint=f"run on a CUDA machine, or remove {key} to train LoRA in full precision")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantized loading needs the bitsandbytes package", key=key,
                          hint="pip install bitsandbytes")
    if adapter_args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def save_merged(model: Any, tokenizer: Any, output_dir: Any) -> None:
    """The adapter merged into its base: a plain transformers model, with tokenizer(s) and generation config."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise ModelError("cannot merge into quantized weights", key="merge_lora",
                         hint="run `hf-encdec merge` on a machine that loads the base model unquantized")
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    logger.info("merged model saved to %s", output_dir)


def merge_saved(directory: str, output: str | None = None, base: str | None = None) -> str:
    """`hf-encdec merge`: a saved adapter merged into its base model, saved where transformers alone loads it.

    Saved beside the target and renamed into place, so a failed merge leaves no half-written model, and
    never over something that is not ours: the run's folder, its base, or a folder of the user's.
    """
    import shutil

    target = Path(output) if output else Path(directory) / MERGED_DIR
    _check_merge_target(Path(directory), target, base)
    model, tokenizer = load_with_adapter(directory, base)
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)  # left by a merge that was killed
    save_merged(model, tokenizer, staging)
    if target.exists():
        shutil.rmtree(target)  # checked above: an earlier merge of ours, or empty
    os.replace(staging, target)
    return str(target)


def _check_merge_target(directory: Any, target: Any, base: str | None) -> None:
    resolved = target.resolve()
    inputs = {"--model": directory, "the base model": base or adapter_base(directory)}
    for name, path in inputs.items():
        if path and os.path.exists(path) and resolved in (Path(path).resolve(), *Path(path).resolve().parents):
            raise ConfigError(f"is {name} {path} or holds it: the merge would replace it", key="output",
                              path=str(target), hint="choose another --output")
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not (target == directory / MERGED_DIR and started_by_us(directory) and owned(target)):
        raise ConfigError("exists and was not written by hf-encdec merge", key="output", path=str(target),
                          hint="choose a new or empty folder for --output, or move this one away")


def load_with_adapter(directory: str, base: str | None = None, trust_remote_code: bool = False,
                      allow_pickle: bool = False):
    """A saved LoRA/IA3 run as (PeftModel on its base, tokenizer); a warm-started pair's base is rebuilt."""
    from peft import PeftModel

    from ..config.keys import ModelArguments
    from .loading import check_folder_weights, library_errors, load_generation_config, weights_loading
    from .warm_start import PairTokenizer, load_tokenizers, load_warm_start

    run = Path(directory)
    if not (run / ADAPTER_CONFIG).is_file():
        raise ModelError(f"no {ADAPTER_CONFIG} here: not a LoRA/IA3 run", path=str(run),
                         hint="pass the output_dir of a run trained with peft")
    saved_base = adapter_base(run)
    check_folder_weights(run, key="model")  # before the base loads
    saved = read_run_config(run)
    tokenizer, decoder_tokenizer = load_tokenizers(str(run))
    if saved.get("encoder_name_or_path") and base is None:
        args = ModelArguments(encoder_name_or_path=saved["encoder_name_or_path"],
                              decoder_name_or_path=saved["decoder_name_or_path"], allow_pickle=allow_pickle)
        _, model = load_warm_start(args)
        tokenizer = PairTokenizer(tokenizer, decoder_tokenizer, decoder_tokenizer.eos_token_id)
    else:
        name = base or saved_base
        if not name:
            raise ModelError("names no base model (base_model_name_or_path)", path=str(run / ADAPTER_CONFIG),
                             key="base", hint="write the base model's Hub id or folder into it as "
                                              "base_model_name_or_path, or give it to `hf-encdec merge --base`")
        model = _load_base(name, trust_remote_code, allow_pickle)
    if (run / GENERATION_CONFIG).is_file():  # the run's decoding, not the base's
        model.generation_config = load_generation_config(str(run), key="model")
    weights_loading(str(run), allow_pickle, key="model")  # peft reads adapter_model.bin with weights_only=True
    with library_errors(str(run), key="model", what="the adapter"):
        return PeftModel.from_pretrained(model, str(run)), tokenizer


def _load_base(name: str, trust_remote_code: bool = False, allow_pickle: bool = False):
    from transformers import AutoModelForSeq2SeqLM

    from .loading import load_model

    return load_model(AutoModelForSeq2SeqLM, name, key="base", allow_pickle=allow_pickle,
                      hint="pass --base with the base model's Hub id or local directory",
                      trust_remote_code=trust_remote_code)
