"""Crash-safe checkpoints: written in a staging folder, marked complete, then renamed into place.

transformers 5 writes `checkpoint-N` in place with no completion marker, and
`resume_from_checkpoint=True` takes the newest folder even when it was half written (its
upstream atomic-save attempts were reverted for breaking multi-GPU saves). Here every rank
writes into `OUTPUT_DIR/.checkpoint-staging/checkpoint-N`, all ranks meet at a barrier, and the
main process alone writes the completion marker and renames the folder to `checkpoint-N`, so a
`checkpoint-N` without the marker can only come from elsewhere and is never resumed from.
Old checkpoints are rotated only after the new one is complete. The final outputs are staged
and renamed into place the same way (`move_into_place`), and a save that fails for want of room
or of permission ends the run with one line saying what was kept (`saving`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError, NonFiniteLossError, UserError, disk_full, is_disk_full
from ..rundir import (CHECKPOINT_PREFIX, COMPLETE_MARKER, METRICS, RUN_CONFIG, STAGING_DIR, TRAINER_STATE,
                      TRAINING_ARGS, checkpoint_name, owned, read_run_config, refuse_foreign)

logger = logging.getLogger("hf_encdec.checkpoints")

_CHECKPOINT_NAME = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def step_of(checkpoint: Path) -> int:
    return int(_CHECKPOINT_NAME.match(checkpoint.name).group(1))


def staged_checkpoint(run_dir: Path, step: int) -> Path:
    """Where every rank writes the checkpoint of `step` before the main process renames it into place."""
    return run_dir / STAGING_DIR / checkpoint_name(step)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Every `checkpoint-N` folder, oldest step first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and _CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=step_of)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE_MARKER).is_file()


def complete_checkpoints(run_dir: Path) -> list[Path]:
    return [p for p in checkpoint_dirs(run_dir) if is_complete(p)]


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints a crash interrupted: staged but never renamed, or without the completion marker."""
    staged = checkpoint_dirs(run_dir / STAGING_DIR)
    return staged + [p for p in checkpoint_dirs(run_dir) if not is_complete(p)]


def last_complete(run_dir: Path) -> Path | None:
    complete = complete_checkpoints(run_dir)
    return complete[-1] if complete else None


def clear_staged(run_dir: Path, step: int) -> None:
    """A staged folder left by a killed run at this step would mix its files into the new one."""
    shutil.rmtree(staged_checkpoint(run_dir, step), ignore_errors=True)


def publish(staged: Path, run_dir: Path) -> Path:
    """Main process, after every rank has written `staged`: drop pickles we do not need, mark, rename."""
    # training_args.bin is a full pickle of TrainingArguments (it can carry hub_token); resuming does not
    # read it (the Trainer restores from trainer_state.json) and run_config.yaml records the arguments.
    (staged / TRAINING_ARGS).unlink(missing_ok=True)
    _fsync_tree(staged)
    marker = staged / COMPLETE_MARKER
    marker.write_text(json.dumps({"step": step_of(staged)}) + "\n")
    _fsync(marker)
    final = run_dir / staged.name
    if final.exists():  # an unmarked leftover of a killed run (a complete one would have been resumed from)
        shutil.rmtree(final)
    os.replace(staged, final)
    _remove_if_empty(staged.parent)  # a finished run keeps no empty staging folder; the next save makes it again
    _fsync(run_dir)
    return final


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # another checkpoint is being staged in it (or a killed run's leftover): kept
        pass


def rotate(run_dir: Path, save_total_limit: int | None, protected: list[str | None]) -> None:
    """Delete the oldest complete checkpoints beyond the limit; never the newest nor a protected one (the best)."""
    complete = complete_checkpoints(run_dir)
    if not save_total_limit or save_total_limit <= 0 or len(complete) <= save_total_limit:
        return
    keep = {complete[-1].resolve()} | {Path(p).resolve() for p in protected if p}
    excess = len(complete) - max(save_total_limit, len(keep))
    for checkpoint in complete:
        if excess <= 0:
            break
        if checkpoint.resolve() not in keep:
            logger.info("deleting %s (save_total_limit=%d)", checkpoint, save_total_limit)
            shutil.rmtree(checkpoint)
            excess -= 1


def move_into_place(staging: Path, out: Path, previous: set[str]) -> None:
    """The final outputs, saved whole in `staging`, moved into output_dir one atomic rename at a time.

    output_dir also holds the checkpoints and maybe the user's files, so it cannot be swapped whole.
    Only names in `previous` (an earlier run's outputs) may be replaced: anything else found at a
    name we write appeared during training and is the user's. Outputs of the earlier run that this
    one does not write are removed (an old adapter next to a new full model would load as a LoRA run).
    The weights go after the rest, and metrics.json (the finished marker) last of all.
    """
    # run_config.yaml records the arguments without pickle; a loader needs no training_args.bin.
    (staging / TRAINING_ARGS).unlink(missing_ok=True)
    entries = {entry.name: entry for entry in staging.iterdir()}
    targets = [out / name for name in sorted(entries.keys() | previous)]
    refuse_foreign([t for t in targets if (t.exists() or t.is_symlink()) and not (t.name in previous and owned(t))],
                   hint=f"it appeared during training: move it elsewhere and re-run the same command (the trained "
                        f"model is left in {staging})")
    _fsync_tree(staging)
    for name in sorted(previous - entries.keys()):
        _remove(out / name)
    order = sorted(entries.values(), key=lambda p: (p.name == METRICS, p.suffix in (".safetensors", ".bin")))
    for entry in order:
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
    _fsync(out)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def saving(run_dir: Path, staged: Path, what: str) -> Iterator[None]:
    """A save into `staged` that fails for want of room or of permission: one line, and `staged` removed.

    It says what was kept (the last complete checkpoint) and that re-running the same command
    continues from it (resume is on by default). Any other failure goes on as it is.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        problem = _write_problem(err, run_dir, staged, what)
        if problem is None:
            raise
        shutil.rmtree(staged, ignore_errors=True)
        raise problem from err


def _write_problem(err: Exception, run_dir: Path, staged: Path, what: str) -> UserError | None:
    probe = _probe(run_dir)
    last = last_complete(run_dir)
    kept = (f"the last complete checkpoint ({last.name}) is kept" if last
            else "no checkpoint of this run is complete, so a re-run starts over")
    path = getattr(err, "filename", None) or staged
    if is_disk_full(err) or (probe is not None and is_disk_full(probe)):
        return disk_full(path, f"{what} was not saved; {kept}")
    if _permission_denied(err) or (probe is not None and _permission_denied(probe)):
        return ConfigError(f"permission denied: {what} was not saved; {kept}", key="output_dir", path=str(path),
                           hint="make output_dir writable and re-run the same command")
    return None


def _probe(folder: Path) -> OSError | None:
    """Ask the filesystem for 1 MiB in `folder`: what it answers when the write failure lost its errno.

    torch.save given a path writes through C++ streams: a full disk comes out as RuntimeError
    "unexpected pos 576 vs 534" or "file write failed", with no errno and no "No space left".
    """
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:  # macOS: such a failure goes on as it is
        return None
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            allocate(probe.fileno(), 0, 1 << 20)
    except OSError as err:
        return err
    return None


def _permission_denied(err: BaseException | None) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return True
        if "Permission denied" in str(err) or "Read-only file system" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _fsync(path: Path) -> None:
    # Without it a power loss can leave the rename on disk before the files it points to.
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(folder)


def non_finite_loss(step: int, args, run_dir: Path):
    """The error of a NaN/inf loss: the step, the likely causes in this run, and where to resume."""
    causes = [f"learning_rate {args.learning_rate:g} too high"]
    if args.fp16:
        causes.insert(0, "fp16 overflow (try bf16 or fp32)")
    if not args.max_grad_norm:
        causes.append("no gradient clipping (max_grad_norm)")
    last = last_complete(run_dir)
    keep = (f"the last complete checkpoint {last} is kept: fix the cause and resume with "
            f"--resume_from_checkpoint {last}") if last else "no checkpoint was saved before it"
    return NonFiniteLossError(f"the training loss is not finite at step {step}; likely causes: "
                              f"{', '.join(causes)}", hint=keep)


# Keys that change where and how a run reports, not what it computes: a resumed run may change them.
RESUME_FREE_KEYS = {"output_dir", "overwrite_output_dir", "resume", "resume_from_checkpoint", "disable_tqdm",
                    "num_sample_predictions", "logging_steps", "logging_dir", "report_to", "run_name",
                    "save_total_limit", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision",
                    "hub_strategy", "license", "base_model", "dataloader_num_workers"}


def choose_resume(config) -> str | None:
    """The checkpoint this run continues from: chosen, the last complete one, or None (a fresh start)."""
    out = config.output_dir
    skipped = incomplete_checkpoints(out)
    if skipped:
        logger.warning("skipping checkpoints interrupted while being written (no completion marker): %s",
                       ", ".join(str(p) for p in skipped))
    chosen = config.training.get("resume_from_checkpoint")
    flag = str(chosen).lower() if chosen is not None else None
    if chosen is not None and flag not in ("true", "last", "false"):
        return _chosen_checkpoint(config, Path(chosen))
    last = last_complete(out)
    if last is None:
        return None
    if flag == "false" or (flag is None and not config.run.resume):
        raise ConfigError("output_dir holds checkpoints of an unfinished run", key="output_dir", path=str(out),
                          hint="drop --resume false to continue it, or pass --overwrite_output_dir true to start over")
    changed = changed_keys(config)
    if changed:
        raise ConfigError(f"cannot resume {last}: the run's settings changed ({changed})", key="output_dir",
                          path=str(out), hint="rerun with the same settings, choose another --output_dir, pass "
                          "--overwrite_output_dir true to start over, or --resume_from_checkpoint PATH to force it")
    logger.info("resuming from %s (step %d); --resume false refuses to, --overwrite_output_dir true starts over",
                last, step_of(last))
    return str(last)


def _chosen_checkpoint(config, path: Path) -> str:
    if not (path / TRAINER_STATE).is_file():
        raise ConfigError(f"not a checkpoint (no {TRAINER_STATE})", key="resume_from_checkpoint",
                          path=str(path), hint="give a checkpoint-N folder, or true for the last complete one")
    if _CHECKPOINT_NAME.match(path.name) and not is_complete(path):
        # Another tool's checkpoint has no marker of ours; upstream writes trainer_state.json last, so it is whole.
        logger.warning("%s has no hf-encdec completion marker; resuming from it as asked", path)
    changed = changed_keys(config)
    if changed:
        logger.warning("resuming from %s with changed settings: %s", path, changed)
    return str(path)


def changed_keys(config) -> str:
    """'key: saved -> now' for each setting that differs from the run_config.yaml of the run being resumed."""
    import yaml

    if not (config.output_dir / RUN_CONFIG).is_file():
        return "its run_config.yaml is missing, so they cannot be compared"
    saved = read_run_config(config.output_dir, key="resume_from_checkpoint")
    now = yaml.safe_load(yaml.safe_dump(config.to_flat_dict()))
    keys = sorted((set(saved) | set(now)) - RESUME_FREE_KEYS)
    return "; ".join(f"{k}: {_shown(saved, k)} -> {_shown(now, k)}" for k in keys if saved.get(k) != now.get(k))


def _shown(values: dict, key: str) -> str:
    return repr(values[key]) if key in values else "default"
