"""`--backend ct2`: the same presets, windows, ordering and resume, decoded by CTranslate2.

CTranslate2 runs the decoder loop in C++ and drops finished sequences from the batch, which
transformers' generate() cannot do. The model is converted once (`ct2-transformers-converter`
underneath) and cached beside the source as `<model>.ct2/`; a LoRA adapter is merged first
(load_model already merged it). A preset is translated field by field; a field CTranslate2
has no equivalent for is an error naming it, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..distributed import state
from ..errors import ConfigError, ModelError
from .sources import encode_sources
from ..config.presets import new_tokens

logger = logging.getLogger("hf_encdec.generation")

SOURCE_STAMP = "hf_encdec_source.json"  # which weights the cached conversion was made from
# GenerationConfig fields with no CTranslate2 option, and the values that mean "unused".
UNSUPPORTED = {"num_beam_groups": (None, 1), "penalty_alpha": (None, 0), "typical_p": (None, 1.0),
               "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "min_p": (None,), "constraints": (None,),
               "force_words_ids": (None,), "bad_words_ids": (None,), "encoder_no_repeat_ngram_size": (None, 0),
               "exponential_decay_length_penalty": (None,), "diversity_penalty": (None, 0.0)}


# Config fields CTranslate2's converter (4.x) still reads but transformers 5 no longer writes, by model
# type, with the value the architecture always had: BART and mBART are post-norm (normalize_before false).
CONVERTER_CONFIG_FIELDS = {"bart": {"normalize_before": False}, "mbart": {"normalize_before": True}}


def converted_model(loaded) -> Path:
    """The CTranslate2 copy of the model, converted now unless a conversion of the same weights is cached."""
    if loaded.path is None:  # weights in memory may differ from any file: nothing safe to cache them under
        raise ConfigError("backend ct2 needs the model as a directory or Hub id, not a loaded model", key="backend",
                          hint="pass the model's path; it is converted once and cached beside it")
    source = Path(loaded.path) if Path(loaded.path).is_dir() else None
    if source is not None:
        target = source.parent / f"{source.name}.ct2"
    else:
        target = Path.home() / ".cache" / "hf_encdec" / "ct2" / loaded.path.replace("/", "--")
    stamp = _weights_stamp(source)
    if (target / "model.bin").is_file() and (target / SOURCE_STAMP).is_file() and \
            json.loads((target / SOURCE_STAMP).read_text()) == stamp:
        return target
    _convert(loaded, target, stamp)
    return target


def suppress_sequences(tokenizer, token_ids, converted: Path) -> list[list[str]]:
    """`suppress_tokens` as translate_batch's `suppress_sequences`. A token the conversion left out
    (Marian's <pad>) cannot be generated; named anyway, CTranslate2 would read it as <unk> and
    suppress that instead."""
    known = set(_vocabulary(converted))
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in token_ids or []]
    return [[t] for t in tokens if t in known]


def _vocabulary(converted: Path) -> list[str]:
    """The target tokens of a converted model (a shared vocabulary, or the target side's)."""
    for name in ("shared_vocabulary.json", "target_vocabulary.json"):
        if (converted / name).is_file():
            return json.loads((converted / name).read_text(encoding="utf-8"))
    return []


def _weights_stamp(source: Path | None) -> dict[str, Any]:
    if source is None:
        return {}
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(source.glob("*.safetensors"))}


def _convert(loaded, target: Path, stamp: dict[str, Any]) -> None:
    import ctranslate2

    from ..models.build import zero_start_embedding

    pad = loaded.tokenizer.pad_token_id
    if loaded.model.config.model_type == "marian" and pad != loaded.model.get_input_embeddings().num_embeddings - 1:
        raise ModelError(f"CTranslate2 cannot convert this Marian model: its converter drops the last id as <pad> (as "
                         f"Opus-MT checkpoints have it), and this model's <pad> is id {pad}, not the last",
                         key="backend", hint="use --backend transformers")
    if loaded.model.config.model_type == "marian" and not zero_start_embedding(loaded.model):
        raise ModelError("CTranslate2 cannot convert this Marian model exactly: it starts decoding from a zero "
                         "vector, and this model's decoder start (<pad>) embedding is not zero (it was trained)",
                         key="backend", hint="use --backend transformers")

    logger.info("converting the model for CTranslate2 into %s (once)", target)
    with tempfile.TemporaryDirectory() as work:
        # Saved from memory: a merged LoRA model and a local model convert the same way.
        loaded.model.save_pretrained(work)
        loaded.tokenizer.save_pretrained(work)
        config_file = Path(work) / "config.json"
        config = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**CONVERTER_CONFIG_FIELDS.get(config.get("model_type"), {}), **config}))
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            ctranslate2.converters.TransformersConverter(work).convert(str(partial), force=True)
        except (ValueError, NotImplementedError, OSError, AttributeError, KeyError) as err:
            raise ModelError(f"CTranslate2 cannot convert this model: {str(err).splitlines()[0]}",
                             key="backend", hint="use --backend transformers") from err
    (partial / SOURCE_STAMP).write_text(json.dumps(stamp))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def translate_options(config) -> dict[str, Any]:
    """A GenerationConfig as translate_batch keyword arguments."""
    for name, unused in UNSUPPORTED.items():
        if getattr(config, name, None) not in unused:
            raise ConfigError(f"CTranslate2 has no equivalent of {name}={getattr(config, name)!r}", key=name,
                              hint="unset it, or use --backend transformers")
    max_new = new_tokens(config) or 20  # neither length set: the library's default of 20 tokens
    if forced_end(config) is not None:
        max_new -= 1  # the forced token takes the last place
    options = {"beam_size": config.num_beams or 1, "num_hypotheses": config.num_return_sequences or 1,
               "length_penalty": config.length_penalty if config.length_penalty is not None else 1.0,
               "no_repeat_ngram_size": config.no_repeat_ngram_size or 0,
               "repetition_penalty": config.repetition_penalty or 1.0, "max_decoding_length": max_new,
               "min_decoding_length": config.min_new_tokens or max(0, (config.min_length or 0) - 1),
               "return_scores": (config.num_return_sequences or 1) > 1, "max_input_length": 0,
               "return_end_token": forced_end(config) is not None}  # a row without it reached the cap
    if config.do_sample:
        options.update(sampling_topk=config.top_k or 0, sampling_topp=config.top_p or 1.0,
                       sampling_temperature=config.temperature or 1.0)
    return options


def forced_end(config) -> int | None:
    """`forced_eos_token_id` (Marian and BART checkpoints set it), where CTranslate2 can match it: one token, under
    greedy search or sampling. transformers puts it in place of the last token a row that reaches the length cap
    may hold; Ct2Generator stops such a row one token earlier and appends it. Beam search scores a capped
    hypothesis with that token (free, and counted by the length penalty), which CTranslate2 cannot: refused."""
    forced = config.forced_eos_token_id
    if forced is None:
        return None
    if isinstance(forced, list) or (config.num_beams or 1) > 1:
        why = "under beam search" if not isinstance(forced, list) else "(a list)"
        raise ConfigError(f"CTranslate2 has no equivalent of forced_eos_token_id={forced!r} {why}",
                          key="forced_eos_token_id",
                          hint="use --backend transformers, or pass --forced_eos_token_id null (CTranslate2 then "
                               "keeps the last token of a row that reaches the length cap)")
    return forced


class Ct2Generator:
    """Generator's interface (run_window in, predictions in input order out) over a CTranslate2 Translator."""

    def __init__(self, loaded, generation_config, *, max_tokens: int | None, batch_size: int | None,
                 max_source_length: int | None, seed: int = 42):
        import ctranslate2
        import torch

        self.tokenizer = loaded.tokenizer
        self.config = generation_config
        self.options = translate_options(generation_config)
        self.nbest = self.options["num_hypotheses"] > 1
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.max_source_length = max_source_length
        self.seed = seed
        self.truncated = 0
        self.oom_splits = 0
        self.prefix = self._token_list(generation_config.forced_bos_token_id)
        self.forced_end = self._token_list(forced_end(generation_config))
        converted = converted_model(loaded)
        self.suppress = suppress_sequences(self.tokenizer, generation_config.suppress_tokens, converted)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # Under a multi-process launch each process decodes on its own GPU.
        self.translator = ctranslate2.Translator(str(converted), device=device,
                                                 device_index=state().local_process_index if device == "cuda" else 0,
                                                 intra_threads=torch.get_num_threads())

    def _token_list(self, *ids) -> list[str]:
        return [self.tokenizer.convert_ids_to_tokens(i) for i in ids if i is not None]

    def run_window(self, sources: list[str], window_index: int = 0):
        import ctranslate2

        from .generator import Prediction

        if not sources:
            return []
        if self.config.do_sample:
            ctranslate2.set_random_seed(self.seed + window_index)
        ids, truncated = encode_sources(self.tokenizer, sources, self.max_source_length)
        self.truncated += truncated
        tokens = [self.tokenizer.convert_ids_to_tokens(x) for x in ids]
        extra = {"target_prefix": [self.prefix] * len(tokens)} if self.prefix else {}
        if self.suppress:
            extra["suppress_sequences"] = self.suppress
        # CTranslate2 sorts the window by length and cuts it by the same budget, in C++.
        batching = ({"max_batch_size": self.batch_size, "batch_type": "examples"} if self.batch_size else
                    {"max_batch_size": self.max_tokens, "batch_type": "tokens"})
        results = self.translator.translate_batch(tokens, **self.options, **batching, **extra)
        predictions = []
        for result in results:
            hypotheses = [self._forced_ending(h) for h in result.hypotheses] if self.forced_end else result.hypotheses
            texts = [self.tokenizer.decode(self.tokenizer.convert_tokens_to_ids(h), skip_special_tokens=True).strip()
                     for h in hypotheses]
            scores = [round(s, 6) for s in result.scores] if self.nbest else None
            predictions.append(Prediction(texts, scores, sum(len(h) for h in hypotheses)))
        return predictions

    def _forced_ending(self, hypothesis: list[str]) -> list[str]:
        """A finished row without its end token (as without forced_eos_token_id); a capped one with the forced token."""
        if hypothesis and hypothesis[-1] == self.tokenizer.eos_token:
            return hypothesis[:-1]
        return hypothesis + self.forced_end
