"""What a run shows: hf_encdec's logger, progress, metric lines, the end summary, and the library noise we hide.

Three verbosities: `quiet` (warnings, errors and the result lines), `normal`, and `verbose` (every
library warning, and transformers' and datasets' INFO logs). Progress is a live tqdm bar when
stderr is a terminal; otherwise (a log file, CI, a pipe, pytest) it is plain lines, so a log reads
top to bottom without carriage returns or cursor moves.

The story of a run goes to stderr through the `hf_encdec` logger; its result (`model saved to
DIR`) goes to the `hf_encdec.result` logger, which the command line prints on stdout even with
--quiet. A Python caller silences both with `logging.getLogger("hf_encdec").setLevel(logging.WARNING)`.

Importing this module loads the standard library only (the command line sets it up before any
command runs); tqdm and the libraries it quietens are imported when used.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import sys
import time
import warnings
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager

LOGGER = "hf_encdec"
RESULT_LOGGER = "hf_encdec.result"
VERBOSITIES = ("quiet", "normal", "verbose")
LEVELS = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}

# Set by our launcher (distributed.launch) for the processes it starts: their stderr is a pipe to
# the launching process, whose stderr may be a terminal.
TERMINAL_ENV = "HF_ENCDEC_TERMINAL"

logger = logging.getLogger(LOGGER)
result_logger = logging.getLogger(RESULT_LOGGER)

# ----------------------------------------------------------------------------- setup


def interactive() -> bool:
    """True when progress can redraw in place: stderr is a terminal, or a notebook draws the bars."""
    forced = os.environ.get(TERMINAL_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def shows_progress() -> bool:
    """Progress (bars or plain lines) only where our INFO messages are shown: --quiet has none."""
    return logger.isEnabledFor(logging.INFO)


@contextmanager
def reporting(verbosity: str | None = None, *, command_line: bool = False) -> Iterator[None]:
    """Our logger and the warning filters, for one command or API call (standard library only).

    `verbosity` None is the library default: a handler on the `hf_encdec` logger only when neither it
    nor the root logger has one (the caller's logging configuration wins), INFO messages shown.
    `command_line` gives our logger its own stderr handler and the result logger a stdout one.
    Everything is restored on exit: the caller may be a notebook or a test.
    """
    if verbosity is not None and verbosity not in VERBOSITIES:
        from .errors import ConfigError

        raise ConfigError(f"unknown verbosity {verbosity!r}", key="verbosity", hint=f"one of {', '.join(VERBOSITIES)}")
    current = verbosity or (_active[-1] if _active else "normal")  # an API call inside a command keeps its flags
    with ExitStack() as stack:
        _active.append(current)
        stack.callback(_active.pop)
        stack.enter_context(_our_loggers(verbosity, command_line))
        if current != "verbose":
            stack.enter_context(_harmless_warnings_hidden())
        yield


@contextmanager
def library_output(*libraries: str) -> Iterator[None]:
    """The logs and bars of `libraries` ("transformers", "datasets") as the current verbosity wants.

    Importing them takes a second or more, so a command enters this once its arguments are checked,
    just before the work that loads them anyway. Restored on exit.
    """
    verbosity = _active[-1] if _active else "normal"
    with ExitStack() as stack:
        for library in libraries:
            stack.enter_context(LIBRARY_SETUP[library](verbosity))
        yield


_active: list[str] = []  # the verbosity of each reporting() now open, innermost last


def verbosity_flags() -> list[str]:
    """The command-line flag of the current verbosity: for the processes our launcher starts."""
    current = _active[-1] if _active else "normal"
    return [] if current == "normal" else [f"--{current}"]


class ConsoleHandler(logging.StreamHandler):
    """Writes above the live progress bars, so a message never breaks a bar into two."""

    def __init__(self, stream=None):
        super().__init__(stream if stream is not None else sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not interactive():
            super().emit(record)
            return
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


@contextmanager
def _our_loggers(verbosity: str | None, command_line: bool) -> Iterator[None]:
    saved = [(log, log.handlers[:], log.level, log.propagate) for log in (logger, result_logger)]
    try:
        if command_line:
            logger.handlers[:] = [ConsoleHandler()]
            result_logger.handlers[:] = [logging.StreamHandler(sys.stdout)]
            result_logger.propagate = False  # printed once, on stdout
        elif not logger.handlers and not logging.getLogger().handlers:  # no logging configured: ours
            logger.addHandler(ConsoleHandler())
            if verbosity is None and logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
        if command_line or verbosity is not None:
            result_logger.setLevel(logging.INFO)  # even when quiet: it is the command's answer
        if verbosity is not None:
            logger.setLevel(LEVELS[verbosity])
        yield
    finally:
        for log, handlers, level, propagate in saved:
            log.handlers[:] = handlers
            log.setLevel(level)  # setLevel, not .level: it clears the level cache of child loggers
            log.propagate = propagate


@contextmanager
def _transformers_output(verbosity: str) -> Iterator[None]:
    """transformers' INFO logs under --verbose; its own bars (loading weights, writing shards) as ours."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    if verbosity == "verbose":
        hf_logging.set_verbosity_info()
    bars = shows_progress() and interactive()
    if not bars:
        hub_utils.disable_progress_bars()  # downloads: \r bars in a log file
    # A bar that vanishes when done: loading or saving a model needs no line of its own once over.
    previous_hook = hf_logging.set_tqdm_hook(lambda factory, args, kwargs: factory(
        *args, **{**kwargs, "leave": False, "disable": kwargs.get("disable", False) or not bars}))
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous_hook)
        hf_logging.set_verbosity(level)
        if not hub_bars_off:
            hub_utils.enable_progress_bars()


@contextmanager
def _datasets_output(verbosity: str) -> Iterator[None]:
    """datasets' INFO logs under --verbose; its bars (tokenizing) only on a terminal."""
    from datasets import utils as ds_utils
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    bars_off = ds_utils.are_progress_bars_disabled()
    if verbosity == "verbose":
        ds_logging.set_verbosity_info()
    if not (shows_progress() and interactive()):
        ds_utils.disable_progress_bars()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not bars_off:
            ds_utils.enable_progress_bars()


LIBRARY_SETUP = {"transformers": _transformers_output, "datasets": _datasets_output}


# ----------------------------------------------------------------------------- library noise we hide
# Each entry was seen in a real run and is harmless for a reason given beside it; --verbose shows them all.

# Warnings about things we already do right: (category, start of the message, why it is harmless).
HARMLESS_WARNINGS = [
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated",
     "peft reads the old property name on transformers' models; nothing a user can change, and it still works"),
    (FutureWarning, r"Version v4\.12\.0 introduces a better way to train encoder-decoder models",
     "EncoderDecoderModel warns whenever labels are passed; warm-started pairs are built by this version, so "
     "no older training can be inconsistent with it"),
]

# Rows of a transformers LOAD REPORT that a warm start expects: (status, key pattern, why).
EXPECTED_LOAD_ROWS = [
    ("UNEXPECTED", r"cls\.", "BERT's pretraining heads (MLM, next sentence): an encoder has no use for them"),
    ("UNEXPECTED", r"lm_head\.", "RoBERTa's MLM head, left out when the checkpoint becomes an encoder"),
    ("MISSING", r"(bert\.|roberta\.)?pooler\.", "the [CLS] pooler feeds nothing in a pair and is frozen "
                                                   "(warm_start.freeze_pooler)"),
    ("MISSING", r".*(crossattention|ln_cross_attn)", "the decoder's new cross-attention: random by design, and "
                                                      "listed by the warm-start line as starting random"),
]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REPORT_ROW = re.compile(r"^(?P<key>\S.*?)\s+\|\s+(?P<status>[A-Z]+)\s+\|")
# What a checkpoint leaves out because it is the shared embedding under another name (T5, BART, Marian).
_TIED_KEY = re.compile(r"'(model\.)?((en|de)coder\.embed_tokens|lm_head)\.weight'")


def _expected_load_report(message: str) -> bool:
    """A LOAD REPORT whose every row is one a warm start expects (EXPECTED_LOAD_ROWS)."""
    text = _ANSI.sub("", message)
    if "LOAD REPORT" not in text.partition("\n")[0]:
        return False
    rows = [m for m in map(_REPORT_ROW.match, text.splitlines()) if m]
    expected = [(status, re.compile(pattern)) for status, pattern, _ in EXPECTED_LOAD_ROWS]
    return bool(rows) and all(any(m["status"] == status and pattern.match(m["key"]) for status, pattern in expected)
                              for m in rows)


def _only_tied_weights_missing(message: str) -> bool:
    """The Trainer's "missing keys" on resume, when every key is a weight tied to the shared embedding."""
    head, _, keys = message.partition("There were missing keys in the checkpoint model loaded: [")
    listed = keys.rstrip("].").split(", ")
    return not head and bool(keys) and all(_TIED_KEY.fullmatch(key) for key in listed)


def _starts_with(pattern: str):
    return re.compile(pattern).match


# Log records about models we build ourselves: (logger, which messages, why they are harmless).
HARMLESS_LOGS = [
    ("transformers.modeling_utils", _starts_with("The new embeddings will be initialized from a multivariate normal"),
     "a warm start adds <pad> to a GPT-2 decoder tokenizer and says so itself (warm_start.load_warm_start)"),
    ("transformers.modeling_utils", _expected_load_report,
     "a warm start's encoder and decoder reports, made only of rows EXPECTED_LOAD_ROWS explains"),
    ("transformers.trainer", _only_tied_weights_missing,
     "resuming: the checkpoint leaves out the tied copies of the shared embedding; loading it fills them all"),
]


@contextmanager
def _harmless_warnings_hidden() -> Iterator[None]:
    filters: dict[str, _HarmlessFilter] = {}
    for name, harmless, _why in HARMLESS_LOGS:
        filters.setdefault(name, _HarmlessFilter()).tests.append(harmless)
    with warnings.catch_warnings():
        for category, message, _why in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name, log_filter in filters.items():
            logging.getLogger(name).addFilter(log_filter)
        try:
            yield
        finally:
            for name, log_filter in filters.items():
                logging.getLogger(name).removeFilter(log_filter)


class _HarmlessFilter(logging.Filter):
    def __init__(self):
        super().__init__()
        self.tests = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(harmless(message) for harmless in self.tests)


# ----------------------------------------------------------------------------- progress


def progress(total: int | None, desc: str, unit: str, initial: int = 0, enabled: bool = True):
    """A live tqdm bar on a terminal; plain lines now and then elsewhere; nothing with --quiet.

    The bar vanishes when done: the line that reports the work follows it.
    """
    if not enabled or not shows_progress():
        return PlainProgress(total, desc, unit, initial, silent=True)
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    return PlainProgress(total, desc, unit, initial)


class PlainProgress:
    """The bar's information as a line: after each tenth of the work (30 s apart at least), or every 5 minutes.

    Quick work prints nothing; long work a dozen lines, or one every 5 minutes; never a redraw.
    """

    EVERY_FRACTION, AT_LEAST_SECONDS, AT_MOST_SECONDS = 0.1, 30.0, 300.0

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, silent: bool = False):
        self.total, self.desc, self.unit, self.silent = total, desc, unit, silent
        self.n = self.initial = self.last_n = initial
        self.start = self.last_time = time.perf_counter()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        since = now - self.last_time
        fraction = (self.n - self.last_n) / self.total if self.total else 0.0
        if since >= self.AT_MOST_SECONDS or (fraction >= self.EVERY_FRACTION and since >= self.AT_LEAST_SECONDS):
            self.last_time, self.last_n = now, self.n
            if not self.silent:
                logger.info("%s", self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}" if self.total else f"{self.desc}: {self.n} {self.unit}"]
        if self.total:
            parts.append(f"{100 * self.n / self.total:.0f}%")
            rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
            if rate > 0:
                parts.append(f"eta {duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        """Nothing to clear: a line, once printed, stays."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- numbers and lines

# How some logged values read best; every other number goes by its size (`number`).
VALUE_FORMATS = {"learning_rate": "{:.2e}", "epoch": "{:.2f}"}
# Throughput and timing keys, left out of metric lines and tables (the line or summary gives the time once).
TIMING_SUFFIXES = ("runtime", "samples_per_second", "steps_per_second", "tokens_per_second")


def number(value, name: str = "", score_names: Collection[str] = ()) -> str:
    """A value rounded for reading: 4 significant digits or so, whole numbers whole.

    `score_names`: the scores of the run's metrics (0-100, sacreBLEU's scale), given by the caller:
    the metrics are a wing above this module.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if name in VALUE_FORMATS:
        return VALUE_FORMATS[name].format(value)
    if name in score_names:  # two decimals, as sacreBLEU prints them: eval lines align line to line
        return f"{value:.2f}"
    magnitude = abs(value)
    if not math.isfinite(value):
        return str(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    if magnitude >= 0.01 or value == 0:
        return f"{value:.3f}"
    return f"{value:.2e}"


def count(value: float) -> str:
    """12345 -> 12.3k: for throughputs."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def duration(seconds: float) -> str:
    """42s, 3m 12s, 2h 05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def about(seconds: float) -> str:
    """A rough duration for an estimate: about 14 min, about 2 h 10 min."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


def scores(metrics: dict, prefix: str = "") -> dict:
    """A metrics dict without its prefix and its timing keys: what a reader compares."""
    return {key.removeprefix(prefix): value for key, value in metrics.items()
            if key.startswith(prefix) and not key.endswith(TIMING_SUFFIXES)}


def step_field(step: int, max_steps: int) -> str:
    width = len(str(max_steps))
    return f"step {step:>{width}}/{max_steps}"


def train_line(step: int, max_steps: int, logs: dict, tokens_per_second: float | None,
               seconds_left: float | None) -> str:
    """`train  step  100/1500  epoch 0.53  loss 2.345  grad_norm 1.234  lr 1.98e-03  5.2k tok/s  eta 3m 12s`"""
    parts = ["train", step_field(step, max_steps), *_logged(logs, list(logs), tokens_per_second)]
    if seconds_left is not None:
        parts.append(f"eta {duration(seconds_left)}")
    return "  ".join(parts)


def bar_postfix(logs: dict, tokens_per_second: float | None) -> str:
    """The training bar's last logged values; tqdm shows the step, the rate and the ETA itself."""
    return "  ".join(_logged(logs, ["loss", "learning_rate"], tokens_per_second))


def _logged(logs: dict, keys: list[str], tokens_per_second: float | None) -> list[str]:
    parts = [f"epoch {number(logs['epoch'], 'epoch')}"] if logs.get("epoch") is not None else []
    parts += [f"{'lr' if key == 'learning_rate' else key} {number(logs[key], key)}"
              for key in keys if key in logs and key != "epoch"]
    if tokens_per_second:
        parts.append(f"{count(tokens_per_second)} tok/s")
    return parts


def eval_line(step: int, max_steps: int, metrics: dict, score_names: Collection[str] = ()) -> str:
    """`eval   step  200/1500  epoch 1.06  loss 1.633  exact_match 0.20  chrf 22.32  gen_len 10.69  13.3s`"""
    runtime_key = next((key for key in metrics if key.endswith("_runtime")), "eval_runtime")
    prefix = runtime_key.removesuffix("runtime")
    parts = ["eval ", step_field(step, max_steps)]
    if metrics.get("epoch") is not None:
        parts.append(f"epoch {number(metrics['epoch'], 'epoch')}")
    parts += [f"{key} {number(value, key, score_names)}" for key, value in scores(metrics, prefix).items()]
    if runtime_key in metrics:
        parts.append(duration(metrics[runtime_key]) if metrics[runtime_key] >= 60 else f"{metrics[runtime_key]:.1f}s")
    return "  ".join(parts)


def table(rows: dict[str, dict], score_names: Collection[str] = ()) -> list[str]:
    """Metrics per split as aligned columns: a header of metric names, one row per split."""
    names = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    cells = {split: [number(metrics[name], name, score_names) if name in metrics else "-" for name in names]
             for split, metrics in rows.items()}
    widths = [max(len(name), *(len(values[i]) for values in cells.values())) for i, name in enumerate(names)]
    first = max(len(split) for split in rows)
    lines = [" " * first + "".join(f"  {name:>{width}}" for name, width in zip(names, widths))]
    lines += [f"{split:<{first}}" + "".join(f"  {value:>{width}}" for value, width in zip(values, widths))
              for split, values in cells.items()]
    return lines


def summary(train_log: dict, final_scores: dict[str, dict], samples: list[dict], samples_from: str,
            seconds: float, score_names: Collection[str] = ()) -> str:
    """The end of a run in a few lines: what ran and for how long, the final scores, a few predictions."""
    head = f"finished in {duration(seconds)}"
    if "train_runtime" in train_log:
        head += f" (training {duration(train_log['train_runtime'])})"
    done = [f"{train_log['step']} steps" if "step" in train_log else None,
            f"{number(train_log['epoch'], 'epoch')} epochs" if train_log.get("epoch") is not None else None,
            f"mean train loss {number(train_log['train_loss'])}" if "train_loss" in train_log else None]
    lines = [head + ": " + ", ".join(part for part in done if part)] if any(done) else [head]
    rows = {split: scores(metrics) for split, metrics in final_scores.items() if scores(metrics)}
    if rows:
        lines += table(rows, score_names)
    if samples:
        lines.append(f"{samples_from} predictions, the first {len(samples)}:")
        lines += [f"  {s['source']!r} -> {s['prediction']!r} (reference {s['reference']!r})" for s in samples]
    return "\n".join(lines)
