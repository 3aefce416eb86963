"""GLUE's metrics (accuracy, F1, Matthews correlation, Pearson, Spearman) on numpy arrays.

Predictions and labels are 1-D arrays of class ids (or floats for regression); logits of shape
(n, K) are reduced by argmax, (n, 1) squeezed.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.stats import rankdata


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    """Fraction of predictions equal to the label."""
    return float(np.mean(p == y))


def f1(p: np.ndarray, y: np.ndarray) -> float:
    """Binary F1 of class 1: 2·TP / (2·TP + FP + FN); 0.0 when class 1 is neither predicted nor present."""
    tp, fp, fn = np.sum((p == 1) & (y == 1)), np.sum((p == 1) & (y != 1)), np.sum((p != 1) & (y == 1))
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews(p: np.ndarray, y: np.ndarray) -> float:
    """Matthews correlation (Gorodkin's K-class form; the usual binary formula for K = 2).

    With confusion matrix C, c = trace C, s = ΣC, t_k = true counts, p_k = predicted counts:
    (c·s − Σ t_k p_k) / √((s² − Σ p_k²)(s² − Σ t_k²)). 0.0 when the denominator is 0 (constant
    predictions or labels), as scikit-learn does.
    """
    _, ids = np.unique(np.concatenate([y, p]), return_inverse=True)
    k, n = ids.max() + 1, len(y)
    confusion = np.zeros((k, k))  # float: s² · s² overflows int64 for large sets
    np.add.at(confusion, (ids[:n], ids[n:]), 1.0)
    t, q, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - q @ q) * (s * s - t @ t))
    return float((c * s - t @ q) / denominator) if denominator else 0.0


def pearson(p: np.ndarray, y: np.ndarray) -> float:
    """Pearson r = Σ(p−p̄)(y−ȳ) / √(Σ(p−p̄)² Σ(y−ȳ)²); nan when either side is constant."""
    if np.all(p == p[0]) or np.all(y == y[0]):
        return float("nan")  # checked exactly: p - p̄ of a constant float array need not be exactly 0
    p, y = p - p.mean(), y - y.mean()
    return float(p @ y / math.sqrt((p @ p) * (y @ y)))


def spearman(p: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ: Pearson r of the ranks (ties get their average rank); nan when either side is constant."""
    return pearson(rankdata(p), rankdata(y))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}
# Every metric here is a score on a 0–1 scale, which the paper prints ×100 ("91.3"); BLEU and
# ROUGE-L (maths.text_metrics) are on its 0–100 scale already, a loss or perplexity on none.
FRACTIONS = frozenset(METRICS)


def compute_metrics(task_metrics: tuple[str, ...], predictions, labels) -> dict[str, float]:
    """``{metric: value}`` for the named metrics.

    ``predictions``: shape (n,) class ids or regression outputs, or logits (n, K) (argmax is taken)
    or (n, 1) (squeezed). ``labels``: shape (n,).
    """
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.ndim == 2:
        p = p[:, 0] if p.shape[1] == 1 else p.argmax(axis=1)
    if p.shape != y.shape or y.ndim != 1 or not len(y):
        raise ValueError(f"predictions {np.shape(predictions)} and labels {y.shape} must be n non-empty rows each")
    unknown = [m for m in task_metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return {m: METRICS[m](p, y) for m in task_metrics}
