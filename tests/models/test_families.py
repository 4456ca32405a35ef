"""Every AutoModelForSeq2SeqLM family: built tiny from its config, fine-tuned through the CLI, reloaded with
vanilla transformers, and generating; and each family's decoder inputs built the way its own forward() would."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import WORDS, make_pairs, write_jsonl

from hf_encdec.cli import main

VOCAB = 4 + len(WORDS)  # <pad> </s> <unk> <s>, then the words
SPECIAL_IDS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 3}
BART = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 64}
T5 = {"d_model": 32, "d_ff": 32, "d_kv": 16, "num_heads": 2, "num_layers": 1, "num_decoder_layers": 1}
GEMMA = {"hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 16, "query_pre_attn_scalar": 16, "max_position_embeddings": 64,
         "sliding_window": 16, "vocab_size": VOCAB, **SPECIAL_IDS}
SEAMLESS = {"hidden_size": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 64,
            "speech_encoder_layers": 1, "t2u_encoder_layers": 1, "t2u_decoder_layers": 1}
BERT = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 64, "pad_token_id": 0}

# model_type -> the sizes of a tiny model (about 20k parameters); the special ids are added by build_family.
FAMILY_SIZES = {
    "bart": BART,
    "bigbird_pegasus": {**BART, "attention_type": "original_full"},  # block-sparse needs sources of many blocks
    "blenderbot": BART,
    "blenderbot-small": BART,
    "encoder-decoder": {},  # a saved warm-started pair: two BERT halves (build_family)
    "fsmt": {**BART, "src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB, "langs": ["en", "de"]},
    "led": {**{k: v for k, v in BART.items() if k != "max_position_embeddings"}, "attention_window": [4],
            "max_encoder_position_embeddings": 64, "max_decoder_position_embeddings": 64},
    "longt5": T5,
    "m2m_100": BART,
    "marian": {**BART, "decoder_vocab_size": VOCAB},
    "mbart": BART,
    "mt5": T5,
    "mvp": BART,
    "nllb-moe": {**BART, "num_experts": 2, "expert_capacity": 4, "encoder_sparse_step": 1, "decoder_sparse_step": 1},
    "pegasus": BART,
    "pegasus_x": {**BART, "num_global_tokens": 4, "block_size": 4},
    "plbart": BART,
    "prophetnet": {"hidden_size": 32, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "num_encoder_layers": 1,
                   "num_decoder_layers": 1, "num_encoder_attention_heads": 2, "num_decoder_attention_heads": 2,
                   "ngram": 2, "max_position_embeddings": 64},
    "seamless_m4t": SEAMLESS,  # SeamlessM4TForTextToText: the text encoder and decoder only
    "seamless_m4t_v2": SEAMLESS,
    "switch_transformers": {**T5, "num_experts": 2, "expert_capacity": 4, "num_sparse_encoder_layers": 1,
                            "num_sparse_decoder_layers": 1},
    "t5": T5,
    "t5gemma": {"encoder": GEMMA, "decoder": GEMMA},
    # Text in, text out; its encoder also takes images, so the config names a (tiny) vision tower and image ids.
    "t5gemma2": {"encoder": {"text_config": GEMMA, "mm_tokens_per_image": 4, "boi_token_index": VOCAB - 3,
                             "eoi_token_index": VOCAB - 2, "image_token_index": VOCAB - 1,
                             "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 16,
                                               "intermediate_size": 16, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "image_size": 16, "patch_size": 8}},
                 "decoder": GEMMA, "image_token_index": VOCAB - 1},
    "umt5": T5,
}
# T5-style families (and Marian) start decoding from <pad>; the others from </s>, as their checkpoints do.
PAD_STARTS = {"t5", "mt5", "umt5", "longt5", "switch_transformers", "marian"}

SPEECH = ("speech to text: a decoder-only language model fed by an audio encoder (is_encoder_decoder is false), "
          "it needs audio inputs")
# model_type -> why hf-encdec cannot fine-tune it on text pairs.
EXCLUDED = {name: SPEECH for name in (
    "audioflamingo3", "glmasr", "granite_speech", "granite_speech_plus", "moss_transcribe_diarize", "musicflamingo",
    "nemo_speechlm", "omniasr", "qwen2_audio", "qwen3_asr", "vibevoice_asr", "voxtral", "voxtral_realtime")}


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", "<s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins tokens with spaces
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")


def _config(family: str):
    from transformers import AutoConfig, BertConfig, EncoderDecoderConfig

    start = SPECIAL_IDS["pad_token_id"] if family in PAD_STARTS else SPECIAL_IDS["eos_token_id"]
    if family == "encoder-decoder":
        config = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**BERT), BertConfig(**BERT))
        config.update({**SPECIAL_IDS, "decoder_start_token_id": SPECIAL_IDS["bos_token_id"]})
        return config
    sizes = {**FAMILY_SIZES[family], **SPECIAL_IDS, "decoder_start_token_id": start}
    if family != "fsmt":  # FSMT has a vocabulary per side instead
        sizes["vocab_size"] = VOCAB
    return AutoConfig.for_model(family, **sizes)


def build_family(family: str, directory: Path) -> Path:
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    config = _config(family)
    model = AutoModelForSeq2SeqLM.from_config(config)
    model.generation_config.update(**SPECIAL_IDS, decoder_start_token_id=config.decoder_start_token_id)
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def family_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family-data")
    pairs = make_pairs(37, seed=3)
    return {"train": write_jsonl(root / "train.jsonl", pairs[:32]),
            "validation": write_jsonl(root / "validation.jsonl", pairs[32:34]),
            "test": write_jsonl(root / "test.jsonl", pairs[34:])}


def test_every_seq2seq_family_is_covered_or_excluded():
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    assert not set(FAMILY_SIZES) & set(EXCLUDED)
    assert set(FAMILY_SIZES) | set(EXCLUDED) == set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES), \
        "a transformers family is new (or gone): add it to FAMILY_SIZES, or to EXCLUDED with the reason"


@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
def test_family_fine_tunes_reloads_and_generates(family, family_data, tmp_path):
    """Trained and saved by hf-encdec; loaded by vanilla transformers, whose generate() repeats its predictions."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model_dir, out = build_family(family, tmp_path / "model"), tmp_path / "run"
    assert main(["train", "--model_name_or_path", str(model_dir), "--output_dir", str(out),
                 *(f"--{key}_file={path}" for key, path in family_data.items()),
                 "--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_strategy", "no",
                 "--save_strategy", "no", "--max_source_length", "16", "--max_target_length", "16",
                 "--disable_tqdm", "true"]) == 0
    assert json.loads((out / "metrics.json").read_text())["train"]["train_loss"] > 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert model.config.model_type == family
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    with torch.inference_mode():
        for row in rows:
            ids = model.generate(**tokenizer([row["source"]], return_tensors="pt"))
            assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == row["prediction"]


@pytest.mark.parametrize("family", sorted(FAMILY_SIZES))
def test_collator_decoder_inputs_are_the_family_own(family, tmp_path):
    """With the labels popped (as the Trainer does for hf-encdec's loss), the collator's decoder inputs give the
    logits the model computes from its labels itself, at every target position: they are the ones its
    forward() would have shifted. The labels keep their -100s."""
    from transformers import AutoModelForSeq2SeqLM

    from hf_encdec.training.collator import Seq2SeqCollator, decoder_inputs_from_labels

    model = AutoModelForSeq2SeqLM.from_pretrained(build_family(family, tmp_path)).eval()
    tokenizer = _tokenizer()
    features = [{**tokenizer(source), "labels": tokenizer(text_target=target)["input_ids"]}
                for source, target in make_pairs(4, seed=1)]
    collator = Seq2SeqCollator(tokenizer, decoder_inputs=decoder_inputs_from_labels(model), label_pad_token_id=-100)
    batch = collator(features)
    labels, decoder_input_ids = batch.pop("labels"), batch.pop("decoder_input_ids")
    targets = labels != -100
    assert not targets.all()  # padded labels: the shift must turn -100 into <pad>, in its copy only
    with torch.inference_mode():
        ours = model(**batch, decoder_input_ids=decoder_input_ids).logits
        if family == "fsmt":  # its forward() shifts the *sources* when given no decoder inputs
            own = model(**batch, decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels.clone())).logits
        else:
            own = model(**batch, labels=labels).logits
    assert torch.allclose(ours[targets], own[targets], atol=1e-5), (ours - own)[targets].abs().max()


def test_default_lengths_are_fitted_to_the_model_positions(quick_args, tmp_path, capsys):
    """max_source_length / max_target_length left at their defaults (1024 / 128) shrink to a 64-position Marian's
    limit, said in one line each and recorded in run_config.yaml; a length the user set beyond it is refused."""
    import yaml

    model_dir = str(build_family("marian", tmp_path / "marian"))
    args = {k: v for k, v in quick_args.items() if k not in ("max_source_length", "max_target_length")}
    assert main(["train", "--model_name_or_path", model_dir, *(f"--{k}={v}" for k, v in args.items())]) == 0
    logged = capsys.readouterr().err
    for key, default in (("max_source_length", 1024), ("max_target_length", 128)):
        assert f"{key} {default} -> 64: the model's position limit (max_position_embeddings)" in logged
    saved = yaml.safe_load((Path(args["output_dir"]) / "run_config.yaml").read_text())
    assert (saved["max_source_length"], saved["max_target_length"]) == (64, 64)

    args["output_dir"] += "-explicit"
    assert main(["train", "--model_name_or_path", model_dir, *(f"--{k}={v}" for k, v in args.items()),
                 "--max_source_length", "1024"]) == 2
    assert "'max_source_length': 1024 is beyond the model's 64 positions" in capsys.readouterr().err


def build_nllb(directory: Path) -> Path:
    """An NLLB checkpoint as published (M2M100 weights, NllbTokenizer), tiny, with two language codes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator([" ".join(WORDS)] * 2, trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    trained = json.loads(bpe.to_str())["model"]
    tokenizer = NllbTokenizerFast(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                                  extra_special_tokens=["eng_Latn", "deu_Latn"])
    torch.manual_seed(0)
    ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}
    model = M2M100ForConditionalGeneration(M2M100Config(vocab_size=len(tokenizer), **BART, **ids))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_nllb_translates_end_to_end(family_data, tmp_path):
    """Fine-tuned with language codes, every saved preset starting with the target code, then generate (both
    backends, alike) and evaluate."""
    from transformers import AutoTokenizer

    out = tmp_path / "run"
    assert main(["train", "--model_name_or_path", str(build_nllb(tmp_path / "nllb")), "--output_dir", str(out),
                 "--task", "translation", "--source_lang", "eng_Latn", "--target_lang", "deu_Latn",
                 "--source_column", "source", "--target_column", "target",
                 *(f"--{key}_file={path}" for key, path in family_data.items()),
                 "--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_strategy", "no",
                 "--save_strategy", "no", "--max_source_length", "16", "--max_target_length", "16",
                 "--disable_tqdm", "true"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.convert_ids_to_tokens(tokenizer("red cat")["input_ids"]) == ["eng_Latn", "▁red", "▁cat", "</s>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer(text_target="red")["input_ids"]) == ["deu_Latn", "▁red", "</s>"]
    german = tokenizer.convert_tokens_to_ids("deu_Latn")
    for preset in [out / "generation_config.json", *(out / "presets").glob("*.json")]:
        assert json.loads(preset.read_text())["forced_bos_token_id"] == german, preset.name
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.language == ["eng", "deu"]  # ISO 639, as the Hub's field takes

    inputs = tmp_path / "in.txt"
    inputs.write_text("red cat\nsun moon tree\n")
    backends = ["transformers"] + (["ct2"] if importlib.util.find_spec("ctranslate2") else [])
    outputs = {}
    for backend in backends:
        output = tmp_path / f"out-{backend}.jsonl"
        assert main(["generate", "--model", str(out), "--input", str(inputs), "--output", str(output),
                     "--preset", "greedy", "--backend", backend]) == 0
        outputs[backend] = [json.loads(line)["prediction"] for line in output.read_text().splitlines()]
    assert len(outputs["transformers"]) == 2 and all(o == outputs["transformers"] for o in outputs.values())
    assert main(["evaluate", "--model", str(out), "--data", str(family_data["test"]), "--preset", "greedy"]) == 0
