"""Faults at a training run's output boundaries and at the Hub: one line, exit code 2, nothing of the user's lost.

Each fault is injected where the operating system or a library raises it (a full disk, a refused write,
an offline Hub, a user's file in the way), and every run goes through the CLI, as a user's does.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from test_error_catalogue import _assert_user_error

import hf_encdec
from hf_encdec import rundir
from hf_encdec.training import checkpoints
from hf_encdec.cli import main

ALICE = "hf_alice_write"
USER_README = "# My notes\n\nNot a model card: hf-encdec must keep this file as it is.\n"


def train_argv(model, out, pairs, **keys) -> list[str]:
    values = {"model_name_or_path": model, "train_file": pairs["train"], "validation_file": pairs["validation"],
              "output_dir": out, "max_steps": 1, "per_device_train_batch_size": 16, "eval_strategy": "no",
              "save_strategy": "no", "max_source_length": 16, "max_target_length": 16, "disable_tqdm": True, **keys}
    return ["train", *[item for key, value in values.items() if value is not None
                       for item in (f"--{key}", str(value))]]


def refused(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    _assert_user_error(code, err, list(fragments))
    return err.strip().splitlines()[-1]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: what "nothing was touched" means."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_copy(tiny_models, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_models["t5"], tmp_path / "base-model"))


@pytest.fixture(scope="module")
def finished(tiny_models, pair_files, tmp_path_factory) -> Path:
    """A finished run (with a test split, so predictions.jsonl), copied by the tests that change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    hf_encdec.train({"model_name_or_path": str(tiny_models["t5"]), "train_file": str(pair_files["train"]),
                     "validation_file": str(pair_files["validation"]), "test_file": str(pair_files["test"]),
                     "output_dir": str(out), "max_steps": 1, "eval_strategy": "no", "save_strategy": "no",
                     "max_source_length": 16, "max_target_length": 16, "disable_tqdm": True})
    return out


@pytest.fixture
def finished_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


# -- output_dir against the run's inputs ------------------------------------------------------------------------

# Each case: (model copy, fixture paths, tmp) -> (command line keys, the input that must stay as it was).

def _is_the_model(m, p, t):
    return {"output_dir": m}, m


def _links_to_the_model(m, p, t):
    (t / "link").symlink_to(m, target_is_directory=True)
    return {"output_dir": t / "link"}, m


def _inside_the_model(m, p, t):
    return {"output_dir": m / "run"}, m


def _inside_a_data_file(m, p, t):
    shutil.copy(p["train"], t / "train.jsonl")
    return {"train_file": t / "train.jsonl", "output_dir": t / "train.jsonl" / "run"}, t


def _is_the_tokenizer(m, p, t):
    return {"model_name_or_path": p["t5"], "tokenizer_name": m, "output_dir": m}, m


def _is_the_encoder(m, p, t):
    encoder = Path(shutil.copytree(p["bert"], t / "bert"))
    return {"model_name_or_path": None, "encoder_name_or_path": encoder, "decoder_name_or_path": p["bert"],
            "output_dir": encoder}, encoder


def _is_a_language_file(m, p, t):
    for lang, text in (("en", "red cat\nblue dog\n"), ("de", "cat red\ndog blue\n")):
        (t / f"train.{lang}").write_text(text * 20)
    return {"train_file": t / "train.{lang}", "validation_file": None, "source_lang": "en", "target_lang": "de",
            "output_dir": t / "train.de"}, t


def _is_the_dataset_folder(m, p, t):
    (t / "dataset").mkdir()
    shutil.copy(p["train"], t / "dataset" / "train.jsonl")
    return {"train_file": None, "validation_file": None, "dataset_name": t / "dataset", "output_dir": t / "dataset"}, \
        t / "dataset"


def _holds_data_where_predictions_go(m, p, t):
    (t / "out").mkdir()
    shutil.copy(p["validation"], t / "out" / "predictions.jsonl")
    return {"validation_file": t / "out" / "predictions.jsonl", "output_dir": t / "out"}, t / "out"


def _holds_presets_in_the_presets_folder(m, p, t):
    (t / "out" / "presets").mkdir(parents=True)
    (t / "out" / "presets" / "mine.json").write_text(json.dumps({"wide": {"num_beams": 3}}))
    return {"presets": t / "out" / "presets" / "mine.json", "output_dir": t / "out"}, t / "out"


def _resumes_from_a_checkpoint_overwrite_clears(m, p, t):
    (t / "out" / "checkpoint-1").mkdir(parents=True)
    (t / "out" / "checkpoint-1" / "trainer_state.json").write_text("{}")
    return {"resume_from_checkpoint": t / "out" / "checkpoint-1", "overwrite_output_dir": True,
            "output_dir": t / "out"}, t / "out"


INPUT_CASES = [
    (_is_the_model, ["key 'output_dir'", "is the model_name_or_path"]),
    (_links_to_the_model, ["link, key 'output_dir'", "is the model_name_or_path"]),
    (_inside_the_model, ["key 'output_dir'", "inside the model_name_or_path"]),
    (_inside_a_data_file, ["key 'output_dir'", "inside the train_file"]),
    (_is_the_tokenizer, ["key 'output_dir'", "is the tokenizer_name"]),
    (_is_the_encoder, ["key 'output_dir'", "is the encoder_name_or_path"]),
    (_is_a_language_file, ["train.de, key 'output_dir'", "is the train_file"]),
    (_is_the_dataset_folder, ["key 'output_dir'", "is the dataset_name"]),
    (_holds_data_where_predictions_go, ["key 'output_dir'", "holds the validation_file", "predictions.jsonl"]),
    (_holds_presets_in_the_presets_folder, ["key 'output_dir'", "holds the presets"]),
    (_resumes_from_a_checkpoint_overwrite_clears, ["key 'resume_from_checkpoint'", "overwrite_output_dir deletes"]),
]


@pytest.mark.parametrize("build, fragments", INPUT_CASES, ids=[case[0].__name__.strip("_") for case in INPUT_CASES])
def test_output_dir_that_would_overwrite_an_input_is_refused(build, fragments, model_copy, tiny_models,
                                                              tiny_pair_models, pair_files, tmp_path, capsys):
    keys, kept = build(model_copy, {**pair_files, **tiny_models, **tiny_pair_models}, tmp_path)
    before = snapshot(kept)
    refused(capsys, train_argv(model_copy, None, pair_files, **keys), *fragments)
    assert snapshot(kept) == before


def test_output_dir_of_an_input_is_refused_with_overwrite_too(model_copy, pair_files, capsys):
    before = snapshot(model_copy)
    line = refused(capsys, train_argv(model_copy, model_copy, pair_files, overwrite_output_dir=True),
                   "is the model_name_or_path", str(model_copy))
    assert line.count(str(model_copy)) == 2  # the output_dir given and the input it is
    assert snapshot(model_copy) == before


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_output_dir_is_one_line(value, tiny_models, pair_files, capsys):
    refused(capsys, train_argv(tiny_models["t5"], value, pair_files), "output_dir")


# -- files in output_dir that hf-encdec did not write -----------------------------------------------------------

def test_users_readme_in_a_fresh_folder_is_kept(tiny_models, pair_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(USER_README)
    (out / "notes.txt").write_text("mine")
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files), "README.md", "was not written by hf-encdec")
    assert (out / "README.md").read_text() == USER_README
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "notes.txt"]


def test_someone_elses_model_folder_is_not_overwritten(tiny_models, pair_files, tmp_path, capsys):
    out = Path(shutil.copytree(tiny_models["bart"], tmp_path / "their-model"))
    before = snapshot(out)
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files, overwrite_output_dir=True),
            "config.json", "was not written by hf-encdec", "more: generation_config.json")
    assert snapshot(out) == before


def test_foreign_merged_folder_and_symlink_are_refused(tiny_models, pair_files, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "merged").mkdir(parents=True)
    (out / "merged" / "model.safetensors").write_bytes(b"theirs")
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files), "merged", "was not written by hf-encdec")
    shutil.rmtree(out / "merged")
    (tmp_path / "elsewhere.json").write_text("{}")
    (out / "metrics.json").symlink_to(tmp_path / "elsewhere.json")
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files), "metrics.json", "is a symlink")
    assert (tmp_path / "elsewhere.json").read_text() == "{}"


def test_users_readme_in_a_finished_run_survives_overwrite(finished_copy, tiny_models, pair_files, capsys):
    (finished_copy / "README.md").write_text(USER_README)
    before = snapshot(finished_copy)
    refused(capsys, train_argv(tiny_models["t5"], finished_copy, pair_files, overwrite_output_dir=True),
            "README.md", "was not written by hf-encdec", "overwrite_output_dir only replaces")
    assert snapshot(finished_copy) == before  # the finished run is untouched too: nothing was cleared


def test_read_only_output_of_a_finished_run_is_not_replaced(finished_copy, tiny_models, pair_files, capsys):
    weights = finished_copy / "model.safetensors"
    weights.chmod(0o444)
    before = snapshot(finished_copy)
    refused(capsys, train_argv(tiny_models["t5"], finished_copy, pair_files, overwrite_output_dir=True),
            "model.safetensors", "is read-only")
    assert snapshot(finished_copy) == before


def test_overwrite_replaces_our_files_only_and_drops_stale_ones(finished_copy, tiny_models, pair_files, capsys):
    (finished_copy / "notes.txt").write_text("mine")
    assert (finished_copy / "predictions.jsonl").exists()
    code = main(train_argv(tiny_models["t5"], finished_copy, pair_files, overwrite_output_dir=True))  # no test split
    assert code == 0, capsys.readouterr().err[-3000:]
    assert (finished_copy / "notes.txt").read_text() == "mine"
    assert not (finished_copy / "predictions.jsonl").exists()  # the old run's, with no test split now: removed
    assert rundir.is_our_card(finished_copy / "README.md") and (finished_copy / "metrics.json").exists()
    assert not list(finished_copy.glob(".*"))  # no staging folder nor temporary file left


def test_file_dropped_in_during_training_is_kept(tiny_models, pair_files, tmp_path, capsys, monkeypatch):
    from hf_encdec.training import run as training

    out = tmp_path / "out"
    predict = training.predict_split

    def drop_a_readme_then_predict(*args, **kwargs):
        (out / "README.md").write_text(USER_README)
        return predict(*args, **kwargs)

    monkeypatch.setattr(training, "predict_split", drop_a_readme_then_predict)
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files), "README.md", "appeared during training",
            rundir.FINAL_STAGING_DIR)
    assert (out / "README.md").read_text() == USER_README
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()


# -- a full disk or a refused write while saving ----------------------------------------------------------------

TORCH_WRITE_FAILURE = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def full_disk_from(monkeypatch, fails) -> None:
    """The disk fills up at the first write `fails(path)` picks: torch's writes lose the errno, as torch's own do.

    From then on the filesystem refuses the space it is asked for (what hf-encdec asks to tell a full disk).
    """
    import torch

    save, fallocate, full = torch.save, os.posix_fallocate, []

    def save_until_full(obj, f, *args, **kwargs):
        if full or fails(str(f)):
            full.append(str(f))
            Path(f).write_bytes(b"PK\x03\x04 half written")
            try:
                raise RuntimeError("basic_ios::clear: iostream error")
            except RuntimeError:
                raise RuntimeError(TORCH_WRITE_FAILURE)  # chained on the stream error, as torch does
        return save(obj, f, *args, **kwargs)

    def allocate(fd, offset, length):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fallocate(fd, offset, length)

    monkeypatch.setattr(torch, "save", save_until_full)
    monkeypatch.setattr(os, "posix_fallocate", allocate)


def test_full_disk_at_a_checkpoint_keeps_the_last_one_and_a_rerun_resumes(tiny_models, pair_files, tmp_path,
                                                                         capsys, monkeypatch):
    out = tmp_path / "out"
    argv = train_argv(tiny_models["t5"], out, pair_files, max_steps=2, save_strategy="steps", save_steps=1)
    with monkeypatch.context() as patch:
        full_disk_from(patch, lambda path: path.endswith("checkpoint-2/optimizer.pt"))
        line = refused(capsys, argv, "no space left on the device", "checkpoint-2 was not saved",
                       "the last complete checkpoint (checkpoint-1) is kept", "re-run the same command")
    assert f"{rundir.STAGING_DIR}/checkpoint-2" in line, line  # where: the checkpoint being written
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["checkpoint-1"]
    assert not (out / rundir.STAGING_DIR / "checkpoint-2").exists()  # the half-written files are gone
    assert not (out / "metrics.json").exists()

    assert main(argv) == 0  # the same command, with room again
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_full_disk_reported_with_its_errno_at_a_checkpoint(tiny_models, pair_files, tmp_path, capsys, monkeypatch):
    from transformers import TrainerState

    save_to_json = TrainerState.save_to_json

    def no_room_for_the_state(self, path):
        if "checkpoint-1" in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return save_to_json(self, path)

    monkeypatch.setattr(TrainerState, "save_to_json", no_room_for_the_state)
    out = tmp_path / "out"
    line = refused(capsys, train_argv(tiny_models["t5"], out, pair_files, save_strategy="steps", save_steps=1),
                   "no space left on the device", "no checkpoint of this run is complete, so a re-run starts over")
    assert "trainer_state.json" in line
    assert not (out / rundir.STAGING_DIR / "checkpoint-1").exists() and not (out / "metrics.json").exists()


def _fail_final_weights(monkeypatch, error: Exception) -> None:
    import transformers.modeling_utils

    save = transformers.modeling_utils.safe_save_file

    def save_or_fail(tensors, filename, *args, **kwargs):
        if rundir.FINAL_STAGING_DIR in str(filename):
            Path(filename).write_bytes(b"half")
            raise error
        return save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_or_fail)


def test_full_disk_in_the_final_save_leaves_no_finished_run(tiny_models, pair_files, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    out = tmp_path / "out"
    argv = train_argv(tiny_models["t5"], out, pair_files, max_steps=2, save_strategy="steps", save_steps=1)
    with monkeypatch.context() as patch:
        _fail_final_weights(patch, SafetensorError("Error while serializing: I/O error: No space left on device "
                                                   "(os error 28)"))
        refused(capsys, argv, "no space left on the device", "the final model was not saved",
                "the last complete checkpoint (checkpoint-2) is kept")
    assert not (out / rundir.FINAL_STAGING_DIR).exists()
    assert not {"metrics.json", "model.safetensors", "README.md"} & {p.name for p in out.iterdir()}

    assert main(argv) == 0  # resumes from checkpoint-2 and saves
    assert (out / "metrics.json").exists() and (out / "model.safetensors").exists()


def test_permission_denied_in_the_final_save_is_one_line(tiny_models, pair_files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    _fail_final_weights(monkeypatch, PermissionError(errno.EACCES, os.strerror(errno.EACCES), "model.safetensors"))
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files), "permission denied",
            "the final model was not saved", "make output_dir writable")
    assert not (out / rundir.FINAL_STAGING_DIR).exists() and not (out / "metrics.json").exists()


# -- the Hub ----------------------------------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, when huggingface_hub is imported


def test_push_while_offline_is_one_line(hub, finished, offline, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    refused(capsys, ["push", "--model", str(finished), "--repo_id", "alice/offline"], "HF_HUB_OFFLINE is set",
            "unset it to push")


def test_push_to_hub_while_offline_stops_before_training(hub, offline, tiny_models, pair_files, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    out = tmp_path / "out"
    refused(capsys, train_argv(tiny_models["t5"], out, pair_files, push_to_hub=True, hub_model_id="alice/never"),
            "HF_HUB_OFFLINE is set")
    assert not out.exists()


@pytest.mark.parametrize("repo_id", ["alice/bad name!", "a/b/c", "alice/", "alice/x--y"])
def test_malformed_repo_id_is_refused_before_the_token_and_the_network(hub, finished, repo_id, capsys):
    requests = len(hub.state.requests)
    refused(capsys, ["push", "--model", str(finished), "--repo_id", repo_id], "repo_id", "invalid repo id")
    assert len(hub.state.requests) == requests  # no whoami: no token is even set


def _http_error(cls_name: str, status: int, message: str = "refused"):
    import httpx2
    from huggingface_hub import errors

    response = httpx2.Response(status, request=httpx2.Request("POST", "http://127.0.0.1/api/repos/create"))
    return getattr(errors, cls_name)(message, response=response)


def _transport_error(name: str):
    import httpx2

    return getattr(httpx2, name)("simulated", request=httpx2.Request("POST", "http://127.0.0.1/api/repos/create"))


HUB_FAULTS = [
    ("401", lambda: _http_error("HfHubHTTPError", 401), ["401", "hf auth login"]),
    ("403", lambda: _http_error("HfHubHTTPError", 403), ["403", "write access"]),
    ("404", lambda: _http_error("HfHubHTTPError", 404), ["404"]),
    ("409", lambda: _http_error("HfHubHTTPError", 409), ["409", "retry"]),
    ("429", lambda: _http_error("HfHubHTTPError", 429), ["429", "rate-limiting"]),
    ("500", lambda: _http_error("HfHubHTTPError", 500), ["server error (500)", "retry later"]),
    ("503", lambda: _http_error("HfHubHTTPError", 503), ["server error (503)"]),
    ("repo-not-found", lambda: _http_error("RepositoryNotFoundError", 404), ["repository not found"]),
    ("revision-not-found", lambda: _http_error("RevisionNotFoundError", 404), ["revision (branch) not found"]),
    ("connect-error", lambda: _transport_error("ConnectError"), ["cannot reach the Hub", "ConnectError"]),
    ("read-timeout", lambda: _transport_error("ReadTimeout"), ["cannot reach the Hub", "ReadTimeout"]),
    ("socket-timeout", lambda: TimeoutError("timed out"), ["cannot reach the Hub", "TimeoutError"]),
    ("not-cached", lambda: __import__("huggingface_hub.errors").errors.LocalEntryNotFoundError("no cache"),
     ["cannot reach the Hub", "not cached"]),
    ("client-refuses", lambda: ValueError("Invalid repo type"), ["pushing to alice/faulty", "Invalid repo type"]),
]


@pytest.mark.parametrize("make, fragments", [f[1:] for f in HUB_FAULTS], ids=[f[0] for f in HUB_FAULTS])
def test_hub_failures_are_one_line(hub, finished, make, fragments, capsys, monkeypatch):
    from huggingface_hub import HfApi

    def fail(*args, **kwargs):
        raise make()

    monkeypatch.setenv("HF_TOKEN", ALICE)
    monkeypatch.setattr(HfApi, "create_repo", fail)
    refused(capsys, ["push", "--model", str(finished), "--repo_id", "alice/faulty"], *fragments)


def test_push_keeps_the_users_own_card(hub, finished_copy, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    (finished_copy / "README.md").write_text(USER_README)
    code = main(["push", "--model", str(finished_copy), "--repo_id", "alice/own-card"])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert hub.state.files("alice/own-card")["README.md"].decode() == USER_README
    assert (finished_copy / "README.md").read_text() == USER_README


def test_push_of_a_run_folder_it_cannot_write_keeps_its_card(hub, finished_copy, capsys, monkeypatch):
    from hf_encdec.publish import card

    def read_only(path, pieces):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setenv("HF_TOKEN", ALICE)
    monkeypatch.setattr(card, "write_atomically", read_only)
    before = (finished_copy / "README.md").read_bytes()
    code = main(["push", "--model", str(finished_copy), "--repo_id", "alice/read-only-run"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "pushing it as it is" in err
    assert hub.state.files("alice/read-only-run")["README.md"] == before
