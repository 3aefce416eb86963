"""Chat- and instruction-format samples built from data available offline (``lowrank-lab sample-data``),
for trying data.task = "chat" / "instruction" without a hub: written at run time, never shipped.

From the VADER movie-review ground truth (``store.datasets.read_vader``; the rows with |mean| > 0.5,
as the VADER task keeps them), one row per snippet:

- ``chat``: a ``messages`` column of four turns: the user asks for the review's sentiment, the
  assistant answers "positive" or "negative", the user asks for the mean rating, the assistant gives
  it with one decimal (``-2.3``), the number that ``data.metrics = ["exact_match"]`` scores;
- ``instruction``: ``instruction`` (the question), ``input`` (the snippet) and ``output`` (the label).

Columns: those above plus ``id`` (VADER's). Written as Parquet (``.parquet``) or JSONL (``.jsonl``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lowrank_lab.store.datasets import DataError, read_vader

KINDS = ("chat", "instruction")
QUESTION = "Is this movie review positive or negative? Answer with one word."
RATING = "What is its mean rating on the scale from -4 to 4?"


def _rows(kind: str) -> list[dict]:
    frame, _, _ = read_vader("movies", None)
    rows = []
    for vader_id, mean, text in zip(frame["id"], frame["mean"], frame["text"]):
        rating = float(mean)
        if abs(rating) <= 0.5:
            continue
        label = "positive" if rating > 0 else "negative"
        if kind == "chat":
            rows.append({"id": vader_id, "messages": [
                {"role": "user", "content": f"{QUESTION}\n\n{text.strip()}"}, {"role": "assistant", "content": label},
                {"role": "user", "content": RATING}, {"role": "assistant", "content": f"{rating:.1f}"}]})
        else:
            rows.append({"id": vader_id, "instruction": QUESTION, "input": text.strip(), "output": label})
    return rows


def write_sample(kind: str, out: Path) -> tuple[Path, int]:
    """Write the ``kind`` sample to ``out`` (.parquet or .jsonl); (its path, rows)."""
    out = Path(out)
    if kind not in KINDS:
        raise DataError(f"sample kind {kind!r}: use one of {', '.join(KINDS)}")
    if out.suffix not in (".parquet", ".jsonl"):
        raise DataError(f"{out}: write the sample as .parquet or .jsonl")
    rows = _rows(kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(out, index=False)
    else:
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out, len(rows)
