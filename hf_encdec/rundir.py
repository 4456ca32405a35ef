"""The output directory: the names a run writes there and who wrote what (config/run_inputs.py keeps the inputs out).

DESIGN.md: hf-encdec writes only these names into OUTPUT_DIR and never replaces a file it did not write.
The checks run before any heavy work; checkpoints.move_into_place checks again at the very end.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError

STAGING_DIR = ".checkpoint-staging"
FINAL_STAGING_DIR = ".final-staging"
FINISHED_MARKER = "metrics.json"  # written last: a folder without it holds no finished run
RUN_CONFIG = "run_config.yaml"
CARD = "README.md"
PLOTS_DIR = "plots"  # loss, learning rate and metric curves (PNG), linked from the card
TRAINER_STATE = "trainer_state.json"  # the loss curve and evaluation history (transformers' TRAINER_STATE_NAME)
CARD_TAG = "hf-encdec"  # in the front matter of every model card we write

# Who wrote what in output_dir. The rule:
#   - a folder holding our run_config.yaml was started by hf-encdec, and what it holds at these names is a
#     run's, except a README.md whose front matter lacks the hf-encdec tag (a user's card, dropped in later);
#   - in any other folder, whatever sits at one of these names is the user's;
#   - a symlink or a read-only entry at one of these names is the user's too (we create neither);
#   - what is the user's is never replaced nor deleted, overwrite_output_dir included: the run is refused.
# Tokenizer file names depend on the tokenizer, hence the patterns; the final move checks the exact names.
FINAL_OUTPUTS = ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                 "adapter_config.json", "preprocessor_config.json", "processor_config.json", "tokenizer*",
                 "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt", "*.model", "*.spm",
                 "chat_template.jinja", "training_args.bin", "decoder_tokenizer", "merged", "presets", PLOTS_DIR,
                 CARD, FINISHED_MARKER, "predictions.jsonl", TRAINER_STATE)
RUN_STATE = (RUN_CONFIG, "checkpoint-*", STAGING_DIR, FINAL_STAGING_DIR)

def is_output_name(name: str) -> bool:
    """Whether a run writes (or removes) an entry of this name at the top of output_dir."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in FINAL_OUTPUTS + RUN_STATE)


def started_by_us(out: Path) -> bool:
    """Whether output_dir holds the run_config.yaml of an hf-encdec run (see the rule above)."""
    import yaml

    saved = out / RUN_CONFIG
    if not saved.is_file() or saved.is_symlink():
        return False
    try:
        values = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(values, dict) and {"output_dir", "task"} <= values.keys()


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
