"""Pushing to the Hub, end to end against the loopback test Hub (tests/hub_server.py).

The real huggingface_hub client does the uploads and vanilla transformers / peft load the results
through HF_ENDPOINT, exactly as they would from the Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import hf_encdec
from hf_encdec.cli import main

ALICE = "hf_alice_write"
INPUTS = ["red cat", "blue dog house", "sun moon"]


def outputs_of(model, tokenizer, generation_config=None):
    import torch

    batch = tokenizer(INPUTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.generate(**batch, generation_config=generation_config).tolist()


def vanilla_outputs(name_or_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    return outputs_of(AutoModelForSeq2SeqLM.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path),
                      GenerationConfig.from_pretrained(name_or_path))


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code, err):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("hf-encdec: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tiny_models, pair_files, tmp_path_factory):
    """A finished local run (no push), shared by the `hf-encdec push` tests."""
    result = hf_encdec.train({
        "model_name_or_path": str(tiny_models["bart"]), "train_file": str(pair_files["train"]),
        "validation_file": str(pair_files["validation"]), "test_file": str(pair_files["test"]),
        "output_dir": str(tmp_path_factory.mktemp("finished") / "run"), "max_steps": 2,
        "per_device_train_batch_size": 16, "eval_strategy": "no", "save_strategy": "no", "max_source_length": 16,
        "max_target_length": 16, "disable_tqdm": True, "license": "mit"})
    return result.output_dir


def test_push_at_the_end_of_training_loads_with_vanilla_transformers(hub, tiny_models, quick_args, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", ALICE)
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "push_to_hub": True,
                              "hub_model_id": "alice/tiny-t5-run", "metrics": ["bleu", "exact_match"]})
    assert result.hub_url and "alice/tiny-t5-run" in result.hub_url

    files = hub.state.files("alice/tiny-t5-run")
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "run_config.yaml",
            "metrics.json", "README.md"} <= set(files)
    assert not {"predictions.jsonl", "training_args.bin", "trainer_state.json"} & set(files)
    assert hub.state.repos["alice/tiny-t5-run"].private is False
    assert vanilla_outputs("alice/tiny-t5-run") == vanilla_outputs(result.output_dir)

    card = ModelCard.load("alice/tiny-t5-run")
    scores = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    test_metrics = result.metrics["test"]
    assert scores[("test", "bleu")] == pytest.approx(test_metrics["bleu"], abs=1e-4)
    assert scores[("test", "exact_match")] == pytest.approx(test_metrics["exact_match"], abs=1e-4)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text2text-generation"
    assert card.data.base_model is None  # a local path is not a Hub id
    assert 'from_pretrained("alice/tiny-t5-run")' in card.text and "hf-encdec generate" in card.text
    assert (result.output_dir / "README.md").read_text() == files["README.md"].decode()


def test_cli_push_private_repo_on_a_branch_and_push_again(hub, finished_run, capsys, monkeypatch):
    from huggingface_hub import model_info
    from huggingface_hub.errors import RepositoryNotFoundError
    from transformers import GenerationConfig

    monkeypatch.setenv("HF_TOKEN", ALICE)
    (finished_run / "presets").mkdir(exist_ok=True)
    GenerationConfig(num_beams=3, max_length=9).save_pretrained(finished_run, config_file_name="presets/beam.json")
    code, out, err = run_cli(capsys, "push", "--model", str(finished_run), "--repo_id", "team/bart-run", "--private",
                             "--revision", "dev", "--commit_message", "first version")
    assert code == 0, err
    assert "team/bart-run" in out
    repo = hub.state.repos["team/bart-run"]
    assert repo.private
    assert "model.safetensors" in hub.state.files("team/bart-run", "dev")
    assert "model.safetensors" not in hub.state.files("team/bart-run", "main")
    assert hub.state.commits("team/bart-run", "dev")[-1] == "first version"
    assert GenerationConfig.from_pretrained("team/bart-run", "presets/beam.json", revision="dev",
                                            token=ALICE).num_beams == 3
    assert "`beam`" in hub.state.files("team/bart-run", "dev")["README.md"].decode()

    assert yaml.safe_load(hub.state.files("team/bart-run", "dev")["README.md"].decode().split("---")[1])[
        "license"] == "mit"
    with pytest.raises(RepositoryNotFoundError):
        model_info("team/bart-run", token=False)
    with pytest.raises(RepositoryNotFoundError):
        model_info("team/bart-run", token="hf_bob_write")
    assert model_info("team/bart-run", revision="dev", token=ALICE).private

    commits = hub.state.commits("team/bart-run", "dev")
    code, _, err = run_cli(capsys, "push", "--model", str(finished_run), "--repo_id", "team/bart-run",
                           "--revision", "dev")
    assert code == 0, err
    assert hub.state.commits("team/bart-run", "dev") == commits  # nothing changed: no new commit


@pytest.mark.parametrize(("token", "repo_id", "fragments"), [
    (None, "alice/x", ["no Hub token", "HF_TOKEN"]),
    ("hf_not_a_token", "alice/x", ["HF_TOKEN", "401"]),
    (ALICE, "bob/x", ["bob/x is not in your namespace", "'alice'", "alice/x"]),
    ("hf_alice_read", "alice/x", ["read-only"]),
    (ALICE, "alice/bad name!", ["invalid repo id"]),
])
def test_push_refusals_are_one_line(hub, finished_run, capsys, monkeypatch, token, repo_id, fragments):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    code, _, err = run_cli(capsys, "push", "--model", str(finished_run), "--repo_id", repo_id)
    line = one_error_line(code, err)
    assert all(fragment in line for fragment in fragments), line
    assert "bob/x" not in hub.state.repos and "alice/x" not in hub.state.repos


def test_unreachable_hub_is_one_line(hub, finished_run, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    monkeypatch.setattr(hub.state, "unreachable", True)
    line = one_error_line(*run_cli(capsys, "push", "--model", str(finished_run), "--repo_id", "alice/x")[::2])
    assert f"cannot reach the Hub at {hub.url}" in line


def test_push_of_a_folder_without_a_model_or_adapter_is_refused(hub, finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    line = one_error_line(*run_cli(capsys, "push", "--model", str(tmp_path), "--repo_id", "alice/empty")[::2])
    assert "no model weights" in line
    line = one_error_line(*run_cli(capsys, "push", "--model", str(finished_run), "--repo_id", "alice/m",
                                   "--merge_lora")[::2])
    assert "needs a LoRA run" in line


def test_training_with_a_bad_token_stops_before_anything_runs(hub, tiny_models, quick_args, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    code, _, err = run_cli(capsys, "train", "--model_name_or_path", str(tiny_models["t5"]),
                           "--train_file", quick_args["train_file"], "--output_dir", str(tmp_path / "out"),
                           "--push_to_hub", "true", "--hub_model_id", "alice/never")
    assert "401" in one_error_line(code, err)
    assert not (tmp_path / "out").exists()


def test_pushing_an_adapter_on_a_local_base_is_refused_before_training(hub, tiny_models, quick_args, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    code, _, err = run_cli(capsys, "train", "--model_name_or_path", str(tiny_models["t5"]), "--peft", "lora",
                           "--train_file", quick_args["train_file"], "--output_dir", str(tmp_path / "out"),
                           "--push_to_hub", "true", "--hub_model_id", "alice/local-base")
    line = one_error_line(code, err)
    assert "key 'base_model'" in line and "--merge_lora" in line
    assert not (tmp_path / "out").exists() and "alice/local-base" not in hub.state.repos


def test_a_broken_adapter_config_is_one_line_before_the_hub_is_asked(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_model.safetensors").write_bytes(b"")
    (run / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    line = one_error_line(*run_cli(capsys, "push", "--model", str(run), "--repo_id", "alice/broken")[::2])
    assert "adapter_config.json" in line and "not valid JSON" in line and "alice/broken" not in hub.state.repos


def test_failed_push_after_training_keeps_the_model_and_says_how_to_retry(hub, tiny_models, quick_args, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    hub.state.rejected_commits.add("alice/flaky")
    args = [f"--{k}={v}" for k, v in quick_args.items()]
    code, _, err = run_cli(capsys, "train", *args, "--model_name_or_path", str(tiny_models["marian"]),
                           "--push_to_hub", "true", "--hub_model_id", "alice/flaky")
    line = one_error_line(code, err)
    out_dir = quick_args["output_dir"]
    assert f"hf-encdec push --model {out_dir} --repo_id alice/flaky" in line
    assert (Path(out_dir) / "metrics.json").exists() and (Path(out_dir) / "model.safetensors").exists()

    hub.state.rejected_commits.clear()
    code, _, err = run_cli(capsys, "push", "--model", out_dir, "--repo_id", "alice/flaky")
    assert code == 0, err
    assert "model.safetensors" in hub.state.files("alice/flaky")


def test_planted_token_never_leaves_the_process(hub, tiny_models, quick_args, capsys, caplog):
    planted = "hf_PLANTED_b5c0ffee_SECRET"
    hub.state.add_user(planted, "carol")
    args = [f"--{k}={v}" for k, v in {**quick_args, "max_steps": 4, "save_strategy": "steps", "save_steps": 2}.items()]
    with caplog.at_level("DEBUG"):
        code, out, err = run_cli(capsys, "train", *args, "--model_name_or_path", str(tiny_models["t5"]),
                                 "--push_to_hub", "true", "--hub_model_id", "carol/secret-run",
                                 "--hub_strategy", "checkpoint", "--hub_token", planted)
    assert code == 0, err
    assert any(r["headers"].get("authorization") == f"Bearer {planted}" for r in hub.state.requests)  # hub_token used
    files = hub.state.files("carol/secret-run")
    assert "last-checkpoint/optimizer.pt" in files and "last-checkpoint/model.safetensors" in files
    assert "checkpoint-2/optimizer.pt" not in files
    assert any(message.startswith("Training in progress") for message in hub.state.commits("carol/secret-run"))

    token = planted.encode()
    for _, _, snapshot in (c for commits in hub.state.repos["carol/secret-run"].branches.values() for c in commits):
        assert not any(token in content for content in snapshot.values())
    local = [p for p in Path(quick_args["output_dir"]).rglob("*") if p.is_file()]
    assert not any(p.suffix in (".bin", ".pkl") for p in local)  # no pickled arguments, in checkpoints either
    assert not [p for p in local if token in p.read_bytes()]
    assert planted not in out + err + caplog.text
    assert "hub_token" not in yaml.safe_load(files["run_config.yaml"])


@pytest.mark.parametrize(("strategy", "kept", "left_out"), [
    ("every_save", [], ["last-checkpoint/optimizer.pt", "checkpoint-2/optimizer.pt"]),
    ("all_checkpoints", ["checkpoint-2/optimizer.pt", "checkpoint-4/optimizer.pt"], ["last-checkpoint/optimizer.pt"]),
])
def test_hub_strategy_decides_which_checkpoints_are_pushed(hub, tiny_models, quick_args, monkeypatch, strategy,
                                                           kept, left_out):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    repo_id = f"alice/strategy-{strategy.replace('_', '-')}"
    hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["marian"]), "save_strategy": "steps",
                     "save_steps": 2, "test_file": None, "push_to_hub": True, "hub_model_id": repo_id,
                     "hub_strategy": strategy})
    commits = hub.state.commits(repo_id)
    assert [c for c in commits if c.startswith("Training in progress")][:1] == ["Training in progress, checkpoint-2"]
    assert commits[-1].startswith("Training finished")
    files = hub.state.files(repo_id)
    assert all(path in files for path in kept) and not any(path in files for path in left_out)
    assert "model.safetensors" in files


def test_lora_adapter_pushes_with_its_base_and_merges_on_request(hub, tiny_models, tmp_path):
    import torch
    from huggingface_hub import ModelCard
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    hf_encdec.push(tiny_models["t5"], "alice/tiny-t5", token=ALICE)
    torch.manual_seed(0)
    base = AutoModelForSeq2SeqLM.from_pretrained("alice/tiny-t5")
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q", "v"], init_lora_weights=False))
    run = tmp_path / "lora-run"
    adapted.save_pretrained(run)
    (run / "README.md").unlink()  # peft's template card, which a run's own card replaces (a README not ours is kept)
    tokenizer = AutoTokenizer.from_pretrained("alice/tiny-t5")
    tokenizer.save_pretrained(run)
    base.generation_config.max_length = 7  # the run's own decoding length, which pushes must keep
    base.generation_config.save_pretrained(run)
    hf_encdec.RunConfig.from_dict({"model_name_or_path": "alice/tiny-t5", "train_file": "train.jsonl",
                                   "output_dir": str(run)}).save(run / "run_config.yaml")
    (run / "metrics.json").write_text(json.dumps({"test": {"bleu": 12.5, "exact_match": 0.25}}))
    expected = outputs_of(adapted.eval(), tokenizer)

    hf_encdec.push(run, "alice/tiny-lora", token=ALICE)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(hub.state.files("alice/tiny-lora"))
    card = ModelCard.load("alice/tiny-lora")
    assert card.data.base_model == "alice/tiny-t5" and card.data.library_name == "peft"
    assert "PeftModel.from_pretrained" in card.text
    loaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained("alice/tiny-t5"), "alice/tiny-lora")
    generation = GenerationConfig.from_pretrained("alice/tiny-lora")  # as the card's usage does
    assert outputs_of(loaded.eval(), AutoTokenizer.from_pretrained("alice/tiny-lora"), generation) == expected

    hf_encdec.push(run, "alice/tiny-merged", token=ALICE, merge_lora=True)
    merged_files = set(hub.state.files("alice/tiny-merged"))
    assert "model.safetensors" in merged_files and "adapter_config.json" not in merged_files
    assert ModelCard.load("alice/tiny-merged").data.library_name == "transformers"
    assert GenerationConfig.from_pretrained("alice/tiny-merged").max_length == 7
    assert vanilla_outputs("alice/tiny-merged") == expected
