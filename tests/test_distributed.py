"""Several processes on CPU (gloo): training as one run, generation as one ordered file.

The multi-process tests start real launchers (torchrun, accelerate launch) and are marked
`distributed`: deselect them with `-m "not distributed"`. The rest check the launcher plumbing
and the shipped accelerate configs without starting processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import WORDS

import hf_encdec
from hf_encdec.distributed import free_port, launch_command, pop_launch_options, without_launch_options
from hf_encdec.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
# One thread a process: two processes on a small machine, and numbers that do not depend on its load.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(free_port()), *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def still_t5(tiny_models, tmp_path_factory) -> Path:
    """The tiny T5 without dropout: 1 and 2 processes then differ only in how the batch is split."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    directory = tmp_path_factory.mktemp("still-t5")
    AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"], dropout_rate=0.0).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_models["t5"]).save_pretrained(directory)
    return directory


def _train_args(model: Path, pair_files, output_dir: Path, batch: int) -> dict:
    return {"model_name_or_path": str(model), "train_file": str(pair_files["train"]),
            "validation_file": str(pair_files["validation"]), "test_file": str(pair_files["test"]),
            "output_dir": str(output_dir), "max_steps": 6, "learning_rate": 1e-3, "per_device_train_batch_size": batch,
            "per_device_eval_batch_size": 4, "max_eval_samples": 13, "max_predict_samples": 13,
            "eval_strategy": "no", "save_strategy": "no", "logging_steps": 2, "max_source_length": 16,
            "max_target_length": 16, "disable_tqdm": True, "preset": "greedy", "seed": 7}


def _logged_losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.distributed
def test_two_processes_train_as_one_run_with_the_same_global_batch(still_t5, pair_files, tmp_path):
    single = hf_encdec.train(_train_args(still_t5, pair_files, tmp_path / "one", batch=16))

    digests = tmp_path / "digests"
    digests.mkdir()
    config = _train_args(still_t5, pair_files, tmp_path / "two", batch=8)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(REPO / "tests" / "distributed_train.py"), json.dumps(config)],
                         env={**ENV, "DIGEST_DIR": str(digests)}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    assert "distributed: 2 process(es) (MULTI_CPU, gloo)" in run.stderr
    assert "batch: 8 per device x 2 process(es) x 1 accumulation step(s) = 16 examples" in run.stderr
    assert run.stderr.count("data report:") == 1  # the main process reports, the other stays quiet
    ranks = sorted(digests.iterdir())
    assert [p.name for p in ranks] == ["0.txt", "1.txt"] and ranks[0].read_text() == ranks[1].read_text()

    two = tmp_path / "two"
    assert (two / "model.safetensors").is_file() and (two / "metrics.json").is_file()
    predictions = [json.loads(line) for line in (two / "predictions.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()]
    # Each example exactly once and in order (accelerate pads the last batches: 13 became 16 before).
    assert [p["source"] for p in predictions] == [p["source"] for p in expected] and len(predictions) == 13

    metrics = json.loads((two / "metrics.json").read_text())
    # The same global batch: a per-process mean averaged over 2 processes against one 16-row mean.
    assert metrics["validation"]["loss"] == pytest.approx(single.metrics["validation"]["loss"], rel=0.02)
    assert _logged_losses(two) == pytest.approx(_logged_losses(tmp_path / "one"), rel=0.02)  # not x2


@pytest.mark.distributed
def test_num_processes_launches_lora_on_a_warm_started_pair_under_ddp(tiny_pair_models, pair_files, tmp_path):
    out = tmp_path / "pair"
    run = subprocess.run(
        [sys.executable, "-m", "hf_encdec", "train", "--encoder_name_or_path", str(tiny_pair_models["bert"]),
         "--decoder_name_or_path", str(tiny_pair_models["bert"]), "--peft", "lora",
         "--train_file", str(pair_files["train"]), "--num_processes", "2", "--output_dir", str(out),
         "--max_steps", "3", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
         "--eval_strategy", "no", "--save_strategy", "no", "--max_eval_samples", "6", "--max_source_length", "16",
         "--max_target_length", "16", "--gradient_checkpointing", "true", "--disable_tqdm", "true",
         "--preset", "greedy"],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--multi_gpu --num_processes 2" in run.stderr
    assert "distributed: 2 process(es)" in run.stderr
    assert "batch: 4 per device x 2 process(es) x 2 accumulation step(s) = 16 examples" in run.stderr
    assert run.stderr.count("finished in") == 1 and run.stdout.count("model saved to") == 1  # told once, not per rank
    assert (out / "adapter_model.safetensors").is_file() and (out / "metrics.json").is_file()
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert "num_processes" not in saved and "use_cpu" not in saved  # the run's config, not this machine's


@pytest.mark.parametrize("peft", [None, "lora"])
def test_every_trainable_weight_of_a_pair_gets_a_gradient(peft, tiny_pair_models, pair_files, tmp_path):
    """What DDP without an unused-parameter search (our default) needs; BERT's pooler feeds nothing."""
    import torch

    from hf_encdec.config.run_config import load_config
    from hf_encdec.data.tasks import get_task
    from hf_encdec.training.run import load_splits, model_to_train

    config = load_config(None, {"encoder_name_or_path": str(tiny_pair_models["bert"]), "peft": peft,
                                "decoder_name_or_path": str(tiny_pair_models["gpt2"]),
                                "train_file": str(pair_files["train"]), "output_dir": str(tmp_path / "x")})
    task = get_task("text2text")
    train = load_splits(config, task)["train"]
    tokenizer, model = model_to_train(config, task, train)
    batch = tokenizer(train.sources[:4], return_tensors="pt", padding=True)
    targets = tokenizer(text_target=train.targets[:4])["input_ids"]
    width = max(map(len, targets))
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
    model(**batch, labels=labels).loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def _generate(*args: str) -> list[str]:
    return ["-m", "hf_encdec", "generate", *args]


@pytest.mark.distributed
def test_two_process_generation_writes_the_single_process_bytes_and_resumes_across_counts(tiny_models, tmp_path):
    rows = [{"id": i, "source": " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(1 + i % 6))}
            for i in range(90)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = ["--model", str(tiny_models["t5"]), "--input", str(source), "--window", "8", "--max_tokens", "24",
              "--max_new_tokens", "8", "--progress", "false"]
    single = subprocess.run([sys.executable, *_generate(*common, "--output", str(tmp_path / "one.jsonl"))],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    two = torchrun(*_generate(*common, "--output", str(tmp_path / "two.jsonl")))
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert two.stdout.count("wrote ") == 1  # one report, from the main process, on stdout: the command's result

    # Killed while one process wrote it, finished by two: still the same bytes.
    out, ledger = tmp_path / "resumed.jsonl", tmp_path / "resumed.jsonl.progress.json"
    job = subprocess.Popen([sys.executable, *_generate(*common, "--output", str(out))], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if ledger.exists() and json.loads(ledger.read_text() or '{"rows": 0}')["rows"] >= 16:
            break
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not out.exists() and 0 < json.loads(ledger.read_text())["rows"] < len(rows)
    resumed = torchrun(*_generate(*common, "--output", str(out)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done" in resumed.stderr
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes() and not ledger.exists()


# ----------------------------------------------------------------------------- without processes


@pytest.mark.distributed
def test_a_data_error_in_launched_processes_is_one_line_and_exit_code_2(tiny_models, tmp_path):
    """The broken line is found after the launch (data is read in every process): the launching command
    still prints the error once, without the launcher's failure report, and exits 2 as one process would."""
    broken = tmp_path / "train.jsonl"
    broken.write_text('{"source": "red cat", "target": "red cat"}\n{"source": "red\n')
    run = subprocess.run(
        [sys.executable, "-m", "hf_encdec", "train", "--model_name_or_path", str(tiny_models["t5"]),
         "--train_file", str(broken), "--num_processes", "2", "--output_dir", str(tmp_path / "out"),
         "--max_steps", "2"], env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert errors == [f"hf-encdec: error: {broken}:2: is not valid JSON (Unterminated string starting at "
                      "character 12) (each line must be one complete JSON object)"]
    assert "ChildFailedError" not in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_launch_flags_become_accelerate_launch_flags_on_a_free_port():
    args = ["tasks/quickstart.yaml", "--num_processes", "4", "--max_steps", "10", "--accelerate_config=x.yaml",
            "--bf16"]
    assert without_launch_options(args) == ["tasks/quickstart.yaml", "--max_steps", "10", "--bf16"]
    command = launch_command({"num_processes": 4}, ["tasks/quickstart.yaml"])
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in command and command[command.index("--num_processes") + 1] == "4"
    port = int(command[command.index("--main_process_port") + 1])
    assert port != 29500 and command[-4:] == ["-m", "hf_encdec", "train", "tasks/quickstart.yaml"]
    with_config = launch_command({"accelerate_config": "c.yaml"}, [])
    assert "--multi_gpu" not in with_config and with_config[with_config.index("--config_file") + 1] == "c.yaml"


@pytest.mark.parametrize("flags, fragment", [
    ({"num_processes": "0"}, "key 'num_processes'"),
    ({"num_processes": "two"}, "key 'num_processes'"),
    ({"accelerate_config": "missing.yaml"}, "accelerate config file not found"),
])
def test_bad_launch_flags_are_user_errors(flags, fragment):
    with pytest.raises(ConfigError) as caught:
        pop_launch_options(dict(flags))
    assert fragment in caught.value.one_line()


def test_sharded_configs_are_refused_on_a_machine_without_gpus():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="FSDP needs GPUs"):
        pop_launch_options({"accelerate_config": str(CONFIGS / "fsdp-t5.yaml")})


def test_every_accelerate_config_loads_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"single-gpu", "multi-gpu", "fsdp-t5", "fsdp-bart", "fsdp-marian",
                                       "fsdp-bert2bert", "deepspeed-zero2", "deepspeed-zero3", "two-node"}
    kinds = {f.stem: load_config_from_file(str(f)).distributed_type.value for f in files}
    assert kinds["multi-gpu"] == "MULTI_GPU" and kinds["fsdp-t5"] == "FSDP" and kinds["deepspeed-zero3"] == "DEEPSPEED"
    zero3 = load_config_from_file(str(CONFIGS / "deepspeed-zero3.yaml")).deepspeed_config
    assert zero3["zero_stage"] == 3 and "gradient_accumulation_steps" not in zero3  # left to the recipe ("auto")
    assert load_config_from_file(str(CONFIGS / "two-node.yaml")).num_machines == 2


def _tiny_models_by_family():
    import transformers

    bert = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32}
    small = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "vocab_size": 50,
             "pad_token_id": 0, "decoder_start_token_id": 0}
    return {
        "t5": transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=50, d_model=32, d_ff=32, d_kv=8, num_heads=2, num_layers=1)),
        "bart": transformers.BartForConditionalGeneration(transformers.BartConfig(**small)),
        "marian": transformers.MarianMTModel(transformers.MarianConfig(**small)),
        "bert2bert": transformers.EncoderDecoderModel(
            encoder=transformers.BertModel(transformers.BertConfig(**bert)),
            decoder=transformers.BertLMHeadModel(transformers.BertConfig(**bert, is_decoder=True,
                                                                        add_cross_attention=True))),
    }


def test_fsdp_wrap_classes_are_the_layers_of_each_family():
    from accelerate.commands.config.config_args import load_config_from_file

    for family, model in _tiny_models_by_family().items():
        config = load_config_from_file(str(CONFIGS / f"fsdp-{family}.yaml")).fsdp_config
        wrapped = set(config["fsdp_transformer_layer_cls_to_wrap"].split(","))
        present = {type(module).__name__ for module in model.modules()}
        assert wrapped <= present, f"fsdp-{family}.yaml wraps {wrapped - present}, absent from the model"
