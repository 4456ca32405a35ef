"""Pushing a run to the Hub.

Pushing goes through huggingface_hub (`whoami`, `create_repo`, `upload_folder`) with hf-encdec's
own checks around it: the token and the repo are checked before training starts, the push runs
after the local save, and a failed push keeps the local model and says how to retry.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .card import refresh_model_card
from ..config.run_config import RunConfig, is_local_path
from ..errors import ConfigError, HubError, ModelError
from ..rundir import (ADAPTER_CONFIG, CARD, GENERATION_CONFIG, METRICS, MODEL_CONFIG, PLOTS_DIR, PRESET_DIR, RUN_CONFIG,
                      TOKENIZER_FILES, TRAINER_STATE, WEIGHT_FILES, adapter_base, checkpoint_name, read_adapter_config,
                      read_run_config)

logger = logging.getLogger("hf_encdec.hub")


# What a push uploads from a run's folder (top level): the model or adapter, tokenizer(s), generation
# config, the run's config and metrics, the card. predictions.jsonl stays local: it holds the test set.
PUSHED_FILES = (*WEIGHT_FILES, MODEL_CONFIG, ADAPTER_CONFIG, GENERATION_CONFIG, *TOKENIZER_FILES, RUN_CONFIG, METRICS,
                CARD)
PUSHED_FOLDERS = (PRESET_DIR, PLOTS_DIR)  # every named decoding preset; the curves the card shows
# Checkpoint files a resumed run needs, pushed for hub_strategy checkpoint / all_checkpoints.
CHECKPOINT_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "scaler.pt", TRAINER_STATE)


@dataclass
class HubTarget:
    """Where a run goes: checked once (token, namespace), then used for every push of the run."""

    repo_id: str
    token: str = field(repr=False)  # so that logging a target never shows it
    private: bool | None = None
    revision: str | None = None


def check_access(repo_id: str, *, token: str | None = None, private: bool | None = None,
                 revision: str | None = None, repo_key: str = "repo_id") -> HubTarget:
    """The token is valid, may write, and `repo_id` is in its user's or an organization's namespace.

    Runs before training, so a typo in the repo id or an expired token costs seconds, not a training run.
    A repo id without an owner goes to the token's user, as with the Trainer. The id's spelling is
    checked first, without the network: `name` and `owner/name` are its two valid forms.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"invalid repo id {repo_id!r}: {err}", key=repo_key) from None
    token, source = (token, "the given token (hub_token or token)") if token else (get_token(), _token_source())
    if not token:
        raise HubError("no Hub token to push with",
                       hint="set HF_TOKEN to a token with write access, or run `hf auth login`")
    api = HfApi(token=token)
    with hub_errors(f"checking the token from {source}"):
        me = api.whoami()
    owner, _, name = repo_id.rpartition("/")
    full_id = f"{owner or me['name']}/{name}"
    namespaces = [me["name"], *(org["name"] for org in me.get("orgs", []))]
    if full_id.split("/")[0] not in namespaces:
        raise HubError(f"repo {full_id} is not in your namespace: the token from {source} belongs to "
                       f"{me['name']!r}", key=repo_key,
                       hint=f"push to one of {', '.join(f'{n}/{name}' for n in namespaces)}")
    if me.get("auth", {}).get("accessToken", {}).get("role") == "read":
        raise HubError(f"the token from {source} is read-only", hint="use a token with write access")
    with hub_errors(f"looking up {full_id}"):
        exists = api.repo_exists(full_id)
    logger.info("hub: will push to %s (%s, as %s)", full_id, "existing repo" if exists else "new repo", me["name"])
    return HubTarget(full_id, token, private, revision)


def _token_source() -> str:
    # Which of huggingface_hub's places the token came from, for error messages; never the token itself.
    return "HF_TOKEN" if os.environ.get("HF_TOKEN") else "the saved login (hf auth login)"


def push(model_dir: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
         commit_message: str | None = None, merge_lora: bool = False, token: str | None = None) -> str:
    """Upload a finished run folder to the Hub; returns the commit URL."""
    folder = Path(model_dir)
    _check_run_folder(folder)
    if merge_lora and not (folder / ADAPTER_CONFIG).exists():
        raise ConfigError("--merge_lora needs a LoRA run: this folder holds a full model (no adapter_config.json)",
                          key="merge_lora", path=str(folder), hint="push it without --merge_lora")
    if not merge_lora:
        hub_base_of(folder)  # an adapter whose base no one else can load stops here, before the Hub is asked
    target = check_access(repo_id, token=token, private=private, revision=revision)
    return upload_run(folder, target, commit_message=commit_message, merge_lora=merge_lora)


def _check_run_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelError("model folder not found", path=str(folder), hint="give the output_dir of a finished run")
    if not any(folder.glob("*.safetensors")):
        raise ModelError("no model weights (*.safetensors) in this folder", path=str(folder),
                         hint="give the output_dir of a finished run")


def upload_run(folder: Path, target: HubTarget, *, commit_message: str | None = None,
               merge_lora: bool = False) -> str:
    """create_repo + upload_folder of the run's files, with a card naming the repo."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="hf-encdec-push-") as scratch:
        if merge_lora:
            source = merge_adapter(folder, Path(scratch))
            refresh_model_card(source, target.repo_id, run_folder=folder)
        else:
            refresh_model_card(folder, target.repo_id)
            source = naming_the_hub_base(folder, Path(scratch))
        api = HfApi(token=target.token)
        with hub_errors(f"pushing to {target.repo_id}"):
            _prepare_repo(api, target)
            info = api.upload_folder(repo_id=target.repo_id, folder_path=source, revision=target.revision,
                                     allow_patterns=[glob.escape(p) for p in files_to_push(source)],
                                     commit_message=commit_message or f"Upload {folder.name} with hf-encdec")
    return info.commit_url


def hub_base_of(folder: Path) -> str | None:
    """The Hub id a pushed adapter names as its base: None for a full model or an adapter whose base is on the Hub.

    peft saves the base as it was given, here often a local folder, and loads the adapter from the Hub by
    following that name: pushed as it is, it would hold this machine's path and load for no one else.
    """
    base = adapter_base(folder)
    if base is None or not is_local_path(base):
        return None
    hub_id = read_run_config(folder).get("base_model")
    if not hub_id:
        raise ConfigError(f"the adapter's base model is a local folder ({Path(base).name}), which no one can load "
                          "from the Hub", key="base_model", path=str(folder / ADAPTER_CONFIG),
                          hint=f"set base_model: OWNER/NAME (the Hub id of that base) in {folder / RUN_CONFIG}"
                               " (or --base_model when training), or push with --merge_lora")
    return hub_id


def naming_the_hub_base(folder: Path, scratch: Path) -> Path:
    """`folder`, or where its adapter's local base is named by its Hub id: links to the run's files in `scratch`
    beside a rewritten adapter_config.json (the run's own keeps the local base it loads from)."""
    hub_id = hub_base_of(folder)
    if hub_id is None:
        return folder
    for path in files_to_push(folder):
        (scratch / path).parent.mkdir(parents=True, exist_ok=True)
        (scratch / path).symlink_to((folder / path).absolute())
    adapter = read_adapter_config(folder)
    (scratch / ADAPTER_CONFIG).unlink()
    (scratch / ADAPTER_CONFIG).write_text(json.dumps({**adapter, "base_model_name_or_path": hub_id}, indent=2) + "\n",
                                          encoding="utf-8")
    return scratch


def _prepare_repo(api: Any, target: HubTarget) -> None:
    """The repo (and branch) exist afterwards; an existing repo keeps its visibility."""
    api.create_repo(target.repo_id, private=target.private, exist_ok=True)
    if target.revision:
        api.create_branch(target.repo_id, branch=target.revision, exist_ok=True)


def files_to_push(folder: Path) -> list[str]:
    """Relative paths of the run's files that a push uploads (see PUSHED_FILES)."""
    top = [p for p in folder.iterdir() if p.is_file() and any(p.match(pattern) for pattern in PUSHED_FILES)]
    nested = [p for name in PUSHED_FOLDERS if (folder / name).is_dir() for p in (folder / name).rglob("*")
              if p.is_file()]
    return sorted(p.relative_to(folder).as_posix() for p in top + nested)


def merge_adapter(folder: Path, target: Path) -> Path:
    """The run's LoRA adapter merged into its base model, as a plain transformers folder in `target`."""
    from ..models.adapters import merge_saved

    merge_saved(str(folder), str(target))
    # The weights, config.json, tokenizer(s) and generation config come from the merge; the rest
    # (presets, run_config.yaml, metrics.json, the card) from the run.
    from_merge = {p.relative_to(target).as_posix() for p in target.rglob("*")}
    for path in files_to_push(folder):
        if path not in from_merge and not path.startswith("adapter_"):
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / path, target / path)
    return target


HTTP_REASONS = {
    401: ("the Hub rejected the token (401)", "set HF_TOKEN to a valid token, or run `hf auth login --force`"),
    403: ("the token may not write there (403)", "use a token with write access to this namespace"),
    404: ("not found on the Hub (404)", "check the repo id and the revision"),
    409: ("the repo changed meanwhile (409)", "retry: another push or an edit on the Hub came first"),
    413: ("a file is too large for the Hub (413)", "see the Hub's file size limits"),
    429: ("the Hub is rate-limiting this token (429)", "wait a few minutes and retry"),
}
SERVER_ERROR = ("the Hub had a server error ({status})", "retry later: the model is not lost")


@contextmanager
def hub_errors(action: str):
    """The Hub client's exceptions as one-line HubErrors (its messages carry URLs, never the token).

    The one place where huggingface_hub's failures meet the user: every call to the Hub runs inside it.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    unreachable = f"{action}: cannot reach the Hub at {constants.ENDPOINT}"
    try:
        yield
    except OfflineModeIsEnabled:
        raise HubError(f"{action}: HF_HUB_OFFLINE is set", hint="unset it to push") from None
    except RepositoryNotFoundError:
        raise HubError(f"{action}: repository not found or not visible to this token",
                       hint="check the repo id, and that the token may see it") from None
    except RevisionNotFoundError:
        raise HubError(f"{action}: revision (branch) not found", hint="check --revision / hub_revision") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        reason, hint = HTTP_REASONS.get(status) or (
            (SERVER_ERROR[0].format(status=status), SERVER_ERROR[1]) if status and status >= 500
            else (f"the Hub answered {status}", None))
        detail = f": {err.server_message.strip()}" if err.server_message else ""
        raise HubError(f"{action}: {reason}{detail}", hint=hint) from None
    except LocalEntryNotFoundError as err:  # offline or unreachable, and not in the local cache either
        raise HubError(f"{unreachable}, and the file is not cached ({err})",
                       hint="check the network, or HF_ENDPOINT") from None
    except (HTTPError, ConnectionError, TimeoutError) as err:  # the transport's: refused, reset, timed out
        raise HubError(f"{unreachable} ({type(err).__name__}: {err})",
                       hint="check the network, or HF_ENDPOINT") from None
    except ValueError as err:  # the client refused the arguments (create_repo, upload_folder) before sending
        raise HubError(f"{action}: {err}") from None


def check_push_access(config: RunConfig) -> HubTarget:
    """`push_to_hub: true`: the target of hub_model_id (default: the output folder's name), checked now."""
    if config.adapter.peft and config.model.model_name_or_path and is_local_path(config.model.model_name_or_path) \
            and not config.run.base_model:
        raise ConfigError("push_to_hub with an adapter on a local base model: the pushed adapter would name this "
                          "machine's folder as its base, which no one can load", key="base_model",
                          hint="set --base_model OWNER/NAME (the Hub id of that base), or push the merged model "
                               "later with `hf-encdec push --merge_lora`")
    t = config.training
    return check_access(t.get("hub_model_id") or config.output_dir.name, token=t.get("hub_token") or config.model.token,
                        private=t.get("hub_private_repo"), revision=t.get("hub_revision"), repo_key="hub_model_id")


def push_after_training(output_dir: Path, target: HubTarget) -> str | None:
    """The final push, from the main process, after everything is saved locally."""
    from ..distributed import state

    if not state().is_main_process:
        return None
    try:
        return upload_run(output_dir, target, commit_message=f"Training finished: {output_dir.name}")
    except HubError as err:
        raise HubError(f"{err.message}; the model is saved in {output_dir}",
                       hint=f"retry with `hf-encdec push --model {output_dir} --repo_id {target.repo_id}`") from None


def follow_checkpoints(trainer: Any, target: HubTarget, strategy: str) -> None:
    """Checkpoint pushes, as the Trainer's hub_strategy means them (it does not push itself: see config/run_config.py).

    every_save: the model of each saved checkpoint goes to the repo root; checkpoint: also the newest
    checkpoint with its optimizer state, in last-checkpoint/ (resume elsewhere); all_checkpoints: every
    checkpoint in checkpoint-N/. end (the default): only the final push.
    """
    from transformers import TrainerCallback

    class CheckpointPusher(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                _push_checkpoint(Path(args.output_dir) / checkpoint_name(state.global_step), target, strategy)

    if strategy != "end":
        trainer.add_callback(CheckpointPusher())


def _push_checkpoint(checkpoint: Path, target: HubTarget, strategy: str) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=target.token)
    message = f"Training in progress, {checkpoint.name}"
    model_files = [glob.escape(p) for p in files_to_push(checkpoint)]
    try:
        with hub_errors(f"pushing {checkpoint.name} to {target.repo_id}"):
            _prepare_repo(api, target)
            api.upload_folder(repo_id=target.repo_id, folder_path=checkpoint, revision=target.revision,
                              allow_patterns=model_files, commit_message=message)
            if strategy in ("checkpoint", "all_checkpoints"):
                folder = "last-checkpoint" if strategy == "checkpoint" else checkpoint.name
                api.upload_folder(repo_id=target.repo_id, folder_path=checkpoint, path_in_repo=folder,
                                  revision=target.revision, allow_patterns=model_files + list(CHECKPOINT_STATE),
                                  delete_patterns="*", commit_message=f"{message}, full checkpoint")
    except HubError as err:
        # Training goes on: the final push after training is tried (and reported) regardless.
        logger.warning("hub: %s", err.one_line())
