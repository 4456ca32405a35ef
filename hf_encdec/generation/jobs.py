"""The file jobs behind `hf-encdec generate` and `hf-encdec evaluate`.

generate_file: check the input (one streaming pass) ──> load model and preset ──> resume
  where an interrupted run stopped ──> windows of rows ──> Generator ──> append in input order.
evaluate_file: references from a data file ──> the same Generator ──> the task's metrics.

Both check every output path first (resumable.check_outputs: never an input, a folder that takes
files), so a mistake there costs no model load; generate then locks its output for the whole job.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from .. import console, distributed
from ..config.job_keys import DEFAULT_WINDOW, EvaluateOptions, GenerateOptions
from ..errors import ConfigError, DataError, disk_full, is_disk_full
from .generator import (
    LoadedModel,
    load_model,
    make_generator,
    prefix_for,
    resolve_preset,
    windows,
)
from .resumable import (
    ResumableOutput,
    check_outputs,
    fingerprint_file,
    fingerprint_model,
    refuse_finished,
)
from ..rundir import read_adapter_config, write_atomically
from ..data.columns import as_text, missing_column, pick_columns, text_problem
from ..data.formats import TEXT_COLUMN, Row, check_file, file_format, first_columns, iter_rows, no_rows_error

logger = logging.getLogger("hf_encdec.generation")

SHOW_EXAMPLES = 5


# ----------------------------------------------------------------------------- input checks


def check_input(path: str) -> None:
    check_file(path)
    if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would be empty on the second pass, a device endless
        raise DataError("is not a regular file (a pipe, socket or device)", path=path,
                        hint="save the input to a file first: it is read twice, once to check it and once to run")


def pick_source_column(loaded: LoadedModel, path: str, given: str | None) -> str:
    """--source_column, else the column the model was trained on, else one of the task's usual source names."""
    if file_format(path)[0] == ".txt":
        return TEXT_COLUMN
    columns = first_columns(path)
    if not columns:
        _refuse_without_columns(path, given)
        return given
    from ..data.tasks import TASKS

    trained = loaded.run_config.get("source_column") or loaded.run_config.get("source_lang")
    task = TASKS.get(loaded.run_config.get("task", "text2text"), TASKS["text2text"])
    source, _ = pick_columns(path, columns, source_column=given, target_column=None,
                             guesses=[(trained, None), *task.column_candidates], source_only=True)
    return source


def _refuse_without_columns(path: str, given: str | None) -> None:
    """No column seen: an empty file says so; otherwise the first row's problem, unless a column was given
    (then --on_error decides, row by row)."""
    first = next(iter_rows(path), None)
    if first is None:
        raise no_rows_error(path)
    if given is None:
        raise DataError(first.error or "has no columns", path=path, line=first.line,
                        hint="fix the file, or set --source_column and pass --on_error skip to skip bad rows")


def row_problem(row: Row, column: str) -> tuple[str | None, str | None]:
    """(what is wrong, how to fix it): the fix is None for a missing or empty source, which is skipped by
    default, and set for a row that cannot be read; (None, None) for a good row."""
    if row.record is None:
        return row.error, row.hint or "fix the row"
    value = row.record.get(column)
    problem = text_problem(value)
    if problem:
        return problem
    source = as_text(value)
    if source is None:
        return f"missing source '{column}'", None
    if not source.strip():
        return "empty source", None
    return None, None


def scan_input(path: str, column: str, on_error: str | None) -> int:
    """One streaming pass before any generation: count rows, fail early on bad ones as `on_error` says."""
    total, bad = 0, []
    for row in iter_rows(path):
        total += 1
        problem, fix = row_problem(row, column)
        structural = fix is not None
        if problem and (on_error == "fail" or (structural and on_error is None)):
            hint = f"{fix}, or pass --on_error skip to skip bad rows" if structural else \
                "fix the row, or leave --on_error unset to skip empty sources"
            raise DataError(problem, path=path, line=row.line, column=None if structural else column, hint=hint)
        if problem:
            bad.append(f"{path}:{row.line} ({problem})")
    if total == 0:
        raise no_rows_error(path)
    if bad:
        logger.warning("%d of %d rows will be skipped (an empty line or null prediction in the output): %s",
                       len(bad), total, ", ".join(bad[:SHOW_EXAMPLES]))
    return total


# ----------------------------------------------------------------------------- generate


def generate_file(options: GenerateOptions, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the model over `options.input` into `options.output`; resumable, in input order."""
    check_input(options.input)
    out_ext, out_gz = file_format(options.output) if options.output.endswith((".jsonl", ".txt")) else ("", False)
    if out_ext not in (".jsonl", ".txt") or out_gz:
        raise ConfigError("the output must be a .jsonl or .txt file", key="output", path=options.output)
    if options.window < 1:
        raise ConfigError(f"must be a positive number of rows, got {options.window}", key="window")
    output = ResumableOutput(options.output, overwrite=options.overwrite)
    check_outputs([("output", path) for path in output.files()],
                  {"input": options.input, "model": options.model, "presets": options.presets})
    refuse_finished(options.output, options.overwrite)  # before the model loads: fail fast
    current = distributed.state()
    try:
        distributed.on_main(current, output.lock)  # a second job on this output stops here, before a model loads
        return _generate(options, overrides, output, out_ext, current)
    finally:
        output.close()


def _generate(options: GenerateOptions, overrides: dict[str, Any] | None, output: ResumableOutput, out_ext: str,
              current) -> dict[str, Any]:
    input_fingerprint = _fingerprint_input(options.input)  # of the file the scan checks and the run reads
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
    # What the output depends on, part by part, so that a refused re-run can say which part changed.
    # The output does not depend on the number of processes, so neither do the parts:
    # a run killed with 4 processes can be finished by 1, and the reverse.
    parts = {"model files": fingerprint_model(options.model), "input file": input_fingerprint,
             "source column, prefix and length": [column, prefix, generator.max_source_length],
             "decoding settings": [config.to_json_string(), options.seed, options.backend],
             "batching and output format": [generator.max_tokens, options.batch_size, options.window, out_ext]}
    # The output, its ledger and the report belong to the main process; the others send it their windows.
    done = distributed.on_main(current, lambda: output.start(parts))
    stats = _run(generator, output, options, column, prefix, total, done, out_ext, current)
    distributed.on_main(current, lambda: _finish(options, output, parts["input file"], stats, generator))
    current.wait_for_everyone()  # every process returns once the output is complete
    return stats


def _fingerprint_input(path: str) -> str:
    try:
        return fingerprint_file(path)
    except OSError as e:  # removed or made unreadable while the job runs
        raise DataError(f"cannot be read ({e.strerror or e})", path=path, hint="check the path and its permissions") \
            from e


def _finish(options: GenerateOptions, output: ResumableOutput, input_fingerprint: str, stats: dict[str, Any],
            generator) -> None:
    if _fingerprint_input(options.input) != input_fingerprint:  # rows read before and after the change are mixed
        raise DataError("changed while it was being read, so the output is left unfinished", path=options.input,
                        hint="re-run with --overwrite once the input is final")
    output.finish()
    _report(options.output, stats, generator.max_source_length)


def _run(generator, output: ResumableOutput, options: GenerateOptions, column: str, prefix: str,
         total: int, done: int, out_ext: str, current) -> dict[str, Any]:
    """Windows in input order; with N processes, process r generates window r of every N.

    Each round the processes' outputs are gathered in window order and the main process appends
    them and moves the ledger on: the partial file stays an ordered prefix of the single-process
    output (a window's batches, and a sampling window's seed, depend on the window alone).
    """
    processes, rank = current.num_processes, current.process_index
    stream = windows(itertools.islice(iter_rows(options.input), done, None), options.window)
    stats = {"rows": done, "generated": 0, "skipped": 0, "tokens": 0, "seconds": 0.0, "truncated": 0,
             "oom_splits": 0}
    start = time.perf_counter()
    show = options.progress and current.is_main_process
    with console.progress(total, "generating", "rows", initial=done, enabled=show) as bar:
        for first in itertools.count(done // options.window, processes):
            round_windows = list(itertools.islice(stream, processes))
            if not round_windows:
                break
            rows = round_windows[rank] if rank < len(round_windows) else []  # the last round may be short
            mine = _window_output(generator, rows, first + rank, column, prefix, out_ext)
            texts = []
            for text, counts in distributed.gather_in_order(current, mine):
                texts.append(text)
                for key, value in counts.items():
                    stats[key] += value
            rows_done = sum(len(window) for window in round_windows)
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
    predictions = generator.run_window([prefix + as_text(window[i].record.get(column)) for i in good], index)
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
    console.result_logger.info("wrote %s: %d rows, %d generated in %.1fs (%.1f rows/s, %.0f tokens/s)%s", path,
                               stats["rows"], stats["generated"], seconds, stats["generated"] / seconds,
                               stats["tokens"] / seconds, "; " + "; ".join(notes) if notes else "")


# ----------------------------------------------------------------------------- evaluate


def evaluate_file(options: EvaluateOptions, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate for every row of a file with references and score with the task's metrics."""
    from ..data.metrics import check_metric_names, compute_metrics
    from ..data.tasks import TASKS

    outputs = [(key, path) for key, path in (("output", options.output), ("predictions", options.predictions)) if path]
    check_outputs(outputs, {"data": options.data, "model": options.model, "presets": options.presets})
    for key, path in outputs:
        refuse_finished(path, options.overwrite, key)
    loaded = load_model(options.model, trust_remote_code=options.trust_remote_code,
                        allow_pickle=options.allow_pickle)
    trained = loaded.run_config
    task = TASKS.get(trained.get("task", "text2text"), TASKS["text2text"])
    names = options.metrics or trained.get("metrics") or task.default_metrics
    check_metric_names(names)
    split = read_references(options, trained, task)
    config = resolve_preset(loaded, options.preset, presets_file=options.presets, overrides=overrides,
                            trust_remote_code=options.trust_remote_code)
    generator = make_generator(loaded, config, backend=options.backend, max_tokens=options.max_tokens,
                               batch_size=options.batch_size, max_source_length=trained.get("max_source_length"))
    prefix = prefix_for(loaded, options.source_prefix)
    predictions = [prediction.texts[0] for index, sources in enumerate(windows(split.sources, DEFAULT_WINDOW))
                   for prediction in generator.run_window([prefix + s for s in sources], index)]
    metrics = {**compute_metrics(names, predictions, split.targets), "rows": len(split), "dropped": split.dropped}
    if distributed.state().is_main_process:  # under a launcher every process scores the whole file
        record = {**metrics, **evaluation_context(options, loaded, config, overrides, names, split)}
        _save_evaluation(options, record, split, predictions)
    return metrics


def evaluation_context(options: EvaluateOptions, loaded: LoadedModel, config, overrides: dict[str, Any] | None,
                       names: list[str], split) -> dict[str, Any]:
    """What a score in evaluate --output depends on, next to it: signatures, decoding, model and data."""
    from ..data.metrics import metric_signatures
    from ..config.presets import decoding_fields

    return {"signatures": metric_signatures(names),
            "preset": {"name": options.preset or "default", "overrides": overrides or {}, **decoding_fields(config)},
            "backend": options.backend,
            "model": {"path": options.model, **describe_model(options.model, loaded)},
            "data": {"path": options.data, "rows": len(split), "dropped": split.dropped}}


def describe_model(ref: str, loaded: LoadedModel) -> dict[str, Any]:
    """Where the model came from and what it is: a local folder or a Hub id; a full model, an adapter or a pair."""
    folder = Path(ref)
    adapter = read_adapter_config(folder)
    model_type = loaded.model.config.model_type
    if adapter is not None:
        kind = f"{adapter.get('peft_type', 'peft').lower()} adapter"
    else:
        kind = "warm-started pair" if model_type == "encoder-decoder" else "full model"
    return {"source": "local folder" if folder.is_dir() else "Hub", "kind": kind, "model_type": model_type,
            "hf_encdec_run": bool(loaded.run_config)}


def read_references(options: EvaluateOptions, trained: dict[str, Any], task):
    """The rows of --data with their references, read once; the reference column is never a guess."""
    from ..data.reader import read_file
    from ..data.splits import build_split

    path = options.data
    languages = {"source_lang": trained.get("source_lang"), "target_lang": trained.get("target_lang")}
    columns, records, lines = read_file(path, **languages)
    target = reference_column(path, columns, records, options.target_column, trained, task)
    return build_split("test", path, columns, records, lines, on_invalid="drop", max_samples=None, require_target=True,
                       source_column=options.source_column or trained.get("source_column"), target_column=target,
                       candidates=task.column_candidates, **languages)


def reference_column(path: str, columns: list[str], records: list[dict], given: str | None,
                     trained: dict[str, Any], task) -> str | None:
    """The column evaluate scores against: --target_column, the trained one, the target language or one of the
    task's usual names; None for the WMT layout ({"translation": {lang: text}}), which select_pairs reads."""
    if given is not None:
        if given not in columns:
            raise missing_column(path, columns, given, "set --target_column to the column of references")
        return given
    target_lang = trained.get("target_lang")
    if target_lang and trained.get("source_lang") and any(isinstance(r.get("translation"), dict) for r in records):
        return None
    for candidate in (trained.get("target_column"), target_lang, *(target for _, target in task.column_candidates)):
        if candidate in columns:
            return candidate
    raise DataError(f"has no reference column (columns: {', '.join(columns)})", path=path,
                    hint="name the column of references with --target_column")


def _save_evaluation(options: EvaluateOptions, metrics: dict[str, Any], split, predictions: list[str]) -> None:
    """Each file written whole or not at all: a full disk leaves no half-written metrics or predictions."""
    files = []
    if options.output:
        files.append((options.output, [json.dumps(metrics, indent=2) + "\n"]))
    if options.predictions:
        rows = zip(split.lines, split.sources, split.targets, predictions)
        files.append((options.predictions, (json.dumps({"line": line, "source": source, "reference": reference,
                                                         "prediction": prediction}, ensure_ascii=False) + "\n"
                                             for line, source, reference, prediction in rows)))
    for path, pieces in files:
        try:
            write_atomically(path, pieces)
        except OSError as err:
            if not is_disk_full(err):
                raise
            raise disk_full(path, "no half-written file is left under this name") from err
