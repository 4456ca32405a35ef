"""What every decoding backend shares: sources encoded within the source limit, predictions out.

The transformers Generator (generator.py) and CTranslate2's (ct2.py) take the same windows of
sources and give back the same `Prediction`s, so the file jobs and the resumable output do not
know which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.job_keys import DEFAULT_SOURCE_LIMIT
from ..errors import ConfigError

# Characters of a long source tokenized per token it may keep: SentencePiece pieces span at most 16,
# typical tokens 3 to 5, so the head almost always holds every token kept (else the whole is tokenized).
HEAD_CHARACTERS = 16


@dataclass
class Prediction:
    texts: list[str]
    scores: list[float] | None  # n-best: one log-probability per text, best first
    tokens: int  # generated tokens, for the throughput report


def source_limit(model, tokenizer, max_source_length: int | None = None) -> int:
    """Tokens a source keeps: the user's max_source_length, else the encoder's position limit, else the
    tokenizer's model_max_length when it names one, else DEFAULT_SOURCE_LIMIT."""
    from ..models.build import source_positions, tokenizer_limit

    positions = source_positions(model)
    if max_source_length is None:
        return positions or tokenizer_limit(tokenizer) or DEFAULT_SOURCE_LIMIT
    if positions is not None and max_source_length > positions:
        raise ConfigError(f"{max_source_length} is beyond the model's {positions} positions", key="max_source_length",
                          hint=f"set max_source_length to {positions} or less")
    return max_source_length


def encode_sources(tokenizer, sources: list[str], limit: int) -> tuple[list[list[int]], int]:
    """Token ids of `sources`, each longer one cut to `limit` tokens as truncation=True cuts (its special tokens
    kept), and how many were cut.

    A source far longer than the limit is tokenized from a head of whole words: a 1 MB line would
    otherwise be tokenized whole (about a second) to keep 1024 of its tokens. Tokenizers split words at
    whitespace before they split them into tokens, so the head's tokens are the source's first tokens;
    a head that does not reach the limit (huge words, no whitespace) leaves the whole source to decide.
    """
    texts = [_head(source, limit) for source in sources]
    ids = tokenizer(texts, truncation=False)["input_ids"]
    for i, source in enumerate(sources):
        if len(texts[i]) < len(source) and len(ids[i]) <= limit:
            texts[i] = source
            ids[i] = tokenizer(source, truncation=False)["input_ids"]
    cut = [i for i, row in enumerate(ids) if len(row) > limit]
    if cut:
        for i, row in zip(cut, tokenizer([texts[i] for i in cut], truncation=True, max_length=limit)["input_ids"]):
            ids[i] = row
    return ids, len(cut)


def _head(text: str, limit: int) -> str:
    """`text` up to the last whitespace before HEAD_CHARACTERS characters a token; short texts whole."""
    bound = limit * HEAD_CHARACTERS
    if len(text) <= bound:
        return text
    end = max(text.rfind(space, 0, bound) for space in " \t\n")
    return text[:end] if end > 0 else text
