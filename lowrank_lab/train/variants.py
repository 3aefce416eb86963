"""Weight variants of one trained cell, evaluated packed: K models W0 + ΔW_n in one forward pass.

``lowrank-lab truncate`` (ΔW truncated to rank k) and ``lowrank-lab mitigate`` (intruder directions
scaled by λ) evaluate many edits of one update. Each edit is exact factors (A_n, B_n) per adapted
matrix with ΔW_n = B_n·A_n (scaling 1, ``maths.rank_edit``), so the K edits of a cell are the K
adapters of one packed ``LoRALinear`` per matrix (rank k_n each, 0 = W0 alone): one pass over the dev
set evaluates them all, and no d×k matrix is merged. Each variant keeps the cell's trained head.

Text the cell never trained on measures forgetting (``general_scores``): for an encoder the drift of
the pooled sentence vectors from the base's, ‖e_n(s) − e_0(s)‖ / ‖e_0(s)‖ averaged over sentences s;
for a decoder the mean next-token loss over every token of the sentences (the base's beside it)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lowrank_lab.model.base import CLASSIFIER_PREFIX, Classifier
from lowrank_lab.model.lora import PackedLinear, inject
from lowrank_lab.spec import CellSpec
from lowrank_lab.train.batches import Encoded, encode
from lowrank_lab.train.causal import completion_losses, hidden_states
from lowrank_lab.train.examples import Example
from lowrank_lab.train.loop import evaluate
from lowrank_lab.train.pack import Pack
from lowrank_lab.train.tokenize import IGNORE


@dataclass(frozen=True)
class Variant:
    """One model: the base with ΔW = B·A added at each path of `factors` (the base model's own
    module paths → (A k×in, B d×k)), and a head (weight, bias; None for a decoder)."""

    factors: Mapping[str, tuple[Tensor, Tensor]]
    head: Mapping[str, Tensor] | None = None


def variant_pack(base: nn.Module, variants: Sequence[Variant], cell: CellSpec, pooling: str = "mean",
                 decoder: bool = False) -> Pack:
    """A copy of `base` with one packed LoRA layer per path any variant adapts (adapter n of rank
    k_n, scaling 1, its factors copied in) and, for an encoder, one packed head per variant."""
    K = len(variants)
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(False)
    if not decoder:
        heads = [v.head for v in variants]
        if any(h is None for h in heads):
            raise ValueError("variant_pack: an encoder's variants each need their head")
        head = PackedLinear(K, model.config.hidden_size, heads[0]["weight"].shape[0])
        with torch.no_grad():
            for n, h in enumerate(heads):
                head.weight[n], head.bias[n] = h["weight"], h["bias"]
        model = Classifier(model, head, pooling)
    paths = sorted({p for v in variants for p in v.factors})
    ranks = [[v.factors[p][0].shape[0] if p in v.factors else 0 for v in variants] for p in paths]
    prefix = "" if decoder else CLASSIFIER_PREFIX
    layers = inject(model, [prefix + p for p in paths], ranks, [1.0] * K)
    with torch.no_grad():
        for path, layer in zip(paths, layers.values(), strict=True):
            for n, v in enumerate(variants):
                if path in v.factors:
                    A, B = v.factors[path]
                    layer.A[n, :A.shape[0]], layer.B[n, :, :A.shape[0]] = A, B
    model.eval()
    return Pack([cell] * K, model, layers, dict(zip(layers, paths, strict=True)), [], decoder)


@torch.no_grad()
def with_weights(base: nn.Module, weights: Mapping[str, Tensor]) -> nn.Module:
    """A copy of `base` with the tensors of `weights` (its own parameter names) copied in, e.g.
    a full fine-tuning cell's trained weights except the matrices whose ΔW a variant carries."""
    model = copy.deepcopy(base)
    params = dict(model.named_parameters())
    unknown = [k for k in weights if k not in params]
    if unknown:
        raise KeyError(f"with_weights: {unknown[0]!r} is not a parameter of the base model")
    for key, value in weights.items():
        params[key].copy_(value.to(params[key].dtype))
    return model


@torch.no_grad()
def evaluate_variants(pack: Pack, task, dev, tokenizer, device: torch.device, batch_size: int = 64) -> list[dict]:
    """Each variant's dev metrics and dev loss (``train.loop.evaluate``, the training's evaluation)."""
    pack.model.to(device)
    results = evaluate(pack, dev, task, device, batch_size, False, tokenizer)
    pack.model.eval()
    return results


def general_encoded(tokenizer, texts: Sequence[str], max_length: int, decoder: bool) -> Encoded:
    """Sentences never trained on, tokenised: for a decoder every token after the first is a target."""
    enc = encode(tokenizer, [Example(t, None, 0) for t in texts], max_length, False)
    if not decoder:
        return enc
    positions = torch.arange(enc.input_ids.shape[1])[None, :]
    labels = enc.input_ids.masked_fill(positions >= enc.lengths[:, None], IGNORE)
    return Encoded(enc.input_ids, None, enc.lengths, labels)


@torch.no_grad()
def general_scores(pack: Pack, base: nn.Module, general: Encoded, device: torch.device,
                   batch_size: int = 32) -> list[dict[str, float]]:
    """Forgetting on the `general` sentences, per variant (module docstring): an encoder's
    embedding_shift (and the cosine's 1 − cos beside it); a decoder's general_loss and base_general_loss."""
    pack.model.to(device).eval()
    base, general = base.to(device).eval(), general.to(device)
    K, n = pack.K, len(general)
    if pack.decoder:
        sums, counts = torch.zeros(K + 1, device=device), torch.zeros(K + 1, device=device)
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            inputs, labels = general.batch(index.repeat(K))
            s, c = completion_losses(hidden_states(pack.model, **inputs), labels, pack.model.get_output_embeddings(), K)
            inputs0, labels0 = general.batch(index)
            s0, c0 = completion_losses(hidden_states(base, **inputs0), labels0, base.get_output_embeddings(), 1)
            sums, counts = sums + torch.cat([s, s0]), counts + torch.cat([c, c0])
        loss = (sums / counts).tolist()
        return [{"general_loss": loss[k], "base_general_loss": loss[-1]} for k in range(K)]
    shift, cos = torch.zeros(K, device=device), torch.zeros(K, device=device)
    plain = Classifier(base, nn.Identity(), pack.model.pooling)
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n))
        inputs, _ = general.batch(index.repeat(K))
        e = pack.model.pooled(**inputs).reshape(K, len(index), -1).double()
        e0 = plain.pooled(**general.batch(index)[0]).double()[None]
        shift += ((e - e0).norm(dim=-1) / e0.norm(dim=-1)).sum(1)
        cos += (1 - nn.functional.cosine_similarity(e, e0.expand_as(e), dim=-1)).sum(1)
    return [{"embedding_shift": float(shift[k] / n), "embedding_cosine_distance": float(cos[k] / n)} for k in range(K)]
