"""LoRA and IA3 through the public API and the CLI: adapter-only outputs that vanilla peft reloads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import hf_encdec
from hf_encdec.cli import main
from hf_encdec.errors import ConfigError

MULTI30K = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"

# For each family: a module name that only cross-attention has.
CROSS_ATTENTION = {"t5": "EncDecAttention", "bart": "encoder_attn", "marian": "encoder_attn"}


def _load_safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _vanilla_peft_model(out, base):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    return PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(base), out).eval()


def _generate(model, tokenizer, sources, generation_dir):
    """Decoding settings of the run: a PeftModel generates with its base's config unless given one."""
    from transformers import GenerationConfig

    with torch.no_grad():
        ids = model.generate(**tokenizer(sources, return_tensors="pt", padding=True),
                             generation_config=GenerationConfig.from_pretrained(generation_dir))
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@pytest.mark.parametrize("family", sorted(CROSS_ATTENTION))
def test_lora_saves_an_adapter_that_vanilla_peft_reloads(family, tiny_models, quick_args):
    base = str(tiny_models[family])
    result = hf_encdec.train({**quick_args, "model_name_or_path": base, "peft": "lora", "max_steps": 12,
                              "learning_rate": 1e-2, "merge_lora": True, "max_eval_samples": 8,
                              "max_predict_samples": 8})
    out = result.output_dir
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    weights = _load_safetensors(out / "adapter_model.safetensors")
    assert weights and all("lora_" in key for key in weights)
    assert any(w.abs().sum() > 0 for key, w in weights.items() if "lora_B" in key)  # lora_B starts at zero
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == base

    targets = result.metrics["model"]["peft"]["target_modules"]
    assert any(CROSS_ATTENTION[family] in name for name in targets)
    assert any(name.startswith(("encoder", "model.encoder")) for name in targets)
    trainable, total = (result.metrics["model"][k] for k in ("trainable_parameters", "total_parameters"))
    assert 0 < trainable < 0.2 * total

    tokenizer = AutoTokenizer.from_pretrained(out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    sources = [row["source"] for row in rows[:8]]
    adapted = _vanilla_peft_model(out, base)
    assert _generate(adapted, tokenizer, sources, out) == [row["prediction"] for row in rows[:8]]

    merged = AutoModelForSeq2SeqLM.from_pretrained(out / "merged").eval()
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    decoder_input_ids = torch.full((len(sources), 3), merged.generation_config.decoder_start_token_id)
    with torch.no_grad():
        expected = adapted(**batch, decoder_input_ids=decoder_input_ids).logits
        assert torch.allclose(merged(**batch, decoder_input_ids=decoder_input_ids).logits, expected, atol=1e-4)
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and base not in card  # a local base by its folder name only
    assert f'from_pretrained("{Path(base).name}")' in card


def test_lora_on_a_warm_started_pair_trains_the_cross_attention_fully(tiny_pair_models, quick_args, tmp_path):
    bert = str(tiny_pair_models["bert"])
    result = hf_encdec.train({**quick_args, "encoder_name_or_path": bert, "decoder_name_or_path": bert,
                              "peft": "lora", "max_steps": 12, "learning_rate": 1e-2, "max_target_length": 32,
                              "max_eval_samples": 6, "max_predict_samples": 6})
    out = result.output_dir
    from peft import PeftModel
    from transformers import AutoTokenizer, EncoderDecoderModel, GenerationConfig

    peft_report = result.metrics["model"]["peft"]
    assert any("crossattention" in name for name in peft_report["modules_to_save"])
    assert not any("crossattention" in name for name in peft_report["target_modules"])
    assert any(name.startswith("decoder.") for name in peft_report["target_modules"])
    assert "crossattention" in (out / "README.md").read_text()
    weights = _load_safetensors(out / "adapter_model.safetensors")
    assert any("crossattention" in key and "lora_" not in key for key in weights)

    # The base as the card describes it, the adapter from the output directory.
    base = EncoderDecoderModel.from_encoder_decoder_pretrained(bert, bert)
    model = PeftModel.from_pretrained(base, out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    decoder_tokenizer = AutoTokenizer.from_pretrained(out / "decoder_tokenizer")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()][:6]
    batch = tokenizer([r["source"] for r in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = model.generate(**batch, generation_config=GenerationConfig.from_pretrained(out))
    predictions = [t.strip() for t in decoder_tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert predictions == [r["prediction"] for r in rows]

    # `hf-encdec merge` rebuilds the pair from run_config.yaml: transformers alone then gives the same output.
    assert main(["merge", "--model", str(out), "--output", str(tmp_path / "merged")]) == 0
    merged = EncoderDecoderModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert merged.generate(**batch).tolist() == ids.tolist()


def test_all_linear_adapts_more_modules_than_auto(tiny_models, quick_args):
    args = {**quick_args, "model_name_or_path": str(tiny_models["t5"]), "peft": "lora", "max_steps": 1,
            "test_file": None}
    auto = hf_encdec.train(args).metrics["model"]["peft"]["target_modules"]
    every = hf_encdec.train({**args, "lora_target_modules": "all-linear", "overwrite_output_dir": True})
    linear = every.metrics["model"]["peft"]["target_modules"]
    assert set(auto) < set(linear) and not any("lm_head" in name for name in linear)
    assert {name.rsplit(".", 1)[-1] for name in linear} == {"q", "k", "v", "o", "wi", "wo"}
    assert {name.rsplit(".", 1)[-1] for name in auto} == {"q", "v"}


def test_explicit_target_modules_are_used_and_unknown_ones_named(tiny_models, quick_args, tmp_path):
    args = {**quick_args, "model_name_or_path": str(tiny_models["bart"]), "peft": "lora", "max_steps": 1,
            "test_file": None}
    result = hf_encdec.train({**args, "lora_target_modules": ["k_proj", "fc1"]})
    assert {n.rsplit(".", 1)[-1] for n in result.metrics["model"]["peft"]["target_modules"]} == {"k_proj", "fc1"}
    with pytest.raises(ConfigError, match="'query'") as err:
        hf_encdec.train({**args, "lora_target_modules": "q_proj,query", "output_dir": str(tmp_path / "bad")})
    assert err.value.key == "lora_target_modules" and "q_proj" in err.value.hint and "fc2" in err.value.hint
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_ia3_uses_the_same_keys(tiny_models, quick_args):
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "peft": "ia3",
                              "max_steps": 4, "learning_rate": 1e-2, "test_file": None})
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3"
    assert config["feedforward_modules"] and set(config["feedforward_modules"]) <= set(config["target_modules"])
    assert any("EncDecAttention" in name for name in config["target_modules"])
    assert all("ia3_" in key for key in _load_safetensors(result.output_dir / "adapter_model.safetensors"))


def test_lora_with_gradient_checkpointing_trains_the_adapter(tiny_models, quick_args):
    # transformers 5 renamed the key (activation_checkpointing) and warns at every run given the old name.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["bart"]), "peft": "lora",
                                  "gradient_checkpointing": True, "max_steps": 3, "learning_rate": 1e-2,
                                  "test_file": None})
    weights = _load_safetensors(result.output_dir / "adapter_model.safetensors")
    assert all(w.abs().sum() > 0 for key, w in weights.items() if "lora_B" in key)
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    assert yaml.safe_load((result.output_dir / "run_config.yaml").read_text())["gradient_checkpointing"] is True


def test_quantized_loading_without_cuda_fails_before_any_work(tiny_models, quick_args, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA") as err:
        hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "peft": "lora",
                         "load_in_4bit": True})
    assert err.value.key == "load_in_4bit"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("keys", "bad_key"), [({"merge_lora": True}, "merge_lora"),
                                                ({"load_in_8bit": True}, "load_in_8bit"),
                                                ({"peft": "lorra"}, "peft")])
def test_contradicting_adapter_keys_are_named(keys, bad_key, tiny_models, quick_args):
    with pytest.raises(ConfigError) as err:
        hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), **keys})
    assert err.value.key == bad_key


def test_merge_command_writes_a_plain_transformers_model(tiny_models, quick_args, tmp_path, capsys):
    base = str(tiny_models["marian"])
    out = hf_encdec.train({**quick_args, "model_name_or_path": base, "peft": "lora", "max_steps": 4,
                           "learning_rate": 1e-2, "test_file": None}).output_dir
    assert main(["merge", "--model", str(out), "--output", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    merged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    sources = ["red cat", "blue dog bird"]
    assert (_generate(merged, tokenizer, sources, tmp_path / "merged")
            == _generate(_vanilla_peft_model(out, base), tokenizer, sources, out))
    assert main(["merge", "--model", str(tiny_models["t5"])]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
    # Merging again into the run's own merged/ replaces our earlier merge, and leaves no staging folder.
    assert main(["merge", "--model", str(out)]) == 0 and (out / "merged" / "config.json").exists()
    assert not list(out.glob(".merged.staging*"))
    _assert_merge_refused(capsys, out, out, "--model")  # the run's folder itself
    _assert_merge_refused(capsys, out, Path(base), "the base model")  # the base the adapter was trained on
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    _assert_merge_refused(capsys, out, mine, "not written by hf-encdec")
    assert (mine / "notes.txt").read_text() == "keep me\n"


def _assert_merge_refused(capsys, run, output, fragment):
    assert main(["merge", "--model", str(run), "--output", str(output)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("hf-encdec: error: ") and fragment in lines[-1], lines


@pytest.mark.skipif(not (MULTI30K / "train.en.gz").exists(), reason="Multi30k is not beside the repository")
def test_t5_lora_recipe_runs_against_a_local_checkpoint(tiny_models, tmp_path, recipe_smoke_args):
    recipe = str(Path(__file__).resolve().parents[2] / "tasks" / "t5-lora.yaml")
    code = main(["train", recipe, "--model_name_or_path", str(tiny_models["t5"]),
                 "--output_dir", str(tmp_path / "lora"), *recipe_smoke_args])
    assert code == 0
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["r"] == 16


def test_compare_lora_script_reports_both_runs(tiny_models, tmp_path, capsys):
    if not (MULTI30K / "train.en.gz").exists():
        pytest.skip("Multi30k is not beside the repository")
    import runpy

    script = runpy.run_path(str(Path(__file__).resolve().parents[2] / "scripts" / "compare_lora.py"))
    assert script["main"]([str(tiny_models["t5"]), "--steps", "4", "--batch_size", "8", "--eval_rows", "8",
                           "--max_train_samples", "64", "--output_dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()[-2:]
    full, lora = (line.split() for line in table)
    assert (full[0], lora[0]) == ("full", "lora")
    trainable = {row[0]: int(row[2].replace(",", "")) for row in (full, lora)}
    assert full[4] == "100.00%" and 0 < trainable["lora"] < trainable["full"] / 2


def test_a_pushed_ia3_run_keeps_ia3_in_its_refreshed_card(hub, tiny_models, quick_args):
    from huggingface_hub import ModelCard

    out = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "peft": "ia3",
                           "base_model": "someone/tiny-t5", "max_steps": 2, "test_file": None}).output_dir
    hf_encdec.push(out, "alice/tiny-ia3", token="hf_alice_write")
    card = ModelCard.load("alice/tiny-ia3")
    assert "alice/tiny-ia3" in card.text  # refreshed to name the repo, from run_config.yaml
    assert "IA3 adapter" in card.text and "LORA" not in card.text
    assert "ia3" in card.data.tags and "lora" not in card.data.tags
