"""hf-encdec: fine-tune Hugging Face encoder-decoder models with one command.

The public API is what the CLI runs, command for command: `train(config)` takes a RunConfig, a
dict of flat keys, or a recipe path; `generate(model, inputs, preset=...)` runs a model over
sources, in order, and `generate_file(model, input, output)` over a file, resumably;
`evaluate(model, data_file, preset=...)` scores it on a file with references; `merge(model_dir)`
merges a LoRA/IA3 run's adapter into its base; `push(model_dir, repo_id)` uploads a finished run
to the Hub. Heavy libraries load on first use, so `import hf_encdec` stays cheap.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.run_config import RunConfig, load_config
from .errors import ConfigError, DataError, HubError, ModelError, UserError

if TYPE_CHECKING:
    from .training.run import TrainResult

__version__ = version("hf-encdec")  # declared once, in pyproject.toml
__all__ = ["ConfigError", "DataError", "HubError", "ModelError", "RunConfig", "UserError", "evaluate", "generate",
           "generate_file", "load_config", "merge", "push", "train"]


def train(config: RunConfig | dict[str, Any] | str, *, verbosity: str | None = None) -> TrainResult:
    """Fine-tune and save (see `hf-encdec train`); returns where the model is, its metrics and a few predictions.

    It reports through the `hf_encdec` logger: shown by default when logging is not configured,
    silenced with `logging.getLogger("hf_encdec").setLevel(logging.WARNING)`; `verbosity` "quiet",
    "normal" or "verbose" sets it as the command line's --quiet / --verbose do.
    """
    from .console import library_output, reporting
    from .training.run import train as _train

    with reporting(verbosity), library_output("transformers", "datasets"):
        return _train(config)


def push(model_dir: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
         commit_message: str | None = None, merge_lora: bool = False, token: str | None = None,
         verbosity: str | None = None) -> str:
    """Upload a finished run to the Hub (see `hf-encdec push`); returns the commit URL."""
    from .console import library_output, reporting
    from .publish.hub import push as _push

    with reporting(verbosity), library_output("transformers"):
        return _push(model_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
                     merge_lora=merge_lora, token=token)


def generate(model: Any, inputs: Any, preset: str | None = None, **options: Any) -> Any:
    """Predictions in input order: a list for a list, an iterator for any other iterable."""
    from .generation.generator import generate as _generate

    return _generate(model, inputs, preset, **options)


def generate_file(model: str, input: str, output: str, preset: str | None = None, *, verbosity: str | None = None,
                  **options: Any) -> dict[str, Any]:
    """Run a model over an input file into an output file, in input order and resumable (see `hf-encdec generate`);
    returns its counts (rows, generated, skipped, tokens, seconds ...)."""
    from .config.job_keys import GenerateOptions, split_options
    from .console import library_output, reporting
    from .generation.jobs import generate_file as _generate_file

    known, overrides = split_options(GenerateOptions, {"model": model, "input": input, "output": output,
                                                       "preset": preset, **options})
    with reporting(verbosity), library_output("transformers"):
        return _generate_file(GenerateOptions(**known), overrides)


def evaluate(model: str, data: str, preset: str | None = None, *, verbosity: str | None = None,
             **options: Any) -> dict[str, Any]:
    """Generate for a file with references and return the task's metrics (see `hf-encdec evaluate`)."""
    from .config.job_keys import EvaluateOptions, split_options
    from .console import library_output, reporting
    from .generation.jobs import evaluate_file

    known, overrides = split_options(EvaluateOptions, {"model": model, "data": data, "preset": preset, **options})
    with reporting(verbosity), library_output("transformers"):
        return evaluate_file(EvaluateOptions(**known), overrides)


def merge(model_dir: str | Path, output_dir: str | Path | None = None, base: str | None = None, *,
          verbosity: str | None = None) -> str:
    """Merge a LoRA/IA3 run's adapter into its base model (see `hf-encdec merge`); returns where it was saved
    (default MODEL_DIR/merged), a folder transformers alone loads."""
    from .console import library_output, reporting
    from .models.adapters import merge_saved

    with reporting(verbosity), library_output("transformers"):
        return merge_saved(str(model_dir), None if output_dir is None else str(output_dir), base)
