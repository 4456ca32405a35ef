"""The output directory: the names a run writes there, how a saved run is read back, and who wrote what
(config/run_inputs.py keeps the inputs out).

Every file name of the layout (DESIGN.md "Output directory") is spelled here and only here, the library's own
names (transformers', peft's) included, so that writers and readers cannot drift apart. A saved run is read
through read_run_config and read_adapter_config, and "is this run finished" is asked through is_finished.
DESIGN.md: hf-encdec writes only these names into OUTPUT_DIR and never replaces a file it did not write.
The checks run before any heavy work; checkpoints.move_into_place checks again at the very end.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelError

# The layout. A model folder's own files keep the library's names, so that vanilla transformers and peft load it.
MODEL_CONFIG = "config.json"  # transformers' CONFIG_NAME
GENERATION_CONFIG = "generation_config.json"  # transformers' GENERATION_CONFIG_NAME: the default preset
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME: present in a LoRA/IA3 run only
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json")  # a model's or an adapter's weights, maybe sharded
# What tokenizer.save_pretrained leaves, whatever the tokenizer's kind (tokenizer.json, spiece.model, vocab.json ...).
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt", "*.model",
                   "*.spm", "chat_template.jinja")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # image / audio processors
DECODER_TOKENIZER_DIR = "decoder_tokenizer"  # a warm-started pair's decoder tokenizer, when it has its own
MERGED_DIR = "merged"  # merge_lora: the adapter merged into its base
PRESET_DIR = "presets"  # presets/<name>.json, each loadable with GenerationConfig.from_pretrained
RUN_CONFIG = "run_config.yaml"
METRICS = "metrics.json"  # written last: a folder without it holds no finished run (is_finished)
PREDICTIONS = "predictions.jsonl"  # the test split's predictions
TRAINER_STATE = "trainer_state.json"  # the loss curve and evaluation history (transformers' TRAINER_STATE_NAME)
PLOTS_DIR = "plots"  # loss, learning rate and metric curves (PNG), linked from the card
CARD = "README.md"
CARD_TAG = "hf-encdec"  # in the front matter of every model card we write
TRAINING_ARGS = "training_args.bin"  # transformers' TRAINING_ARGS_NAME: a pickle, never kept (see checkpoints)
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoint-<step>, as the Trainer names them
COMPLETE_MARKER = "hf_encdec_complete.json"  # in a checkpoint-<step> folder once every rank's files are in it
STAGING_DIR = ".checkpoint-staging"
FINAL_STAGING_DIR = ".final-staging"

# Who wrote what in output_dir. The rule:
#   - a folder holding our run_config.yaml was started by hf-encdec, and what it holds at these names is a
#     run's, except a README.md whose front matter lacks the hf-encdec tag (a user's card, dropped in later);
#   - in any other folder, whatever sits at one of these names is the user's;
#   - a symlink or a read-only entry at one of these names is the user's too (we create neither);
#   - what is the user's is never replaced nor deleted, overwrite_output_dir included: the run is refused.
# Tokenizer file names depend on the tokenizer, hence the patterns; the final move checks the exact names.
FINAL_OUTPUTS = (*WEIGHT_FILES, MODEL_CONFIG, GENERATION_CONFIG, ADAPTER_CONFIG, *PROCESSOR_FILES, *TOKENIZER_FILES,
                 TRAINING_ARGS, DECODER_TOKENIZER_DIR, MERGED_DIR, PRESET_DIR, PLOTS_DIR, CARD, METRICS, PREDICTIONS,
                 TRAINER_STATE)
RUN_STATE = (RUN_CONFIG, f"{CHECKPOINT_PREFIX}*", STAGING_DIR, FINAL_STAGING_DIR)

REFETCH = "save the model again, or download it again"  # the fix for a saved file that does not read


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def is_output_name(name: str) -> bool:
    """Whether a run writes (or removes) an entry of this name at the top of output_dir."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in FINAL_OUTPUTS + RUN_STATE)


def started_by_us(out: Path) -> bool:
    """Whether output_dir holds the run_config.yaml of an hf-encdec run (see the rule above)."""
    if not (out / RUN_CONFIG).is_file() or (out / RUN_CONFIG).is_symlink():
        return False
    try:
        values = read_run_config(out)
    except ModelError:  # unreadable: not provably ours
        return False
    return {"output_dir", "task"} <= values.keys()


def is_finished(folder: Path) -> bool:
    """Whether `folder` holds a finished run: metrics.json moves into place last, so a stopped run has none."""
    return (folder / METRICS).exists()


def read_json(file: Path, key: str) -> Any:
    """A JSON file of a saved model or run; one that does not read is one line naming it (and its line)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"is not valid JSON ({err.msg} at column {err.colno})", path=str(file), line=err.lineno,
                         key=key, hint=f"fix the file, or {REFETCH}") from err
    except UnicodeDecodeError as err:
        raise ModelError("is not UTF-8 text", path=str(file), key=key, hint=f"fix the file, or {REFETCH}") from err
    except OSError as err:
        raise ModelError(f"cannot read the file ({err.strerror or err})", path=str(file), key=key,
                         hint="check its permissions") from err


def read_run_config(folder: Path, key: str = "model") -> dict[str, Any]:
    """A saved run's run_config.yaml as recorded ({} when there is none): every key, known to this version or not.

    Nothing is validated, converted or dropped, so a run saved by another version still reads; a typed view is
    built from these values (config.run_config.read_saved_config). A file that does not read is one line naming it.
    """
    import yaml

    file = folder / RUN_CONFIG
    if not file.is_file():
        return {}
    fix = ("fix the file, or delete it: it only records how the model was trained, so then pass --source_prefix "
           "and --max_source_length if it was trained with them")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ModelError("is not UTF-8 text", path=str(file), key=key, hint=fix) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ModelError(f"is not valid YAML ({getattr(err, 'problem', None) or err})", path=str(file),
                         line=mark.line + 1 if mark else None, key=key, hint=fix) from err
    except OSError as err:
        raise ModelError(f"cannot read the file ({err.strerror or err})", path=str(file), key=key,
                         hint="check its permissions") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ModelError(f"holds a {type(values).__name__}, expected a mapping of run settings", path=str(file),
                         key=key, hint=fix)
    return values


def read_metrics(folder: Path) -> dict[str, Any]:
    """A finished run's metrics.json ({} for an unfinished run)."""
    return read_json(folder / METRICS, key="model") if is_finished(folder) else {}


def read_adapter_config(folder: Path, key: str = "model") -> dict[str, Any] | None:
    """A saved adapter's adapter_config.json (None for a full model): peft's settings, its base model among them."""
    file = folder / ADAPTER_CONFIG
    if not file.is_file():
        return None
    values = read_json(file, key)
    if not isinstance(values, dict):
        raise ModelError(f"holds a {type(values).__name__}, expected peft's settings as a JSON object",
                         path=str(file), key=key, hint=f"fix the file, or {REFETCH}")
    return values


def adapter_base(folder: Path, key: str = "model") -> str | None:
    """The base model a saved adapter names (base_model_name_or_path): None for a full model or an unnamed base."""
    base = (read_adapter_config(folder, key) or {}).get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None


def is_our_card(path: Path) -> bool:
    """A README.md is ours when its front matter carries our tag: a user's card dropped in its place is not."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if not text.startswith("---\n") or "\n---" not in text[3:]:
        return False
    try:
        front = yaml.safe_load(text[4:text.index("\n---", 3)])
    except yaml.YAMLError:
        return False
    tags = front.get("tags") if isinstance(front, dict) else None
    return isinstance(tags, list) and CARD_TAG in tags


def _protected(entry: Path) -> bool:
    """A symlink or a read-only entry: never one we made (root writes through permission bits: read them)."""
    if entry.is_symlink():
        return True
    return not entry.stat().st_mode & 0o222 or not os.access(entry, os.W_OK)


def owned(entry: Path) -> bool:
    """Ours to replace: not protected, and a README.md only when it is our card."""
    return not _protected(entry) and (entry.name != CARD or is_our_card(entry))


def foreign_entries(out: Path) -> list[Path]:
    """What sits in output_dir at a name a run writes but is not hf-encdec's (the rule above)."""
    if not out.is_dir():
        return []
    ours = started_by_us(out)
    return [entry for entry in sorted(out.iterdir())
            if is_output_name(entry.name) and not (ours and owned(entry))]


def previous_outputs(out: Path) -> set[str]:
    """Names of the final outputs an earlier run of ours left (replaced, or removed when stale, at the end).

    Taken once output_dir is checked, so each of them is ours: the final move replaces nothing else.
    """
    if not out.is_dir():
        return set()
    return {entry.name for entry in out.iterdir()
            if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in FINAL_OUTPUTS)}


def refuse_foreign(entries: list[Path], *, hint: str) -> None:
    """One line naming what the run would have replaced, and why it is not ours."""
    if not entries:
        return
    first = entries[0]
    why = "is a symlink" if first.is_symlink() else "is read-only" if _protected(first) else \
        "was not written by hf-encdec"
    more = f" (and {len(entries) - 1} more: {', '.join(e.name for e in entries[1:4])})" if len(entries) > 1 else ""
    raise ConfigError(f"{first.name} {why}{more}, and this run writes that name: hf-encdec replaces only its own "
                      "files", key="output_dir", path=str(first), hint=hint)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked (a signal, a nearly full disk)
        view = view[os.write(fd, view):]


def write_atomically(path: str | Path, pieces: Iterable[str]) -> None:
    """Write `pieces` to `path` through a temporary file beside it: readers see the old file or the whole new one.

    A failure (a full disk included) removes the temporary file and raises the OSError for the caller to word."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666: the umask decides, as for open()
    try:
        for piece in pieces:
            write_all(fd, piece.encode("utf-8"))
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(temporary, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
