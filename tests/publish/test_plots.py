"""OUTPUT_DIR/plots/: the training curves as PNG files, linked from the card; skipped with one note without matplotlib."""

from __future__ import annotations

import logging
import sys

import hf_encdec
from hf_encdec import rundir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(tiny_models, quick_args, **extra):
    return hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["marian"]), "eval_strategy": "steps",
                            "eval_steps": 2, "test_file": None, "metrics": ["chrf", "exact_match"], **extra})


def test_plots_are_pngs_of_every_curve_linked_from_the_card(tiny_models, quick_args):
    out = _run(tiny_models, quick_args).output_dir
    plots = out / rundir.PLOTS_DIR
    names = {p.name for p in plots.iterdir()}
    assert {"train_loss.png", "learning_rate.png", "eval_loss.png", "eval_chrf.png", "eval_exact_match.png"} <= names
    for path in plots.iterdir():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, path.name
    card = (out / "README.md").read_text()
    assert card.index("](plots/train_loss.png)") < card.index("](plots/eval_chrf.png)")  # training curves first
    assert all(f"](plots/{name})" in card for name in names)
    assert rundir.is_output_name(rundir.PLOTS_DIR) and not rundir.foreign_entries(out)
    assert not (out / rundir.FINAL_STAGING_DIR).exists()


def test_without_matplotlib_the_run_writes_no_plots_and_says_so_once(tiny_models, quick_args, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` raises ImportError
    notes = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: notes.append(record.getMessage())
    plots_logger = logging.getLogger("hf_encdec.plots")
    plots_logger.addHandler(handler)
    monkeypatch.setattr(plots_logger, "level", logging.INFO)
    try:
        out = _run(tiny_models, quick_args).output_dir
    finally:
        plots_logger.removeHandler(handler)
    assert not (out / rundir.PLOTS_DIR).exists() and (out / "metrics.json").exists()
    assert [n for n in notes if "plots skipped" in n and '".[plots]"' in n] == notes and len(notes) == 1
    assert "Training curves" not in (out / "README.md").read_text()
