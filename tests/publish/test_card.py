"""What a run publishes: the model card (Hub metadata, what ran, no local paths), the saved generation configs
(vanilla generate(max_new_tokens=...) does not warn), and evaluate --output's record of what a score depends on."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from hf_encdec.cli import main
from hf_encdec.rundir import FINAL_STAGING_DIR, STAGING_DIR

ALICE = "hf_alice_write"


@pytest.fixture(scope="module")
def lora_run(tiny_models, pair_files, tmp_path_factory) -> Path:
    """A LoRA run on a local base, evaluated and checkpointed every 2 of its 4 steps; no license."""
    out = tmp_path_factory.mktemp("card") / "lora-run"
    argv = ["train", "--model_name_or_path", str(tiny_models["t5"]), "--peft", "lora",
            "--train_file", str(pair_files["train"]), "--validation_file", str(pair_files["validation"]),
            "--test_file", str(pair_files["test"]), "--output_dir", str(out), "--max_steps", "4",
            "--per_device_train_batch_size", "16", "--eval_strategy", "steps", "--eval_steps", "2",
            "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1", "--max_source_length", "16",
            "--max_target_length", "16", "--disable_tqdm", "true"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def bart_run(tiny_models, pair_files, tmp_path_factory) -> Path:
    """A full BART run whose card names its Hub base (base_model), with a license and the beam preset."""
    out = tmp_path_factory.mktemp("card") / "bart-run"
    argv = ["train", "--model_name_or_path", str(tiny_models["bart"]), "--base_model", "facebook/bart-base",
            "--license", "mit", "--preset", "beam", "--train_file", str(pair_files["train"]),
            "--validation_file", str(pair_files["validation"]), "--test_file", str(pair_files["test"]),
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "16",
            "--eval_strategy", "no", "--save_strategy", "no", "--max_source_length", "16",
            "--max_target_length", "16", "--disable_tqdm", "true"]
    assert main(argv) == 0
    return out


def _card(run: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(run / "README.md")


def test_lora_card_on_a_local_base_says_what_ran_and_holds_no_local_path(lora_run, tiny_models, pair_files):
    card = _card(lora_run)
    text = (lora_run / "README.md").read_text()
    for local in (str(lora_run.parent), str(tiny_models["t5"].parent), str(pair_files["train"].parent)):
        assert local not in text  # metadata, snippets and tables alike
    assert card.data.library_name == "peft" and card.data.base_model is None
    assert {"hf-encdec", "lora"} <= set(card.data.tags) and card.data.license is None
    assert "a local model: `t5`" in text and "`base_model: OWNER/NAME`" in text
    assert "A text2text LoRA adapter" in text
    assert "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig\n" in text
    assert 'AutoModelForSeq2SeqLM.from_pretrained("t5")  # t5: a local model' in text
    assert "**No license is set**" in text
    for section in ("## Model description", "## Intended uses & limitations", "## Training data", "## Results",
                    "## Training procedure", "### Evaluations during training", "## Framework versions"):
        assert section in text

    # 4 of the 13 batches of 16 in 200 rows: 0.31 epochs, whatever num_train_epochs (3 by default) says.
    assert "Trained for 4 optimizer steps (0.31 epochs) in " in text and "on CPU: " in text and "1 process" in text
    assert "num_train_epochs" not in text and "| max_steps | 4 |" in text
    for framework in ("hf-encdec", "transformers", "torch", "peft", "datasets", "tokenizers"):
        assert f"\n- {framework} " in text
    evaluations = text.split("### Evaluations during training")[1].split("###")[0]
    rows = [line for line in evaluations.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 4"]
    assert "validation loss" in evaluations and "chrf" in evaluations and "`greedy` preset" in evaluations
    assert "decoded with the `greedy` preset (max_new_tokens " in text

    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["environment"]["processes"] == 1 and "transformers" in metrics["environment"]["versions"]
    assert metrics["preset"]["name"] == "greedy" and metrics["train"]["train_runtime"] > 0


def test_finished_run_with_checkpoints_keeps_no_staging_folder(lora_run):
    assert sorted(p.name for p in lora_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (lora_run / STAGING_DIR).exists() and not (lora_run / FINAL_STAGING_DIR).exists()


def test_base_model_names_the_hub_base_in_metadata_and_text(bart_run):
    card = _card(bart_run)
    text = (bart_run / "README.md").read_text()
    assert card.data.base_model == "facebook/bart-base" and card.data.license == "mit"
    assert card.data.library_name == "transformers"
    assert "fine-tuned from `facebook/bart-base`" in text
    assert "local model" not in text and "No license" not in text
    assert "decoded with the `beam` preset (num_beams 4, early_stopping True, max_new_tokens " in text
    assert "No evaluation ran during training" in text


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_saved_generation_configs_let_vanilla_generate_take_max_new_tokens_without_a_warning(bart_run):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    model = AutoModelForSeq2SeqLM.from_pretrained(bart_run).eval()
    batch = AutoTokenizer.from_pretrained(bart_run)(["red cat", "blue dog house"], return_tensors="pt", padding=True)
    saved = json.loads((bart_run / "generation_config.json").read_text())
    assert "max_length" not in saved and saved["max_new_tokens"] >= 2
    records = _Records()
    library = logging.getLogger("transformers")
    library.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            assert model.generate(**batch, max_new_tokens=5).shape[1] <= 6
            # The saved length still applies when none is given: our decoding did not change.
            assert model.generate(**batch).shape[1] <= saved["max_new_tokens"] + 1
            for preset in sorted((bart_run / "presets").glob("*.json")):
                config = GenerationConfig.from_pretrained(bart_run, f"presets/{preset.name}")
                assert config.max_length is None, preset.name
                config.max_new_tokens = 5
                model.generate(**batch, generation_config=config)
    finally:
        library.removeHandler(records)
    messages = [str(w.message) for w in caught] + records.messages
    assert not [m for m in messages if "max_length" in m], messages


def test_evaluate_output_records_signatures_preset_model_and_data(bart_run, pair_files, tmp_path, capsys):
    output = tmp_path / "scores.json"
    code = main(["evaluate", "--model", str(bart_run), "--data", str(pair_files["test"]), "--preset", "beam",
                 "--max_new_tokens", "4", "--metrics", "bleu,chrf,exact_match", "--output", str(output)])
    assert code == 0, capsys.readouterr().err[-2000:]
    record = json.loads(output.read_text())
    assert {"bleu", "chrf", "exact_match", "rows", "dropped"} <= record.keys()  # where they always were
    assert record["signatures"]["bleu"].startswith("nrefs:1|") and "chrf" in record["signatures"]
    assert record["preset"]["name"] == "beam" and record["preset"]["num_beams"] == 4
    assert record["preset"]["overrides"] == {"max_new_tokens": 4} and record["preset"]["max_new_tokens"] == 4
    assert record["model"] == {"path": str(bart_run), "source": "local folder", "kind": "full model",
                               "model_type": "bart", "hf_encdec_run": True}
    assert record["data"] == {"path": str(pair_files["test"]), "rows": 30, "dropped": 0}
    assert record["backend"] == "transformers"


def test_a_pushed_adapter_names_its_base_by_hub_id_and_its_card_the_repo(hub, lora_run, tiny_models, monkeypatch,
                                                                         capsys):
    import hf_encdec
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    monkeypatch.setenv("HF_TOKEN", ALICE)
    local_base = json.loads((lora_run / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert main(["push", "--model", str(lora_run), "--repo_id", "alice/card-lora"]) == 2  # the base is a folder
    assert "key 'base_model'" in capsys.readouterr().err and "alice/card-lora" not in hub.state.repos

    hf_encdec.push(tiny_models["t5"], "alice/card-base", token=ALICE)
    saved = (lora_run / "run_config.yaml").read_text()
    (lora_run / "run_config.yaml").write_text(saved + "base_model: alice/card-base\n")  # as the error asks
    try:
        assert main(["push", "--model", str(lora_run), "--repo_id", "alice/card-lora"]) == 0
    finally:
        (lora_run / "run_config.yaml").write_text(saved)
    files = hub.state.files("alice/card-lora")
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "alice/card-base"
    assert json.loads((lora_run / "adapter_config.json").read_text())["base_model_name_or_path"] == local_base
    PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained("alice/card-base"), "alice/card-lora")
    text = files["README.md"].decode()
    assert str(lora_run.parent) not in text and 'PeftModel.from_pretrained(base, "alice/card-lora")' in text
    linked = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert "plots/train_loss.png" in linked and all(path in files for path in linked)
    assert "### Evaluations during training" in ModelCard.load("alice/card-lora").text


def test_a_max_length_given_at_generate_time_wins_over_the_saved_max_new_tokens(bart_run):
    import hf_encdec

    longest = [len(p.split()) for p in hf_encdec.generate(str(bart_run), ["red cat", "blue dog house"])]
    assert max(longest) > 2  # the saved length lets the barely trained model ramble
    short = hf_encdec.generate(str(bart_run), ["red cat", "blue dog house"], max_length=3)  # start token + 2
    assert all(len(p.split()) <= 2 for p in short), short
