"""The value objects of a task (examples, the task itself) and the deterministic rank that splits and caps them.

Encoders read ``Example`` (a sentence or pair and a class id or float); decoders read
``CompletionExample`` (a prompt and the text that should follow it). ``Task.kind`` says which:

- ``classification`` / ``regression``: ``Example``s, a head of ``num_labels`` outputs (1: regression).
- ``completion``: ``CompletionExample``s scored by the next-token loss on the completion tokens (and its
  perplexity); with ``label_words`` (the class words in class-id order, e.g. ``(" negative", " positive")``)
  also by the task's classification metrics on the class of the greedy completion
  (``label_word_class``).
- ``generation``: ``CompletionExample``s whose dev examples carry every reference of their prompt,
  scored by text metrics of greedy decoding (``maths.nlg_metrics``: E2E's five, paper §5.4; exact match).
- A chat or instruction task holds ``ChatExample``s until ``train.chat.render_task`` renders them with the
  tokenizer's template into ``CompletionExample``s with ``segments``; it is a completion task, or a
  generation task when ``data.metrics`` asks for scores of the last assistant turn.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lowrank_lab.maths.nlg_metrics import E2E_METRICS
from lowrank_lab.store.datasets import DataError

KINDS = ("classification", "regression", "completion", "generation")
# Metrics of decoder tasks where a smaller value is better (every other metric: larger is better).
LOWER_IS_BETTER = frozenset({"completion_loss", "perplexity"})
COMPLETION_METRICS = ("completion_loss", "perplexity")
GENERATION_METRICS = (*E2E_METRICS, *COMPLETION_METRICS)


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    # Class id (0 … num_labels-1), or a float target when num_labels == 1 (regression).
    label: int | float


@dataclass(frozen=True)
class CompletionExample:
    prompt: str
    completion: str  # the training target, its leading space included (" positive")
    references: tuple[str, ...] = ()  # generation tasks: every reference of this prompt, for BLEU / ROUGE-L
    # A chat rendered by its template (train.chat): the whole text as (piece, trained) in order, special
    # tokens written out; tokenised piece by piece without added special tokens, the loss on the trained
    # pieces (every assistant turn). ``prompt`` + ``completion`` are then the text up to and of the last one.
    segments: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class ChatExample:
    """A conversation as read (data.task "chat" or "instruction"), before a tokenizer's template renders
    it: (role, content) turns, the last one the assistant's; ``where`` names its file and row."""

    messages: tuple[tuple[str, str], ...]
    where: str = ""


@dataclass(frozen=True)
class Task:
    name: str  # canonical, e.g. "vader", "glue:SST-2", "file", "e2e"
    train: tuple[Example, ...] | tuple[CompletionExample, ...]
    dev: tuple[Example, ...] | tuple[CompletionExample, ...]
    num_labels: int  # 1 means regression; completion tasks: len(label_words) (0 without label words)
    metrics: tuple[str, ...]  # reported on dev (maths.metrics.METRICS keys, or the decoder metrics above)
    main_metric: str  # the best evaluation is chosen by this one (always metrics[0])
    source: dict  # provenance, JSON-ready: files and sha256, hub id, split rule, counts, caps, labels
    kind: str | None = None  # one of KINDS; None: "regression" when num_labels == 1, else "classification"
    label_words: tuple[str, ...] = ()  # completion tasks of a classification source, in class-id order
    # data.validation_size training examples held out to choose the best evaluation on (never trained on)
    validation: tuple[Example, ...] | tuple[CompletionExample, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is None:
            object.__setattr__(self, "kind", "regression" if self.num_labels == 1 else "classification")
        if self.kind not in KINDS:
            raise ValueError(f"Task.kind={self.kind!r}: use one of {', '.join(KINDS)}")

    @property
    def causal(self) -> bool:
        """Whether the task is for a decoder (its examples are ``CompletionExample``s)."""
        return self.kind in ("completion", "generation")


def label_word_class(label_words: tuple[str, ...], text: str) -> int:
    """The class whose label word equals ``text`` (both stripped), else -1 (no class: always wrong)."""
    words = [w.strip() for w in label_words]
    text = text.strip()
    return words.index(text) if text in words else -1


def lowest_ranked(keys: list[str], n: int | None) -> list[int]:
    """Indices of the ``n`` keys with the smallest sha256 (all when ``n`` is None), in input order."""
    if n is None or n >= len(keys):
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
    return sorted(ranked[:n])


def hold_out(examples: tuple, keys: list[str], size: int | None, where: str) -> tuple[tuple, tuple]:
    """(train, validation): `size` of the examples, chosen by sha256("validation:" + key), held
    out, both in source order; validation empty when `size` is None."""
    if not size:
        return tuple(examples), ()
    if size >= len(examples):
        raise DataError(f"{where}: data.validation_size={size} leaves no training examples "
                        f"(the training split has {len(examples)})")
    held = set(lowest_ranked([f"validation:{k}" for k in keys], size))
    return (tuple(e for i, e in enumerate(examples) if i not in held),
            tuple(e for i, e in enumerate(examples) if i in held))


DEV_FRACTION = 0.2
SPLIT_RULE = f"dev = the {DEV_FRACTION:.0%} of rows with the smallest sha256(key), train = the rest"


def dev_indices(keys: list[str]) -> set[int]:
    """The rows a source without a dev set gives to dev: its lowest-ranked ``DEV_FRACTION`` (at least one)."""
    return set(lowest_ranked(keys, max(1, round(DEV_FRACTION * len(keys)))))


def _cell(value: Any) -> str | None:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return None if missing else str(value)


def table_cells(frame: pd.DataFrame, where: str, wanted: list[str]) -> list[dict[str, str | None]]:
    """The ``wanted`` columns of every row as ``{column: text or None}``; no rows or a missing column is a
    DataError naming ``where``."""
    if frame.empty:
        raise DataError(f"{where}: no rows")
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: no column {', '.join(map(repr, missing))}; columns present: {list(frame.columns)}")
    return [dict(zip(wanted, map(_cell, values))) for values in zip(*(frame[c] for c in wanted))]
