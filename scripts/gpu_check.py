"""The GPU paths in one prepared run: one line per check, with its numbers. Under 8 minutes on one GPU.

    python scripts/gpu_check.py                 # on a CUDA machine
    python scripts/gpu_check.py --allow_cpu     # the same wiring on CPU, small sizes (GPU-only checks skip)

Checks, in order (each prints `check NAME: ok|FAIL|skip  key=value ...`):
  env         device, compute capability, bf16 support, versions
  train-bf16  hf-encdec's own choice of precision (bf16 + TF32 on Ampere and later), pad-to-8 batches,
              train samples/s and peak memory
  train-fp32  the same run with --bf16 false --tf32 false: the speed-up of the chosen precision
  generate    greedy and beam-4 throughput through hf_encdec.generate (sentences/s, generated tokens/s)
  oom         a batch too large for a capped memory pool is halved and retried; outputs unchanged
  qlora       load_in_4bit + LoRA (needs bitsandbytes), peak memory against the full bf16 run
  fsdp        configs/accelerate/fsdp-t5.yaml on one process: trains, saves a plain checkpoint
  ct2         --backend ct2 on the GPU (needs a CUDA build of ctranslate2) against transformers

The model is a T5 trained from scratch on the shipped dates data (tasks/data/dates), so nothing is
downloaded. Exit code 1 if a check FAILs; skips are not failures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATES = REPO / "tasks" / "data" / "dates"

# Big enough that the GPU, not Python, sets the pace; small enough to train in a minute.
GPU_MODEL = {"architecture": "t5", "d_model": 512, "d_ff": 2048, "d_kv": 64, "num_heads": 8,
             "num_layers": 6, "num_decoder_layers": 6, "dropout_rate": 0.0}
CPU_MODEL = {"architecture": "t5", "d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4,
             "num_layers": 2, "num_decoder_layers": 2, "dropout_rate": 0.0}

results: list[str] = []


def report(name: str, status: str, **numbers) -> None:
    line = f"check {name}: {status}  " + "  ".join(f"{k}={v}" for k, v in numbers.items())
    results.append(line)
    print(line, flush=True)


def run_check(name: str, function, *args) -> None:
    try:
        function(*args)
    except Exception as err:  # one check failing must not hide the others' numbers
        traceback.print_exc()
        report(name, "FAIL", error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def peak_memory_mib() -> float | str:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda() else "n/a"


def reset_peak() -> None:
    import torch

    if cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def check_env() -> None:
    import torch
    import transformers

    if not cuda():
        report("env", "ok", device="cpu", torch=torch.__version__, transformers=transformers.__version__)
        return
    report("env", "ok", device=torch.cuda.get_device_name(0).replace(" ", "_"),
           capability=".".join(map(str, torch.cuda.get_device_capability())), bf16=torch.cuda.is_bf16_supported(),
           cuda=torch.version.cuda, torch=torch.__version__, transformers=transformers.__version__,
           gpus=torch.cuda.device_count())


class BatchShapes:
    """Records the padded lengths of every training batch (to check pad-to-8), by wrapping training_step."""

    def __init__(self):
        self.lengths: list[int] = []

    def __enter__(self):
        from hf_encdec.training.trainer import EncDecTrainer

        self.original = EncDecTrainer.training_step
        shapes = self

        def training_step(trainer, model, inputs, num_items_in_batch=None):
            shapes.lengths += [inputs["input_ids"].shape[1], inputs["labels"].shape[1]]
            return shapes.original(trainer, model, inputs, num_items_in_batch)

        EncDecTrainer.training_step = training_step
        return self

    def __exit__(self, *exc):
        from hf_encdec.training.trainer import EncDecTrainer

        EncDecTrainer.training_step = self.original


def train_run(output_dir: Path, steps: int, model_config: dict, **keys):
    import hf_encdec

    config = {"task": "text2text", "train_file": str(DATES / "train.jsonl"),
              "validation_file": str(DATES / "validation.jsonl"), "max_eval_samples": 64,
              "max_source_length": 32, "max_target_length": 16, "model_config": model_config,
              "tokenizer_vocab_size": 400, "output_dir": str(output_dir), "max_steps": steps,
              "per_device_train_batch_size": 128, "learning_rate": 2e-3, "eval_strategy": "no",
              "save_strategy": "no", "logging_steps": max(steps // 4, 1), "metrics": ["exact_match"],
              "overwrite_output_dir": True, "seed": 42, **keys}
    reset_peak()
    started = time.perf_counter()
    result = hf_encdec.train(config)
    return result, time.perf_counter() - started


def check_training(work: Path, steps: int, model_config: dict) -> dict:
    """train-bf16 (our precision choice) then train-fp32; returns the two runs' samples/s for later checks."""
    import yaml

    with BatchShapes() as shapes:
        result, wall = train_run(work / "bf16", steps, model_config)
    chosen = yaml.safe_load((work / "bf16" / "run_config.yaml").read_text())
    train = result.metrics["train"]
    padded_to_8 = all(n % 8 == 0 for n in shapes.lengths)
    expected = {"bf16": True, "tf32": True} if cuda() else {}
    status = "ok" if all(chosen.get(k) == v for k, v in expected.items()) and (padded_to_8 or not cuda()) else "FAIL"
    bf16 = {"samples_s": train["train_samples_per_second"], "peak_mib": peak_memory_mib()}
    report("train-bf16", status, bf16=chosen.get("bf16"), tf32=chosen.get("tf32"), pad_to_8=padded_to_8,
           steps=train.get("step"), loss=round(train["train_loss"], 3), wall_s=round(wall, 1), **bf16)

    if not cuda():
        report("train-fp32", "skip", reason="no CUDA: the precision choice only applies on a GPU")
        return {"model": work / "bf16", **bf16}
    result, wall = train_run(work / "fp32", steps, model_config, bf16=False, tf32=False)
    fp32 = result.metrics["train"]["train_samples_per_second"]
    report("train-fp32", "ok", samples_s=fp32, peak_mib=peak_memory_mib(),
           bf16_speedup=round(bf16["samples_s"] / fp32, 2), wall_s=round(wall, 1))
    return {"model": work / "bf16", **bf16}


def sources(count: int) -> list[str]:
    rows = [json.loads(line)["source"] for line in (DATES / "test.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def timed_generate(model: Path, inputs: list[str], **options) -> tuple[list, float]:
    import hf_encdec

    started = time.perf_counter()
    outputs = hf_encdec.generate(str(model), inputs, **options)
    return outputs, time.perf_counter() - started


def check_generate(model: Path, rows: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    inputs = sources(rows)
    numbers = {}
    for preset in ("greedy", "beam"):
        reset_peak()
        outputs, wall = timed_generate(model, inputs, preset=preset)
        tokens = sum(len(ids) for ids in tokenizer(outputs)["input_ids"])
        numbers[f"{preset}_sent_s"] = round(rows / wall, 1)
        numbers[f"{preset}_tok_s"] = round(tokens / wall, 1)
        numbers[f"{preset}_peak_mib"] = peak_memory_mib()
    report("generate", "ok", rows=rows, **numbers)


class CountWarnings(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def check_oom(model: Path) -> None:
    """Caps the caching allocator just above the model, then asks for one huge beam batch."""
    import torch

    if not cuda():
        report("oom", "skip", reason="no CUDA: the back-off catches torch.OutOfMemoryError from the GPU")
        return
    long_inputs = [" ".join(sources(12)) for _ in range(4096)]
    expected, _ = timed_generate(model, long_inputs[:64], preset="beam", batch_size=8)
    reset_peak()
    total = torch.cuda.get_device_properties(0).total_memory
    counter = CountWarnings()
    logging.getLogger("hf_encdec").addHandler(counter)
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + 512 * 2**20) / total))
    try:
        outputs, wall = timed_generate(model, long_inputs, preset="beam", batch_size=4096)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        logging.getLogger("hf_encdec").removeHandler(counter)
    splits = sum("out of memory on a batch" in m for m in counter.messages)
    same = outputs[:64] == expected
    report("oom", "ok" if splits and same else "FAIL", batch=4096, splits=splits, outputs_unchanged=same,
           wall_s=round(wall, 1), peak_mib=peak_memory_mib())


def check_qlora(work: Path, base: Path, steps: int, full_peak) -> None:
    if not cuda():
        report("qlora", "skip", reason="no CUDA: bitsandbytes quantizes on the GPU")
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        report("qlora", "skip", reason="bitsandbytes not installed (pip install bitsandbytes)")
        return
    import hf_encdec

    reset_peak()
    started = time.perf_counter()
    result = hf_encdec.train({"model_name_or_path": str(base), "train_file": str(DATES / "train.jsonl"),
                              "validation_file": str(DATES / "validation.jsonl"), "max_eval_samples": 64,
                              "max_source_length": 32, "max_target_length": 16, "peft": "lora",
                              "load_in_4bit": True, "output_dir": str(work / "qlora"), "max_steps": steps,
                              "per_device_train_batch_size": 128, "eval_strategy": "no", "save_strategy": "no",
                              "metrics": ["exact_match"], "overwrite_output_dir": True})
    train = result.metrics["train"]
    report("qlora", "ok", samples_s=train["train_samples_per_second"], peak_mib=peak_memory_mib(),
           full_bf16_peak_mib=full_peak, loss=round(train["train_loss"], 3),
           wall_s=round(time.perf_counter() - started, 1))


def check_fsdp(work: Path, steps: int, model_config: dict) -> None:
    if not cuda():
        report("fsdp", "skip", reason="no CUDA: the FSDP configs use NCCL")
        return
    command = [sys.executable, "-m", "hf_encdec", "train", "--accelerate_config",
               str(REPO / "configs" / "accelerate" / "fsdp-t5.yaml"), "--num_processes", "1",
               "--train_file", str(DATES / "train.jsonl"), "--validation_file", str(DATES / "validation.jsonl"),
               "--max_eval_samples", "64", "--max_source_length", "32", "--max_target_length", "16",
               "--model_config", json.dumps(model_config), "--tokenizer_vocab_size", "400",
               "--output_dir", str(work / "fsdp"), "--max_steps", str(steps), "--per_device_train_batch_size", "128",
               "--eval_strategy", "no", "--save_strategy", "no", "--metrics", "[exact_match]"]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=240)
    loads = run.returncode == 0 and (work / "fsdp" / "model.safetensors").is_file()
    if loads:
        from transformers import AutoModelForSeq2SeqLM

        AutoModelForSeq2SeqLM.from_pretrained(work / "fsdp")
    tail = run.stderr.strip().splitlines()[-1][:200] if run.returncode and run.stderr.strip() else ""
    report("fsdp", "ok" if loads else "FAIL", exit=run.returncode, plain_checkpoint=loads,
           wall_s=round(time.perf_counter() - started, 1), **({"last_line": tail} if tail else {}))
    if importlib.util.find_spec("deepspeed") is None:
        report("deepspeed", "skip", reason="deepspeed not installed (configs/accelerate/deepspeed-*.yaml need it)")


def check_ct2(model: Path, rows: int) -> None:
    if importlib.util.find_spec("ctranslate2") is None:
        report("ct2", "skip", reason="ctranslate2 not installed (pip install -e '.[ct2]')")
        return
    import ctranslate2

    if not cuda() or ctranslate2.get_cuda_device_count() == 0:
        report("ct2", "skip", reason="no CUDA build of ctranslate2 or no GPU")
        return
    inputs = sources(rows)
    reference, wall_hf = timed_generate(model, inputs, preset="greedy")
    outputs, wall_ct2 = timed_generate(model, inputs, preset="greedy", backend="ct2")
    same = sum(a == b for a, b in zip(reference, outputs))
    report("ct2", "ok", rows=rows, ct2_sent_s=round(rows / wall_ct2, 1), transformers_sent_s=round(rows / wall_hf, 1),
           ratio=round(wall_hf / wall_ct2, 2), same_outputs=f"{same}/{rows}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow_cpu", action="store_true", help="run the wiring on CPU with small sizes")
    parser.add_argument("--steps", type=int, help="training steps per run (default 300 on GPU, 20 on CPU)")
    parser.add_argument("--rows", type=int, help="rows to generate (default 8000 on GPU, 64 on CPU)")
    options = parser.parse_args()
    if not cuda() and not options.allow_cpu:
        print("no CUDA device: run on a GPU machine, or pass --allow_cpu to check the wiring", file=sys.stderr)
        return 2
    on_gpu = cuda()
    steps = options.steps or (300 if on_gpu else 20)
    rows = options.rows or (8000 if on_gpu else 64)
    model_config = GPU_MODEL if on_gpu else CPU_MODEL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hf-encdec-gpu-check-") as folder:
        work = Path(folder)
        run_check("env", check_env)
        trained: dict = {}
        run_check("train", lambda: trained.update(check_training(work, steps, model_config)))
        if "model" in trained:
            run_check("generate", check_generate, trained["model"], rows)
            run_check("oom", check_oom, trained["model"])
            run_check("qlora", check_qlora, work, trained["model"], steps, trained["peak_mib"])
            run_check("ct2", check_ct2, trained["model"], rows)
        run_check("fsdp", check_fsdp, work, max(steps // 3, 10), model_config)
    print(f"\n{len(results)} checks in {time.perf_counter() - started:.0f} s")
    print("\n".join(results))
    return 1 if any(": FAIL" in line for line in results) else 0


if __name__ == "__main__":
    sys.exit(main())
