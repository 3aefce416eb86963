"""Scores of generated text against references: the E2E NLG challenge's five metrics (paper §5.4,
Table 3: BLEU, NIST, METEOR, ROUGE-L, CIDEr) from maintained pure-Python packages, and exact match of
a math answer's final number.

``references[i]`` holds every reference of hypothesis i. Scales as the paper prints them: BLEU,
METEOR, ROUGE-L and exact match on 0–100 (``POINTS``), NIST and CIDEr as they are. The official
e2e-metrics script (tuetschek/e2e-metrics) needs Perl and Java; ``IMPLEMENTATIONS`` says what each
metric is here and where it differs from that script, and every table of these metrics quotes it.

Tokens (NIST, METEOR, CIDEr): sacrebleu's 13a tokenizer (mteval-v13a's, the one BLEU uses), and
lowercased for METEOR and CIDEr as their official tokenisers do.

Exact match (``final_number``): the last number in the text (``-1,234.50`` → ``-1234.5``: thousands
commas dropped, trailing zeros of the fraction dropped, ``-0`` is ``0``); a hypothesis is right when
its last number equals that of one of its references, and wrong when it has none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from lowrank_lab.maths.text_metrics import POINTS as _BLEU_ROUGE, _check, bleu, rouge_l
from lowrank_lab.spec import TEXT_METRICS

POINTS = _BLEU_ROUGE | {"meteor", "exact_match"}  # on the paper's 0–100 scale
# E2E (paper §5.4, Table 3): the five metrics of the E2E NLG challenge, and their names in tables.
E2E_METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")
NAMES = {"bleu": "BLEU", "nist": "NIST", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr",
         "exact_match": "exact match (%)"}
NIST_N, CIDER_N, CIDER_SIGMA = 5, 4, 6.0
IMPLEMENTATIONS = {
    "bleu": "BLEU: sacrebleu corpus BLEU (13a tokens, all references); the official script runs mteval-v13a.pl, "
            "the same definition",
    "nist": f"NIST: nltk.translate.nist_score.corpus_nist (n = {NIST_N}; orders longer than every hypothesis add 0) "
            "on 13a tokens, nltk's port of Doddington's formula; the official script runs mteval-v13a.pl, whose "
            "numbers these were not checked against",
    "meteor": "METEOR: nltk.translate.meteor_score (exact, Porter-stem and WordNet 3.0 synonym matches; nltk "
              "looks synonyms up after stemming the words left unmatched), the mean of sentence scores (each the "
              "best over its references); the official script runs Meteor 1.5 (Java) with paraphrase matching "
              "and tuned weights, aggregated over the corpus, so the numbers are not comparable digit for digit",
    "rouge_l": "ROUGE-L: rouge-score's LCS F1, the best over references, averaged; the official script uses the "
               "COCO caption code (F with β = 1.2 from the best precision and best recall)",
    "cider": f"CIDEr: CIDEr-D from pycocoevalcap's CiderScorer (n = {CIDER_N}, σ = {CIDER_SIGMA}, document "
             "frequencies over the evaluated references) on lowercased 13a tokens; the official script uses the "
             "same scorer after the Java PTB tokenizer, which also strips punctuation",
    "exact_match": "exact match: the last number of the answer against the reference's (thousands commas and "
                   "trailing zeros dropped), in %",
}
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_number(text: str) -> str | None:
    """The last number in `text`, normalised (module docstring), or None when there is none."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        value = Decimal(found[-1].replace(",", ""))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"
    out = format(value.normalize(), "f")
    return out


def exact_match(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """% of hypotheses whose final number equals that of one of their references."""
    _check(hypotheses, references)
    hits = 0
    for hyp, refs in zip(hypotheses, references):
        number = final_number(hyp)
        hits += number is not None and number in {final_number(r) for r in refs}
    return 100.0 * hits / len(hypotheses)


def _tokens(text: str, lower: bool = False) -> list[str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    out = Tokenizer13a()(text.strip()).split()
    return [t.lower() for t in out] if lower else out


def nist(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus NIST (Doddington 2002) up to 5-grams, nltk's implementation, on 13a tokens (orders longer
    than every hypothesis add 0); 0 when every hypothesis is empty."""
    from nltk.translate.nist_score import corpus_nist

    _check(hypotheses, references)
    tokens = [_tokens(h) for h in hypotheses]
    # nltk divides by the count of hypothesis n-grams of each order, so orders longer than every
    # hypothesis are left out: they add 0, as in mteval (which divides by max(count, 1))
    n = min(NIST_N, max(len(t) for t in tokens))
    if n == 0:  # every hypothesis empty: nothing matched (BLEU is 0 too)
        return 0.0
    return float(corpus_nist([[_tokens(r) for r in refs] for refs in references], tokens, n=n))


def meteor(hypotheses: Sequence[str], references: Sequence[Sequence[str]], wordnet) -> float:
    """Mean sentence METEOR (nltk; the best over each hypothesis's references) ×100. `wordnet` is an
    nltk WordNet reader (``store.wordnet.wordnet_reader``), for synonym matches."""
    from nltk.translate.meteor_score import meteor_score

    _check(hypotheses, references)
    scores = [meteor_score([_tokens(r, True) for r in refs], _tokens(h, True), wordnet=wordnet)
              for h, refs in zip(hypotheses, references)]
    return 100.0 * sum(scores) / len(scores)


def cider(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D (Vedantam et al. 2015) of the corpus, pycocoevalcap's scorer, on lowercased 13a tokens."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    _check(hypotheses, references)
    scorer = CiderScorer(n=CIDER_N, sigma=CIDER_SIGMA)
    for h, refs in zip(hypotheses, references):
        scorer += (" ".join(_tokens(h, True)), [" ".join(_tokens(r, True)) for r in refs])
    score, _ = scorer.compute_score()
    return float(score)


def score(metrics: Sequence[str], hypotheses: Sequence[str], references: Sequence[Sequence[str]],
          wordnet=None) -> dict[str, float]:
    """{metric: value} for the text metrics among `metrics` (others, such as the loss, are skipped)."""
    functions = {"bleu": bleu, "nist": nist, "rouge_l": rouge_l, "cider": cider, "exact_match": exact_match,
                 "meteor": lambda h, r: meteor(h, r, wordnet)}
    return {m: functions[m](hypotheses, references) for m in metrics if m in TEXT_METRICS}


def caption(metrics: Sequence[str]) -> str:
    """Which implementation computed each of `metrics`, for a table's caption."""
    return "; ".join(IMPLEMENTATIONS[m] for m in metrics if m in IMPLEMENTATIONS) + "."
