"""Batch generation through the Python API and `hf-encdec generate`: order, n-best, resume, bad rows."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hf_encdec
from hf_encdec.cli import main
from hf_encdec.generation.generator import Generator, load_model, resolve_preset

REPO = Path(__file__).resolve().parents[2]
# Skewed lengths, so that length-sorted batches reorder the rows.
SOURCES = [" ".join(["red", "cat", "dog", "sun", "moon", "tree"][: 1 + (i * 7) % 6] * (1 + (i % 5 == 0) * 3))
           for i in range(37)]


def reference_predictions(model_dir, sources, **settings):
    """One source at a time with plain transformers: the order and text every batched run must match."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    outputs = []
    with torch.inference_mode():
        for source in sources:
            ids = model.generate(**tokenizer([source], return_tensors="pt"), **settings)
            outputs.append(tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    return outputs


def write_inputs(directory: Path, sources: list[str]) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"id": i, "source": s} for i, s in enumerate(sources)]
    files = {"txt": directory / "in.txt", "jsonl": directory / "in.jsonl", "csv": directory / "in.csv",
             "tsv": directory / "in.tsv", "parquet": directory / "in.parquet"}
    files["txt"].write_text("".join(s + "\n" for s in sources))
    files["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in records))
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        with files[kind].open("w", newline="") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(["id", "source"])
            writer.writerows([r["id"], r["source"]] for r in records)
    pq.write_table(pa.Table.from_pylist(records), files["parquet"])
    return files


@pytest.fixture(scope="module")
def expected(tiny_models):
    return reference_predictions(tiny_models["t5"], SOURCES, max_new_tokens=8)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "tsv", "parquet"])
def test_output_follows_input_order_in_every_format(kind, tiny_models, expected, tmp_path, capsys):
    inputs = write_inputs(tmp_path, SOURCES)
    out = tmp_path / "out.jsonl"
    code = main(["generate", "--model", str(tiny_models["t5"]), "--input", str(inputs[kind]), "--output", str(out),
                 "--max_tokens", "40", "--window", "16", "--max_new_tokens", "8", "--progress", "false"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prediction"] for r in rows] == expected
    assert [r["source"] for r in rows] == SOURCES
    if kind != "txt":
        assert [int(r["id"]) for r in rows] == list(range(len(SOURCES)))  # every input field kept
    assert not list(tmp_path.glob("out.jsonl.*"))  # no partial file or ledger left behind


def test_text_output_has_one_line_per_input(tiny_models, expected, tmp_path, capsys):
    inputs = write_inputs(tmp_path, SOURCES)
    out = tmp_path / "out.txt"
    assert main(["generate", "--model", str(tiny_models["bart"]), "--input", str(inputs["txt"]), "--output", str(out),
                 "--batch_size", "5", "--max_new_tokens", "8", "--progress", "false"]) == 0
    assert out.read_text().split("\n")[:-1] == reference_predictions(tiny_models["bart"], SOURCES, max_new_tokens=8)


def test_nbest_returns_k_scored_hypotheses_best_first(tiny_models, tmp_path, capsys):
    inputs = write_inputs(tmp_path, SOURCES[:6])
    out = tmp_path / "nbest.jsonl"
    assert main(["generate", "--model", str(tiny_models["marian"]), "--input", str(inputs["jsonl"]),
                 "--output", str(out), "--preset", "nbest", "--num_return_sequences", "3", "--max_new_tokens", "6",
                 "--progress", "false"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    beam = reference_predictions(tiny_models["marian"], SOURCES[:6], max_new_tokens=6, num_beams=5,
                                 early_stopping=True)
    for row, best in zip(rows, beam):
        assert len(row["predictions"]) == 3
        scores = [p["score"] for p in row["predictions"]]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)  # log-probabilities
        assert row["predictions"][0]["text"] == best


def test_python_api_list_in_list_out_iterable_in_iterator_out(tiny_models, expected):
    predictions = hf_encdec.generate(str(tiny_models["t5"]), SOURCES, max_new_tokens=8, max_tokens=30)
    assert predictions == expected
    stream = hf_encdec.generate(str(tiny_models["t5"]), iter(SOURCES), max_new_tokens=8, window=5)
    assert not isinstance(stream, list)
    assert list(stream) == expected
    nbest = hf_encdec.generate(str(tiny_models["t5"]), SOURCES[:2], preset="nbest", max_new_tokens=4)
    assert [len(hypotheses) for hypotheses in nbest] == [5, 5]
    assert all(isinstance(text, str) and isinstance(score, float) for text, score in nbest[0])


def test_the_prefix_the_model_was_trained_with_is_used(tiny_models, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["t5"], model)
    (model / "run_config.yaml").write_text("task: text2text\nsource_prefix: 'reverse: '\nsource_column: text\n")
    assert hf_encdec.generate(str(model), SOURCES[:5], max_new_tokens=6) == \
        hf_encdec.generate(str(tiny_models["t5"]), ["reverse: " + s for s in SOURCES[:5]], max_new_tokens=6)


def test_out_of_memory_halves_the_batch_and_continues(tiny_models, expected, monkeypatch):
    import torch

    loaded = load_model(str(tiny_models["t5"]))
    real_generate = loaded.model.generate
    sizes = []

    def small_memory(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(**kwargs)

    monkeypatch.setattr(loaded.model, "generate", small_memory)
    generator = Generator(loaded, resolve_preset(loaded, None, overrides={"max_new_tokens": 8}), batch_size=16)
    predictions = generator.run_window(SOURCES)
    assert [p.texts[0] for p in predictions] == expected
    assert generator.oom_splits > 0 and max(sizes) == 16 and sizes[-1] <= 4


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hf_encdec", "generate", *args]


def test_killed_run_resumes_to_the_same_bytes(tiny_models, tmp_path):
    sources = [SOURCES[i % len(SOURCES)] + (" tree" * (i % 3)) for i in range(120)]
    inputs = write_inputs(tmp_path, sources)
    common = ["--model", str(tiny_models["t5"]), "--input", str(inputs["jsonl"]), "--window", "6",
              "--max_tokens", "24", "--max_new_tokens", "10", "--progress", "false"]
    # One thread: the numbers (and so the bytes) do not depend on how busy the machine is.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(*common, "--output", str(tmp_path / "full.jsonl")), check=True, env=env,
                   capture_output=True)

    out, ledger = tmp_path / "killed.jsonl", tmp_path / "killed.jsonl.progress.json"
    job = subprocess.Popen(_cli(*common, "--output", str(out)), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if ledger.exists() and json.loads(ledger.read_text() or '{"rows": 0}')["rows"] >= 12:
            break
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not out.exists() and ledger.exists(), "the job finished before it could be killed"
    done = json.loads(ledger.read_text())["rows"]
    assert 0 < done < len(sources)

    resumed = subprocess.run(_cli(*common, "--output", str(out)), check=False, env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()
    assert not ledger.exists()


def test_a_finished_output_is_kept_unless_overwrite(tiny_models, tmp_path, capsys):
    inputs = write_inputs(tmp_path, SOURCES[:3])
    out = tmp_path / "out.txt"
    out.write_text("precious\n")
    args = ["generate", "--model", str(tiny_models["t5"]), "--input", str(inputs["txt"]), "--output", str(out),
            "--max_new_tokens", "4", "--progress", "false"]
    assert main(args) == 2
    assert "the file exists" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert main([*args, "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 3


def test_broken_rows_fail_before_generating_and_can_be_skipped(tiny_models, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"source": "red cat"}\n{"source": "dog"\n{"source": ""}\n{"other": 1}\n{"source": "sun"}\n')
    out = tmp_path / "out.jsonl"
    args = ["generate", "--model", str(tiny_models["t5"]), "--input", str(path), "--output", str(out),
            "--max_new_tokens", "4", "--progress", "false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: is not valid JSON" in err and "--on_error skip" in err
    assert not out.exists() and not list(tmp_path.glob("out.jsonl*"))

    assert main([*args, "--on_error", "skip"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    assert [r["prediction"] is None for r in rows] == [False, True, True, True, False]
    assert rows[1] == {"line": 2, "prediction": None, "error": rows[1]["error"]} and "JSON" in rows[1]["error"]
    assert rows[2]["error"] == "empty source" and rows[3]["error"] == "missing source 'source'"
    assert "3 of 5 rows will be skipped" in capsys.readouterr().err


def test_empty_sources_are_skipped_by_default_and_fail_on_request(tiny_models, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("red cat\n\nsun\n")
    out = tmp_path / "out.txt"
    args = ["generate", "--model", str(tiny_models["t5"]), "--input", str(path), "--output", str(out),
            "--max_new_tokens", "4", "--progress", "false"]
    assert main([*args, "--on_error", "fail"]) == 2
    assert f"{path}:2" in capsys.readouterr().err and not out.exists()
    assert main(args) == 0
    reference = reference_predictions(tiny_models["t5"], ["red cat", "sun"], max_new_tokens=4)
    assert out.read_text() == f"{reference[0]}\n\n{reference[1]}\n"  # aligned with the input lines


@pytest.mark.parametrize("argv, fragment", [
    (["--preset", "bem"], "did you mean 'beam'"),
    (["--num_beem", "3"], "did you mean 'num_beams'"),
    (["--preset", "beam", "--num_return_sequences", "9"], "num_return_sequences"),
    (["--max_tokens", "10", "--batch_size", "3"], "not both"),
])
def test_bad_options_are_one_line_errors(argv, fragment, tiny_models, tmp_path, capsys):
    inputs = write_inputs(tmp_path, SOURCES[:2])
    code = main(["generate", "--model", str(tiny_models["t5"]), "--input", str(inputs["txt"]),
                 "--output", str(tmp_path / "o.txt"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not list(tmp_path.glob("o.txt*"))


def test_evaluate_scores_a_file_with_references(tiny_models, pair_files, tmp_path, capsys):
    rows = [json.loads(line) for line in pair_files["test"].read_text().splitlines()]
    metrics_file, predictions_file = tmp_path / "metrics.json", tmp_path / "predictions.jsonl"
    code = main(["evaluate", "--model", str(tiny_models["bart"]), "--data", str(pair_files["test"]),
                 "--preset", "beam", "--max_new_tokens", "6", "--metrics", "bleu,exact_match",
                 "--output", str(metrics_file), "--predictions", str(predictions_file)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(metrics_file.read_text())  # the printed metrics, plus what they depend on (test_card.py)
    assert {key: saved[key] for key in printed} == printed and saved["preset"]["name"] == "beam"
    assert set(printed) == {"bleu", "exact_match", "rows", "dropped"} and printed["rows"] == len(rows)
    predictions = [json.loads(line) for line in predictions_file.read_text().splitlines()]
    assert [p["reference"] for p in predictions] == [r["target"] for r in rows]
    assert [p["prediction"] for p in predictions] == reference_predictions(
        tiny_models["bart"], [r["source"] for r in rows], max_new_tokens=6, num_beams=4, early_stopping=True)
    assert hf_encdec.evaluate(str(tiny_models["bart"]), str(pair_files["test"]), "beam", max_new_tokens=6,
                              metrics=["bleu", "exact_match"]) == printed


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_ct2_backend_matches_transformers_and_caches_the_conversion(family, tiny_models, tmp_path, caplog):
    pytest.importorskip("ctranslate2")
    model = tmp_path / family
    shutil.copytree(tiny_models[family], model)
    expected = reference_predictions(model, SOURCES, max_new_tokens=8)
    with caplog.at_level("INFO", logger="hf_encdec"):
        assert hf_encdec.generate(str(model), SOURCES, backend="ct2", max_new_tokens=8, max_tokens=40) == expected
    assert (tmp_path / f"{family}.ct2" / "model.bin").is_file() and "converting" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="hf_encdec"):
        # BartConfig's forced_eos_token_id (2) cannot be matched under beam search: unset for CTranslate2.
        nbest = hf_encdec.generate(str(model), SOURCES[:3], "nbest", backend="ct2", max_new_tokens=6,
                                   forced_eos_token_id=None)
    assert "converting" not in caplog.text  # converted once, then reused
    assert [len(hypotheses) for hypotheses in nbest] == [5, 5, 5]
    scores = [score for _, score in nbest[0]]
    assert scores == sorted(scores, reverse=True)


def test_a_marian_trained_from_scratch_converts_for_ct2(quick_args, tmp_path):
    """CTranslate2's Marian converter drops the last id as <pad> and starts decoding from a zero vector, as
    Marian NMT does. Our scratch Marian puts <pad> last with a zero embedding that training leaves at zero,
    so it decodes as with transformers; a Marian whose start embedding was trained is refused, not
    converted into something that decodes differently."""
    pytest.importorskip("ctranslate2")
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from hf_encdec.errors import ModelError

    result = hf_encdec.train({**quick_args, "max_steps": 30, "learning_rate": 3e-3, "tokenizer_vocab_size": 120,
                              "model_config": {"architecture": "marian", "d_model": 32, "encoder_layers": 1,
                                               "decoder_layers": 1, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}})
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(result.output_dir)
    pad = tokenizer.pad_token_id
    assert pad == len(tokenizer) - 1 and not model.get_input_embeddings().weight[pad].any()
    expected = reference_predictions(result.output_dir, SOURCES, max_new_tokens=8)
    assert hf_encdec.generate(str(result.output_dir), SOURCES, "greedy", backend="ct2", max_new_tokens=8) == expected

    with torch.no_grad():
        model.get_input_embeddings().weight[pad] = 0.1
    model.save_pretrained(tmp_path / "trained-start")
    tokenizer.save_pretrained(tmp_path / "trained-start")
    with pytest.raises(ModelError, match="start .* embedding is not zero"):
        hf_encdec.generate(str(tmp_path / "trained-start"), SOURCES[:2], backend="ct2")


def test_evaluate_with_the_ct2_backend_scores_what_transformers_scores(tiny_models, pair_files, tmp_path):
    pytest.importorskip("ctranslate2")
    model = tmp_path / "bart"
    shutil.copytree(tiny_models["bart"], model)
    settings = {"max_new_tokens": 6, "metrics": ["bleu", "chrf", "exact_match"]}
    expected = hf_encdec.evaluate(str(model), str(pair_files["test"]), "greedy", **settings)
    predictions = tmp_path / "predictions.jsonl"
    code = main(["evaluate", "--model", str(model), "--data", str(pair_files["test"]), "--preset", "greedy",
                 "--backend", "ct2", "--max_new_tokens", "6", "--metrics", "bleu,chrf,exact_match",
                 "--predictions", str(predictions)])
    assert code == 0 and (tmp_path / "bart.ct2" / "model.bin").is_file()
    assert hf_encdec.evaluate(str(model), str(pair_files["test"]), "greedy", backend="ct2", **settings) == expected
    assert len(predictions.read_text().splitlines()) == expected["rows"]


def test_ct2_backend_refuses_what_it_cannot_do(tiny_models, tmp_path):
    pytest.importorskip("ctranslate2")
    from hf_encdec.errors import ConfigError

    with pytest.raises(ConfigError, match="typical_p"):
        hf_encdec.generate(str(tiny_models["t5"]), SOURCES[:1], "sample", backend="ct2", typical_p=0.5)


def test_a_lora_adapter_directory_generates_like_its_merged_model(tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"])
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q", "v"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    adapted.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_models["t5"]).save_pretrained(adapter)
    assert (adapter / "adapter_config.json").exists()
    merged_dir = tmp_path / "merged"
    adapted.merge_and_unload().save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(tiny_models["t5"]).save_pretrained(merged_dir)
    expected = hf_encdec.generate(str(merged_dir), SOURCES[:8], max_new_tokens=6)
    assert hf_encdec.generate(str(adapter), SOURCES[:8], max_new_tokens=6) == expected
    assert expected != hf_encdec.generate(str(tiny_models["t5"]), SOURCES[:8], max_new_tokens=6)


def test_a_warm_started_pair_generates(tmp_path):
    from conftest import _tokenizer
    from transformers import BertConfig, BertLMHeadModel, BertModel, EncoderDecoderModel

    tokenizer = _tokenizer("t5")
    sizes = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
             "intermediate_size": 64, "pad_token_id": tokenizer.pad_token_id}
    model = EncoderDecoderModel(encoder=BertModel(BertConfig(**sizes)),
                                decoder=BertLMHeadModel(BertConfig(**sizes, is_decoder=True, add_cross_attention=True)))
    for key, value in {"decoder_start_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
                       "eos_token_id": tokenizer.eos_token_id}.items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    model.save_pretrained(tmp_path / "pair")
    tokenizer.save_pretrained(tmp_path / "pair")
    expected = reference_predictions(tmp_path / "pair", SOURCES[:10], max_new_tokens=6)
    assert hf_encdec.generate(str(tmp_path / "pair"), SOURCES[:10], max_new_tokens=6, max_tokens=20) == expected


def test_generate_help_does_not_import_torch():
    code = ("import sys; from hf_encdec.cli import main; main(['generate', '--help']); main(['evaluate', '--help']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)


def test_ct2_backend_ends_capped_rows_as_forced_eos_token_id_does(tiny_models, tmp_path):
    """Marian and BART checkpoints set forced_eos_token_id: transformers ends a row that reaches the length cap with
    </s> in place of its last token. Greedy CTranslate2 stops one token earlier, so the rows are equal; beam search
    (whose scores count that forced token) is refused by name."""
    pytest.importorskip("ctranslate2")
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    from hf_encdec.errors import ConfigError

    model_dir = tmp_path / "bart"
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["bart"])
    with torch.no_grad():  # </s> made unlikely, so that every row runs into the cap
        model.final_logits_bias[0, model.config.eos_token_id] = -1.0
    model.save_pretrained(model_dir)
    shutil.copy(tiny_models["bart"] / "tokenizer.json", model_dir)
    shutil.copy(tiny_models["bart"] / "tokenizer_config.json", model_dir)
    generation = GenerationConfig.from_pretrained(model_dir)
    generation.forced_eos_token_id = generation.eos_token_id
    generation.save_pretrained(model_dir)
    for max_new_tokens in (3, 6):
        expected = hf_encdec.generate(str(model_dir), SOURCES, "greedy", max_new_tokens=max_new_tokens)
        assert all(len(row.split()) == max_new_tokens - 1 for row in expected)  # capped: the last token is </s>
        assert hf_encdec.generate(str(model_dir), SOURCES, "greedy", backend="ct2",
                                  max_new_tokens=max_new_tokens) == expected
    with pytest.raises(ConfigError, match="forced_eos_token_id=1 under beam search"):
        hf_encdec.generate(str(model_dir), SOURCES, "beam", backend="ct2", max_new_tokens=4)


def test_ct2_refuses_a_marian_whose_pad_is_not_the_last_id(tiny_models, tmp_path):
    """CTranslate2's Marian converter drops the last id as <pad>; the tiny Marian's <pad> is id 0 (start embedding
    zeroed, so only the vocabulary stands in the way): refused with the reason, not converted wrongly."""
    pytest.importorskip("ctranslate2")
    from transformers import AutoModelForSeq2SeqLM

    from hf_encdec.errors import ModelError

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["marian"])
    with torch.no_grad():
        model.get_input_embeddings().weight[model.config.pad_token_id] = 0
    model.save_pretrained(tmp_path / "marian")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_models["marian"] / name, tmp_path / "marian")
    with pytest.raises(ModelError, match="drops the last id as <pad>.* <pad> is id 0, not the last"):
        hf_encdec.generate(str(tmp_path / "marian"), SOURCES[:2], backend="ct2")
