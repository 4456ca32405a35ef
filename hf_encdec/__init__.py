"""hf-encdec: fine-tune Hugging Face encoder-decoder models with one command.

The public API mirrors the CLI: `train(config)` takes a RunConfig, a dict of flat keys, or a
recipe path. Heavy libraries load on first use, so `import hf_encdec` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import RunConfig, load_config
from .errors import ConfigError, DataError, ModelError, UserError

if TYPE_CHECKING:
    from .training import TrainResult

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "ModelError", "RunConfig", "UserError", "load_config", "train"]


def train(config: RunConfig | dict[str, Any] | str) -> TrainResult:
    from .training import train as _train

    return _train(config)
