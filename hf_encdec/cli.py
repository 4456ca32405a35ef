"""`hf-encdec COMMAND ...`: argument parsing and error reporting only.

Every command runs through the public API (hf_encdec/__init__.py), so the two cannot drift; the
keys and their help come from config/. Heavy libraries (torch, transformers) are imported by the
API's functions, never here, so `hf-encdec --help` answers at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from collections.abc import Callable

import hf_encdec

from .errors import ConfigError, UserError, did_you_mean, disk_full, is_disk_full

USAGE = """usage: hf-encdec COMMAND [ARGS] [--quiet | --verbose] [--debug]

Fine-tune Hugging Face encoder-decoder models (T5, BART, Marian, ...) with one command.

commands:
  train [RECIPE.yaml] [--key value ...]   fine-tune or train from scratch; any recipe key
                                          or Seq2SeqTrainingArguments key can be given as a flag;
        [--num_processes N]               N processes through accelerate launch (one per GPU)
        [--accelerate_config FILE]        an accelerate config (configs/accelerate/: DDP, FSDP, DeepSpeed)
  merge --model DIR [--output DIR] [--base ID_OR_DIR]
                                          merge a LoRA/IA3 run's adapter into its base model
                                          (default output DIR/merged; loads with transformers alone)
  push --model DIR --repo_id OWNER/NAME   upload a finished run to the Hub: model, tokenizer,
       [--private] [--revision BRANCH]    generation config and presets, run_config.yaml,
       [--commit_message M]               metrics.json, model card; the token comes from
       [--merge_lora]                     HF_TOKEN or `hf auth login`
  generate --model DIR --input FILE --output FILE [--preset NAME] [--max_tokens N | --batch_size N]
                                          run a model over a file: ordered, resumable, token-budget batches
  evaluate --model DIR --data FILE [--preset NAME]
                                          score a model on a file with references (the task's metrics)

examples:
  hf-encdec train tasks/quickstart.yaml
  hf-encdec train tasks/translation.yaml --learning_rate 3e-4 --output_dir runs/x
  hf-encdec train --model_name_or_path t5-small --train_file pairs.jsonl --max_steps 1000
  hf-encdec train tasks/translation.yaml --num_processes 4
  hf-encdec train --help                  every key, with its meaning
  hf-encdec merge --model runs/t5-lora
  hf-encdec push --model runs/quickstart --repo_id me/dates-t5 --private
  hf-encdec generate --model runs/quickstart --input dates.txt --output out.jsonl --preset beam
  hf-encdec generate --model runs/x --input in.jsonl --output nbest.jsonl --preset nbest --num_beams 8
  hf-encdec evaluate --model runs/x --data test.jsonl --preset beam

every command:
  --quiet                                 only warnings, errors and the result (model saved to ...)
  --verbose                               every library warning and log too (transformers, datasets)
  --debug                                 the traceback of user errors too

exit codes: 0 success, 2 a user error (one line says what, where and how to fix it),
1 an internal failure.
"""

# Flags every command takes, handled here and taken out of its arguments.
GLOBAL_FLAGS = ("--debug", "--quiet", "--verbose")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    valued = next((a for a in argv if a.split("=", 1)[0] in GLOBAL_FLAGS and "=" in a), None)
    if valued:
        print(f"hf-encdec: error: {valued.split('=', 1)[0]} takes no value, got {valued!r} (pass it alone)",
              file=sys.stderr)
        return 2
    if "--quiet" in argv and "--verbose" in argv:
        print("hf-encdec: error: --quiet and --verbose: choose one", file=sys.stderr)
        return 2
    verbosity = "quiet" if "--quiet" in argv else "verbose" if "--verbose" in argv else "normal"
    argv = [a for a in argv if a not in GLOBAL_FLAGS]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        hint = did_you_mean(command, COMMANDS) or f"commands: {', '.join(COMMANDS)}"
        print(f"hf-encdec: error: unknown command {command!r} ({hint})", file=sys.stderr)
        return 2
    from .console import reporting

    # main() may run in-process (tests, notebooks): reporting() leaves the caller's logging as it was.
    with reporting(verbosity, command_line=True):
        try:
            return COMMANDS[command](args)
        except UserError as err:
            return _report(err, debug)
        except Exception as err:
            refused = _refused_write(err)
            if refused is None:
                raise
            return _report(refused, debug)
        except KeyboardInterrupt:
            print("hf-encdec: interrupted", file=sys.stderr)
            return 130


def _refused_write(err: Exception) -> UserError | None:
    """A full disk or a refused file access that no closer boundary caught, as the user's error; else None (a bug)."""
    path = getattr(err, "filename", None) or "the output"
    if is_disk_full(err):
        # Every file we finish is renamed into place, so what is complete stays complete. The writes
        # that can resume (generate, checkpoints) say more on their own.
        kept = "finished files and complete checkpoints are kept; partial ones are never renamed into place"
        return disk_full(path, kept)
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(f"permission denied ({err.strerror})", path=str(path),
                           hint="check the permissions of this file and its folder, or choose another path")
    return None


def _report(err: UserError, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    from .distributed import report_launched_error

    line = f"hf-encdec: error: {err.one_line()}"
    if not report_launched_error(line):
        print(line, file=sys.stderr)
    return 2


def train_command(args: list[str]) -> int:
    from .config.coercion import parse_overrides
    from .config.run_config import load_config

    if "-h" in args or "--help" in args:
        print(train_help())
        return 0
    from .distributed import join_cpu_processes, launch, pop_launch_options, wants_launch, without_launch_options

    join_cpu_processes()
    recipe = args[0] if args and not args[0].startswith("--") else None
    overrides = parse_overrides(args[1:] if recipe else args)
    launch_options = pop_launch_options(overrides)
    config = load_config(recipe, overrides)  # validated here, before any process starts
    if wants_launch(launch_options):
        return launch(launch_options, without_launch_options(args))
    hf_encdec.train(config)  # it ends with the summary, and `model saved to DIR` on stdout
    return 0


def push_command(args: list[str]) -> int:
    parser = _ArgumentParser(prog="hf-encdec push", description="Upload a finished run to the Hub. The token "
                             "comes from HF_TOKEN or the saved login (`hf auth login`); it is never printed.")
    parser.add_argument("--model", required=True, metavar="DIR", help="output_dir of a finished run")
    parser.add_argument("--repo_id", required=True, metavar="OWNER/NAME", help="the Hub repo (created if absent)")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps "
                        "its visibility)")
    parser.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if absent)")
    parser.add_argument("--commit_message", metavar="M", help="the commit's message")
    parser.add_argument("--merge_lora", action="store_true", help="push the LoRA adapter merged into its base "
                        "model instead of the adapter")
    options = parser.parse_args(args)
    url = hf_encdec.push(options.model, options.repo_id, private=True if options.private else None,
                         revision=options.revision, commit_message=options.commit_message,
                         merge_lora=options.merge_lora)
    print(f"pushed {options.model} to {url}")
    return 0


def train_help() -> str:
    import dataclasses

    from .config.keys import ALIASES, GROUPS, TRAINING_DEFAULT_NOTES, TRAINING_DEFAULTS

    lines = ["usage: hf-encdec train [RECIPE.yaml] [--key value ...]", ""]
    for group, cls in GROUPS.items():
        lines.append(f"{group} keys:")
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            extra = f" [{'|'.join(choices)}]" if choices else ""
            lines.append(f"  --{f.name:<28} {f.metadata.get('help', '')}{extra} (default: {f.default!r})")
        lines.append("")
    lines.append("every Seq2SeqTrainingArguments key is accepted too; hf-encdec's own defaults for them:")
    lines.extend(f"  --{key:<28} {value!r}{TRAINING_DEFAULT_NOTES.get(key, '')}"
                 for key, value in TRAINING_DEFAULTS.items())
    lines.append("")
    lines.append("several processes (see README, Scaling out):")
    lines.append(f"  --{'num_processes':<28} start N processes with accelerate launch (one per GPU; gloo on CPU)")
    lines.append(f"  --{'accelerate_config':<28} launch with this accelerate config file (configs/accelerate/)")
    lines.append("")
    lines.append("aliases (names from run_translation.py / run_summarization.py):")
    lines.extend(f"  --{old:<28} same as --{new}" for old, new in ALIASES.items())
    return "\n".join(lines)


def merge_command(args: list[str]) -> int:
    from .config.coercion import coerce, parse_overrides

    usage = "usage: hf-encdec merge --model DIR [--output DIR] [--base ID_OR_DIR]"
    if "-h" in args or "--help" in args:
        print(usage)
        return 0
    options = parse_overrides(args)
    unknown = sorted(set(options) - {"model", "output", "base"})
    if unknown:
        raise ConfigError("unknown option", key=unknown[0], hint=usage)
    for key, value in options.items():
        coerce(key, value, str | None)  # a flag given without its value stops here
    if not options.get("model"):
        raise ConfigError("which run to merge?", key="model", hint="pass --model with the run's output_dir")
    merged = hf_encdec.merge(options["model"], options.get("output"), options.get("base"))
    print(f"merged model saved to {merged}")
    return 0


def generate_command(args: list[str]) -> int:
    from .config.job_keys import GenerateOptions

    values = _job_values(args, "generate", GenerateOptions)
    if values is not None:
        hf_encdec.generate_file(**values)
    return 0


def evaluate_command(args: list[str]) -> int:
    from .config.job_keys import EvaluateOptions

    values = _job_values(args, "evaluate", EvaluateOptions)
    if values is not None:
        print(json.dumps(hf_encdec.evaluate(**values), indent=2))
    return 0


def _job_values(args: list[str], command: str, options_class: type) -> dict | None:
    """The flat keys of a generate/evaluate job, checked; None after printing --help."""
    from .config.coercion import parse_overrides
    from .config.job_keys import split_options

    if "-h" in args or "--help" in args:
        print(options_help(command, options_class))
        return None
    values = parse_overrides(args)
    split_options(options_class, values)  # a missing --model is reported here like any other mistake
    return values


def options_help(command: str, options_class: type) -> str:
    """The required keys first, then the others as declared (the shared ones, then the command's own)."""
    import dataclasses

    fields = dataclasses.fields(options_class)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    lines = [f"usage: hf-encdec {command} --key value ...", ""]
    for f in required + [f for f in fields if f not in required]:
        default = "required" if f in required else f"default: {f.default!r}"
        lines.append(f"  --{f.name:<20} {f.metadata['help']} ({default})")
    lines += ["",
              ("Any GenerationConfig field overrides the preset: --num_beams 6, --num_return_sequences 3, "
               "--max_new_tokens 64 ..."),
              ("presets: greedy, beam, beam-long, sample, nbest, the model's saved presets (presets/<name>.json) "
               "and yours (--presets FILE)")]
    return "\n".join(lines)


class _ArgumentParser(argparse.ArgumentParser):
    """Argument mistakes as a ConfigError: one line and exit code 2, like every other user error."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}", hint="see `hf-encdec push --help`")


COMMANDS: dict[str, Callable[[list[str]], int]] = {"train": train_command, "generate": generate_command,
                                                   "evaluate": evaluate_command, "merge": merge_command,
                                                   "push": push_command}
