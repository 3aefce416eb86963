"""A task's examples as tensors: tokenised once, batches gathered on the device; each epoch's
data order; the training device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lowrank_lab.spec import SpecError
from lowrank_lab.model.varlen_layout import Varlen, varlen_layout
from lowrank_lab.train.tokenize import IGNORE


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else the CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError(f"train.device={name!r}: not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"train.device={name!r}: no CUDA GPU is available here; use auto or cpu")
    return device


@dataclass(frozen=True)
class Encoded:
    """A tokenised split, padded once: token ids (n × max_length), segment ids for sentence pairs
    (BERT's token_type_ids; None when the tokenizer gives none), true lengths, labels: one per
    example (n,), or one per token (n × max_length, -100 off the completion) for a decoder.

    ``lengths`` stay on the CPU, where batch widths and length groups are decided; ``to(device)``
    moves the rest once, so that a training step gathers its batch on the device (per-token labels
    also stay on the CPU, where an unpadded batch picks its next-token targets)."""

    input_ids: Tensor
    token_type_ids: Tensor | None
    lengths: Tensor
    labels: Tensor
    device_lengths: Tensor | None = None  # a copy of lengths beside input_ids, for the attention mask
    host_labels: Tensor | None = None  # per-token labels left on the CPU (unpadded batches' targets)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Encoded:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Encoded(move(self.input_ids), move(self.token_type_ids), self.lengths, move(self.labels),
                       self.lengths.to(device), self._labels_on_host)

    @property
    def _labels_on_host(self) -> Tensor | None:
        """The per-token labels on the CPU (None for one label per example)."""
        if self.host_labels is not None or self.labels.dim() != 2:
            return self.host_labels
        return self.labels if self.labels.device.type == "cpu" else None

    def batch(self, index: Tensor, multiple: int = 1) -> tuple[dict[str, Tensor], Tensor]:
        """(model inputs, labels) of rows `index` (a CPU tensor), trimmed to their longest sequence,
        rounded up to a multiple of `multiple` (so that a compiled model sees few distinct widths)."""
        width = min(-(-int(self.lengths[index].max()) // multiple) * multiple, self.input_ids.shape[1])
        where = self.input_ids.device
        rows = index.to(where, non_blocking=True)
        lengths = (self.lengths if self.device_lengths is None else self.device_lengths)[rows]
        inputs = {"input_ids": self.input_ids[rows, :width],
                  "attention_mask": (torch.arange(width, device=where)[None, :] < lengths[:, None]).long()}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids[rows, :width]
        labels = self.labels[rows]
        return inputs, labels[:, :width] if labels.dim() == 2 else labels

    def varlen_batch(self, index: Tensor, K: int, multiple: int = 8) -> tuple[dict[str, Tensor], Tensor, Varlen]:
        """(model inputs, labels, layout) of rows `index` (CPU, cell-major: K cells of equal count)
        unpadded: the real tokens of every row in one stream of K·T (``model.varlen_layout``).

        inputs: input_ids (K·T,) and token_type_ids (K·T,) or None. labels: one per row (B,), or
        one per stream token (K·T,) for per-token labels, IGNORE on the padding tail; the layout then
        holds the next-token targets (``Varlen.pick``), found on the host."""
        width = self.input_ids.shape[1]
        layout, source = varlen_layout(self.lengths[index], index, width, K, multiple, self.input_ids.device,
                                       self._labels_on_host, IGNORE)
        inputs = {"input_ids": self.input_ids.reshape(-1)[source],
                  "token_type_ids": None if self.token_type_ids is None else self.token_type_ids.reshape(-1)[source]}
        if self.labels.dim() == 2:
            labels = self.labels.reshape(-1)[source].masked_fill(layout.seq == layout.n_seqs, IGNORE)
        else:
            labels = self.labels[index.to(self.labels.device, non_blocking=True)]
        return inputs, labels, layout


def _pad(rows: list[list[int]], value: int) -> Tensor:
    out = torch.full((len(rows), max(len(x) for x in rows)), value, dtype=torch.long)
    for n, x in enumerate(rows):
        out[n, : len(x)] = torch.tensor(x)
    return out


def encode(tokenizer, examples, max_length: int, regression: bool) -> Encoded:
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    kwargs = {"truncation": True, "max_length": max_length}
    out = tokenizer(texts, pairs, **kwargs) if any(p is not None for p in pairs) else tokenizer(texts, **kwargs)
    ids = out["input_ids"]
    types = _pad(out["token_type_ids"], 0) if "token_type_ids" in out else None
    dtype = torch.float32 if regression else torch.long
    return Encoded(_pad(ids, tokenizer.pad_token_id), types, torch.tensor([len(x) for x in ids]),
                   torch.tensor([e.label for e in examples], dtype=dtype))


def epoch_order(n_examples: int, data_seed: int, epoch: int, lengths: Tensor | None = None,
                batch_size: int = 1, group: int = 0) -> Tensor:
    """The data order of one epoch: a permutation seeded by (data seed, epoch) alone.

    With ``group`` > 0 (train.group_by_length) and the examples' `lengths`, each run of
    group·batch_size examples of that permutation is sorted by length and cut into batches, and
    the batches of every run are put in an order seeded by the epoch alone. Each cell still gets
    its own examples, but at any step every cell of a pack draws from the same length quantile,
    so the pack's padded width stays close to each cell's own (group_by_length, aligned across
    the pack). Examples past the last full batch stay at the end, where the loop drops them."""
    gen = torch.Generator().manual_seed(data_seed * 100_003 + epoch)
    order = torch.randperm(n_examples, generator=gen)
    if not group:
        return order
    if lengths is None:
        raise ValueError("epoch_order: group_by_length needs the examples' lengths")
    b = batch_size
    shared = torch.Generator().manual_seed(epoch)
    full = n_examples // b * b
    runs = []
    for start in range(0, full, group * b):
        run = order[start : min(start + group * b, full)]
        run = run[torch.sort(lengths[run], stable=True).indices].reshape(-1, b)
        runs.append(run[torch.randperm(len(run), generator=shared)].reshape(-1))
    return torch.cat(runs + [order[full:]])
