"""Every bad input a user can give: exit code 2, one line naming what, where and how to fix, no traceback,
and no output directory that looks like a finished run.

Each case builds its command line from the shared context (tiny models, data files, a temp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_encdec.cli import main

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    models: dict[str, Path]
    pairs: dict[str, Path]
    tmp: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def output(self, name: str) -> str:
        """A file in `out`, which exists (outputs are checked before the model loads) and must stay empty."""
        self.out.mkdir(exist_ok=True)
        return str(self.out / name)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def args(self, model: str = "t5", **keys) -> list[str]:
        values = {"model_name_or_path": str(self.models.get(model, model)), "train_file": str(self.pairs["train"]),
                  "validation_file": str(self.pairs["validation"]), "output_dir": str(self.out), "max_steps": 1,
                  "eval_strategy": "no", "save_strategy": "no", "disable_tqdm": True, **keys}
        return ["train", *[item for key, value in values.items() if value is not None
                            for item in (f"--{key}", str(value))]]


def _jsonl(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _read_only_dir(ctx: Context) -> str:
    if os.geteuid() == 0:  # root writes through any permission bits; /proc takes no new files
        return "/proc/hf-encdec-run"
    locked = ctx.tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return str(locked / "run")


def _pickle_only_model(ctx: Context) -> str:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = ctx.tmp / "pickled"
    AutoModelForSeq2SeqLM.from_pretrained(ctx.models["t5"]).save_pretrained(folder, safe_serialization=False)
    AutoTokenizer.from_pretrained(ctx.models["t5"]).save_pretrained(folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    if not (folder / "pytorch_model.bin").exists():  # transformers 5 may not write pickles any more
        import torch

        torch.save(AutoModelForSeq2SeqLM.from_pretrained(ctx.models["t5"]).state_dict(), folder / "pytorch_model.bin")
    return str(folder)


def _remote_code_model(ctx: Context) -> str:
    folder = ctx.tmp / "remote-code"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "planted", "is_encoder_decoder": True,
        "auto_map": {"AutoConfig": "configuration_planted.PlantedConfig"}}))
    (folder / "configuration_planted.py").write_text("raise SystemExit('remote code ran')\n")
    return str(folder)


def _model_copy(ctx: Context) -> str:
    import shutil

    copy = ctx.tmp / "base-model"
    if not copy.exists():
        shutil.copytree(ctx.models["t5"], copy)
    return str(copy)


def _folder_with(ctx: Context, name: str, content: str) -> str:
    folder = ctx.tmp / "users-folder"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(content)
    return str(folder)


# (case id, command line from the context, fragments the error line must hold)
CASES = [
    # config
    ("unknown-key", lambda c: c.args(learnig_rate=1e-4), ["learnig_rate", "did you mean 'learning_rate'"]),
    ("wrong-type", lambda c: c.args(max_steps="many"), ["max_steps", "expected int", "'many'"]),
    ("negative-size", lambda c: c.args(max_source_length=-5), ["max_source_length", "must be positive"]),
    ("zero-batch-size", lambda c: c.args(per_device_train_batch_size=0), ["per_device_train_batch_size", "positive"]),
    ("nan-learning-rate", lambda c: c.args(learning_rate="nan"), ["learning_rate", "finite"]),
    ("unknown-task", lambda c: c.args(task="translaton"), ["task", "did you mean 'translation'"]),
    ("recipe-missing", lambda c: ["train", str(c.tmp / "nope.yaml")], ["nope.yaml", "not found"]),
    ("recipe-bad-yaml", lambda c: ["train", c.file("r.yaml", "model_name_or_path: x\nmax_steps: [1\n")],
     ["r.yaml:", "invalid YAML"]),
    ("preset-invalid-combination",
     lambda c: c.args(preset="three", presets=json.dumps({"three": {"num_beams": 2, "num_return_sequences": 3}})),
     ["three", "num_return_sequences"]),
    ("fp16-with-t5", lambda c: c.args(fp16=True), ["fp16", "bf16"]),
    ("qlora-without-cuda", lambda c: c.args(peft="lora", load_in_4bit=True), ["load_in_4bit", "CUDA"]),
    ("output-dir-is-a-file", lambda c: c.args(output_dir=c.file("taken", "x")), ["output_dir", "is a file"]),
    ("output-dir-inside-a-file", lambda c: c.args(output_dir=c.file("taken", "x") + "/run"),
     ["output_dir", "which is a file"]),
    ("output-dir-not-writable", lambda c: c.args(output_dir=_read_only_dir(c)), ["output_dir", "not writable"]),
    ("resume-from-a-non-checkpoint", lambda c: c.args(resume_from_checkpoint=str(c.tmp)),
     ["resume_from_checkpoint", "not a checkpoint"]),
    # data
    ("train-file-missing", lambda c: c.args(train_file=str(c.tmp / "none.jsonl")), ["none.jsonl", "not found"]),
    ("train-file-empty", lambda c: c.args(train_file=c.file("empty.jsonl", "")), ["empty.jsonl", "empty"]),
    ("train-file-is-a-directory", lambda c: c.args(train_file=str(c.tmp)),
     ["is a directory"]),
    ("non-utf8-bytes", lambda c: c.args(train_file=c.file("latin.jsonl", '{"source": "caf\xe9", "target": "x"}\n'
                                                                      .encode("latin-1"))),
     ["latin.jsonl:1", "UTF-8", "0xe9"]),
    ("malformed-json-row", lambda c: c.args(train_file=c.file("bad.jsonl", _jsonl({"source": "a", "target": "b"})
                                                               + '{"source": "c", "target": \n')),
     ["bad.jsonl:2", "not valid JSON"]),
    ("malformed-csv-row", lambda c: c.args(train_file=c.file("bad.csv", "source,target\na,b\nc,d,e\n")),
     ["bad.csv:3", "3 fields"]),
    ("missing-column", lambda c: c.args(source_column="text"), ["column 'text'", "source, target"]),
    ("ambiguous-columns", lambda c: c.args(train_file=c.file("three.jsonl", _jsonl({"a": "x", "b": "y", "c": "z"}))),
     ["three.jsonl", "cannot tell which columns"]),
    ("duplicate-column-names", lambda c: c.args(train_file=c.file("dup.csv", "source,source,target\na,b,c\n")),
     ["dup.csv:1", "duplicate column"]),
    ("null-targets", lambda c: c.args(invalid_rows="fail", train_file=c.file(
        "nulls.jsonl", _jsonl({"source": "a", "target": "b"}, {"source": "c", "target": None}))),
     ["nulls.jsonl", "invalid"]),
    ("all-targets-empty", lambda c: c.args(train_file=c.file("blank.jsonl", _jsonl({"source": "a", "target": ""}))),
     ["blank.jsonl", "all 1 rows are invalid"]),
    # model
    ("model-missing", lambda c: c.args(model=str(c.tmp / "no-model")), ["model_name_or_path", "no-model"]),
    ("model-not-seq2seq", lambda c: c.args(model="gpt2"), ["gpt2", "not an encoder-decoder"]),
    ("max-length-beyond-positions", lambda c: c.args(model="bart", max_source_length=4096),
     ["max_source_length", "128 positions"]),
    ("tokenizer-without-pad-token", lambda c: c.args(tokenizer_name=str(c.models["gpt2"])),
     ["tokenizer_name", "no pad token"]),
    ("remote-code-model", lambda c: c.args(model=_remote_code_model(c)), ["custom code", "--trust_remote_code true"]),
    ("pickle-only-weights", lambda c: c.args(model=_pickle_only_model(c)), ["pytorch_model.bin", "--allow_pickle"]),
    ("generate-pickle-only-weights", lambda c: ["generate", "--model", _pickle_only_model(c), "--input",
                                                c.file("in.txt", "red cat\n"), "--output", c.output("o.jsonl")],
     ["pytorch_model.bin", "--allow_pickle"]),
    ("evaluate-data-missing", lambda c: ["evaluate", "--model", str(c.models["t5"]), "--data", str(c.tmp / "no.jsonl")],
     ["no.jsonl", "not found"]),
    ("generate-output-is-the-input", lambda c: _generate(c, output=c.file("in.txt", "x\n"), extra=["--overwrite"]),
     ["key 'output'", "is the same file as --input", "--overwrite never replaces an input"]),
    ("generate-output-is-a-directory", lambda c: _generate(c, output=_folder(c, "taken.jsonl")),
     ["key 'output'", "is a directory"]),
    ("generate-window-zero", lambda c: _generate(c, extra=["--window", "0"]), ["key 'window'", "positive"]),
    ("generate-empty-input", lambda c: _generate(c, source=c.file("empty.jsonl", "")), ["empty.jsonl", "has no rows"]),
    ("evaluate-without-references", lambda c: ["evaluate", "--model", str(c.models["t5"]), "--data", c.file(
        "refless.jsonl", _jsonl({"source": "red cat", "uid": "a1"}))], ["has no reference column", "--target_column"]),
    ("output-dir-is-the-model", lambda c: c.args(model=_model_copy(c), output_dir=_model_copy(c)),
     ["output_dir", "is the model_name_or_path"]),
    ("output-dir-holds-a-users-readme", lambda c: c.args(output_dir=_folder_with(c, "README.md", "# mine\n")),
     ["README.md", "was not written by hf-encdec"]),
    ("model-without-tokenizer-files", lambda c: c.args(model=str(shutil.copytree(
        c.models["t5"], c.tmp / "untokenized", ignore=shutil.ignore_patterns("tokenizer*")))),
     ["untokenized has no tokenizer files", "--tokenizer_name"]),
    ("truncated-weights", lambda c: c.args(model=str([
        shutil.copytree(c.models["t5"], c.tmp / "cut", ignore=shutil.ignore_patterns("*.safetensors")),
        c.file("cut/model.safetensors", (c.models["t5"] / "model.safetensors").read_bytes()[:4096])][0])),
     ["cut/model.safetensors", "truncated or corrupt"]),
    ("lone-surrogate", lambda c: c.args(train_file=c.file("s.jsonl", '{"source": "\\ud800", "target": "x"}\n')),
     ["s.jsonl:1", "column 'source'", "lone surrogate"]),
    ("same-language-for-both-sides", lambda c: c.args(train_file=c.file("t.en", "a\nb\n").replace(".en", ".{lang}"),
                                                      source_lang="en", target_lang="en"),
     ["source_lang and target_lang are both 'en'"]),
]


def _folder(c: Context, name: str) -> str:
    (c.tmp / name).mkdir()
    return str(c.tmp / name)


def _generate(c: Context, source: str | None = None, output: str | None = None, extra: tuple = ()) -> list[str]:
    source = source or c.file("in.txt", "red cat\n")
    return ["generate", "--model", str(c.models["t5"]), "--input", source, "--output", output or c.output("o.jsonl"),
            *extra]


@pytest.fixture
def ctx(tiny_models, tiny_pair_models, pair_files, tmp_path) -> Context:
    return Context({**tiny_models, **tiny_pair_models}, pair_files, tmp_path)


@pytest.mark.parametrize("build, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_2(build, fragments, ctx, capsys):
    code = main(build(ctx))
    err = capsys.readouterr().err
    _assert_user_error(code, err, fragments)
    assert not (ctx.out / "metrics.json").exists()
    assert not ctx.out.exists() or not any(ctx.out.iterdir()), sorted(ctx.out.iterdir())


def _assert_user_error(code: int, err: str, fragments: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("hf-encdec: error: ")]
    assert errors == [lines[-1]], err[-3000:]  # one error line, and it is the last thing printed
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_catalogue_is_big_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", ["unknown-key", "non-utf8-bytes"])
def test_error_through_a_real_process(case, ctx):
    build, fragments = next(c[1:] for c in CASES if c[0] == case)
    done = subprocess.run([sys.executable, "-m", "hf_encdec", *build(ctx)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, check=False)
    _assert_user_error(done.returncode, done.stderr, fragments)
    debug = subprocess.run([sys.executable, "-m", "hf_encdec", *build(ctx), "--debug"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, check=False)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_pickle_weights_load_when_allowed(ctx):
    import hf_encdec

    args = {"model_name_or_path": _pickle_only_model(ctx), "train_file": str(ctx.pairs["train"]),
            "output_dir": str(ctx.out), "max_steps": 1, "eval_strategy": "no", "save_strategy": "no",
            "allow_pickle": True, "max_source_length": 16, "max_target_length": 16}
    result = hf_encdec.train(args)
    assert (result.output_dir / "model.safetensors").exists() and not list(result.output_dir.glob("*.bin"))
