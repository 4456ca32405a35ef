"""Benchmark batch generation: the loops a user writes against hf_encdec's generate, in one run.

Rows (each for greedy and for beam 4):
  (a)  one example at a time
  (b)  fixed batches in file order (the plain loop)
  (b') fixed batches over length-sorted inputs
  (c)  hf_encdec.generate: length-sorted windows, token-budget batches, order restored
  (ct2) with --ct2: raw CTranslate2 translate_batch on the same input, and ours with --backend ct2
Prints generated tokens/s (the tokens of (b), per preset) and the ratios, and checks that greedy
outputs match (a) exactly and beam outputs match (a), or (b) with --skip_per_example_beam.

    python scripts/bench_generate.py --ct2 --threads 1      # a small T5 built here, skewed input
    python scripts/bench_generate.py --train_steps 600      # the same T5 trained on Multi30k first
    python scripts/bench_generate.py --model runs/multi30k --rows 240 --max_new_tokens 160 --threads 1

Inputs are English Multi30k captions (../shared/data/multi30k) when present, synthetic
sentences otherwise; every 6th row joins several captions, so lengths are skewed as in real
files (a few long documents among many short lines).
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MULTI30K = REPO.parent / "shared" / "data" / "multi30k" / "train.en.gz"


def read_sentences(limit: int) -> list[str]:
    if MULTI30K.exists():
        with gzip.open(MULTI30K, "rt", encoding="utf-8") as f:
            return [line.strip() for _, line in zip(range(limit), f) if line.strip()]
    rng = random.Random(0)
    words = "a man woman dog cat runs sits on the in red blue street park water ball with two young".split()
    return [" ".join(rng.choices(words, k=rng.randint(4, 16))) for _ in range(limit)]


def skewed_inputs(sentences: list[str], rows: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    picked = []
    for i in range(rows):
        count = rng.randint(4, 10) if i % 6 == 0 else 1
        picked.append(" ".join(rng.choice(sentences) for _ in range(count)))
    return picked


def build_model(directory: Path, sentences: list[str]) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from hf_encdec.models.build import train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer(sentences, 4000, "$A </s>")
    config = T5Config(vocab_size=len(tokenizer), d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=2,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    model = T5ForConditionalGeneration(config)
    for key in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, getattr(config, key))
    # Untrained weights would emit <pad>/<unk> forever: make them emit words, as a trained model does.
    model.generation_config.suppress_tokens = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def train_model(directory: Path, steps: int) -> Path:
    """The same small T5 trained from scratch on Multi30k En→De by hf_encdec, so that its outputs end where a
    trained model's do (a random model runs most rows to the length limit: nothing finishes early)."""
    import hf_encdec

    data = MULTI30K.parent
    result = hf_encdec.train({
        "task": "translation", "source_lang": "en", "target_lang": "de",
        "train_file": str(data / "train.{lang}.gz"), "validation_file": str(data / "val.{lang}.gz"),
        "model_config": {"architecture": "t5", "d_model": 128, "d_ff": 512, "d_kv": 32, "num_heads": 4,
                         "num_layers": 2},
        "tokenizer_vocab_size": 4000, "max_steps": steps, "max_tokens": 2560, "learning_rate": 3e-3,
        "warmup_steps": steps // 10, "output_dir": str(directory), "eval_strategy": "no", "save_strategy": "no",
        "max_eval_samples": 64, "disable_tqdm": True, "report_to": "none"})
    return result.output_dir


def generated(ids, pad_token_id: int) -> int:
    """Generated tokens in a batch of outputs (the decoder start and padding are not generated)."""
    return int((ids[:, 1:] != pad_token_id).sum())


def per_example(model, tokenizer, sources, settings):
    import torch

    outputs, tokens = [], 0
    with torch.inference_mode():
        for source in sources:
            ids = model.generate(**tokenizer([source], return_tensors="pt"), **settings)
            outputs.append(tokenizer.decode(ids[0], skip_special_tokens=True).strip())
            tokens += generated(ids, tokenizer.pad_token_id)
    return outputs, tokens


def fixed_batches(model, tokenizer, sources, settings, batch_size, sort):
    import torch

    order = sorted(range(len(sources)), key=lambda i: len(sources[i])) if sort else list(range(len(sources)))
    outputs: list[str | None] = [None] * len(sources)
    tokens = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tokenizer([sources[i] for i in chunk], return_tensors="pt", padding=True)
            ids = model.generate(**batch, **settings)
            tokens += generated(ids, tokenizer.pad_token_id)
            for i, text in zip(chunk, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                outputs[i] = text.strip()
    return outputs, tokens


def ours(model, tokenizer, sources, settings, preset, max_tokens, backend="transformers"):
    import hf_encdec

    overrides = {k: v for k, v in settings.items() if k not in ("num_beams", "early_stopping")}
    outputs = hf_encdec.generate(model, sources, preset, tokenizer=tokenizer, max_tokens=max_tokens,
                                 backend=backend, **overrides)
    return outputs, None  # the same tokens as (b): the outputs are compared below


def ours_ct2(loaded, sources, settings, preset, max_tokens):
    """hf_encdec's windows and ordering over CTranslate2; set up (model converted, Translator built) untimed,
    as for the raw row."""
    from hf_encdec.generation.generator import _predict_stream, make_generator, resolve_preset

    overrides = {k: v for k, v in settings.items() if k not in ("num_beams", "early_stopping")}
    config = resolve_preset(loaded, preset, overrides=overrides)
    generator = make_generator(loaded, config, backend="ct2", max_tokens=max_tokens)
    start = time.perf_counter()
    outputs = list(_predict_stream(generator, iter(sources), "", 2000))
    return outputs, time.perf_counter() - start


def raw_ct2(translator, tokenizer, sources, settings, batch_size):
    """The plain CTranslate2 loop: tokens in, translate_batch, tokens out."""
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(sources)["input_ids"]]
    results = translator.translate_batch(tokens, beam_size=settings["num_beams"], max_batch_size=batch_size,
                                         max_decoding_length=settings["max_new_tokens"],
                                         suppress_sequences=settings.get("suppress_sequences") or None)
    outputs = [tokenizer.decode(tokenizer.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip()
               for r in results]
    return outputs, None


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    if fn is ours_ct2:  # it times itself, without its set-up
        return (result[0], None), result[1]
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a trained model directory (default: build a small T5)")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=32, help="the fixed batch of (b) and (b')")
    parser.add_argument("--max_tokens", type=int, default=None, help="ours: token budget (default: ours)")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip_per_example_beam", action="store_true", help="(a) for greedy only")
    parser.add_argument("--ct2", action="store_true", help="add CTranslate2 rows (pip install ctranslate2)")
    parser.add_argument("--train_steps", type=int, default=0,
                        help="train the small T5 this many steps on Multi30k first (default: random weights)")
    args = parser.parse_args()
    if args.train_steps and (args.model or not MULTI30K.exists()):
        parser.error("--train_steps trains the T5 built here on ../shared/data/multi30k: "
                     "give no --model, and have that data")

    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    sentences = read_sentences(20000)
    sources = skewed_inputs(sentences, args.rows)
    if args.model:
        model_dir = Path(args.model)
    elif args.train_steps:
        model_dir = train_model(Path(tempfile.mkdtemp()) / "t5", args.train_steps)
    else:
        model_dir = build_model(Path(tempfile.mkdtemp()) / "t5", sentences)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    lengths = sorted(len(ids) for ids in tokenizer(sources)["input_ids"])
    print(f"model {model_dir} ({model.num_parameters() / 1e6:.1f}M parameters), {len(sources)} rows, source tokens "
          f"p50 {lengths[len(lengths) // 2]} max {lengths[-1]}, {torch.get_num_threads()} threads, "
          f"batch_size {args.batch_size}, max_new_tokens {args.max_new_tokens}")

    if args.ct2:
        import ctranslate2

        from hf_encdec.generation.ct2 import converted_model, suppress_sequences
        from hf_encdec.generation.generator import LoadedModel

        loaded = LoadedModel(model, tokenizer, path=str(model_dir))
        converted = converted_model(loaded)
        translator = ctranslate2.Translator(str(converted), intra_threads=torch.get_num_threads())
        ct2_suppress = suppress_sequences(tokenizer, model.generation_config.suppress_tokens, converted)

    rows = []
    for name, beams in (("greedy", 1), ("beam", 4)):
        settings = {"max_new_tokens": args.max_new_tokens, "num_beams": beams}
        if beams > 1:
            settings.update(early_stopping=True, length_penalty=1.0)
        runs = {}
        if beams == 1 or not args.skip_per_example_beam:
            runs["(a) per example"] = timed(per_example, model, tokenizer, sources, settings)
        runs["(b) fixed batches"] = timed(fixed_batches, model, tokenizer, sources, settings, args.batch_size, False)
        runs["(b') sorted batches"] = timed(fixed_batches, model, tokenizer, sources, settings, args.batch_size, True)
        runs["(c) hf_encdec"] = timed(ours, model, tokenizer, sources, settings, name, args.max_tokens)
        if args.ct2:
            raw_settings = {**settings, "suppress_sequences": ct2_suppress}
            runs["(ct2) raw translate_batch"] = timed(raw_ct2, translator, tokenizer, sources, raw_settings,
                                                      args.batch_size)
            runs["(c) hf_encdec --backend ct2"] = timed(ours_ct2, loaded, sources, settings, name, args.max_tokens)
        baseline = runs["(b) fixed batches"][1]
        sorted_time = runs["(b') sorted batches"][1]
        reference = runs.get("(a) per example", runs["(b) fixed batches"])[0][0]
        ct2_raw = runs.get("(ct2) raw translate_batch", (None, None))[1]
        for label, ((outputs, tokens), seconds) in runs.items():
            tokens = tokens or runs["(b) fixed batches"][0][1]
            same = sum(o == r for o, r in zip(outputs, reference))
            vs_ct2 = f"{ct2_raw / seconds:.2f}" if ct2_raw else "-"
            rows.append((name, label, tokens / seconds, seconds, baseline / seconds, sorted_time / seconds, vs_ct2,
                         f"{same}/{len(outputs)}"))
        if beams == 1:
            for label in ("(c) hf_encdec", "(c) hf_encdec --backend ct2"):
                if label in runs:
                    identical = runs[label][0][0] == runs["(a) per example"][0][0]
                    print(f"greedy outputs of {label} identical to (a): {identical}")
        else:  # our loop drops finished examples; it must not change what the library's beam search returns
            against = "(a) per example" if "(a) per example" in runs else "(b) fixed batches"
            identical = runs["(c) hf_encdec"][0][0] == runs[against][0][0]
            print(f"beam outputs of (c) hf_encdec identical to {against}: {identical}")

    print("\n| preset | method | tokens/s | seconds | × (b) | × (b') | × raw ct2 | same as (a) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, label, speed, seconds, vs_b, vs_sorted, vs_ct2, same in rows:
        print(f"| {name} | {label} | {speed:.0f} | {seconds:.2f} | {vs_b:.2f} | {vs_sorted:.2f} | {vs_ct2} | {same} |")


if __name__ == "__main__":
    main()
