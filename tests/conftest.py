"""Shared fixtures: tiny pretrained-style checkpoints built once per session, and small data files.

Each tiny model is saved with `save_pretrained` (safetensors) next to a tokenizer trained with
`tokenizers`, and the code under test loads it through the real `from_pretrained` path, the same
path a Hub id takes. Nothing here uses hf_encdec, so the fixtures cannot hide its bugs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hub_server import HubServer

# huggingface_hub reads HF_ENDPOINT and HF_HOME once, when it is imported (`constants`), and test modules
# import it while they are collected: so the loopback test Hub gets its port here, before any of them.
# A fresh HF_HOME keeps a saved login out of the tests; the server only answers while `hub` is in use.
if "huggingface_hub" in sys.modules:
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could point HF_ENDPOINT at the test Hub")
TEST_HUB = HubServer()
os.environ.update(HF_ENDPOINT=TEST_HUB.url, HF_HOME=tempfile.mkdtemp(prefix="hf-encdec-test-home-"))
for name in ("HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(name, None)


def pytest_unconfigure(config) -> None:
    TEST_HUB.httpd.server_close()
    shutil.rmtree(os.environ["HF_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def hub() -> HubServer:
    """The test Hub, serving at HF_ENDPOINT until the session ends. Users: alice (org `team`), bob."""
    TEST_HUB.state.add_user("hf_alice_write", "alice", orgs=["team"])
    TEST_HUB.state.add_user("hf_alice_read", "alice", role="read")
    TEST_HUB.state.add_user("hf_bob_write", "bob")
    yield TEST_HUB.start()
    TEST_HUB.stop()

WORDS = ("red blue green small large cat dog bird tree house river stone sun moon car road "
         "apple bread water fire snow rain wind city boat book door hand light night").split()

TINY_SIZES = {
    "t5": {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2},
    "bart": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
             "max_position_embeddings": 128},
    "marian": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
               "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
               "max_position_embeddings": 128},
}


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """A learnable toy task: the target is the source words in reverse order."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(2, 5))
        pairs.append((" ".join(words), " ".join(reversed(words))))
    return pairs


def write_jsonl(path: Path, pairs, source="source", target="target") -> Path:
    path.write_text("".join(json.dumps({source: s, target: t}) + "\n" for s, t in pairs), encoding="utf-8")
    return path


def _tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins tokens with spaces
    tok.train_from_iterator([" ".join(WORDS)] * 2, trainers.WordLevelTrainer(special_tokens=specials))
    single = "<s> $A </s>" if family == "bart" else "$A </s>"
    used = [t for t in specials if t in single.split()]
    tok.post_processor = processors.TemplateProcessing(single=single,
                                                       special_tokens=[(t, tok.token_to_id(t)) for t in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")


def build_tiny_model(family: str, directory: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    tokenizer = _tokenizer(family)
    config_class, model_class = {
        "t5": ("T5Config", "T5ForConditionalGeneration"),
        "bart": ("BartConfig", "BartForConditionalGeneration"),
        "marian": ("MarianConfig", "MarianMTModel"),
    }[family]
    start = tokenizer.eos_token_id if family == "bart" else tokenizer.pad_token_id
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
           "decoder_start_token_id": start}
    if family == "marian":
        ids["decoder_vocab_size"] = len(tokenizer)
    config = getattr(transformers, config_class)(**TINY_SIZES[family], **ids)
    model = getattr(transformers, model_class)(config)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, ids[key])
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(family, root / family) for family in TINY_SIZES}


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    pairs = make_pairs(260)
    return {
        "train": write_jsonl(root / "train.jsonl", pairs[:200]),
        "validation": write_jsonl(root / "validation.jsonl", pairs[200:230]),
        "test": write_jsonl(root / "test.jsonl", pairs[230:]),
    }


@pytest.fixture
def quick_args(pair_files, tmp_path) -> dict:
    """Flat keys for a short, fast run on the toy pairs."""
    return {
        "train_file": str(pair_files["train"]),
        "validation_file": str(pair_files["validation"]),
        "test_file": str(pair_files["test"]),
        "output_dir": str(tmp_path / "run"),
        "max_steps": 4,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 1,
        "max_source_length": 16,
        "max_target_length": 16,
        "disable_tqdm": True,
    }


def build_tiny_bert(directory: Path, hidden_size: int = 32) -> Path:
    """A BERT checkpoint with its MLM head, as bert-base-uncased is published (usable as encoder or decoder)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    torch.manual_seed(0)
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizer(vocab=vocab)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_gpt2(directory: Path) -> Path:
    """A byte-level GPT-2 checkpoint whose tokenizer, like GPT-2's, has no pad token."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    torch.manual_seed(0)
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    config = GPT2Config(vocab_size=len(vocab), n_embd=48, n_layer=2, n_head=4, n_positions=128,
                        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|endoftext|>"])
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_pair_models(tmp_path_factory) -> dict[str, Path]:
    """Encoder/decoder checkpoints for warm starts: BERT (hidden 32) and GPT-2 (hidden 48, so the pair projects)."""
    root = tmp_path_factory.mktemp("tiny-pair-models")
    return {"bert": build_tiny_bert(root / "bert"), "gpt2": build_tiny_gpt2(root / "gpt2")}


@pytest.fixture(autouse=True)
def _restore_hf_encdec_logger():
    """A CLI run gives the hf_encdec logger its own handler and stops propagation; later caplog tests need it back."""
    logger = logging.getLogger("hf_encdec")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


@pytest.fixture
def recipe_smoke_args() -> list[str]:
    """Flags that shrink a shipped recipe to a seconds-long smoke run on a tiny checkpoint."""
    return ["--max_train_samples", "64", "--max_eval_samples", "8", "--max_predict_samples", "8",
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_strategy", "no",
            "--save_strategy", "no", "--early_stopping_patience", "null", "--preset", "greedy"]
