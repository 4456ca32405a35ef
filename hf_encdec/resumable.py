"""An output file that survives being killed: append, then record progress in a small ledger.

While a job runs, results go to `OUTPUT.partial` and a ledger `OUTPUT.progress.json` records
how many input rows are done and how many bytes of the partial file hold them. The ledger is
replaced atomically after each append is flushed to disk, so after any kill (SIGKILL
included) it describes a prefix of the partial file: a re-run cuts the file back to that
prefix and continues from the next row. Only a finished job renames the partial file to
OUTPUT, so a file under the final name is always complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger("hf_encdec.generation")


class ResumableOutput:
    def __init__(self, path: str, settings: dict[str, Any], *, overwrite: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.ledger = self.path.with_name(self.path.name + ".progress.json")
        # Everything that changes the output: a re-run with other settings must not continue this one.
        self.fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        self.overwrite = overwrite
        self.rows_done = 0
        self._file = None

    def start(self) -> int:
        """Open for appending; return how many input rows an earlier, interrupted run finished."""
        refuse_finished(self.path, self.overwrite)
        if not self.path.parent.is_dir():
            raise ConfigError("the output's folder does not exist", path=str(self.path.parent),
                              hint="create it or choose another --output")
        progress = self._read_ledger()
        if progress is not None and progress["fingerprint"] != self.fingerprint and not self.overwrite:
            raise ConfigError("an interrupted run with other settings (model, input, preset or batching) "
                              "left its progress here", path=str(self.ledger),
                              hint="re-run the same command to continue it, or pass --overwrite to start over")
        if progress is None or progress["fingerprint"] != self.fingerprint:
            progress = {"rows": 0, "bytes": 0}
        self._file = open(self.partial, "ab" if self.partial.exists() else "wb")
        self._file.truncate(progress["bytes"])  # drop what was written after the last ledger update
        self._file.seek(progress["bytes"])
        self.rows_done = progress["rows"]
        if self.rows_done:
            logger.info("continuing %s: %d input rows were already done", self.path, self.rows_done)
        self._write_ledger()
        return self.rows_done

    def append(self, text: str, rows: int) -> None:
        """Append the outputs of the next `rows` input rows, durably, then move the ledger on."""
        self._file.write(text.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows_done += rows
        self._write_ledger()

    def finish(self) -> None:
        self._file.close()
        os.replace(self.partial, self.path)
        self.ledger.unlink()

    def close(self) -> None:
        """Stop without finishing (an error): the partial file and ledger stay for a re-run."""
        if self._file is not None and not self._file.closed:
            self._file.close()

    def _read_ledger(self) -> dict[str, Any] | None:
        if not self.ledger.exists():
            return None
        try:
            progress = json.loads(self.ledger.read_text())
            if self.partial.exists() and self.partial.stat().st_size >= progress["bytes"]:
                return progress
        except (ValueError, KeyError, TypeError):
            pass
        logger.warning("%s is unreadable or does not match %s: starting over", self.ledger, self.partial)
        return None

    def _write_ledger(self) -> None:
        state = {"fingerprint": self.fingerprint, "rows": self.rows_done, "bytes": self._file.tell()}
        temporary = self.ledger.with_name(self.ledger.name + ".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.ledger)  # atomic: a kill leaves the old ledger or the new one


def refuse_finished(path: str | Path, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise ConfigError("output file exists (a finished run)", path=str(path),
                          hint="pass --overwrite to replace it, or choose another --output")
