"""Full fine-tuning against LoRA on the same base model: loss after N steps and trainable parameters.

    python scripts/compare_lora.py BASE_MODEL_DIR [--steps 500] [--data ../shared/data/multi30k]
        [--output_dir runs/compare-lora] [--full_lr 1e-4] [--lora_lr 1e-3] [--lora_r 16]
        [--source_prefix "translate English to German: "] [--batch_size 32] [--eval_rows 200]

Both runs read Multi30k En→De (train.{lang}.gz / val.{lang}.gz) through hf-encdec's own
`train_file` pattern, use the same seed, batch size and steps, and differ only in `peft` and
the learning rate (adapters start from zero and need larger steps). "loss" is the mean
training loss of the last tenth of the run, so one noisy batch does not decide it; BLEU is
greedy decoding on the first --eval_rows validation captions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import hf_encdec

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_model", help="local directory (or Hub id) of a pretrained seq2seq model")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/val.{en,de}.gz")
    parser.add_argument("--output_dir", type=Path, default=Path("runs/compare-lora"))
    parser.add_argument("--full_lr", type=float, default=1e-4)
    parser.add_argument("--lora_lr", type=float, default=1e-3)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--eval_rows", type=int, default=200)
    parser.add_argument("--max_train_samples", type=int, default=None, help="use only the first N training pairs")
    parser.add_argument("--source_prefix", default=None, help='e.g. "translate English to German: " for T5')
    return parser.parse_args(argv)


def run_config(args: argparse.Namespace, name: str) -> dict:
    config = {
        "model_name_or_path": args.base_model, "task": "translation", "source_lang": "en", "target_lang": "de",
        "train_file": str(args.data / "train.{lang}.gz"), "validation_file": str(args.data / "val.{lang}.gz"),
        "max_train_samples": args.max_train_samples, "max_eval_samples": args.eval_rows,
        "source_prefix": args.source_prefix, "max_source_length": 128, "max_target_length": 128,
        "output_dir": str(args.output_dir / name), "overwrite_output_dir": True, "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size, "per_device_eval_batch_size": 64,
        "learning_rate": args.full_lr, "warmup_steps": 0.05, "logging_steps": max(1, args.steps // 50),
        "eval_strategy": "no", "save_strategy": "no", "metrics": ["bleu"], "seed": 42,
    }
    if name == "lora":
        config.update(peft="lora", lora_r=args.lora_r, lora_alpha=2 * args.lora_r, learning_rate=args.lora_lr)
    return config


def final_loss(output_dir: Path) -> float:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "train.en.gz").is_file():
        print(f"compare_lora: no train.en.gz in {args.data} (pass --data)", file=sys.stderr)
        return 2
    rows = []
    for name in ("full", "lora"):
        result = hf_encdec.train(run_config(args, name))
        model = result.metrics["model"]
        rows.append((name, final_loss(result.output_dir), model["trainable_parameters"], model["total_parameters"],
                     result.metrics["validation"].get("bleu")))
    print(f"\n{args.base_model}: {args.steps} steps on Multi30k En→De, batch {args.batch_size}")
    print(f"{'run':<6} {'loss':>8} {'trainable':>14} {'total':>14} {'fraction':>9} {'BLEU':>6}")
    for name, loss, trainable, total, bleu in rows:
        print(f"{name:<6} {loss:>8.4f} {trainable:>14,} {total:>14,} {100 * trainable / total:>8.2f}% {bleu:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
