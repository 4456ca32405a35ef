"""The model card: what was trained, on what, how well, and how to use it with transformers 5.

Its metadata (base model, datasets, language, license, tags, pipeline and the scores as
`model-index`) is what the Hub shows and searches; `ModelCard.load(...).data` reads it back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .arguments import TRAINING_DEFAULTS
from .rundir import CARD, CARD_TAG, RUN_CONFIG, is_our_card, write_atomically
from .config import RunConfig, read_saved_config
from .tasks import TaskAdapter, get_task

logger = logging.getLogger("hf_encdec.card")

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
decoder_tokenizer = AutoTokenizer.from_pretrained("{path}", subfolder="decoder_tokenizer")  # writes the output
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
model = PeftModel.from_pretrained(base, "{path}")
inputs = tokenizer(["{prefix}your text here"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained("{path}"))
print({output_tokenizer}.batch_decode(outputs, skip_special_tokens=True))
```'''

PAIR_ADAPTER_NOTE = ("The base is the warm-started pair rebuilt from its two checkpoints. When the decoder "
                     "tokenizer gained a pad token, resize first: `base.decoder.resize_token_embeddings(len("
                     "decoder_tokenizer))`. `hf-encdec merge --model DIR` does all of this and saves a merged "
                     "model.")

FILE_USAGE = ("To translate or rewrite a whole file with token-budget batching and the named decoding presets: "
              "`hf-encdec generate --model {path} --input inputs.txt --output outputs.txt`.")

ADAPTER_CONFIG = "adapter_config.json"
# Metrics that describe the run rather than the model's quality stay out of the model-index.
NOT_SCORES = ("runtime", "per_second", "gen_len", "loss")


def write_model_card(output_dir: Path, config: RunConfig, task: TaskAdapter, metrics: dict[str, Any],
                     repo_id: str | None = None, *, folder: Path | None = None) -> None:
    """README.md of the run in output_dir, written in `folder` (default output_dir), which holds the run's files.

    With `repo_id` the title and usage name the Hub repo instead of the folder. The card is written
    whole or not at all, and its front matter carries the hf-encdec tag that tells it from a user's.
    """
    from huggingface_hub import ModelCard, ModelCardData

    d, m = config.data, config.model
    folder = folder or output_dir
    adapter = (folder / ADAPTER_CONFIG).exists()
    path = repo_id or str(output_dir)
    name = path.rsplit("/", 1)[-1] if repo_id else output_dir.name
    languages = [lang for lang in (d.source_lang, d.target_lang, d.lang) if lang]
    scores = _eval_results(metrics, task, d)
    bases = [b for b in map(_hub_id, (m.model_name_or_path, m.encoder_name_or_path, m.decoder_name_or_path)) if b]
    method = config.adapter.peft or "lora"
    card_data = ModelCardData(
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        datasets=[d.dataset_name] if _hub_id(d.dataset_name) else None,
        language=languages or None,
        license=config.run.license,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=task.pipeline_tag,
        tags=[CARD_TAG, task.name, "text2text-generation", *([method] if adapter else [])],
        model_name=name if scores else None,
        eval_results=scores or None,
    )
    sections = [
        f"---\n{card_data.to_yaml()}\n---",
        (f"# {name}\n\nA {task.name} {f'{method.upper()} adapter' if adapter else 'model'} {_origin(config)} "
         "with hf-encdec."),
        "## Model\n\n" + _model_section(metrics.get("model", {})),
        "## Data\n\n" + _data_table(metrics.get("data", {})),
        "## Results\n\n" + _results_table(metrics),
        "## Training hyperparameters\n\n" + _hyperparameter_table(config),
        "## Usage\n\n" + _usage(config, path, adapter) + _presets_usage(folder, path) + "\n\n"
        + FILE_USAGE.format(path=path),
    ]
    write_atomically(folder / CARD, [str(ModelCard("\n\n".join(sections) + "\n"))])


def _origin(config: RunConfig) -> str:
    m = config.model
    if m.encoder_name_or_path:
        return (f"warm-started from the encoder `{_shown(m.encoder_name_or_path)}` and the decoder "
                f"`{_shown(m.decoder_name_or_path)}` (an `EncoderDecoderModel`)")
    if not m.model_name_or_path:
        return (f"trained from scratch ({m.model_config.get('architecture')} architecture, "
                f"tokenizer trained on the training data)")
    return f"fine-tuned from `{_shown(m.model_name_or_path)}`"


def _shown(name: str) -> str:
    """A Hub id as it is; a local checkpoint by its folder name only (no local paths on the Hub)."""
    return _hub_id(name) or f"{Path(name).name}, a local checkpoint"


def _model_section(model: dict[str, Any]) -> str:
    if not model:
        return "(not recorded)"
    trainable, total = model["trainable_parameters"], model["total_parameters"]
    lines = [f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)."]
    if "warm_start" in model:
        w = model["warm_start"]
        lines.append(f"Pretrained: the encoder (`{_shown(w['encoder'])}`) and the decoder's self-attention and "
                     f"feed-forward layers (`{_shown(w['decoder'])}`). Started random: "
                     + ", ".join(f"`{part}`" for part in w["random_init"]) + ".")
    if "peft" in model:
        p = model["peft"]
        leaves = sorted({name.rsplit(".", 1)[-1] for name in p["target_modules"]})
        lines.append(f"Adapter: {p['method']} on {len(p['target_modules'])} modules (" + ", ".join(leaves) + ").")
        if p["modules_to_save"]:
            lines.append("Trained fully next to the adapter, since they start random: "
                         + ", ".join(f"`{name}`" for name in p["modules_to_save"]) + ".")
    return "\n\n".join(lines)


def _usage(config: RunConfig, path: str, adapter: bool) -> str:
    m, prefix = config.model, config.data.source_prefix or ""
    if adapter and m.encoder_name_or_path:
        base = (f'EncoderDecoderModel.from_encoder_decoder_pretrained("{m.encoder_name_or_path}", '
                f'"{m.decoder_name_or_path}")\ndecoder_tokenizer = AutoTokenizer.from_pretrained("{path}", '
                f'subfolder="decoder_tokenizer")')
        usage = ADAPTER_USAGE.format(path=path, base=base, prefix=prefix, output_tokenizer="decoder_tokenizer")
        return usage + "\n\n" + PAIR_ADAPTER_NOTE
    if adapter:
        base = f'AutoModelForSeq2SeqLM.from_pretrained("{m.model_name_or_path}")'
        return ADAPTER_USAGE.format(path=path, base=base, prefix=prefix, output_tokenizer="tokenizer")
    if m.encoder_name_or_path:
        return PAIR_USAGE.format(path=path, prefix=prefix)
    return USAGE.format(path=path, prefix=prefix)


def _presets_usage(output_dir: Path, path: str) -> str:
    names = sorted(p.stem for p in (output_dir / "presets").glob("*.json"))
    if not names:
        return ""
    return (f"\n\nNamed decoding presets: {', '.join(f'`{n}`' for n in names)}. Pick one with "
            f"`model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(\"{path}\", "
            f"\"presets/{names[0]}.json\"))`.")


def _hub_id(name: str | None) -> str | None:
    """A Hub id, or None for a local path (the card's metadata may only name Hub repos)."""
    if not name or name.startswith(("/", ".", "~")) or Path(name).exists():
        return None
    return name


def _eval_results(metrics: dict[str, Any], task: TaskAdapter, d: Any) -> list:
    """The scores as model-index entries, so the Hub shows them and `ModelCard.load` returns them."""
    from huggingface_hub import EvalResult

    dataset = _hub_id(d.dataset_name) or "custom"
    results = []
    for split in ("validation", "test"):
        for key, value in metrics.get(split, {}).items():
            if isinstance(value, (int, float)) and not key.endswith(NOT_SCORES):
                results.append(EvalResult(task_type=task.pipeline_tag, dataset_type=dataset, dataset_name=dataset,
                                          dataset_split=split, metric_type=key, metric_name=key,
                                          metric_value=round(value, 4)))
    return results


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
        value = config.training.get(key, getattr(defaults, key))
        rows.append(f"| {key} | {getattr(value, 'value', value)} |")  # an enum default shows its value
    if config.batching.strategy() == "token_budget":
        rows.append(f"| max_tokens | {config.batching.max_tokens} (token-budget batches: "
                    "per_device_train_batch_size unused) |")
    for key in ("max_source_length", "max_target_length", "source_prefix"):
        rows.append(f"| {key} | {getattr(config.data, key)} |")
    return "\n".join(rows)


def refresh_model_card(folder: Path, repo_id: str) -> None:
    """Rewrite an hf-encdec run's card so its title and usage name the Hub repo."""
    saved = folder / RUN_CONFIG
    card = folder / CARD
    if not saved.exists() or (card.exists() and not is_our_card(card)):
        return  # not an hf-encdec run, or the user's own card in place of ours: pushed as it is
    config = read_saved_config(folder)
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.exists() else {}
    try:
        write_model_card(folder, config, get_task(config.data.task), metrics, repo_id=repo_id)
    except OSError as err:  # a read-only run folder (or a full disk) is still pushed, with the card it holds
        logger.warning("cannot rewrite %s to name %s (%s): pushing it as it is", card, repo_id, err)
