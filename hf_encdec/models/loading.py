"""Safe loading: every config, tokenizer, model and adapter a command loads comes through here.

One boundary, so a library failure becomes one ModelError naming the file and the fix, whichever
command met it (train, a warm start, an adapter's base, generate, evaluate, merge):

- a path that is a file, or no folder and no Hub id either, before the library guesses at the Hub;
- a model folder without config.json, or without tokenizer files: AutoTokenizer then builds an empty
  stand-in from the config that turns every word into <unk>, and training runs on without a word;
- a tokenizer that loads but cannot encode its own tokens (the same stand-in, reached another way);
- a truncated or corrupt *.safetensors file, weights that do not fit config.json, an invalid JSON file
  (named with its line), an unreadable file;
- an invalid generation_config.json, which from_pretrained drops in favour of defaults without a word;
- pickle weights, refused unless the user allows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ModelError, UserError
from ..rundir import GENERATION_CONFIG, MODEL_CONFIG, REFETCH, read_json

# Weight files that are Python pickles: loading one can run code planted in it.
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
# What a saved tokenizer leaves in its folder, whatever its kind: the tokenizers library's file, the
# config of a vocabulary-free one (ByT5), SentencePiece models (spiece.model, source.spm ...), vocabularies
# and BPE merges (vocab.json, vocab.txt, merges.txt, bpe.codes).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "*.model", "*.spm", "vocab*", "merges.txt",
                   "bpe.codes")
# Decoding fields of a saved generation config, and the type generate() needs: a hand-edited
# "num_beams": "four" loads without complaint and fails deep inside generate().
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(("num_beams", "num_return_sequences", "max_length", "max_new_tokens", "min_length",
                     "min_new_tokens", "top_k", "no_repeat_ngram_size"), int),
    **dict.fromkeys(("temperature", "top_p", "length_penalty", "repetition_penalty"), (int, float)),
}
TOKENIZER_HINT = ("save the model's tokenizer into the folder with tokenizer.save_pretrained; to train, "
                  "--tokenizer_name can also name the folder or Hub id of the tokenizer it was trained with")


def local_folder(name: str, key: str, holds: str = "the model") -> Path | None:
    """The folder `name` names, or None for a Hub id; a file, a missing folder or an impossible id is refused."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(name)
    if path.is_dir():
        return path
    if path.is_file():
        raise ModelError(f"{name} is a file; give the folder that holds {holds}", key=key,
                         hint=f"e.g. {path.parent}")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelError(f"no folder {name}, and it is not a Hub id either", key=key,
                         hint="check the path, which starts at the working directory when relative, "
                              "or give a Hub id such as owner/name") from None
    return None


def model_folder(name: str, key: str) -> Path | None:
    """local_folder, which for a model must hold its config.json and weights whose headers read: cheap checks
    (no weights are loaded) that let a broken folder fail before the data is read."""
    folder = local_folder(name, key)
    if folder is None:
        return None
    if not (folder / MODEL_CONFIG).is_file():
        raise ModelError(f"{name} has no {MODEL_CONFIG}", key=key,
                         hint=f"a model folder needs the {MODEL_CONFIG} saved with its weights; save_pretrained "
                              "writes both")
    check_folder_weights(folder, key)
    return folder


def tokenizer_folder(name: str, key: str) -> Path | None:
    """local_folder, which for a tokenizer must hold tokenizer files: AutoTokenizer would otherwise build an
    empty stand-in from config.json alone."""
    folder = local_folder(name, key, holds="the tokenizer files")
    if folder is not None and not any(next(folder.glob(pattern), None) for pattern in TOKENIZER_FILES):
        raise ModelError(f"{name} has no tokenizer files (tokenizer.json, tokenizer_config.json, a SentencePiece "
                         "model or a vocabulary); without them every word would become <unk>", key=key,
                         hint=TOKENIZER_HINT)
    return folder


@contextmanager
def library_errors(*names: str, key: str, what: str, hint: str | None = None) -> Iterator[None]:
    """Library failures while loading `names` as one ModelError: the corrupt file named when it is local."""
    from safetensors import SafetensorError

    folders = [Path(name) for name in names if Path(name).is_dir()]
    try:
        yield
    except UserError:
        raise
    except SafetensorError as err:
        for folder in folders:
            check_folder_weights(folder, key)
        raise ModelError(f"cannot read the weights of {' + '.join(names)} (a file is truncated or corrupt: "
                         f"{_reason(err)})", key=key, hint=REFETCH) from err
    except PermissionError as err:
        raise ModelError(f"cannot read {err.filename or ' + '.join(names)} (permission denied)", key=key,
                         hint="make the file readable by the user running hf-encdec") from err
    except RuntimeError as err:  # torch's and transformers' error for weights of other shapes than the config's
        if "mismatched_sizes" not in str(err) and "size mismatch" not in str(err):
            raise
        raise ModelError(f"the weights of {' + '.join(names)} do not fit its config.json (tensor shapes differ)",
                         key=key, hint="the config and the weights come from different models: save or download "
                                       "them again together") from err
    except (OSError, ValueError, TypeError, KeyError) as err:  # what a loader makes of a file it cannot use
        for folder in folders:
            check_json_files(folder, key)
        if "custom code" in str(err):
            hint = "it runs its own Python code: pass --trust_remote_code true only if you trust its source"
        raise ModelError(f"cannot load {what} {' + '.join(map(repr, names))}: {_reason(err)}", key=key,
                         hint=hint or "check the Hub id or local path; without network only local directories "
                                      "work") from err


def _reason(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def check_folder_weights(folder: Path, key: str) -> None:
    """The first *.safetensors file in `folder` whose header does not read (truncated, corrupt, unreadable)
    as a ModelError; reading a header loads no weights."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except PermissionError as err:
            raise ModelError(f"cannot read {file} (permission denied)", key=key,
                             hint="make the file readable by the user running hf-encdec") from err
        except (SafetensorError, OSError) as err:
            raise ModelError(f"cannot read the weights in {file} (the file is truncated or corrupt: "
                             f"{_reason(err)})", key=key, hint=REFETCH) from err


def check_json_files(folder: Path, key: str) -> None:
    """The first JSON file in `folder` that does not parse, as a ModelError with its line."""
    for file in sorted(folder.glob("*.json")):
        read_json(file, key)


def weights_loading(name_or_path: str, allow_pickle: bool, key: str = "model_name_or_path") -> dict[str, Any]:
    """from_pretrained arguments that load safetensors only, unless the user allows pickles (weights_only then).

    Every loader (training, warm start, adapters' base, generate) goes through here, so a local
    checkpoint with only pickle weights is refused with one message instead of a loader's "not found".
    """
    if allow_pickle:
        return {"use_safetensors": None, "weights_only": True}
    folder = Path(name_or_path)
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()] if folder.is_dir() else []
    if pickles and not any(folder.glob("*.safetensors")):
        raise ModelError(f"{name_or_path} has only pickle weights ({pickles[0]}); unpickling can run code "
                         "hidden in the file", key=key, hint="convert it to safetensors, or pass --allow_pickle true "
                         "if you trust its source (it is then loaded with torch weights_only=True)")
    return {"use_safetensors": True}


def load_config(name: str, *, key: str, **kwargs: Any):
    """AutoConfig of a Hub id or model folder (no weights): cheap enough for validation."""
    from transformers import AutoConfig

    model_folder(name, key)
    with library_errors(name, key=key, what="model"):
        return AutoConfig.from_pretrained(name, **kwargs)


def load_model(loader: Any, name: str, *, key: str, allow_pickle: bool, hint: str | None = None, **kwargs: Any):
    """`loader.from_pretrained(name)` (AutoModelForSeq2SeqLM ...), safetensors only unless pickles are allowed."""
    folder = model_folder(name, key)
    loading = weights_loading(name, allow_pickle, key=key)
    with library_errors(name, key=key, what="the weights of", hint=hint):
        model = loader.from_pretrained(name, **loading, **kwargs)
    if folder is not None:
        check_generation_config(folder, key)
    return model


def load_generation_config(folder: str, file_name: str = GENERATION_CONFIG, *, key: str):
    """A GenerationConfig saved in a local `folder` (generation_config.json, or e.g. presets/beam.json), checked:
    invalid JSON is named with its line, a decoding field of the wrong type with its value."""
    from transformers import GenerationConfig

    file = Path(folder) / file_name
    read_json(file, key)
    with library_errors(str(file), key=key, what="the generation config", hint=f"fix or delete the file, or {REFETCH}"):
        config = GenerationConfig.from_pretrained(folder, file_name)
    for field, kind in FIELD_TYPES.items():  # unset (None) means the library default
        value = getattr(config, field, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise ModelError(f"{field} is {value!r}, expected {'a whole number' if kind is int else 'a number'}",
                             path=str(file), key=key, hint=f"fix or delete the file, or {REFETCH}")
    return config


def check_generation_config(folder: Path, key: str) -> None:
    """An invalid generation_config.json is an error: from_pretrained would silently decode with defaults."""
    if (folder / GENERATION_CONFIG).is_file():
        load_generation_config(str(folder), key=key)


def load_tokenizer(name: str, *, key: str, **kwargs: Any):
    """AutoTokenizer of a Hub id or folder, refused when the folder has no tokenizer or it has no vocabulary."""
    from transformers import AutoTokenizer

    tokenizer_folder(name, key)
    with library_errors(name, key=key, what="the tokenizer of", hint=TOKENIZER_HINT):
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    check_vocabulary(tokenizer, name, key)
    return tokenizer


SAMPLED_TOKENS = 64  # ordinary tokens decoded and re-encoded to check that a tokenizer can write words


def check_vocabulary(tokenizer: Any, name: str, key: str) -> None:
    """Refuse a tokenizer that cannot encode its own tokens: a stand-in with special tokens only, or one that
    reads a vocabulary with the wrong rules (each word then comes out as <unk>, or as nothing)."""
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    sample = ordinary[:: max(1, len(ordinary) // SAMPLED_TOKENS)][:SAMPLED_TOKENS]
    texts = [text for text in (tokenizer.decode([i]) for i in sample) if text.strip()]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    if not any(i not in special and i != tokenizer.unk_token_id for row in encoded for i in row):
        raise ModelError(f"the tokenizer of {name!r} has no usable vocabulary ({len(tokenizer)} tokens, "
                         f"{len(special)} of them special): every word would become <unk>", key=key,
                         hint=TOKENIZER_HINT)
