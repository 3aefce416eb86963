"""Generation metrics from well-kept packages: BLEU (sacrebleu) and ROUGE-L (rouge-score), as the
paper scores E2E NLG (Hu et al. 2021, §5.5, Table 3). Both on the paper's 0–100 scale.

``references[i]`` holds every reference of hypothesis i (E2E has several per meaning representation,
and their number varies). The packages are imported when a score is asked for, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence

POINTS = frozenset({"bleu", "rouge_l"})  # the metrics here, on the paper's 0–100 scale


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} hypotheses and {len(references)} reference sets: give one non-empty "
                         "set per hypothesis")
    if any(not refs for refs in references):
        raise ValueError("every hypothesis needs at least one reference")


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu.corpus_bleu, its default 13a tokenisation) against all references of
    each hypothesis; sacrebleu's reference streams are padded with None where a hypothesis has fewer."""
    import sacrebleu

    _check(hypotheses, references)
    most = max(len(refs) for refs in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(most)]
    # force: E2E's references come tokenised ("family - friendly ."), and so do the completions a
    # model learns from them; without it sacrebleu logs a warning for every score (its number is the same)
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams, force=True).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """ROUGE-L F-measure (rouge_score, LCS based), the best over each hypothesis's references,
    averaged over hypotheses, ×100."""
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [scorer.score_multi(list(refs), hyp)["rougeL"].fmeasure for hyp, refs in zip(hypotheses, references)]
    return 100.0 * sum(best) / len(best)
