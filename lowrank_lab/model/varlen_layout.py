"""The layout of an unpadded ("varlen") packed batch: the real tokens of K cells in one stream.

A padded pack batch is (K·b) × w token ids, w the longest sentence of the whole pack; on SST-2
~70% of those positions are padding. The unpadded layout concatenates each sequence's real tokens
instead, cell after cell, so that every linear map (W0 and the LoRA factors) runs on real tokens::

    stream (K·T tokens):  [ cell 0: s0 s1 … s_{b-1} pad | cell 1: s0 s1 … pad | … ]
                            └────────── T ──────────┘

Cell n's tokens fill [n·T, n·T + Σ_i len_i) of its range; T is the largest per-cell total, rounded
up to `multiple`, so ``LoRALinear``'s reshape to (K, T, k) still puts cell n in slice n (its B·A
product is one bmm over [K, T, ·]). The padding tail of each range is cut into pieces no longer
than the longest sentence and treated as sequences of their own: every token then belongs to one
segment, attention never crosses a segment boundary (``cu_seqlens``, flash attention's
convention), and the tail's outputs are finite and never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Varlen:
    """Where every token of an unpadded K-cell stream of K·T tokens belongs.

    cu_seqlens   (S+1,) int32: segment boundaries (the B real sequences in cell order, then the
                 padding pieces of each cell's tail, in stream order: segments tile the stream)
    max_len      the longest segment (a host int, as the varlen kernel takes it)
    positions    (K·T,) each token's position within its segment (0 at a segment's first token)
    seq          (K·T,) the real sequence a token belongs to (0 … B−1), B for padding
    first        (B,) stream index of each real sequence's first token ([CLS], BOS)
    lengths      (B,) float32: the real sequences' lengths (mean pooling's divisor)
    gather       (S, max_len) stream index of each segment's slot j (clamped to its first token
                 where j ≥ its length): the reference attention's padded view
    valid        (S, max_len) bool: j < the segment's length
    pick         (M,) with per-token labels: the stream tokens whose next token, in the same
                 sequence, is a label (a decoder's completion), found on the host, so that the loss
                 needs no device-to-host synchronisation; targets (M,) those labels; counts (K,) M per cell"""

    K: int
    T: int
    n_seqs: int
    max_len: int
    cu_seqlens: Tensor
    positions: Tensor
    seq: Tensor
    first: Tensor
    lengths: Tensor
    gather: Tensor
    valid: Tensor
    pick: Tensor | None = None
    targets: Tensor | None = None
    counts: Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return self.K * self.T


def segment_lengths(lengths: Tensor, K: int, multiple: int = 1) -> tuple[list[int], int, list[int]]:
    """(segment lengths in stream order, T, segments per cell) of the stream of `lengths` (B = K·b,
    cell-major).

    Cell n's range holds its b sequences, then its tail T − Σ_i len_{n,i} cut into pieces of at most
    max(len); T = ⌈max_n Σ_i len_{n,i} / multiple⌉·multiple."""
    if not len(lengths) or len(lengths) % K:
        raise ValueError(f"segment_lengths: {len(lengths)} sequences do not split into {K} cells")
    per_cell = lengths.view(K, -1).tolist()
    T = -(-max(map(sum, per_cell)) // multiple) * multiple
    longest = int(lengths.max())
    segments, counts = [], []
    for real in per_cell:
        tail = T - sum(real)
        pieces = [longest] * (tail // longest) + ([tail % longest] if tail % longest else [])
        segments += real + pieces
        counts.append(len(real) + len(pieces))
    return segments, T, counts


def varlen_layout(lengths: Tensor, rows: Tensor, width: int, K: int, multiple: int, device: torch.device,
                  labels: Tensor | None = None, ignore: int = -100) -> tuple[Varlen, Tensor]:
    """(layout, source) of an unpadded batch of rows `rows` (CPU, cell-major, B = K·b) of a padded
    split of row width `width`, whose true lengths are `lengths` (CPU); with the split's per-token
    `labels` (CPU, n × width, `ignore` off the completion), also the next-token targets.

    ``source`` (K·T,) is each token's flat index into the split's (n × width) tensors (a padding
    token points at index 0; its value is never read). Built on the host, sent in one copy."""
    segments, T, counts = segment_lengths(lengths, K, multiple)
    B, b = len(lengths), len(lengths) // K
    seglen = torch.tensor(segments, dtype=torch.long)
    cu = torch.zeros(len(segments) + 1, dtype=torch.long)
    cu[1:] = seglen.cumsum(0)
    starts = cu[:-1]
    positions = torch.arange(K * T) - starts.repeat_interleave(seglen)
    is_real = torch.zeros(len(segments), dtype=torch.bool)
    offsets = [0] + torch.tensor(counts).cumsum(0).tolist()[:-1]
    for off in offsets:  # each cell's range starts with its b real sequences
        is_real[off:off + b] = True
    real_index = torch.full((len(segments),), B, dtype=torch.long)
    real_index[is_real] = torch.arange(B)
    seq = real_index.repeat_interleave(seglen)
    real_tok = seq < B
    source = torch.zeros(K * T, dtype=torch.long)
    source[real_tok] = rows[seq[real_tok]] * width + positions[real_tok]
    max_len = int(seglen.max())
    slot = torch.arange(max_len)
    valid = slot[None, :] < seglen[:, None]
    gather = torch.where(valid, starts[:, None] + slot[None, :], starts[:, None])
    host = [cu, positions, seq, starts[is_real], lengths.long(), gather.reshape(-1), valid.reshape(-1).long(), source]
    if labels is not None:
        host += _next_token_targets(labels.reshape(-1)[source].masked_fill(~real_tok, ignore), positions, K, T, ignore)
    flat = torch.cat(host)
    if device.type == "cuda":
        flat = flat.pin_memory()
    parts = flat.to(device, non_blocking=True).split([len(t) for t in host])
    cu_d, pos_d, seq_d, first_d, len_d, gather_d, valid_d, source_d = parts[:8]
    layout = Varlen(K, T, B, max_len, cu_d.int(), pos_d, seq_d, first_d, len_d.float(),
                    gather_d.view(-1, max_len), valid_d.view(-1, max_len).bool(), *parts[8:])
    return layout, source_d


def _next_token_targets(tokens: Tensor, positions: Tensor, K: int, T: int, ignore: int) -> list[Tensor]:
    """[pick, targets, counts]: token i of the stream predicts label i + 1 when i + 1 continues its
    sequence (position > 0) and that label is not `ignore`, as the shift within each padded row does."""
    following = torch.full_like(tokens, ignore)
    following[:-1] = tokens[1:].masked_fill(positions[1:] == 0, ignore)
    pick = (following != ignore).nonzero().squeeze(1)
    return [pick, following[pick], torch.bincount(pick // T, minlength=K)]
