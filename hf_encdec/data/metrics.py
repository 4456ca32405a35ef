"""Evaluation metrics: BLEU / chrF / TER (sacrebleu), ROUGE (rouge-score), exact match.

We call the libraries directly instead of `evaluate.load`, which fetches metric scripts
from the Hub and so cannot work offline. Every metric is a plain function
`(predictions, references) -> {name: score}` in the `METRICS` registry; scores are on a
0-100 scale, like sacrebleu's. The libraries load on first use: rouge-score pulls in nltk (0.7 s),
and checking a config's metric names must not wait for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import ConfigError, did_you_mean

MetricFn = Callable[[list[str], list[str]], dict[str, float]]

METRICS: dict[str, MetricFn] = {}
METRIC_KEYS: dict[str, tuple[str, ...]] = {}  # the scores each metric reports (metric_for_best_model picks one)

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

# Sacrebleu metric classes, default settings (BLEU: 13a tokenizer, exp smoothing; chrF:
# char order 6, no word n-grams; TER: tercom). Defaults keep scores comparable with papers.
_SACREBLEU = {"bleu": "BLEU", "chrf": "CHRF", "ter": "TER"}

# A sentence ends at ., ! or ? followed by whitespace. Good enough for rougeLsum, and it
# avoids nltk's punkt model, which needs a download at runtime.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def register_metric(name: str, keys: tuple[str, ...] | None = None) -> Callable[[MetricFn], MetricFn]:
    """Add a metric function to `METRICS` under `name` (reporting `keys`, default `name`); a name registers once."""

    def decorator(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric '{name}' is already registered")
        METRICS[name] = fn
        METRIC_KEYS[name] = keys or (name,)
        return fn

    return decorator


def _sacrebleu_metric(name: str):
    import sacrebleu.metrics

    return getattr(sacrebleu.metrics, _SACREBLEU[name])()


def _sacrebleu_score(name: str, predictions: list[str], references: list[str]) -> float:
    # One reference per prediction: sacrebleu takes a list of reference *streams*.
    return _sacrebleu_metric(name).corpus_score(predictions, [references]).score


@register_metric("bleu")
def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    return {"bleu": _sacrebleu_score("bleu", predictions, references)}


@register_metric("chrf")
def chrf(predictions: list[str], references: list[str]) -> dict[str, float]:
    return {"chrf": _sacrebleu_score("chrf", predictions, references)}


@register_metric("ter")
def ter(predictions: list[str], references: list[str]) -> dict[str, float]:
    return {"ter": _sacrebleu_score("ter", predictions, references)}


def split_sentences(text: str) -> str:
    """One sentence a line: rougeLsum treats newlines as sentence boundaries."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


@register_metric("rouge", keys=tuple(ROUGE_TYPES))
def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        # Only rougeLsum looks at newlines, so the split text is scored for it alone.
        plain = scorer.score(reference, prediction)
        summary = scorer.score(split_sentences(reference), split_sentences(prediction))
        for rouge_type in ROUGE_TYPES:
            score = summary[rouge_type] if rouge_type == "rougeLsum" else plain[rouge_type]
            totals[rouge_type] += score.fmeasure
    return {k: 100 * v / len(predictions) for k, v in totals.items()}


@register_metric("exact_match")
def exact_match(predictions: list[str], references: list[str]) -> dict[str, float]:
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    return {"exact_match": 100 * hits / len(predictions)}


def check_metric_names(names: list[str]) -> None:
    """Raise a ConfigError naming the first unknown metric, with the closest known one."""
    for name in names:
        if name not in METRICS:
            known = ", ".join(sorted(METRICS))
            raise ConfigError(
                f"unknown metric '{name}'; known metrics: {known}",
                key="metrics",
                hint=did_you_mean(name, METRICS),
            )


def metric_signatures(names: list[str]) -> dict[str, str]:
    """Sacrebleu's reproducibility signatures for the sacrebleu metrics among `names`.

    metrics.json records them so a score can be compared with one computed elsewhere.
    """
    signatures = {}
    for name in names:
        if name in _SACREBLEU:
            metric = _sacrebleu_metric(name)
            # Sacrebleu learns the number of references only by scoring something; we always
            # pass exactly one reference, so a one-line corpus gives the right signature.
            metric.corpus_score(["x"], [["x"]])
            signatures[name] = metric.get_signature().format()
    return signatures


def postprocess_text(texts: list[str]) -> list[str]:
    """Strip surrounding whitespace left by decoding."""
    return [text.strip() for text in texts]


def compute_metrics(
    names: list[str], predictions: list[str], references: list[str]
) -> dict[str, float]:
    """Run each named metric and merge the results, rounded to 4 decimals.

    Generation length is not computed here: the caller knows it in tokens.
    """
    check_metric_names(names)
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        # Zeros would read as a real (terrible) score; an empty eval set is a bug upstream.
        raise ValueError("cannot compute metrics on an empty set of predictions")
    results: dict[str, float] = {}
    for name in dict.fromkeys(names):  # drop repeats, keep order
        results.update(METRICS[name](predictions, references))
    return {key: round(float(value), 4) for key, value in results.items()}
