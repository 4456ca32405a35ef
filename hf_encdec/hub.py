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


def write_model_card(output_dir: Path, config: RunConfig, task: TaskAdapter, metrics: dict[str, Any]) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    d, m = config.data, config.model
    languages = [lang for lang in (d.source_lang, d.target_lang, d.lang) if lang]
    card_data = ModelCardData(
        base_model=m.model_name_or_path,
        datasets=[d.dataset_name] if d.dataset_name else None,
        language=languages or None,
        library_name="transformers",
        pipeline_tag=task.pipeline_tag,
        tags=["hf-encdec", task.name, "text2text-generation"],
    )
    origin = f"fine-tuned from `{m.model_name_or_path}`" if m.model_name_or_path else (
        f"trained from scratch ({m.model_config.get('architecture')} architecture, "
        f"tokenizer trained on the training data)")
    sections = [
        f"---\n{card_data.to_yaml()}\n---",
        f"# {output_dir.name}\n\nA {task.name} model {origin} with hf-encdec.",
        "## Data\n\n" + _data_table(metrics.get("data", {})),
        "## Results\n\n" + _results_table(metrics),
        "## Training hyperparameters\n\n" + _hyperparameter_table(config),
        "## Usage\n\n" + USAGE.format(path=output_dir, prefix=d.source_prefix or ""),
    ]
    ModelCard("\n\n".join(sections) + "\n").save(output_dir / "README.md")


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
