"""What a run reads (its input keys), and that its output_dir overlaps none of it.

The names a run writes are rundir.py's; this checks a RunConfig's inputs against them, before any
heavy work.
"""

from __future__ import annotations

from pathlib import Path

from ..data.reader import PARALLEL_PLACEHOLDER
from ..errors import ConfigError
from ..rundir import is_output_name
from .run_config import RunConfig

# What a run reads. output_dir may not be one of them, nor lie inside one of their folders, nor hold one where
# the run writes: saving would overwrite the input (overwrite_output_dir never applies to inputs).
INPUT_KEYS = ("model_name_or_path", "tokenizer_name", "encoder_name_or_path", "decoder_name_or_path", "dataset_name",
              "train_file", "validation_file", "test_file", "presets", "resume_from_checkpoint")
FOLDER_INPUT_KEYS = ("model_name_or_path", "tokenizer_name", "encoder_name_or_path", "decoder_name_or_path",
                     "dataset_name")  # output_dir may not lie inside them either (a checkpoint is only read once)


def check_apart_from_inputs(config: RunConfig, out: Path) -> None:
    """output_dir is no input, lies in no input folder, and holds no input at a name the run writes or removes."""
    target = out.resolve()
    for key, path in local_inputs(config):
        if path == target:
            raise ConfigError(f"is the {key} ({path}): saving would overwrite it", key="output_dir", path=str(out),
                              hint="choose an --output_dir apart from the inputs")
        # A model or dataset folder, or a data file: a file input given as a folder is the data loader's to report.
        if path in target.parents and (key in FOLDER_INPUT_KEYS or path.is_file()):
            raise ConfigError(f"is inside the {key} {path}", key="output_dir", path=str(out),
                              hint="choose an --output_dir outside the inputs")
        if target not in path.parents or not is_output_name(path.relative_to(target).parts[0]):
            continue
        if key != "resume_from_checkpoint":
            raise ConfigError(f"holds the {key} {path}, where the run writes its outputs", key="output_dir",
                              path=str(out), hint="move the input out of output_dir, or choose another --output_dir")
        if config.run.overwrite_output_dir:  # a checkpoint of ours may be resumed from, but not cleared first
            raise ConfigError(f"{path} is inside output_dir, whose checkpoints overwrite_output_dir deletes",
                              key="resume_from_checkpoint", hint="drop --overwrite_output_dir to resume from it, or "
                              "copy the checkpoint out of output_dir first")


def local_inputs(config: RunConfig) -> list[tuple[str, Path]]:
    """(key, resolved path) of every input of the run that is on this machine; a {lang} pattern per language."""
    resume = config.training.get("resume_from_checkpoint")
    values = {**vars(config.model), **vars(config.data), "presets": config.run.presets,
              "resume_from_checkpoint": None if str(resume).lower() in ("true", "last", "false") else resume}
    langs = [lang for lang in (config.data.source_lang, config.data.target_lang) if lang]
    found = []
    for key in INPUT_KEYS:
        value = values.get(key)
        if not isinstance(value, str):
            continue  # unset, or a recipe's presets section
        names = [value.replace(PARALLEL_PLACEHOLDER, lang) for lang in langs] \
            if PARALLEL_PLACEHOLDER in value else [value]
        found += [(key, Path(name).expanduser().resolve()) for name in names if Path(name).expanduser().exists()]
    return found
