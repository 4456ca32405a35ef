"""Fault injection at the model-loading and training-data boundaries: a broken copy of a tiny model (or a
broken data file) costs one `hf-encdec: error:` line and exit code 2, never a traceback or a silently
wrong run; and a source far beyond any limit is truncated, counted, and does not stall generation.

Every test corrupts a copy of a session fixture in its own tmp_path, never the fixture itself.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import shutil
from pathlib import Path

import pytest
from test_error_catalogue import _assert_user_error

from hf_encdec.cli import main
from hf_encdec.errors import ConfigError
from hf_encdec.config.job_keys import DEFAULT_SOURCE_LIMIT
from hf_encdec.generation.backend import encode_sources, source_limit

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _write(file: Path, content: str | bytes) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content if isinstance(content, bytes) else content.encode())


def _remove(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).unlink()


def _edit_json(file: Path, **values) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **values}))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


# (case id, fixture family, what breaks the copy, extra generate flags, fragments the error line must hold)
GENERATE_FAULTS = [
    ("no-tokenizer-files", "t5", lambda d: _remove(d, *TOKENIZER_FILES), [],
     ["has no tokenizer files", "<unk>", "tokenizer.save_pretrained"]),
    # tokenizer.json without tokenizer_config.json: AutoTokenizer builds a BART tokenizer that drops every word
    ("tokenizer-stand-in", "bart", lambda d: _remove(d, "tokenizer_config.json"), [],
     ["no usable vocabulary", "<unk>"]),
    ("tokenizer-json-invalid", "t5", lambda d: _write(d / "tokenizer.json", '{"version": '), [],
     ["tokenizer.json:1", "not valid JSON"]),
    ("weights-truncated", "t5", lambda d: _truncate(d / "model.safetensors"), [],
     ["model.safetensors", "truncated or corrupt", "download it again"]),
    ("weights-empty", "marian", lambda d: _write(d / "model.safetensors", b""), [],
     ["model.safetensors", "truncated or corrupt"]),
    ("weights-garbage", "bart", lambda d: _write(d / "model.safetensors", b"\xff" * 64), [],
     ["model.safetensors", "truncated or corrupt"]),
    ("config-invalid", "t5", lambda d: _write(d / "config.json", '{"model_type": "t5",\n "d_model": }'), [],
     ["config.json:2", "not valid JSON"]),
    ("config-missing", "t5", lambda d: _remove(d, "config.json"), [], ["has no config.json", "save_pretrained"]),
    ("config-does-not-fit-the-weights", "t5", lambda d: _edit_json(d / "config.json", d_model=48), [],
     ["do not fit its config.json", "different models"]),
    ("generation-config-invalid", "t5", lambda d: _write(d / "generation_config.json", '{"num_beams": '), [],
     ["generation_config.json:1", "not valid JSON"]),
    ("generation-config-wrong-type", "t5", lambda d: _write(d / "generation_config.json", '{"num_beams": "four"}'),
     [], ["generation_config.json", "num_beams is 'four', expected a whole number"]),
    ("run-config-invalid-yaml", "t5", lambda d: _write(d / "run_config.yaml", "source_prefix: [x\n"), [],
     ["run_config.yaml:2", "not valid YAML", "delete it"]),
    ("run-config-not-a-mapping", "t5", lambda d: _write(d / "run_config.yaml", "- a\n"), [],
     ["run_config.yaml", "expected a mapping", "delete it"]),
    ("run-config-not-utf8", "t5", lambda d: _write(d / "run_config.yaml", b"source_prefix: caf\xe9\n"), [],
     ["run_config.yaml", "UTF-8"]),
    ("saved-preset-invalid", "t5", lambda d: _write(d / "presets" / "x.json", '{"num_beams": '), ["--preset", "x"],
     ["presets/x.json:1", "not valid JSON"]),
    ("saved-preset-wrong-type", "t5", lambda d: _write(d / "presets" / "x.json", '{"num_beams": "four"}'),
     ["--preset", "x"], ["presets/x.json", "num_beams is 'four'"]),
    ("saved-preset-not-an-object", "t5", lambda d: _write(d / "presets" / "x.json", "[1, 2]"), ["--preset", "x"],
     ["presets/x.json", "fix or delete the file"]),
    ("max-source-length-beyond-positions", "bart", lambda d: None, ["--max_source_length", "4096"],
     ["max_source_length", "128 positions"]),
]


def _generate(model: Path | str, tmp_path: Path, *extra: str, text: str = "red cat\nblue dog\n") -> int:
    source = tmp_path / "in.txt"
    source.write_text(text)
    return main(["generate", "--model", str(model), "--input", str(source), "--output", str(tmp_path / "out.jsonl"),
                 *extra])


@pytest.mark.parametrize("family, corrupt, extra, fragments", [case[1:] for case in GENERATE_FAULTS],
                         ids=[case[0] for case in GENERATE_FAULTS])
def test_a_broken_model_folder_is_one_line_in_generate(family, corrupt, extra, fragments, tiny_models, tmp_path,
                                                       capsys):
    model = _copy(tiny_models[family], tmp_path / "model")
    corrupt(model)
    code = _generate(model, tmp_path, *extra)
    _assert_user_error(code, capsys.readouterr().err, fragments)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("model, fragments", [
    (lambda m: m / "config.json", ["config.json is a file", "give the folder"]),
    (lambda m: "not//a hub id", ["no folder not//a hub id", "not a Hub id either"]),
], ids=["a-file", "impossible-hub-id"])
def test_a_model_that_is_no_folder_is_one_line(model, fragments, tiny_models, tmp_path, capsys):
    code = _generate(model(tiny_models["t5"]), tmp_path)
    _assert_user_error(code, capsys.readouterr().err, fragments)


def test_unreadable_weights_are_one_line(tiny_models, tmp_path, monkeypatch, capsys):
    """Permission bits do not stop root, so the denial comes from a patched safe_open, as the OS would raise it."""
    import safetensors

    model = _copy(tiny_models["t5"], tmp_path / "model")
    weights = str(model / "model.safetensors")
    real = safetensors.safe_open

    def denied(path, *args, **kwargs):
        if str(path) == weights:
            raise PermissionError(errno.EACCES, "Permission denied", weights)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", denied)
    code = _generate(model, tmp_path)
    _assert_user_error(code, capsys.readouterr().err, ["model.safetensors", "permission denied", "readable"])


@pytest.fixture(scope="module")
def tiny_adapter(tiny_models, tmp_path_factory) -> Path:
    """A LoRA run folder on the tiny T5, as a peft training run saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapter") / "run"
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"]),
                           LoraConfig(r=4, target_modules=["q", "v"]))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models["t5"]).save_pretrained(folder)
    return folder


ADAPTER_FAULTS = [
    ("adapter-config-invalid", lambda d: _write(d / "adapter_config.json", '{"peft_type": '),
     ["adapter_config.json:1", "not valid JSON"]),
    ("adapter-weights-truncated", lambda d: _truncate(d / "adapter_model.safetensors"),
     ["adapter_model.safetensors", "truncated or corrupt"]),
    ("adapter-without-base", lambda d: _edit_json(d / "adapter_config.json", base_model_name_or_path=None),
     ["adapter_config.json", "base_model_name_or_path"]),
    ("adapter-without-tokenizer", lambda d: _remove(d, *TOKENIZER_FILES), ["has no tokenizer files"]),
]


@pytest.mark.parametrize("corrupt, fragments", [case[1:] for case in ADAPTER_FAULTS],
                         ids=[case[0] for case in ADAPTER_FAULTS])
def test_a_broken_adapter_folder_is_one_line(corrupt, fragments, tiny_adapter, tmp_path, capsys):
    adapter = _copy(tiny_adapter, tmp_path / "adapter")
    corrupt(adapter)
    code = _generate(adapter, tmp_path)
    _assert_user_error(code, capsys.readouterr().err, fragments)


def _train(tiny_models, tiny_pair_models, pair_files, tmp_path, **keys) -> int:
    values = {"model_name_or_path": str(tiny_models["t5"]), "train_file": str(pair_files["train"]),
              "output_dir": str(tmp_path / "run"), "max_steps": 1, "eval_strategy": "no", "save_strategy": "no",
              "disable_tqdm": True, "max_source_length": 16, "max_target_length": 16}
    values.update({key: value(tmp_path, tiny_models, tiny_pair_models) if callable(value) else value
                   for key, value in keys.items()})
    return main(["train", *[item for key, value in values.items() if value is not None
                            for item in (f"--{key}", str(value))]])


def _broken(family: str, corrupt, pair: bool = False):
    """A key value for _train: a copy of the fixture `family`, broken by `corrupt`."""
    def build(tmp_path, models, pair_models):
        folder = _copy((pair_models if pair else models)[family], tmp_path / f"broken-{family}")
        corrupt(folder)
        return str(folder)
    return build


def _data(name: str, content: str | bytes):
    def build(tmp_path, models, pair_models):
        _write(tmp_path / name, content)
        return str(tmp_path / name)
    return build


def _parallel(tmp_path, models, pair_models):
    for lang in ("en", "de"):
        _write(tmp_path / f"corpus.{lang}", "red cat\nblue dog\n")
    return str(tmp_path / "corpus.{lang}")


TRAIN_FAULTS = [
    ("model-without-tokenizer-files", {"model_name_or_path": _broken("t5", lambda d: _remove(d, *TOKENIZER_FILES))},
     ["model_name_or_path", "has no tokenizer files", "--tokenizer_name"]),
    ("tokenizer-name-without-tokenizer-files",
     {"tokenizer_name": _broken("t5", lambda d: _remove(d, *TOKENIZER_FILES))},
     ["tokenizer_name", "has no tokenizer files"]),
    ("tokenizer-name-is-a-file", {"tokenizer_name": lambda t, models, p: str(models["t5"] / "tokenizer.json")},
     ["tokenizer_name", "tokenizer.json is a file"]),
    ("tokenizer-stand-in", {"model_name_or_path": _broken("bart", lambda d: _remove(d, "tokenizer_config.json"))},
     ["model_name_or_path", "no usable vocabulary"]),
    ("tokenizer-larger-than-the-embeddings", {"tokenizer_name": lambda t, m, pair: str(pair["bert"])},
     ["tokenizer_name", "35 tokens, more than the 34 embeddings"]),
    ("weights-truncated", {"model_name_or_path": _broken("t5", lambda d: _truncate(d / "model.safetensors"))},
     ["model_name_or_path", "model.safetensors", "truncated or corrupt"]),
    ("warm-start-decoder-truncated",
     {"model_name_or_path": None, "encoder_name_or_path": lambda t, m, pair: str(pair["bert"]),
      "decoder_name_or_path": _broken("gpt2", lambda d: _truncate(d / "model.safetensors"), pair=True)},
     ["decoder_name_or_path", "model.safetensors", "truncated or corrupt"]),
    ("warm-start-encoder-without-tokenizer",
     {"model_name_or_path": None, "decoder_name_or_path": lambda t, m, pair: str(pair["gpt2"]),
      "encoder_name_or_path": _broken("bert", lambda d: _remove(d, *TOKENIZER_FILES), pair=True)},
     ["encoder_name_or_path", "has no tokenizer files"]),
    ("lone-surrogate-in-json-lines",
     {"train_file": _data("s.jsonl", '{"source": "red", "target": "cat"}\n{"source": "a\\ud800b", "target": "x"}\n')},
     ["s.jsonl:2", "column 'source'", "lone surrogate", "U+D800"]),
    ("lone-surrogate-in-a-json-array",
     {"train_file": _data("s.json", '[{"source": "red", "target": "cat"}, {"source": "b", "target": "\\udfff"}]')},
     ["s.json:2", "column 'target'", "lone surrogate"]),
    ("nul-byte-in-csv", {"train_file": _data("nul.csv", "source,target\nred,cat\nblue\0,dog\n")},
     ["nul.csv:3", "NUL byte", "UTF-8"]),
    ("truncated-gzip", {"train_file": _data("t.jsonl.gz", gzip.compress(b'{"source": "a", "target": "b"}\n' * 50)[:-20])},
     ["t.jsonl.gz", "cannot be read from here on"]),
    ("same-language-pattern", {"train_file": _parallel, "source_lang": "en", "target_lang": "en"},
     ["source_lang and target_lang are both 'en'", "target_lang"]),
]


@pytest.mark.parametrize("keys, fragments", [case[1:] for case in TRAIN_FAULTS], ids=[case[0] for case in TRAIN_FAULTS])
def test_a_broken_training_input_is_one_line(keys, fragments, tiny_models, tiny_pair_models, pair_files, tmp_path,
                                             capsys):
    code = _train(tiny_models, tiny_pair_models, pair_files, tmp_path, **keys)
    _assert_user_error(code, capsys.readouterr().err, fragments)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_model_without_tokenizer_fails_before_the_data_is_read(tiny_models, tiny_pair_models, pair_files,
                                                                  tmp_path, capsys):
    broken = _broken("t5", lambda d: _remove(d, *TOKENIZER_FILES))
    code = _train(tiny_models, tiny_pair_models, pair_files, tmp_path, model_name_or_path=broken,
                  train_file=_data("bad.jsonl", "{not json\n"))
    _assert_user_error(code, capsys.readouterr().err, ["has no tokenizer files"])


# ----------------------------------------------------------------------------- source limits


def test_a_20000_word_source_is_truncated_and_counted_with_t5(tiny_models, tmp_path, capsys):
    """T5 has no position limit and its tokenizer names none: the default limit keeps the encoder's input sane."""
    long = " ".join(["red", "cat", "blue", "dog"] * 5000)
    assert _generate(tiny_models["t5"], tmp_path, text=f"{long}\nred cat\n") == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["source"] for row in rows] == [long, "red cat"]
    result = capsys.readouterr().out  # the result line, with its notes
    assert f"1 sources truncated to max_source_length={DEFAULT_SOURCE_LIMIT}" in result


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_long_sources_are_cut_as_truncation_cuts_them(family, tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models[family])
    words = "red cat blue dog house river".split()
    sources = [" ".join(words * 2000), "red cat", " ".join(words * 3), "\t".join(words * 500)]
    ids, truncated = encode_sources(tokenizer, sources, 16)
    assert ids == tokenizer(sources, truncation=True, max_length=16)["input_ids"]
    assert truncated == 3
    assert encode_sources(tokenizer, sources[1:2], 16) == (tokenizer(sources[1:2])["input_ids"], 0)


def test_a_long_source_without_whitespace_is_tokenized_whole(tiny_pair_models):
    """No word boundary in the head: the whole source decides, so the count stays right."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair_models["gpt2"])  # byte-level: a token a character here
    sources = ["x" * 5000, "y" * 10]
    ids, truncated = encode_sources(tokenizer, sources, 200)
    assert ids == tokenizer(sources, truncation=True, max_length=200)["input_ids"] and truncated == 1


def test_the_source_limit_is_the_first_that_is_set(tiny_models):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    t5, bart = (AutoModelForSeq2SeqLM.from_pretrained(tiny_models[f]) for f in ("t5", "bart"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["t5"])
    assert source_limit(t5, tokenizer) == DEFAULT_SOURCE_LIMIT  # relative positions, no tokenizer limit
    assert source_limit(bart, tokenizer) == 128  # its position embeddings
    assert source_limit(t5, tokenizer, 40) == 40
    tokenizer.model_max_length = 512
    assert source_limit(t5, tokenizer) == 512
    with pytest.raises(ConfigError, match="beyond the model's 128 positions"):
        source_limit(bart, tokenizer, 4096)


def test_training_beyond_the_tokenizers_pretrained_length_is_warned_about(tiny_models, caplog):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from hf_encdec.models.build import check_lengths

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["t5"])
    tokenizer.model_max_length = 8
    with caplog.at_level(logging.WARNING, logger="hf_encdec"):
        check_lengths(model, 16, 16, tokenizer=tokenizer)
        check_lengths(model, 8, 16, tokenizer=tokenizer)
    assert [r.getMessage() for r in caplog.records if "model_max_length=8" in r.getMessage()] == [
        "max_source_length=16 is beyond the tokenizer's model_max_length=8, the length the model was pretrained "
        "on: longer sources are kept, but the model never saw such lengths"]


# ----------------------------------------------------------------------------- silently wrong before


def test_a_warm_started_pair_generates_in_its_decoders_tokens(tiny_pair_models, quick_args, tmp_path):
    """BERT2GPT2 writes GPT-2 ids: read back with the encoder's BERT tokenizer they decoded to nothing."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import hf_encdec

    quick_args.update(encoder_name_or_path=str(tiny_pair_models["bert"]),
                      decoder_name_or_path=str(tiny_pair_models["gpt2"]), max_steps=1, test_file=None)
    out = hf_encdec.train(quick_args).output_dir
    encoder, decoder = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(out / "decoder_tokenizer")
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    with torch.inference_mode():
        ids = model.generate(**encoder(["red cat"], return_tensors="pt"), max_new_tokens=4, min_new_tokens=4)
    expected = [text.strip() for text in decoder.batch_decode(ids, skip_special_tokens=True)]
    assert expected != [""]
    assert hf_encdec.generate(str(out), ["red cat"], max_new_tokens=4, min_new_tokens=4) == expected
