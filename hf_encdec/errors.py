"""The user-facing error types.

Every mistake a user can make (a bad key, a bad file, a bad row, a model that cannot be
loaded) is raised as a subclass of `UserError`. The CLI turns it into one line and exit
code 2; anything else is an internal failure (exit code 1). Each class is also a built-in
exception, so `except ValueError` in user code keeps working (huggingface_hub does the
same in its `errors.py`).
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix. Carries where it happened and what to do next."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        path: str | None = None,
        line: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ):
        self.message = message
        self.key = key
        self.path = path
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(self.one_line())

    def where(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:{self.line}" if self.line is not None else str(self.path))
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        if self.key is not None:
            parts.append(f"key '{self.key}'")
        return ", ".join(parts)

    def one_line(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return " ".join(text.split())


class ConfigError(UserError, ValueError):
    """A recipe or command-line key is unknown, has the wrong type, or contradicts another."""


class DataError(UserError, ValueError):
    """A data file is missing, unreadable or malformed, or a column cannot be found."""


class ModelError(UserError, OSError):
    """A model, tokenizer or configuration cannot be loaded or does not fit the request."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The valid name a typo most likely meant, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    guess = closest(name, choices)
    return f"did you mean '{guess}'?" if guess else None


class HubError(UserError, OSError):
    """The Hub refused or could not be reached: no token, a rejected token, a repo that is not yours."""


class NonFiniteLossError(UserError, ArithmeticError):
    """The training loss became NaN or infinite: the run stops before the weights are spoiled."""


class DiskFullError(UserError, OSError):
    """The disk (or quota) filled up while writing: what was complete is kept, and re-running continues."""


# errno values that mean "no room left": a full filesystem, or a full user quota.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(err: BaseException) -> bool:
    """True for an OSError of a full disk, also when a library wrapped it (torch raises RuntimeError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full(path: object, kept: str) -> DiskFullError:
    """The one line for a full disk at `path`: what was kept, and that re-running continues."""
    return DiskFullError(f"no space left on the device; {kept}", path=str(path),
                         hint="free some space and re-run the same command: it continues from what was kept")
