"""Crash-safe training: kill a real run, rerun the same command, and get the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_encdec
from hf_encdec.training.checkpoints import COMPLETE_MARKER, STAGING_DIR
from hf_encdec.rundir import FINAL_STAGING_DIR
from hf_encdec.cli import main
from hf_encdec.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# Runs the CLI with a callback that SIGKILLs the process: after the optimizer step KILL_AT_STEP, or while the
# checkpoint of KILL_IN_SAVE is being published (staged and written, not yet marked nor renamed).
KILLER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from hf_encdec.training import checkpoints, trainer
    from hf_encdec.cli import main

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class KillAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(os.environ.get("KILL_AT_STEP", -1)):
                die()

    publish = checkpoints.publish
    def publish_or_die(staged, run_dir):
        if checkpoints.step_of(staged) == int(os.environ.get("KILL_IN_SAVE", -1)):
            die()
        return publish(staged, run_dir)
    checkpoints.publish = publish_or_die

    init = trainer.EncDecTrainer.__init__
    def init_with_killer(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(KillAtStep())
    trainer.EncDecTrainer.__init__ = init_with_killer
    sys.exit(main(sys.argv[1:]))
""")


def _flags(args: dict) -> list[str]:
    return [item for key, value in args.items() for item in (f"--{key}", str(value))]


@pytest.fixture
def resumable_args(tiny_models, quick_args) -> dict:
    # 200 rows / 16 a batch = 13 steps an epoch: the run crosses an epoch boundary; T5 dropout uses the RNG.
    return {**quick_args, "model_name_or_path": str(tiny_models["t5"]), "max_steps": 20, "test_file": None,
            "save_strategy": "steps", "save_steps": 3, "save_total_limit": 2, "seed": 7}


def _killed_run(args: dict, tmp_path: Path, **kill: int) -> subprocess.CompletedProcess:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": str(REPO), **{k.upper(): str(v) for k, v in kill.items()}}
    return subprocess.run([sys.executable, str(script), "train", *_flags(args)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


@pytest.mark.parametrize("batching", [{}, {"max_tokens": 160}], ids=["random_batches", "token_budget"])
def test_killed_run_resumes_to_bitwise_equal_weights(resumable_args, tmp_path, batching):
    resumable_args = {**resumable_args, **batching}
    reference = hf_encdec.train({**resumable_args, "output_dir": str(tmp_path / "reference")})
    kill_at = random.Random().randint(4, 19)  # any step but a saving one's start: resumes from the save before
    killed = _killed_run(resumable_args, tmp_path, kill_at_step=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    out = Path(resumable_args["output_dir"])
    assert not (out / "metrics.json").exists()
    assert all((c / COMPLETE_MARKER).exists() for c in out.glob("checkpoint-*"))

    assert main(["train", *_flags(resumable_args)]) == 0  # the same command again

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    for finished in (reference.output_dir, out):  # every checkpoint published: no staging folder is left
        assert [p.name for p in finished.glob("checkpoint-*")] and not (finished / STAGING_DIR).exists()
        assert not (finished / FINAL_STAGING_DIR).exists()
    expected, resumed = _weights(reference.output_dir), _weights(out)
    assert expected.keys() == resumed.keys()
    unequal = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not unequal, f"killed at step {kill_at}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"


def test_checkpoint_killed_while_written_is_skipped(resumable_args, tmp_path, caplog):
    killed = _killed_run(resumable_args, tmp_path, kill_in_save=9)
    assert killed.returncode == -9, killed.stderr[-2000:]
    out = Path(resumable_args["output_dir"])
    assert (out / STAGING_DIR / "checkpoint-9").is_dir() and not (out / "checkpoint-9").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert not (out / "checkpoint-6" / "training_args.bin").exists()  # no pickle of the arguments

    with caplog.at_level("INFO", logger="hf_encdec"):
        result = hf_encdec.train(resumable_args)
    assert "checkpoint-9" in caplog.text and "skipping" in caplog.text
    assert "resuming from" in caplog.text and "checkpoint-6" in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 20
    assert result.metrics["validation"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-18", "checkpoint-20"]


def test_resume_refuses_changed_settings_and_opt_out(resumable_args, tmp_path):
    killed = _killed_run(resumable_args, tmp_path, kill_at_step=5)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with pytest.raises(ConfigError, match=r"settings changed \(learning_rate: default -> 0.001\)"):
        hf_encdec.train({**resumable_args, "learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="unfinished run"):
        hf_encdec.train({**resumable_args, "resume": False})
    forced = hf_encdec.train({**resumable_args, "learning_rate": 1e-3,
                              "resume_from_checkpoint": resumable_args["output_dir"] + "/checkpoint-3"})
    assert forced.metrics["validation"]


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(resumable_args, capsys):
    args = {**resumable_args, "learning_rate": 1e30, "max_grad_norm": 0}
    assert main(["train", *_flags(args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not finite at step" in err and "learning_rate 1e+30 too high" in err
    out = Path(args["output_dir"])
    assert not (out / "metrics.json").exists()
    for checkpoint in out.glob("checkpoint-*"):
        weights = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())
    if any(out.glob("checkpoint-*")):
        assert "--resume_from_checkpoint" in err


def test_crash_during_the_final_save_leaves_no_model_that_loads(tiny_models, quick_args, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    from hf_encdec import rundir
    from hf_encdec.training import checkpoints

    replace = os.replace

    def crash_at_weights(source, target):
        if Path(target).name == "model.safetensors":
            raise OSError("simulated crash while moving the weights")
        return replace(source, target)

    monkeypatch.setattr(checkpoints.os, "replace", crash_at_weights)
    args = {**quick_args, "model_name_or_path": str(tiny_models["bart"]), "test_file": None}
    with pytest.raises(OSError, match="simulated crash"):
        hf_encdec.train(args)
    out = Path(args["output_dir"])
    assert (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert not (out / "metrics.json").exists()
    with pytest.raises(OSError):
        AutoModelForSeq2SeqLM.from_pretrained(out)

    monkeypatch.setattr(checkpoints.os, "replace", replace)
    hf_encdec.train({**args, "overwrite_output_dir": True})
    assert AutoModelForSeq2SeqLM.from_pretrained(out) and (out / "metrics.json").exists()
    assert not (out / rundir.FINAL_STAGING_DIR).exists() and not (out / "training_args.bin").exists()


@pytest.mark.distributed
def test_two_processes_stage_mark_and_resume_checkpoints(resumable_args, tmp_path):
    """torchrun, 2 CPU processes (gloo): rank 0 killed while publishing; the rerun matches an uninterrupted run.

    Compared on the checkpoint of the last step, written before the final evaluation: evaluation under
    several processes is not this test's subject (it has its own tests).
    """
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    # use_cpu: without it accelerate sees no multi-CPU launch and each process trains alone.
    args = {**resumable_args, "max_steps": 9, "per_device_train_batch_size": 8, "use_cpu": True}

    def run(output_dir: Path, **kill: int) -> subprocess.CompletedProcess:
        flags = _flags({**args, "output_dir": str(output_dir)})
        return subprocess.run([*launch, "train", *flags], env={**env, **{k.upper(): str(v) for k, v in kill.items()}},
                              capture_output=True, text=True, timeout=600, check=False)

    reference = tmp_path / "reference"
    run(reference)
    assert (reference / "checkpoint-9" / COMPLETE_MARKER).exists()
    out = tmp_path / "run"
    assert run(out, kill_in_save=6).returncode != 0
    assert (out / STAGING_DIR / "checkpoint-6").is_dir()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert {p.name for p in (out / "checkpoint-3").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}

    resumed = run(out)
    assert "resuming from" in resumed.stderr and "checkpoint-3" in resumed.stderr, resumed.stderr[-3000:]
    assert (out / "checkpoint-9" / COMPLETE_MARKER).exists(), resumed.stderr[-3000:]
    expected, got = _weights(reference / "checkpoint-9"), _weights(out / "checkpoint-9")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert not (out / STAGING_DIR).exists()  # a finished run keeps no staging folder
