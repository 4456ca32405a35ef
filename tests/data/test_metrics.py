"""Metrics must match sacrebleu and rouge-score called directly, and fail clearly."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from hf_encdec.data import metrics
from hf_encdec.errors import ConfigError
from hf_encdec.data.metrics import (
    METRICS,
    check_metric_names,
    compute_metrics,
    metric_signatures,
    postprocess_text,
    register_metric,
)

PREDICTIONS = [
    "The cat sat on the mat.",
    "A man is riding a bicycle down the street. He wears a red helmet.",
    "Two dogs play in the snow",
]
REFERENCES = [
    "The cat is sitting on the mat.",
    "A man rides a bike down the road. His helmet is red.",
    "Two dogs are playing in the snow.",
]


def test_sacrebleu_metrics_match_the_library():
    scores = compute_metrics(["bleu", "chrf", "ter"], PREDICTIONS, REFERENCES)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score, 4)
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score, 4)
    assert scores["ter"] == round(sacrebleu.corpus_ter(PREDICTIONS, [REFERENCES]).score, 4)


def test_rouge_matches_the_library():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    # The second pair has two sentences: rougeLsum sees them one a line.
    split = {
        PREDICTIONS[1]: "A man is riding a bicycle down the street.\nHe wears a red helmet.",
        REFERENCES[1]: "A man rides a bike down the road.\nHis helmet is red.",
    }
    expected = dict.fromkeys(["rouge1", "rouge2", "rougeL", "rougeLsum"], 0.0)
    for pred, ref in zip(PREDICTIONS, REFERENCES):
        for key, score in scorer.score(ref, pred).items():
            expected[key] += score.fmeasure
        expected["rougeLsum"] += lsum.score(split.get(ref, ref), split.get(pred, pred))[
            "rougeLsum"
        ].fmeasure
    expected = {k: round(100 * v / len(PREDICTIONS), 4) for k, v in expected.items()}

    assert compute_metrics(["rouge"], PREDICTIONS, REFERENCES) == expected


def test_sentence_split_changes_only_rouge_lsum():
    scores = compute_metrics(["rouge"], PREDICTIONS[1:2], REFERENCES[1:2])
    plain = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    unsplit = plain.score(REFERENCES[1], PREDICTIONS[1])["rougeLsum"].fmeasure
    assert scores["rougeLsum"] != round(100 * unsplit, 4)


def test_perfect_predictions_score_100():
    names = ["bleu", "rouge", "exact_match", "chrf", "ter"]
    scores = compute_metrics(names, REFERENCES, REFERENCES)
    for key in ["bleu", "rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match", "chrf"]:
        assert scores[key] == 100.0, key
    assert scores["ter"] == 0.0


def test_exact_match_ignores_surrounding_whitespace():
    predictions = ["  2021-03-14\n", "2021-03-15", "2021 -03-16"]
    references = ["2021-03-14", " 2021-03-15 ", "2021-03-16"]
    assert compute_metrics(["exact_match"], predictions, references) == {"exact_match": 66.6667}


def test_results_merge_and_round():
    scores = compute_metrics(["bleu", "exact_match", "bleu"], PREDICTIONS, REFERENCES)
    assert set(scores) == {"bleu", "exact_match"}
    assert all(round(v, 4) == v for v in scores.values())


def test_unknown_metric_names_the_key_and_suggests():
    with pytest.raises(ConfigError) as info:
        compute_metrics(["blue"], PREDICTIONS, REFERENCES)
    error = info.value
    assert error.key == "metrics"
    assert "did you mean 'bleu'?" in str(error)
    assert "exact_match" in str(error)  # lists the known names
    with pytest.raises(ConfigError):
        check_metric_names(["bleu", "rogue"])
    check_metric_names(list(METRICS))


def test_empty_or_mismatched_inputs_are_internal_errors():
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(["bleu"], [], [])
    with pytest.raises(ValueError, match="references"):
        compute_metrics(["bleu"], ["a"], ["a", "b"])


def test_registry_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(METRICS))
    with pytest.raises(ValueError, match="already registered"):
        register_metric("bleu")(lambda p, r: {})

    @register_metric("always_one")
    def always_one(predictions, references):
        return {"always_one": 1.0}

    assert compute_metrics(["always_one"], ["a"], ["b"]) == {"always_one": 1.0}


def test_signatures_for_sacrebleu_metrics_only():
    signatures = metric_signatures(["bleu", "chrf", "ter", "rouge", "exact_match"])
    assert set(signatures) == {"bleu", "chrf", "ter"}
    for signature in signatures.values():
        assert f"version:{sacrebleu.__version__}" in signature
        assert "nrefs:1" in signature
    assert "tok:13a" in signatures["bleu"]


def test_postprocess_strips():
    assert postprocess_text([" a b \n", "c"]) == ["a b", "c"]
