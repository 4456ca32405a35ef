"""Safe loading and secrets: a planted HF_TOKEN never leaves the process; repo ids never become paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_encdec.cli import main

PLANTED = "hf_PLANTED_env_d00dfeed_SECRET"


def _everything_written(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in folder.rglob("*") if p.is_file()]


def test_planted_env_token_is_in_no_log_file_or_error(hub, tiny_models, quick_args, capsys, caplog, monkeypatch):
    hub.state.add_user(PLANTED, "dave")
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    args = [f"--{k}={v}" for k, v in {**quick_args, "save_strategy": "steps", "save_steps": 2}.items()]
    with caplog.at_level("DEBUG"):
        assert main(["train", *args, "--model_name_or_path", str(tiny_models["bart"]), "--push_to_hub", "true",
                     "--hub_model_id", "dave/run", "--hub_strategy", "every_save"]) == 0
        failed = main(["train", *args, "--model_name_or_path", str(tiny_models["bart"]), "--push_to_hub", "true",
                       "--hub_model_id", "carol/not-yours", "--overwrite_output_dir", "true"])
    captured = capsys.readouterr()
    assert failed == 2 and "not in your namespace" in captured.err
    out = Path(quick_args["output_dir"])
    assert PLANTED not in captured.out + captured.err + caplog.text
    assert not [p for p, content in _everything_written(out) if PLANTED.encode() in content]
    assert not [p for p, _ in _everything_written(out) if p.suffix in (".bin", ".pkl")]


@pytest.mark.parametrize("repo_id", ["alice/../../etc", "../alice/x", "alice/x/../../y", "/abs/path"])
def test_repo_ids_that_could_climb_the_file_system_are_refused(hub, tmp_path, capsys, monkeypatch, repo_id):
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["push", "--model", str(tmp_path), "--repo_id", repo_id]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid repo id" in err[0] and "Traceback" not in err[0]
