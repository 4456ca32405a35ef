"""The model card: what was trained, on what, how well, how it was trained, and how to use it with transformers 5.

Its metadata (base model, datasets, language, license, tags, library and the scores as `model-index`)
is what the Hub shows and searches; `ModelCard.load(...).data` reads it back. The sections follow the
Hub's model-card guide; the two only the author can write ("Intended uses & limitations", "Training
data") are left for them to fill. No local path goes into a card: a local base model is named by its
folder, and the usage names the Hub repo (or the run folder as the user named it).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..config.keys import TRAINING_DEFAULTS
from ..config.run_config import RunConfig, is_local_path, read_saved_config
from ..console import duration
from .plots import plot_files
from ..config.presets import DECODING_DEFAULTS
from ..rundir import (ADAPTER_CONFIG, CARD, CARD_TAG, DECODER_TOKENIZER_DIR, PRESET_DIR, RUN_CONFIG, TRAINER_STATE,
                      is_our_card, read_metrics, write_atomically)
from ..data.tasks import TaskAdapter, get_task

logger = logging.getLogger("hf_encdec.card")

HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_steps",
                   "weight_decay", "lr_scheduler_type", "label_smoothing_factor", "seed", "bf16", "fp16")
# The versions a run records in metrics.json and its card lists, ours first (as installed: pyproject.toml's).
FRAMEWORKS = ("hf-encdec", "transformers", "torch", "peft", "datasets", "tokenizers", "accelerate", "sacrebleu")
TO_FILL = "More information needed"

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
decoder_tokenizer = AutoTokenizer.from_pretrained("{path}", subfolder="{decoder_dir}")  # writes the output
model = EncoderDecoderModel.from_pretrained("{path}")
inputs = tokenizer(["{prefix}your text here"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs)  # start, end and pad tokens come from generation_config.json
print(decoder_tokenizer.batch_decode(outputs, skip_special_tokens=True))
```'''

ADAPTER_USAGE = '''```python
from peft import PeftModel
from transformers import {imports}, GenerationConfig

tokenizer = AutoTokenizer.from_pretrained("{path}")
base = {base}
model = PeftModel.from_pretrained(base, "{path}")
inputs = tokenizer(["{prefix}your text here"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained("{path}"))
print({output_tokenizer}.batch_decode(outputs, skip_special_tokens=True))
```'''

METHOD_NAMES = {"lora": "LoRA", "ia3": "IA3"}  # as the papers and peft write them

PAIR_ADAPTER_NOTE = ("The base is the warm-started pair rebuilt from its two checkpoints. When the decoder "
                     "tokenizer gained a pad token, resize first: `base.decoder.resize_token_embeddings(len("
                     "decoder_tokenizer))`. `hf-encdec merge --model DIR` does all of this and saves a merged "
                     "model.")

FILE_USAGE = ("To translate or rewrite a whole file with token-budget batching and the named decoding presets: "
              "`hf-encdec generate --model {path} --input inputs.txt --output outputs.txt`.")

# Metrics that describe the run rather than the model's quality stay out of the model-index.
NOT_SCORES = ("runtime", "per_second", "gen_len", "loss")


def write_model_card(output_dir: Path, config: RunConfig, task: TaskAdapter, metrics: dict[str, Any],
                     repo_id: str | None = None, *, folder: Path | None = None) -> None:
    """README.md of the run in output_dir, written in `folder` (default output_dir), which holds the run's files.

    With `repo_id` the title and usage name the Hub repo instead of the folder. The card is written
    whole or not at all, and its front matter carries the hf-encdec tag that tells it from a user's.
    The evaluations and the steps actually run come from the folder's trainer_state.json.
    """
    from huggingface_hub import ModelCard, ModelCardData

    d = config.data
    folder = folder or output_dir
    adapter = (folder / ADAPTER_CONFIG).exists()
    path = _model_ref(config, output_dir, repo_id)
    name = path.rsplit("/", 1)[-1]
    state = _trainer_state(folder) or _trainer_state(output_dir)  # a merged push's folder has none: the run's
    # The Hub's `language` takes ISO 639 codes: eng_Latn (NLLB) is eng, en_XX (mBART) en.
    languages = list(dict.fromkeys(re.split(r"[_-]", lang)[0] for lang in (d.source_lang, d.target_lang, d.lang)
                                   if lang))
    scores = _eval_results(metrics, task, d)
    bases = _base_models(config)
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
        (f"# {name}\n\nA {task.name} {f'{METHOD_NAMES.get(method, method)} adapter' if adapter else 'model'} {_origin(config)} "
         "with hf-encdec." + _notes(config)),
        "## Model description\n\n" + _model_section(metrics.get("model", {})),
        f"## Intended uses & limitations\n\n{TO_FILL}: what the model is for, the inputs it expects, and where "
        "it is known to fail.",
        f"## Training data\n\n{TO_FILL}: where the data comes from, its license, and how it was cleaned.\n\n"
        "The splits as hf-encdec read them:\n\n" + _data_table(metrics.get("data", {}), config),
        "## Results\n\n" + _results_table(metrics),
        "## Training procedure\n\n" + _procedure(metrics, state) + "\n\n" + _hyperparameter_table(config)
        + _evaluations(state, metrics) + _curves(folder),
        "## Framework versions\n\n" + _versions(metrics),
        "## Usage\n\n" + _usage(config, path, adapter) + _presets_usage(folder, path) + "\n\n"
        + FILE_USAGE.format(path=path),
    ]
    write_atomically(folder / CARD, [str(ModelCard("\n\n".join(sections) + "\n"))])


def _model_ref(config: RunConfig, output_dir: Path, repo_id: str | None) -> str:
    """What the usage loads: the Hub repo when known, else the run folder as the user named it (never absolute)."""
    if repo_id:
        return repo_id
    hub_model_id = config.training.get("hub_model_id")
    if hub_model_id and config.training.get("push_to_hub"):
        return str(hub_model_id)
    given = Path(str(config.training.get("output_dir") or output_dir))
    return str(given) if not given.is_absolute() and ".." not in given.parts else output_dir.name


def _base_models(config: RunConfig) -> list[str]:
    """The Hub ids the metadata names as base_model: base_model if set, else the model's inputs that are Hub ids."""
    m = config.model
    first = config.run.base_model or m.model_name_or_path
    return [b for b in map(_hub_id, (first, m.encoder_name_or_path, m.decoder_name_or_path)) if b]


def _origin(config: RunConfig) -> str:
    m = config.model
    if m.encoder_name_or_path:
        return (f"warm-started from the encoder {_shown(m.encoder_name_or_path)} and the decoder "
                f"{_shown(m.decoder_name_or_path)} (an `EncoderDecoderModel`)")
    if not m.model_name_or_path:
        return (f"trained from scratch ({m.model_config.get('architecture')} architecture, "
                f"tokenizer trained on the training data)")
    return f"fine-tuned from {_shown(config.run.base_model or m.model_name_or_path)}"


def _shown(name: str) -> str:
    """A Hub id as it is; a local checkpoint by its folder name only (no local paths on the Hub)."""
    hub_id = _hub_id(name)
    return f"`{hub_id}`" if hub_id else f"a local model: `{_folder_name(name)}`"


def _folder_name(name: str) -> str:
    return Path(name).expanduser().resolve().name


def _local_bases(config: RunConfig) -> list[str]:
    m = config.model
    first = None if config.run.base_model else m.model_name_or_path
    return [name for name in (first, m.encoder_name_or_path, m.decoder_name_or_path) if name and not _hub_id(name)]


def _notes(config: RunConfig) -> str:
    """What the author should fix before sharing: a base model the card cannot name, and a missing license."""
    notes = []
    local = _local_bases(config)
    if local:
        names = ", ".join(f"`{_folder_name(name)}`" for name in local)
        fix = ("warm-start from their Hub ids" if config.model.encoder_name_or_path else
               "set `base_model: OWNER/NAME` (its Hub id) in the recipe, or in this run's run_config.yaml before "
               "`hf-encdec push`,")
        notes.append(f"> **The base is a local model ({names})**, so this card cannot link it: {fix} to name it "
                     "here and in the metadata.")
    if not config.run.license:
        notes.append("> **No license is set**, so others cannot tell whether they may use this model. Set "
                     "`license` (e.g. `--license apache-2.0`, the base model's license at most), or add it to this "
                     "run's run_config.yaml before `hf-encdec push`.")
    return "".join(f"\n\n{note}" for note in notes)


def _model_section(model: dict[str, Any]) -> str:
    if not model:
        return "(not recorded)"
    trainable, total = model["trainable_parameters"], model["total_parameters"]
    lines = [f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)."]
    if "warm_start" in model:
        w = model["warm_start"]
        lines.append(f"Pretrained: the encoder ({_shown(w['encoder'])}) and the decoder's self-attention and "
                     f"feed-forward layers ({_shown(w['decoder'])}). Started random: "
                     + ", ".join(f"`{part}`" + (" (unused, frozen)" if part in w.get("unused", []) else "")
                                 for part in w["random_init"]) + ".")
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
        base = (f'EncoderDecoderModel.from_encoder_decoder_pretrained("{_loadable(m.encoder_name_or_path)}", '
                f'"{_loadable(m.decoder_name_or_path)}"){_local_comment(m.encoder_name_or_path, m.decoder_name_or_path)}'
                f'\ndecoder_tokenizer = AutoTokenizer.from_pretrained("{path}", subfolder="{DECODER_TOKENIZER_DIR}")')
        usage = ADAPTER_USAGE.format(path=path, base=base, prefix=prefix, output_tokenizer="decoder_tokenizer",
                                     imports="AutoTokenizer, EncoderDecoderModel")
        return usage + "\n\n" + PAIR_ADAPTER_NOTE
    if adapter:
        name = config.run.base_model or m.model_name_or_path
        base = f'AutoModelForSeq2SeqLM.from_pretrained("{_loadable(name)}"){_local_comment(name)}'
        return ADAPTER_USAGE.format(path=path, base=base, prefix=prefix, output_tokenizer="tokenizer",
                                    imports="AutoModelForSeq2SeqLM, AutoTokenizer")
    if m.encoder_name_or_path:
        return PAIR_USAGE.format(path=path, prefix=prefix, decoder_dir=DECODER_TOKENIZER_DIR)
    return USAGE.format(path=path, prefix=prefix)


def _loadable(name: str) -> str:
    return _hub_id(name) or _folder_name(name)


def _local_comment(*names: str) -> str:
    local = [_folder_name(name) for name in names if not _hub_id(name)]
    return f"  # {', '.join(dict.fromkeys(local))}: a local model; give its path or Hub id" if local else ""


def _presets_usage(output_dir: Path, path: str) -> str:
    names = sorted(p.stem for p in (output_dir / PRESET_DIR).glob("*.json"))
    if not names:
        return ""
    return (f"\n\nNamed decoding presets: {', '.join(f'`{n}`' for n in names)}. Pick one with "
            f"`model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(\"{path}\", "
            f"\"{PRESET_DIR}/{names[0]}.json\"))` (`from transformers import GenerationConfig`).")


def _hub_id(name: str | None) -> str | None:
    """A Hub id, or None for a local path (the card's metadata may only name Hub repos)."""
    if not name or is_local_path(name):
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


def _data_table(data: dict[str, Any], config: RunConfig) -> str:
    rows = ["| split | origin | rows | dropped | source tokens p50/p99 | target tokens p50/p99 |", "|---|---|---|---|---|---|"]
    hub_dataset = _hub_id(config.data.dataset_name)
    for name, stats in data.items():
        src, tgt = stats["source_tokens"], stats["target_tokens"]
        origin = stats["origin"] if hub_dataset else Path(stats["origin"]).name  # a file by its name only
        rows.append(f"| {name} | {origin} | {stats['rows']} | {stats['dropped']} | "
                    f"{src['p50']}/{src['p99']} | {tgt['p50']}/{tgt['p99']} |")
    return "\n".join(rows)


def _results_table(metrics: dict[str, Any]) -> str:
    rows = ["| split | metric | value |", "|---|---|---|"]
    for split in ("validation", "test"):
        for key, value in metrics.get(split, {}).items():
            if not key.endswith(("runtime", "per_second")):
                rows.append(f"| {split} | {key} | {_number(value)} |")
    signatures = metrics.get("signatures") or {}
    notes = "".join(f"\n\n`{name}` signature: `{sig}`" for name, sig in signatures.items())
    preset = metrics.get("preset")
    decoded = f"Scores of the final model, decoded with {_preset_words(preset)}.\n\n" if preset else ""
    return decoded + "\n".join(rows) + notes


def _preset_words(preset: dict[str, Any]) -> str:
    """"the `beam` preset (num_beams 4, early_stopping True, max_new_tokens 9)": the fields off the defaults."""
    fields = {k: v for k, v in preset.items()
              if k != "name" and v is not None and (k not in DECODING_DEFAULTS or DECODING_DEFAULTS[k] != v)}
    shown = ", ".join(f"{key} {value}" for key, value in fields.items())
    return f"the `{preset['name']}` preset" + (f" ({shown})" if shown else "")


def _procedure(metrics: dict[str, Any], state: dict[str, Any]) -> str:
    """The steps and epochs actually run (max_steps may stop long before num_train_epochs), the time and hardware."""
    train = metrics.get("train", {})
    steps = state.get("global_step", train.get("step"))
    epochs = state.get("epoch", train.get("epoch"))
    if steps is None:
        return "(not recorded)"
    line = f"Trained for {steps} optimizer steps ({epochs:.2f} epochs)" if epochs is not None else \
        f"Trained for {steps} optimizer steps"
    if "train_runtime" in train:
        line += f" in {duration(train['train_runtime'])}"
    environment = metrics.get("environment")
    if environment:
        processes = environment["processes"]
        line += f" on {environment['hardware']}, {processes} process{'es' if processes > 1 else ''}"
    if "train_loss" in train:
        line += f"; mean training loss {_number(train['train_loss'])}"
    return line + "."


def _hyperparameter_table(config: RunConfig) -> str:
    from ..config.training_args import build_training_arguments

    defaults = build_training_arguments({"output_dir": TRAINING_DEFAULTS["output_dir"]})
    rows = ["| key | value |", "|---|---|"]
    max_steps = config.training.get("max_steps", defaults.max_steps)
    # max_steps, when set, ends the run whatever num_train_epochs says: only the limit that applied is shown.
    limit = ("max_steps", max_steps) if max_steps and max_steps > 0 else \
        ("num_train_epochs", config.training.get("num_train_epochs", defaults.num_train_epochs))
    for key in HYPERPARAMETERS:
        value = config.training.get(key, getattr(defaults, key))
        rows.append(f"| {key} | {getattr(value, 'value', value)} |")  # an enum default shows its value
    rows.insert(2, f"| {limit[0]} | {limit[1]} |")
    if config.batching.strategy() == "token_budget":
        rows.append(f"| max_tokens | {config.batching.max_tokens} (token-budget batches: "
                    "per_device_train_batch_size unused) |")
    for key in ("max_source_length", "max_target_length", "source_prefix"):
        rows.append(f"| {key} | {getattr(config.data, key)} |")
    rows.append(f"| eval_preset | {config.run.eval_preset} |")
    return "\n".join(rows)


def _evaluations(state: dict[str, Any], metrics: dict[str, Any]) -> str:
    """One row per evaluation during training: step, epoch, the training loss then, and the validation scores."""
    history = state.get("log_history", [])
    evaluations = [entry for entry in history if any(k.startswith("eval_") for k in entry)]
    if not evaluations:
        return "\n\nNo evaluation ran during training (eval_strategy no, or fewer steps than eval_steps)."
    keys = list(dict.fromkeys(["eval_loss", *(k for entry in evaluations for k in entry
                                              if k.startswith("eval_") and not k.endswith(("runtime", "per_second")))]))
    header = ["step", "epoch", "training loss", *(k.removeprefix("eval_").replace("loss", "validation loss")
                                                  for k in keys)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in evaluations:
        losses = [e["loss"] for e in history if "loss" in e and e.get("step", 0) <= entry.get("step", 0)]
        cells = [entry.get("step"), entry.get("epoch"), losses[-1] if losses else None, *(entry.get(k) for k in keys)]
        rows.append("| " + " | ".join("" if c is None else str(_number(c)) for c in cells) + " |")
    preset = (metrics.get("eval_preset") or {}).get("name")
    decoded = f", decoded with the `{preset}` preset" if preset else ""
    return f"\n\n### Evaluations during training\n\nOn the validation split{decoded}:\n\n" + "\n".join(rows)


def _curves(folder: Path) -> str:
    plots = plot_files(folder)
    if not plots:
        return ""
    images = "\n\n".join(f"![{p.stem.replace('_', ' ')}]({p.parent.name}/{p.name})" for p in plots)
    return "\n\n### Training curves\n\n" + images  # relative paths: the Hub shows them from the repo


def _versions(metrics: dict[str, Any]) -> str:
    versions = (metrics.get("environment") or {}).get("versions")
    if not versions:
        return "(not recorded)"
    return "\n".join(f"- {name} {version}" for name, version in versions.items())


def _number(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _trainer_state(folder: Path) -> dict[str, Any]:
    path = folder / TRAINER_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not saved (or unreadable): the card says what metrics.json knows
        return {}
    return state if isinstance(state, dict) else {}


def run_environment(on_gpu: bool, processes: int) -> dict[str, Any]:
    """Hardware, process count and library versions of this run: for metrics.json and the card."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    hardware = f"GPU: {torch.cuda.get_device_name(0)}" if on_gpu else f"CPU: {_cpu_name()} ({os.cpu_count()} cores)"
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # an optional one (peft's are all required, sacrebleu too): left out
            continue
    return {"hardware": hardware, "processes": processes, "versions": versions}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def refresh_model_card(folder: Path, repo_id: str, run_folder: Path | None = None) -> None:
    """Rewrite an hf-encdec run's card in `folder` so its title and usage name the Hub repo.

    `run_folder` is the run's own folder when `folder` holds its adapter merged into the base (push --merge_lora).
    """
    saved = folder / RUN_CONFIG
    card = folder / CARD
    if not saved.exists() or (card.exists() and not is_our_card(card)):
        return  # not an hf-encdec run, or the user's own card in place of ours: pushed as it is
    config = read_saved_config(folder)
    metrics = read_metrics(folder)
    try:
        write_model_card(run_folder or folder, config, get_task(config.data.task), metrics, repo_id=repo_id,
                         folder=folder)
    except OSError as err:  # a read-only run folder (or a full disk) is still pushed, with the card it holds
        logger.warning("cannot rewrite %s to name %s (%s): pushing it as it is", card, repo_id, err)
