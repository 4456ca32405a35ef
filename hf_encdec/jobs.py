"""The file jobs behind `hf-encdec generate` and `hf-encdec evaluate`.

generate_file: check the input (one streaming pass) ──> load model and preset ──> resume
  where an interrupted run stopped ──> windows of rows ──> Generator ──> append in input order.
evaluate_file: references from a data file ──> the same Generator ──> the task's metrics.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import distributed
from .errors import ConfigError, DataError, did_you_mean
from .generation import (
    BACKENDS,
    DEFAULT_WINDOW,
    LoadedModel,
    check_batching,
    load_model,
    make_generator,
    prefix_for,
    resolve_preset,
)
from .resumable import ResumableOutput, refuse_finished
from .streaming import TEXT_COLUMN, Row, check_input, first_columns, input_format, iter_rows, source_of

logger = logging.getLogger("hf_encdec.generation")

SHOW_EXAMPLES = 5


@dataclass
class GenerateOptions:
    model: str = field(metadata={"help": "Model directory (full, LoRA adapter or warm-started pair) or Hub id."})
    input: str = field(metadata={"help": ".txt (one source a line), .jsonl, .csv, .tsv or .parquet."})
    output: str = field(metadata={"help": ".jsonl (input fields + prediction) or .txt (one prediction a line)."})
    preset: str | None = field(default=None, metadata={"help": "Decoding preset; default: the model's "
                                                       "generation_config.json."})
    presets: str | None = field(default=None, metadata={"help": "YAML/JSON file of your own presets."})
    max_tokens: int | None = field(default=None, metadata={"help": "Padded source tokens per batch (default 6000)."})
    batch_size: int | None = field(default=None, metadata={"help": "Fixed sources per batch instead of a budget."})
    source_column: str | None = field(default=None, metadata={"help": "Input column; default from the model's "
                                                              "run_config.yaml or the task's usual names."})
    source_prefix: str | None = field(default=None, metadata={"help": "Text before every source; default: the "
                                                              "model's training prefix."})
    max_source_length: int | None = field(default=None, metadata={"help": "Longer sources are truncated "
                                                                  "(counted in the summary)."})
    on_error: str | None = field(default=None, metadata={
        "help": "Bad rows: fail or skip. Default: fail on unreadable rows, skip (and report) empty sources.",
        "choices": ["fail", "skip"]})
    overwrite: bool = field(default=False, metadata={"help": "Replace a finished output file."})
    window: int = field(default=DEFAULT_WINDOW, metadata={"help": "Rows sorted together (and committed together)."})
    seed: int = field(default=42, metadata={"help": "Seed of sampling presets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code (moved-out decoding methods)."})
    allow_pickle: bool = field(default=False, metadata={"help": "Load pickle-only weights (pytorch_model.bin) "
                                                        "with weights_only=True; off: unpickling can run code."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    backend: str = field(default="transformers", metadata={
        "help": "transformers, or ct2: CTranslate2 (converted once, cached beside the model as <model>.ct2).",
        "choices": list(BACKENDS)})


@dataclass
class EvaluateOptions:
    model: str = field(metadata={"help": "Model directory or Hub id."})
    data: str = field(metadata={"help": "File with sources and references (the formats training reads)."})
    preset: str | None = field(default=None, metadata={"help": "Decoding preset; default: generation_config.json."})
    presets: str | None = field(default=None, metadata={"help": "YAML/JSON file of your own presets."})
    max_tokens: int | None = field(default=None, metadata={"help": "Padded source tokens per batch (default 6000)."})
    batch_size: int | None = field(default=None, metadata={"help": "Fixed sources per batch instead of a budget."})
    source_column: str | None = field(default=None, metadata={"help": "Default: the model's run_config.yaml."})
    target_column: str | None = field(default=None, metadata={"help": "Default: the model's run_config.yaml."})
    source_prefix: str | None = field(default=None, metadata={"help": "Default: the model's training prefix."})
    metrics: list[str] | None = field(default=None, metadata={"help": "Default: the model's task metrics."})
    output: str | None = field(default=None, metadata={"help": "Write the metrics to this .json file."})
    predictions: str | None = field(default=None, metadata={"help": "Write source/reference/prediction .jsonl."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code (moved-out decoding methods)."})
    allow_pickle: bool = field(default=False, metadata={"help": "Load pickle-only weights (pytorch_model.bin) "
                                                        "with weights_only=True; off: unpickling can run code."})
    backend: str = field(default="transformers", metadata={
        "help": "transformers, or ct2: CTranslate2 (converted once, cached beside the model as <model>.ct2).",
        "choices": list(BACKENDS)})


def split_options(cls: type, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat keys into (our options, GenerationConfig overrides), every value checked before the model loads."""
    from .coercion import coerce
    from .metrics import check_metric_names
    from .presets import check_fields, generation_fields, parse_value

    typed = typing.get_type_hints(cls)
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    ours, overrides, known = {}, {}, generation_fields()
    for key, value in values.items():
        if key in typed:
            ours[key] = coerce(key, value, typed[key])
        elif key in known:
            overrides[key] = parse_value(key, value)
        else:
            raise ConfigError("unknown option", key=key, hint=did_you_mean(key, [*typed, *known]) or "see --help")
    for key in required:
        if ours.get(key) is None:
            raise ConfigError("is required", key=key, hint=f"give --{key}")
    for f in dataclasses.fields(cls):
        choices, value = f.metadata.get("choices"), ours.get(f.name)
        if choices and value is not None and value not in choices:
            hint = did_you_mean(value, choices) or f"choose one of {', '.join(choices)}"
            raise ConfigError(f"unknown value {value!r}", key=f.name, hint=hint)
    check_batching(ours.get("max_tokens"), ours.get("batch_size"), ours.get("max_source_length"))
    check_metric_names(ours.get("metrics") or [])
    check_fields(None, overrides)
    return ours, overrides


# ----------------------------------------------------------------------------- input checks


def pick_source_column(loaded: LoadedModel, path: str, given: str | None) -> str:
    ext, _ = input_format(path)
    if ext == ".txt":
        return TEXT_COLUMN
    columns = first_columns(path)
    if given is not None:
        if columns and given not in columns:
            raise DataError(f"has no column '{given}' (columns: {', '.join(columns)})", path=path, column=given,
                            hint="set --source_column to one of the columns")
        return given
    from .tasks import TASKS

    trained = loaded.run_config.get("source_column") or loaded.run_config.get("source_lang")
    task = TASKS.get(loaded.run_config.get("task", "text2text"), TASKS["text2text"])
    for candidate in [trained, *(source for source, _ in task.column_candidates)]:
        if candidate in columns:
            return candidate
    if len(columns) == 1:
        return columns[0]
    raise DataError(f"cannot tell which column is the source (columns: {', '.join(columns)})", path=path,
                    hint="set --source_column")


def row_problem(row: Row, column: str) -> tuple[str | None, bool]:
    """(what is wrong, whether it is structural); (None, False) for a good row."""
    if row.record is None:
        return row.error, True
    source = source_of(row.record, column)
    if source is None:
        return f"missing source '{column}'", False
    if not source.strip():
        return "empty source", False
    return None, False


def scan_input(path: str, column: str, on_error: str | None) -> int:
    """One streaming pass before any generation: count rows, fail early on bad ones as `on_error` says."""
    total, bad = 0, []
    for row in iter_rows(path):
        total += 1
        problem, structural = row_problem(row, column)
        if problem and (on_error == "fail" or (structural and on_error is None)):
            hint = "fix the row, or pass --on_error skip to skip bad rows" if structural else \
                "fix the row, or leave --on_error unset to skip empty sources"
            raise DataError(problem, path=path, line=row.line, column=None if structural else column, hint=hint)
        if problem:
            bad.append(f"{path}:{row.line} ({problem})")
    if total == 0:
        raise DataError("has no rows", path=path, hint="add rows")
    if bad:
        logger.warning("%d of %d rows will be skipped (an empty line or null prediction in the output): %s",
                       len(bad), total, ", ".join(bad[:SHOW_EXAMPLES]))
    return total


# ----------------------------------------------------------------------------- generate


def generate_file(options: GenerateOptions, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the model over `options.input` into `options.output`; resumable, in input order."""
    check_input(options.input)
    out_ext, out_gz = input_format(options.output) if options.output.endswith((".jsonl", ".txt")) else ("", False)
    if out_ext not in (".jsonl", ".txt") or out_gz:
        raise ConfigError("the output must be a .jsonl or .txt file", key="output", path=options.output)
    refuse_finished(options.output, options.overwrite)  # before the model loads: fail fast
    if options.window < 1:
        raise ConfigError(f"must be a positive number of rows, got {options.window}", key="window")
    current = distributed.state()
    loaded = load_model(options.model, trust_remote_code=options.trust_remote_code,
                        allow_pickle=options.allow_pickle)
    column = pick_source_column(loaded, options.input, options.source_column)
    total = scan_input(options.input, column, options.on_error)
    config = resolve_preset(loaded, options.preset, presets_file=options.presets, overrides=overrides,
                            trust_remote_code=options.trust_remote_code)
    if out_ext == ".txt" and (config.num_return_sequences or 1) > 1:
        raise ConfigError("n-best output needs a .jsonl output", key="output", path=options.output,
                          hint="write to a .jsonl file, or set --num_return_sequences 1")
    with current.main_process_first():  # --backend ct2 converts the model once, on the main process
        generator = make_generator(loaded, config, backend=options.backend, max_tokens=options.max_tokens,
                                   batch_size=options.batch_size, seed=options.seed,
                                   max_source_length=options.max_source_length or
                                   loaded.run_config.get("max_source_length"))
    prefix = prefix_for(loaded, options.source_prefix)
    settings = {"model": str(Path(options.model).absolute()) if Path(options.model).exists() else options.model,
                "input": _file_identity(options.input), "column": column, "prefix": prefix,
                "generation": config.to_json_string(), "max_tokens": generator.max_tokens,
                "batch_size": options.batch_size, "window": options.window, "seed": options.seed,
                "max_source_length": generator.max_source_length, "format": out_ext, "backend": options.backend}
    # The output, its ledger and the report belong to the main process; the others send it their windows.
    # The output does not depend on the number of processes, so neither does the settings fingerprint:
    # a run killed with 4 processes can be finished by 1, and the reverse.
    output = ResumableOutput(options.output, settings, overwrite=options.overwrite)
    done = distributed.on_main(current, output.start)
    try:
        stats = _run(generator, output, options, column, prefix, total, done, out_ext, current)
    finally:
        output.close()
    if current.is_main_process:
        output.finish()
        _report(options.output, stats, generator.max_source_length)
    current.wait_for_everyone()  # every process returns once the output is complete
    return stats


def _file_identity(path: str) -> dict[str, Any]:
    stat = Path(path).stat()
    return {"path": str(Path(path).absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _run(generator, output: ResumableOutput, options: GenerateOptions, column: str, prefix: str,
         total: int, done: int, out_ext: str, current) -> dict[str, Any]:
    """Windows in input order; with N processes, process r generates window r of every N.

    Each round the processes' outputs are gathered in window order and the main process appends
    them and moves the ledger on: the partial file stays an ordered prefix of the single-process
    output (a window's batches, and a sampling window's seed, depend on the window alone).
    """
    from tqdm.auto import tqdm

    processes, rank = current.num_processes, current.process_index
    rows = itertools.islice(iter_rows(options.input), done, None)
    stats = {"rows": done, "generated": 0, "skipped": 0, "tokens": 0, "seconds": 0.0, "truncated": 0,
             "oom_splits": 0}
    start = time.perf_counter()
    show = options.progress and current.is_main_process
    with tqdm(total=total, initial=done, unit="rows", disable=not show, desc="generating") as bar:
        for first in itertools.count(done // options.window, processes):
            windows = [list(itertools.islice(rows, options.window)) for _ in range(processes)]
            if not windows[0]:
                break
            mine = _window_output(generator, windows[rank], first + rank, column, prefix, out_ext)
            texts = []
            for text, counts in distributed.gather_in_order(current, mine):
                texts.append(text)
                for key, value in counts.items():
                    stats[key] += value
            rows_done = sum(len(window) for window in windows)
            if current.is_main_process:
                output.append("".join(texts), rows_done)
            elapsed = time.perf_counter() - start
            bar.update(rows_done)
            bar.set_postfix_str(f"{stats['tokens'] / elapsed:.0f} tokens/s")
    for truncated, oom_splits in distributed.gather_in_order(current, (generator.truncated, generator.oom_splits)):
        stats["truncated"] += truncated
        stats["oom_splits"] += oom_splits
    stats["seconds"] = round(time.perf_counter() - start, 3)
    return stats


def _window_output(generator, window: list[Row], index: int, column: str, prefix: str,
                   out_ext: str) -> tuple[str, dict[str, int]]:
    """One window's output lines (one per input row) and its counts."""
    good = [i for i, row in enumerate(window) if row_problem(row, column)[0] is None]
    predictions = generator.run_window([prefix + source_of(window[i].record, column) for i in good], index)
    by_row = dict(zip(good, predictions))
    text = "".join(_format(row, by_row.get(i), column, out_ext, generator.nbest) for i, row in enumerate(window))
    return text, {"rows": len(window), "generated": len(good), "skipped": len(window) - len(good),
                  "tokens": sum(p.tokens for p in predictions)}


def _format(row: Row, prediction, column: str, out_ext: str, nbest: bool) -> str:
    if out_ext == ".txt":  # one line per input row, so the output lines up with the input
        return (" ".join(prediction.texts[0].split("\n")) if prediction else "") + "\n"
    if prediction is None:
        problem, _ = row_problem(row, column)
        record = dict(row.record) if row.record is not None else {"line": row.line}
        record.update({"prediction": None, "error": problem})
    elif nbest:
        record = {**row.record, "predictions": [{"text": t, "score": s} for t, s in
                                                zip(prediction.texts, prediction.scores)]}
    else:
        record = {**row.record, "prediction": prediction.texts[0]}
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def _report(path: str, stats: dict[str, Any], max_source_length: int | None) -> None:
    seconds = max(stats["seconds"], 1e-9)
    notes = []
    if stats["skipped"]:
        notes.append(f"{stats['skipped']} bad rows skipped")
    if stats["truncated"]:
        notes.append(f"{stats['truncated']} sources truncated to max_source_length={max_source_length}")
    if stats["oom_splits"]:
        notes.append(f"{stats['oom_splits']} batches split after running out of memory")
    logger.info("wrote %s: %d rows, %d generated in %.1fs (%.1f rows/s, %.0f tokens/s)%s", path, stats["rows"],
                stats["generated"], seconds, stats["generated"] / seconds, stats["tokens"] / seconds,
                "; " + "; ".join(notes) if notes else "")


# ----------------------------------------------------------------------------- evaluate


def evaluate_file(options: EvaluateOptions, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate for every row of a file with references and score with the task's metrics."""
    from .data import load_file_split
    from .metrics import check_metric_names, compute_metrics
    from .tasks import TASKS

    loaded = load_model(options.model, trust_remote_code=options.trust_remote_code,
                        allow_pickle=options.allow_pickle)
    trained = loaded.run_config
    task = TASKS.get(trained.get("task", "text2text"), TASKS["text2text"])
    names = options.metrics or trained.get("metrics") or task.default_metrics
    check_metric_names(names)
    split = load_file_split("test", options.data, source_column=options.source_column or trained.get("source_column"),
                            target_column=options.target_column or trained.get("target_column"),
                            source_lang=trained.get("source_lang"), target_lang=trained.get("target_lang"),
                            candidates=task.column_candidates, on_invalid="drop")
    config = resolve_preset(loaded, options.preset, presets_file=options.presets, overrides=overrides,
                            trust_remote_code=options.trust_remote_code)
    generator = make_generator(loaded, config, backend=options.backend, max_tokens=options.max_tokens,
                               batch_size=options.batch_size, max_source_length=trained.get("max_source_length"))
    prefix = prefix_for(loaded, options.source_prefix)
    predictions = []
    for index in range(0, len(split), DEFAULT_WINDOW):
        sources = [prefix + s for s in split.sources[index:index + DEFAULT_WINDOW]]
        predictions += [p.texts[0] for p in generator.run_window(sources, index // DEFAULT_WINDOW)]
    metrics = {**compute_metrics(names, predictions, split.targets), "rows": len(split), "dropped": split.dropped}
    if not distributed.state().is_main_process:  # under a launcher every process scores the whole file
        return metrics
    if options.output:
        Path(options.output).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if options.predictions:
        with open(options.predictions, "w", encoding="utf-8") as f:
            for line, source, reference, prediction in zip(split.lines, split.sources, split.targets, predictions):
                row = {"line": line, "source": source, "reference": reference, "prediction": prediction}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return metrics
