"""Training curves as PNG files in OUTPUT_DIR/plots/, from the Trainer's log history; the model card links them.

One figure per curve: the training loss and the learning rate per logged step, and each evaluation
metric per evaluation. matplotlib is an optional extra (`pip install -e ".[plots]"`): without it the
run says so once and writes no plots. Figures are drawn on matplotlib's Agg canvas through
`matplotlib.figure.Figure`, never pyplot, so no display is needed and a user's own backend is left alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..rundir import PLOTS_DIR

logger = logging.getLogger("hf_encdec.plots")

# Per-step curves of the training log: (log key, file name, axis label).
TRAINING_CURVES = (("loss", "train_loss", "training loss"), ("learning_rate", "learning_rate", "learning rate"))
EVAL_PREFIX = "eval_"
# Evaluation entries that describe the evaluation itself, not the model: no curve of theirs.
NOT_CURVES = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def write_plots(log_history: list[dict[str, Any]], folder: Path) -> list[Path]:
    """folder/plots/*.png for every curve the history holds; the files written ([] without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.info('plots skipped: matplotlib is not installed (pip install -e ".[plots]" adds it)')
        return []
    curves = [(name, label, _points(log_history, key)) for key, name, label in TRAINING_CURVES]
    curves += [(key, key.removeprefix(EVAL_PREFIX), _points(log_history, key)) for key in _eval_keys(log_history)]
    written = []
    for name, label, (steps, values) in curves:
        if not steps:
            continue
        figure = Figure(figsize=(6, 3.5), layout="constrained")
        axes = figure.subplots()
        axes.plot(steps, values, marker="o" if len(steps) < 30 else None)
        axes.set_xlabel("step")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        path = folder / PLOTS_DIR / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        figure.savefig(path, dpi=100)
        written.append(path)
    return written


def plot_files(folder: Path) -> list[Path]:
    """The plots a run folder holds, training curves first: what the model card shows."""
    found = sorted((folder / PLOTS_DIR).glob("*.png"))
    first = [name for _, name, _ in TRAINING_CURVES]
    return sorted(found, key=lambda p: (p.stem not in first, first.index(p.stem) if p.stem in first else 0))


def _eval_keys(log_history: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(key for entry in log_history for key in entry
                         if key.startswith(EVAL_PREFIX) and key not in NOT_CURVES)
    return list(keys)


def _points(log_history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    entries = [entry for entry in log_history if isinstance(entry.get(key), (int, float)) and "step" in entry]
    return [entry["step"] for entry in entries], [float(entry[key]) for entry in entries]
