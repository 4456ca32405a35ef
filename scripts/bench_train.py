"""Benchmark training throughput: fixed-size batches against token-budget batches, in one run.

Rows, each one pass over the same training pairs (so the same target tokens) from the same
initial weights, with the same optimizer (AdamW, linear decay after 10% warm-up, clipping at 1.0):
  (a)  the transformers translation example's set-up: Seq2SeqTrainer, every row padded to the
       max lengths (pad_to_max_length), random batches of --batch_size
  (b)  Seq2SeqTrainer with dynamic padding (DataCollatorForSeq2Seq), random batches of --batch_size
  (c)  hf_encdec's EncDecTrainer with token-budget batches (train_sampling_strategy token_budget)
  (d)  a bare torch loop over the very batches of (c): the floor for our framework overhead
Prints non-padding target tokens/s, the padding share of the batch tensors, the ratios, and
the validation loss (token-level, no dropout) each row ends with.

    flock /tmp/hf_encdec_bench.lock python scripts/bench_train.py --threads 2

Data: Multi30k En->De captions (../shared/data/multi30k) with --long_share of the rows
replaced by concatenations of 4-10 captions, so lengths are skewed as in real corpora (many
short pairs, a few long documents). The model is a small Marian-style transformer built here.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import math
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"


def read_pairs(split: str, limit: int, long_share: float, seed: int) -> list[tuple[str, str]]:
    def lines(lang: str) -> list[str]:
        with gzip.open(MULTI30K / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
            return [line.strip() for _, line in zip(range(limit), f)]

    pairs = list(zip(lines("en"), lines("de")))
    rng = random.Random(seed)
    for row in rng.sample(range(len(pairs)), int(long_share * len(pairs))):
        joined = rng.sample(pairs, rng.randint(4, 10))
        pairs[row] = (" ".join(s for s, _ in joined), " ".join(t for _, t in joined))
    return pairs


def build_model_and_tokenizer(pairs, longest: int):
    from hf_encdec.config.keys import ModelArguments
    from hf_encdec.models.build import build_scratch

    sizes = {"architecture": "marian", "d_model": 128, "encoder_layers": 2, "decoder_layers": 2,
             "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 512,
             "decoder_ffn_dim": 512, "dropout": 0.1, "scale_embedding": True}
    texts = [s for s, _ in pairs] + [t for _, t in pairs]
    return build_scratch(ModelArguments(model_config=sizes, tokenizer_vocab_size=4000), texts, longest)


def tokenize(tokenizer, pairs, pad_to: tuple[int, int] | None = None):
    from datasets import Dataset

    padding = "max_length" if pad_to else False
    source = tokenizer([s for s, _ in pairs], padding=padding, max_length=pad_to[0] if pad_to else None)
    labels = tokenizer(text_target=[t for _, t in pairs], padding=padding,
                       max_length=pad_to[1] if pad_to else None)["input_ids"]
    if pad_to:  # as run_translation.py does with ignore_pad_token_for_loss
        labels = [[t if t != tokenizer.pad_token_id else -100 for t in row] for row in labels]
    return Dataset.from_dict({**source, "labels": labels})


class CountingCollator:
    """Wraps a collator; counts the real and the padded tokens of every batch it makes."""

    def __init__(self, collate):
        self.collate = collate
        self.real = self.padded = self.target_tokens = 0

    def __call__(self, features):
        batch = self.collate(features)
        target_real = int((batch["labels"] != -100).sum())
        self.real += int(batch["attention_mask"].sum()) + target_real
        self.padded += batch["input_ids"].numel() + batch["labels"].numel()
        self.target_tokens += target_real
        return batch


def trainer_args(args, output_dir: str, **extra):
    from transformers import Seq2SeqTrainingArguments

    from hf_encdec.training.trainer import EncDecTrainingArguments

    return (EncDecTrainingArguments if extra else Seq2SeqTrainingArguments)(
        output_dir=output_dir, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type=args.lr_scheduler_type, weight_decay=0.0,
        warmup_steps=args.warmup,
        logging_steps=10**6, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, seed=args.seed, dataloader_pin_memory=False, **extra)


def run_trainer(trainer_class, model, args, dataset, collator, compute_loss_func=None, **extra):
    """Seconds of trainer.train() (the dataloader and optimizer set-up included: a user pays for them too)."""
    with tempfile.TemporaryDirectory() as out:
        trainer = trainer_class(model=model, args=trainer_args(args, out, **extra), train_dataset=dataset,
                                data_collator=collator, compute_loss_func=compute_loss_func)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start, trainer


def bare_loop(model, args, dataset, collator, batches) -> float:
    """forward, token-level loss, backward, clip, AdamW and scheduler step: what the Trainer does per batch."""
    import torch
    from transformers import get_scheduler

    from hf_encdec.training.trainer import token_level_loss

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=math.ceil(args.warmup * len(batches)),
                             num_training_steps=len(batches))
    model.train()
    start = time.perf_counter()
    for indices in batches:
        batch = collator(dataset.__getitems__(indices))  # the rows as the Trainer's DataLoader fetches them
        labels = batch.pop("labels")
        loss = token_level_loss(model(**batch), labels, (labels != -100).sum())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def validation_loss(model, dataset, collate) -> float:
    import torch

    model.eval()
    total = count = 0.0
    with torch.no_grad():
        order = sorted(range(len(dataset)), key=lambda i: -len(dataset[i]["input_ids"]))
        for start in range(0, len(order), 64):
            batch = collate([dataset[i] for i in order[start:start + 64]])
            labels = batch.pop("labels")
            logits = model(**batch).logits
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                             reduction="sum"))
            count += int((labels != -100).sum())
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_rows", type=int, default=6000)
    parser.add_argument("--validation_rows", type=int, default=500)
    parser.add_argument("--long_share", type=float, default=0.05, help="share of rows that join 4-10 captions")
    parser.add_argument("--batch_size", type=int, default=32, help="examples per batch of (a) and (b)")
    parser.add_argument("--max_tokens", type=int, default=None,
                        help="budget of (c); default: batch_size x the mean source+target length x 1.15, "
                             "so (c) takes about as many optimizer steps as (b)")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_scheduler_type", default="linear")
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up share of the steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default="abcd", help="which set-ups to run, e.g. bcd")
    args = parser.parse_args()

    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, default_data_collator

    from hf_encdec.training.samplers import TokenBudgetBatchSampler
    from hf_encdec.training.trainer import EncDecTrainer, dataset_lengths, token_level_loss

    torch.set_num_threads(args.threads)
    train_pairs = read_pairs("train", args.train_rows, args.long_share, args.seed)
    validation_pairs = read_pairs("val", args.validation_rows, args.long_share, args.seed + 1)
    torch.manual_seed(args.seed)
    tokenizer, initial = build_model_and_tokenizer(train_pairs, 1024)
    train = tokenize(tokenizer, train_pairs)
    validation = tokenize(tokenizer, validation_pairs)
    source, target = dataset_lengths(train)
    max_tokens = args.max_tokens or int(args.batch_size * (source + target).mean() * 1.15)
    pad_to = (int(source.max()), int(target.max()))
    dynamic = DataCollatorForSeq2Seq(tokenizer, model=initial, label_pad_token_id=-100)
    print(f"data: {len(train)} training pairs, source tokens p50/max {int(sorted(source)[len(source) // 2])}/"
          f"{pad_to[0]}, target p50/max {int(sorted(target)[len(target) // 2])}/{pad_to[1]}; "
          f"{int(target.sum())} target tokens a pass; model {initial.num_parameters() / 1e6:.1f}M parameters; "
          f"torch threads {args.threads}; max_tokens {max_tokens}", flush=True)

    results = {}
    budget_batches = TokenBudgetBatchSampler(source, target, max_tokens, seed=args.seed).epoch_batches(0)
    for row in args.rows:
        model = copy.deepcopy(initial)
        torch.manual_seed(args.seed)
        if row == "a":
            padded = tokenize(tokenizer, train_pairs, pad_to=pad_to)
            collator = CountingCollator(default_data_collator)
            seconds, trainer = run_trainer(Seq2SeqTrainer, model, args, padded, collator)
        elif row == "b":
            collator = CountingCollator(dynamic)
            seconds, trainer = run_trainer(Seq2SeqTrainer, model, args, train, collator)
        elif row == "c":
            collator = CountingCollator(dynamic)
            seconds, trainer = run_trainer(EncDecTrainer, model, args, train, collator, token_level_loss,
                                           train_sampling_strategy="token_budget", max_tokens=max_tokens)
            assert trainer.state.global_step == len(budget_batches)  # (d) replays the same batches
        else:
            collator = CountingCollator(dynamic)
            seconds = bare_loop(model, args, train, collator, budget_batches)
        steps = trainer.state.global_step if row != "d" else len(budget_batches)
        results[row] = {"seconds": seconds, "tokens_per_s": collator.target_tokens / seconds, "steps": steps,
                        "padding": 1 - collator.real / collator.padded, "target_tokens": collator.target_tokens,
                        "validation_loss": validation_loss(model, validation, dynamic)}
        r = results[row]
        print(f"({row}) {r['seconds']:.1f}s, {r['steps']} steps, {r['tokens_per_s']:.0f} target tokens/s, "
              f"padding {100 * r['padding']:.1f}%, validation loss {r['validation_loss']:.3f}", flush=True)

    print("\n| set-up | steps | target tokens | s | target tokens/s | padding | validation loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"a": "(a) pad to max length", "b": "(b) Seq2SeqTrainer, dynamic padding",
             "c": "(c) hf_encdec token budget", "d": "(d) bare torch loop, (c)'s batches"}
    for row, r in results.items():
        print(f"| {names[row]} | {r['steps']} | {r['target_tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{100 * r['padding']:.1f}% | {r['validation_loss']:.3f} |")
    ratios = [("c", "b", 1.5), ("c", "d", 0.9), ("c", "a", None)]
    for top, bottom, target_ratio in ratios:
        if top in results and bottom in results:
            ratio = results[top]["tokens_per_s"] / results[bottom]["tokens_per_s"]
            goal = f" (target >= {target_ratio})" if target_ratio else ""
            print(f"({top}) / ({bottom}) target tokens/s: {ratio:.2f}x{goal}")
    if "b" in results and "c" in results:
        delta = results["c"]["validation_loss"] - results["b"]["validation_loss"]
        print(f"validation loss (c) - (b): {delta:+.3f} (same target tokens; lower is better)")
    if not all(math.isfinite(r["validation_loss"]) for r in results.values()):
        sys.exit("a run diverged")


if __name__ == "__main__":
    main()
