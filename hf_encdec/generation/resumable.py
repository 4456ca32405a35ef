"""An output file that survives being killed: append, then record progress in a small ledger.

While a job runs, results go to `OUTPUT.partial` and a ledger `OUTPUT.progress.json` records
how many input rows are done and how many bytes of the partial file hold them. The ledger is
replaced atomically after each append is flushed to disk, so after any kill (SIGKILL
included) it describes a prefix of the partial file: a re-run cuts the file back to that
prefix and continues from the next row. Only a finished job renames the partial file to
OUTPUT, so a file under the final name is always complete.

The ledger also holds the fingerprints of what the output depends on (the model's files, the
input file, the decoding and batching settings), part by part: a re-run with any of them changed
is refused, naming what changed, instead of mixing two models' outputs in one file. A lock
(`OUTPUT.lock`, flock: it dies with its process, so a killed job leaves no stale lock) keeps a
second job off the output while the first one runs.

check_outputs guards every output path of a job before anything slow starts: a file (not a
folder, a pipe or a device) in a folder that exists and takes new files, and none of the job's
inputs, however it is reached (symlinks, hard links, `..`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, disk_full, is_disk_full
from ..rundir import DECODER_TOKENIZER_DIR, RUN_CONFIG, adapter_base, write_all, write_atomically

logger = logging.getLogger("hf_encdec.generation")

SAMPLE_BYTES = 1 << 20  # a file's fingerprint hashes its first and last MiB (with its size and mtime)
# What a model directory's outputs depend on: weights, configs, tokenizer and the training run's settings.
MODEL_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.spm", "*.txt", RUN_CONFIG)


class ResumableOutput:
    def __init__(self, path: str, *, overwrite: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.ledger = self.path.with_name(self.path.name + ".progress.json")
        self.lock_file = self.path.with_name(self.path.name + ".lock")
        self.overwrite = overwrite
        self.parts: dict[str, Any] = {}
        self.fingerprint = ""
        self.rows_done = 0
        self.rows_saved = 0  # what the ledger on disk records: what a re-run keeps
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def files(self) -> list[Path]:
        """Every path this output writes: check_outputs keeps them all off the inputs."""
        return [self.path, self.partial, self.ledger, self.lock_file]

    def lock(self) -> None:
        """Take the output for this job alone; a second job on it stops here, naming the first."""
        import fcntl

        with self._disk_guard():
            while True:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "it is starting"
                    os.close(fd)
                    raise ConfigError(f"another job is writing this output ({holder})", path=str(self.path),
                                      hint="wait for it to finish or stop it, or choose another --output") from None
                # The job before may have removed the file just before we locked it: hold the file that is there.
                if _same_inode(fd, self.lock_file):
                    break
                os.close(fd)
            self._lock_fd = fd
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            write_all(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())

    def start(self, parts: dict[str, Any]) -> int:
        """Open for appending; return how many input rows an earlier, interrupted run finished.

        `parts` maps each thing the output depends on to its fingerprint (any JSON value)."""
        self.parts = parts
        self.fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        refuse_finished(self.path, self.overwrite)
        progress = self._read_ledger()
        if progress is not None and progress.get("fingerprint") != self.fingerprint:
            if not self.overwrite:
                raise ConfigError(self._changed_since(progress), path=str(self.ledger),
                                  hint="re-run with the settings of the interrupted run to continue it, "
                                       "or pass --overwrite to start over")
            progress = None
        progress = progress or {"rows": 0, "bytes": 0}
        with self._disk_guard():
            self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT, 0o644)
            os.ftruncate(self._fd, progress["bytes"])  # drop what was written after the last ledger update
            os.lseek(self._fd, progress["bytes"], os.SEEK_SET)
            self.rows_done = self.rows_saved = progress["rows"]
            self._write_ledger()
        if self.rows_done:
            logger.info("continuing %s: %d input rows were already done", self.path, self.rows_done)
        return self.rows_done

    def append(self, text: str, rows: int) -> None:
        """Append the outputs of the next `rows` input rows, durably, then move the ledger on."""
        with self._disk_guard():
            write_all(self._fd, text.encode("utf-8"))
            os.fsync(self._fd)
            self.rows_done += rows
            self._write_ledger()

    def finish(self) -> None:
        with self._disk_guard():
            os.close(self._fd)
            self._fd = None
            os.replace(self.partial, self.path)
            self.ledger.unlink()
        self.close()

    def close(self) -> None:
        """Stop (finished or not): the partial file and ledger stay for a re-run; the lock goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            self.lock_file.unlink(missing_ok=True)  # while still held: a job that locks next gets a file of its own
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def _disk_guard(self) -> Iterator[None]:
        """A full disk stops the job with one line; the ledger still describes a prefix of the partial file."""
        try:
            yield
        except OSError as err:
            if not is_disk_full(err):
                raise
            kept = f"{self.partial.name} and {self.ledger.name}, if any, are kept as they were"
            if self.rows_saved:
                kept = f"the first {self.rows_saved} rows are kept in {self.partial} (progress in {self.ledger.name})"
            raise disk_full(self.partial, kept) from err

    def _changed_since(self, progress: dict[str, Any]) -> str:
        old = progress.get("parts")
        changed = [_what_changed(name, old.get(name), value) for name, value in self.parts.items()
                   if old.get(name) != value] if isinstance(old, dict) else []
        if not changed:  # a ledger from before the parts were recorded
            return "an interrupted run with other settings (model, input, preset or batching) left its progress here"
        return f"an interrupted run left its progress here, but {' and '.join(changed)} changed since then"

    def _read_ledger(self) -> dict[str, Any] | None:
        if not self.ledger.exists():
            return None
        try:
            progress = json.loads(self.ledger.read_text())
            if self.partial.exists() and self.partial.stat().st_size >= progress["bytes"] >= 0 <= progress["rows"]:
                return progress
        except (ValueError, KeyError, TypeError):
            pass
        logger.warning("%s is unreadable or does not match %s: starting over", self.ledger, self.partial)
        return None

    def _write_ledger(self) -> None:
        state = {"fingerprint": self.fingerprint, "parts": self.parts, "rows": self.rows_done,
                 "bytes": os.lseek(self._fd, 0, os.SEEK_CUR)}
        write_atomically(self.ledger, [json.dumps(state, default=str)])  # a kill leaves the old ledger or the new
        self.rows_saved = self.rows_done


def _what_changed(name: str, old: Any, new: Any) -> str:
    """'the model files (model.safetensors)': which files of a part changed, when the part lists files."""
    if isinstance(old, dict) and isinstance(new, dict):
        files = sorted(key for key in {*old, *new} if old.get(key) != new.get(key))
        return f"the {name} ({', '.join(files)})"
    return f"the {name}"


def _same_inode(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def refuse_finished(path: str | Path, overwrite: bool, key: str = "output") -> None:
    """An existing file (a finished run, or a file of the user's: nothing tells them apart) stays unless told."""
    if Path(path).exists() and not overwrite:
        raise ConfigError("the file exists", path=str(path), key=key,
                          hint=f"choose another --{key}, or pass --overwrite to replace it")


# ----------------------------------------------------------------------------- output paths


def check_outputs(outputs: list[tuple[str, str | Path]], inputs: dict[str, str | None]) -> None:
    """Each (key, path) output: a file we can create, and neither an input nor another output.

    `inputs` maps option names to the files (or folders: the model) the job reads. --overwrite never
    applies to them: replacing an input with its own predictions loses the user's data.
    """
    readable = {key: Path(path) for key, path in inputs.items() if path is not None and Path(path).exists()}
    for index, (key, path) in enumerate(outputs):
        path = Path(path)
        _check_writable(key, path)
        for other, source in readable.items():
            if _same_or_inside(path, source):
                where = "inside" if source.is_dir() else "the same file as"
                raise ConfigError(f"is {where} --{other} {source}", key=key, path=str(path),
                                  hint=f"choose another --{key}: --overwrite never replaces an input")
        for other, earlier in outputs[:index]:
            if other != key and _same_or_inside(path, Path(earlier)):
                raise ConfigError(f"is the same file as --{other} {earlier}", key=key, path=str(path),
                                  hint=f"give --{key} and --{other} different files")


def _check_writable(key: str, path: Path) -> None:
    if path.is_dir():
        raise ConfigError("is a directory, expected a file", key=key, path=str(path),
                          hint=f"give --{key} a file name, e.g. {path / 'predictions.jsonl'}")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise ConfigError("is not a regular file (a pipe, socket or device)", key=key, path=str(path),
                          hint=f"give --{key} a file name")
    folder = path.absolute().parent
    if not folder.exists():
        raise ConfigError("the output's folder does not exist", key=key, path=str(folder),
                          hint=f"create it or choose another --{key}")
    if not folder.is_dir():
        raise ConfigError("the output's folder is a file", key=key, path=str(folder), hint=f"choose another --{key}")
    try:  # a real file, not os.access: permission bits do not stop root, a read-only mount stops everyone
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise ConfigError(f"the output's folder is not writable ({err.strerror or err})", key=key, path=str(folder),
                          hint=f"choose another --{key}") from None


def _same_or_inside(path: Path, source: Path) -> bool:
    """Whether writing `path` would write `source` (a file) or into it (a folder), through any link."""
    resolved, target = path.resolve(), source.resolve()
    if resolved == target or (target.is_dir() and target in resolved.parents):
        return True
    return path.exists() and os.path.samefile(path, source)  # a hard link


# ----------------------------------------------------------------------------- fingerprints


def fingerprint_file(path: str | Path) -> str:
    """Size, mtime and a hash of the first and last MiB: cheap on a 10 GB file, and any rewrite changes it."""
    info = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE_BYTES))
        if info.st_size > SAMPLE_BYTES:
            f.seek(max(SAMPLE_BYTES, info.st_size - SAMPLE_BYTES))
            digest.update(f.read(SAMPLE_BYTES))
    return f"{info.st_size}:{info.st_mtime_ns}:{digest.hexdigest()[:16]}"


def fingerprint_model(ref: str) -> dict[str, str] | str:
    """{file: fingerprint} of a model directory (and of a LoRA adapter's local base); a Hub id as it is."""
    directory = Path(ref)
    if not directory.is_dir():
        return ref
    folders = [directory, directory / DECODER_TOKENIZER_DIR]
    base = adapter_base(directory)
    if base and Path(base).is_dir():
        folders.append(Path(base))
    files = sorted({file for folder in folders for pattern in MODEL_FILES for file in folder.glob(pattern)
                    if file.is_file()})
    return {_relative(file, directory): fingerprint_file(file) for file in files}


def _relative(file: Path, directory: Path) -> str:
    return str(file.relative_to(directory)) if file.is_relative_to(directory) else str(file.absolute())
