"""The model card: what was trained, on what, how well, and how to use it with transformers 5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TRAINING_DEFAULTS, RunConfig
from .tasks import TaskAdapter

HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
                   "max_steps", "warmup_steps", "weight_decay", "lr_scheduler_type", "label_smoothing_factor",
                   "seed", "bf16", "fp16")

USAGE = '''```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForSeq2SeqLM.from_pretrained("{path}")
inputs = tokenizer(["{prefix}your text here"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs)  # decoding settings come from generation_config.json
print(tokenizer.batch_decode(outputs, skip_special_tokens=True))
```'''


PAIR_USAGE = '''```python
from transformers import AutoTokenizer, EncoderDecoderModel

tokenizer = AutoTokenizer.from_pretrained("{path}")  # the encoder's tokenizer reads the input
decoder_tokenizer = AutoTokenizer.from_pretrained("{path}/decoder_tokenizer")  # the decoder's writes the output
model = EncoderDecoderModel.from_pretrained("{path}")
inputs = tokenizer(["{prefix}your text here"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs)  # start, end and pad tokens come from generation_config.json
print(decoder_tokenizer.batch_decode(outputs, skip_special_tokens=True))
```'''

ADAPTER_USAGE = '''```python
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel, GenerationConfig

tokenizer = AutoTokenizer.from_pretrained("{path}")
base = {base}
model = PeftModel.from_pretrained(base, "{path}")  # or load {path}/merged with transformers alone, if present
inputs = tokenizer(["{prefix}your text here"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained("{path}"))
print({output_tokenizer}.batch_decode(outputs, skip_special_tokens=True))
```'''

PAIR_ADAPTER_NOTE = ("The base is the warm-started pair rebuilt from its two checkpoints. When the decoder "
                     "tokenizer gained a pad token, resize first: `base.decoder.resize_token_embeddings(len("
                     "decoder_tokenizer))`. `hf-encdec merge --model {path}` does all of this and saves a merged "
                     "model.")


def write_model_card(output_dir: Path, config: RunConfig, task: TaskAdapter, metrics: dict[str, Any]) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    d, m = config.data, config.model
    languages = [lang for lang in (d.source_lang, d.target_lang, d.lang) if lang]
    pair = [m.encoder_name_or_path, m.decoder_name_or_path] if m.encoder_name_or_path else None
    card_data = ModelCardData(
        base_model=pair or m.model_name_or_path,
        datasets=[d.dataset_name] if d.dataset_name else None,
        language=languages or None,
        library_name="peft" if config.adapter.peft else "transformers",
        pipeline_tag=task.pipeline_tag,
        tags=["hf-encdec", task.name, "text2text-generation"],
    )
    origin = _origin(config)
    sections = [
        f"---\n{card_data.to_yaml()}\n---",
        f"# {output_dir.name}\n\nA {task.name} model {origin} with hf-encdec.",
        "## Model\n\n" + _model_section(metrics.get("model", {})),
        "## Data\n\n" + _data_table(metrics.get("data", {})),
        "## Results\n\n" + _results_table(metrics),
        "## Training hyperparameters\n\n" + _hyperparameter_table(config),
        "## Usage\n\n" + _usage(config, output_dir),
    ]
    ModelCard("\n\n".join(sections) + "\n").save(output_dir / "README.md")


def _origin(config: RunConfig) -> str:
    m, a = config.model, config.adapter
    if m.model_name_or_path:
        origin = f"fine-tuned from `{m.model_name_or_path}`"
    elif m.encoder_name_or_path:
        origin = (f"warm-started from the encoder `{m.encoder_name_or_path}` and the decoder "
                  f"`{m.decoder_name_or_path}` (an `EncoderDecoderModel`)")
    else:
        return (f"trained from scratch ({m.model_config.get('architecture')} architecture, "
                f"tokenizer trained on the training data)")
    return f"{origin}, {a.peft.upper()} adapter only" if a.peft else origin


def _model_section(model: dict[str, Any]) -> str:
    if not model:
        return "(not recorded)"
    trainable, total = model["trainable_parameters"], model["total_parameters"]
    lines = [f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)."]
    if "warm_start" in model:
        w = model["warm_start"]
        lines.append(f"Pretrained: the encoder (`{w['encoder']}`) and the decoder's self-attention and "
                     f"feed-forward layers (`{w['decoder']}`). Started random: "
                     + ", ".join(f"`{part}`" for part in w["random_init"]) + ".")
    if "peft" in model:
        p = model["peft"]
        leaves = sorted({name.rsplit(".", 1)[-1] for name in p["target_modules"]})
        lines.append(f"Adapter: {p['method']} on {len(p['target_modules'])} modules (" + ", ".join(leaves) + ").")
        if p["modules_to_save"]:
            lines.append("Trained fully next to the adapter, since they start random: "
                         + ", ".join(f"`{name}`" for name in p["modules_to_save"]) + ".")
    return "\n\n".join(lines)


def _usage(config: RunConfig, output_dir: Path) -> str:
    m, prefix = config.model, config.data.source_prefix or ""
    if config.adapter.peft:
        if not m.encoder_name_or_path:
            base = f'AutoModelForSeq2SeqLM.from_pretrained("{m.model_name_or_path}")'
            return ADAPTER_USAGE.format(path=output_dir, base=base, prefix=prefix, output_tokenizer="tokenizer")
        base = (f'EncoderDecoderModel.from_encoder_decoder_pretrained("{m.encoder_name_or_path}", '
                f'"{m.decoder_name_or_path}")\ndecoder_tokenizer = AutoTokenizer.from_pretrained("{output_dir}/'
                f'decoder_tokenizer")')
        usage = ADAPTER_USAGE.format(path=output_dir, base=base, prefix=prefix, output_tokenizer="decoder_tokenizer")
        return usage + "\n\n" + PAIR_ADAPTER_NOTE.format(path=output_dir)
    if m.encoder_name_or_path:
        return PAIR_USAGE.format(path=output_dir, prefix=prefix)
    return USAGE.format(path=output_dir, prefix=prefix)


def _data_table(data: dict[str, Any]) -> str:
    rows = ["| split | origin | rows | dropped | source tokens p50/p99 | target tokens p50/p99 |", "|---|---|---|---|---|---|"]
    for name, stats in data.items():
        src, tgt = stats["source_tokens"], stats["target_tokens"]
        rows.append(f"| {name} | {Path(stats['origin']).name} | {stats['rows']} | {stats['dropped']} | "
                    f"{src['p50']}/{src['p99']} | {tgt['p50']}/{tgt['p99']} |")
    return "\n".join(rows)


def _results_table(metrics: dict[str, Any]) -> str:
    rows = ["| split | metric | value |", "|---|---|---|"]
    for split in ("validation", "test"):
        for key, value in metrics.get(split, {}).items():
            if not key.endswith(("runtime", "per_second")):
                rows.append(f"| {split} | {key} | {round(value, 4) if isinstance(value, float) else value} |")
    signatures = metrics.get("signatures") or {}
    notes = "".join(f"\n\n`{name}` signature: `{sig}`" for name, sig in signatures.items())
    return "\n".join(rows) + notes


def _hyperparameter_table(config: RunConfig) -> str:
    from transformers import Seq2SeqTrainingArguments

    defaults = Seq2SeqTrainingArguments(output_dir=TRAINING_DEFAULTS["output_dir"])
    rows = ["| key | value |", "|---|---|"]
    for key in HYPERPARAMETERS:
        rows.append(f"| {key} | {config.training.get(key, getattr(defaults, key))} |")
    for key in ("max_source_length", "max_target_length", "source_prefix"):
        rows.append(f"| {key} | {getattr(config.data, key)} |")
    return "\n".join(rows)
