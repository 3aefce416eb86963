"""Completion examples as tensors for a decoder: training sequences with the prompt masked, and prompts for
greedy generation.

Training (``encode_completions``): each example is ``prompt_ids + completion_ids + [eos]``, right padded;
``labels`` repeat the ids on the completion and the eos and are -100 on the prompt and on padding, so
that a causal LM's loss (which shifts labels by one inside the model) is the next-token loss of the
completion only. The prompt is tokenised as the tokenizer does on its own (a BOS where it adds one), the
completion without special tokens. A sequence longer than ``max_length`` loses prompt tokens from the
left (after a leading BOS), so that the completion is kept whole; a completion that does not fit beside at
least one prompt token is an error naming ``model.max_length`` and the count (or, with ``drop_long``,
dropped and counted).

A chat rendered by its template (``CompletionExample.segments``, ``train.chat``) is its pieces tokenised
one by one without added special tokens, labels on the assistant's pieces; a longer one than
``max_length`` loses tokens from the left, and one whose last answer does not fit is handled as above.

Generation (``encode_prompts``): the prompt ids, truncated from the left to ``max_length`` the same way,
LEFT padded, so that every row's next token is generated at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lowrank_lab.store.datasets import DataError

IGNORE = -100  # the label torch's cross-entropy (and Hugging Face's causal LM loss) skip


@dataclass(frozen=True)
class CompletionBatch:
    """Training sequences: ``input_ids`` and ``labels`` (n × L, right padded), true ``lengths`` (n,),
    and what fitting them into ``max_length`` did: ``truncated`` prompts cut from the left, ``dropped``
    examples (their indices in ``dropped_index``) whose completion did not fit."""

    input_ids: Tensor
    labels: Tensor
    lengths: Tensor
    truncated: int = 0
    dropped: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.lengths)

    def to(self, device: torch.device) -> CompletionBatch:
        return CompletionBatch(self.input_ids.to(device), self.labels.to(device), self.lengths, self.truncated,
                               self.dropped)

    def batch(self, index: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(model inputs, labels) of rows ``index`` (a CPU tensor), trimmed to their longest sequence."""
        width = int(self.lengths[index].max())
        rows = index.to(self.input_ids.device)
        lengths = self.lengths[index].to(self.input_ids.device)
        mask = (torch.arange(width, device=rows.device)[None, :] < lengths[:, None]).long()
        return {"input_ids": self.input_ids[rows, :width], "attention_mask": mask}, self.labels[rows, :width]


@dataclass(frozen=True)
class PromptBatch:
    """Prompts for generation: ``input_ids`` (n × L, LEFT padded), true ``lengths`` (n,), and how many
    prompts were ``truncated`` from the left."""

    input_ids: Tensor
    lengths: Tensor
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        """Model inputs of rows ``index`` (input_ids, attention_mask), trimmed on the left to their longest."""
        width = int(self.lengths[index].max())
        ids = self.input_ids[index, self.input_ids.shape[1] - width:]
        mask = (torch.arange(width)[None, :] >= width - self.lengths[index][:, None]).long()
        return {"input_ids": ids, "attention_mask": mask}


def pad_id(tokenizer) -> int:
    """The id that fills padding (the pad token, else eos: padding is masked, its value is never read)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0


def _eos(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: no eos token, so a completion "
                        "cannot be ended; use a decoder tokenizer that has one")
    return tokenizer.eos_token_id


def _cut_left(ids: list[int], room: int, bos: int | None) -> list[int]:
    """``ids`` shortened to ``room`` tokens by dropping from the left, keeping a leading BOS."""
    if len(ids) <= room:
        return ids
    keep = 1 if bos is not None and ids and ids[0] == bos and room > 1 else 0
    return ids[:keep] + ids[len(ids) - (room - keep):]


def _segment_ids(tokenizer, pieces) -> tuple[list[int], list[int]]:
    """(ids, labels) of a rendered chat's (text, trained) pieces, each tokenised alone, no special tokens added."""
    ids, labels = [], []
    for text, trained in pieces:
        part = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += part
        labels += part if trained else [IGNORE] * len(part)
    return ids, labels


def _sequences(tokenizer, examples, max_length: int) -> tuple[list, list, list[int], int]:
    """(sequences, labels, dropped indices, truncated count): prompt + completion + eos, or a rendered chat
    (``segments``: the loss on its assistant pieces, cut from the left when too long, its last answer kept)."""
    sequences, labels, dropped, truncated = [], [], [], 0
    if examples and examples[0].segments:
        for n, e in enumerate(examples):
            ids, target = _segment_ids(tokenizer, e.segments)
            last = len(tokenizer(e.completion, add_special_tokens=False)["input_ids"])
            if max_length - last < 1:
                dropped.append(n)
                continue
            truncated += len(ids) > max_length
            sequences.append(ids[-max_length:])
            labels.append(target[-max_length:])
        return sequences, labels, dropped, truncated
    eos, bos = _eos(tokenizer), tokenizer.bos_token_id
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    for n, (prompt, completion) in enumerate(zip(prompts, completions)):
        target = [*completion, eos]
        room = max_length - len(target)
        if room < 1:  # the first completion token needs a prompt token to be predicted from
            dropped.append(n)
            continue
        kept = _cut_left(prompt, room, bos)
        truncated += len(kept) < len(prompt)
        sequences.append(kept + target)
        labels.append([IGNORE] * len(kept) + target)
    return sequences, labels, dropped, truncated


def encode_completions(tokenizer, examples, max_length: int, drop_long: bool = False) -> CompletionBatch:
    """``CompletionExample``s as training sequences (module docstring); ``max_length`` counts every token."""
    sequences, labels, dropped, truncated = _sequences(tokenizer, examples, max_length)
    if dropped and not drop_long:
        raise DataError(f"model.max_length={max_length}: {len(dropped)} of {len(examples)} completions (with eos) "
                        f"leave no room for the prompt (first: example {dropped[0] + 1}); raise model.max_length")
    if not sequences:
        raise DataError(f"model.max_length={max_length}: every completion was dropped as too long")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id(tokenizer), dtype=torch.long)
    targets = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    for n, (s, y) in enumerate(zip(sequences, labels)):
        ids[n, : len(s)], targets[n, : len(y)] = torch.tensor(s), torch.tensor(y)
    return CompletionBatch(ids, targets, torch.tensor([len(s) for s in sequences]), truncated, tuple(dropped))


def encode_prompts(tokenizer, prompts: list[str], max_length: int, special_tokens: bool = True) -> PromptBatch:
    """Prompts (strings) for greedy generation: left padded, cut from the left to ``max_length`` tokens;
    ``special_tokens`` False for prompts a chat template wrote (they hold their own)."""
    bos = tokenizer.bos_token_id
    encoded = tokenizer(list(prompts), add_special_tokens=special_tokens)["input_ids"]
    kept = [_cut_left(ids, max_length, bos) for ids in encoded]
    width = max(len(ids) for ids in kept)
    out = torch.full((len(kept), width), pad_id(tokenizer), dtype=torch.long)
    for n, ids in enumerate(kept):
        out[n, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
    truncated = sum(len(a) < len(b) for a, b in zip(kept, encoded))
    return PromptBatch(out, torch.tensor([len(ids) for ids in kept]), truncated)
