"""Decoders: the next-token loss of the completion, and evaluation by completion loss, perplexity
and greedy decoding, for every cell of a pack at once.

A decoder's batch keeps the pack's layout: rows [n·b, (n+1)·b) belong to cell n (``LoRALinear``
reshapes its input to (K, N, k)), in training, in the dev loss and in ``generate``, where the K·b
prompts are left padded and decoded greedily together with the KV cache (greedy search keeps the
rows in place). The loss of cell n is the mean next-token cross-entropy over its own completion
tokens (labels -100 on the prompt and padding; position t predicts label t + 1, as Hugging Face's
causal LMs shift inside), so the pack's summed loss gives each cell the gradient it would get alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lowrank_lab.maths.metrics import METRICS, compute_metrics
from lowrank_lab.maths.nlg_metrics import score as text_scores
from lowrank_lab.model.varlen_layout import Varlen
from lowrank_lab.store.wordnet import wordnet_reader
from lowrank_lab.train.batches import Encoded
from lowrank_lab.train.data import Task, label_word_class
from lowrank_lab.train.tokenize import IGNORE, PromptBatch, encode_completions, encode_prompts, pad_id


def hidden_states(model: nn.Module, **inputs: Tensor) -> Tensor:
    """The causal LM's last hidden states (N × L × h), before its LM head."""
    return model.base_model(**inputs, use_cache=False).last_hidden_state


def completion_losses(hidden: Tensor, labels: Tensor, lm_head: nn.Module, K: int) -> tuple[Tensor, Tensor]:
    """(Σ token losses, token count) of each cell, both (K,): cross-entropy of the token after each
    position where that token is a completion label. The LM head runs at those positions only, so
    no N × L × vocabulary logits are formed."""
    h, y = hidden[:, :-1], labels[:, 1:]
    mask = y != IGNORE
    cell = (torch.arange(len(y), device=y.device) // (len(y) // K))[:, None].expand_as(y)[mask]
    logits = lm_head(h[mask].to(lm_head.weight.dtype)).float()
    loss = nn.functional.cross_entropy(logits, y[mask], reduction="none")
    sums = torch.zeros(K, device=loss.device).index_add_(0, cell, loss)
    counts = torch.zeros(K, device=loss.device).index_add_(0, cell, torch.ones_like(loss))
    return sums, counts


def varlen_completion_losses(hidden: Tensor, layout: Varlen, lm_head: nn.Module) -> tuple[Tensor, Tensor]:
    """``completion_losses`` of an unpadded stream (``Encoded.varlen_batch``): hidden (N, h), cell n's
    tokens in [n·T, (n+1)·T). The LM head runs at the tokens ``layout.pick`` whose next token in the
    same sequence is a completion label (chosen on the host: no synchronisation), against those labels."""
    logits = lm_head(hidden[layout.pick].to(lm_head.weight.dtype)).float()
    loss = nn.functional.cross_entropy(logits, layout.targets, reduction="none")
    sums = torch.zeros(layout.K, device=loss.device).index_add_(0, layout.pick // layout.T, loss)
    return sums, layout.counts.float()


def causal_encoded(tokenizer, examples, max_length: int) -> tuple[Encoded, int, int]:
    """Completion examples as an ``Encoded`` with per-token labels; (…, truncated prompts, dropped)."""
    batch = encode_completions(tokenizer, examples, max_length)
    return Encoded(batch.input_ids, None, batch.lengths, batch.labels), batch.truncated, len(batch.dropped)


@dataclass(frozen=True)
class CausalDev:
    """A decoder's dev split: its completions as sequences (the completion loss), and for label-word
    and generation tasks its prompts (left padded), gold classes, references and how many tokens
    greedy decoding may add."""

    sequences: Encoded
    prompts: PromptBatch | None = None
    gold: tuple[int, ...] = ()
    references: tuple[tuple[str, ...], ...] = ()
    max_new_tokens: int = 0
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.sequences)


def causal_dev(tokenizer, task: Task, max_length: int) -> CausalDev:
    """The dev split of a completion or generation task, ready for ``evaluate_causal``."""
    sequences, truncated, _ = causal_encoded(tokenizer, task.dev, max_length)
    if task.kind == "generation":
        references = tuple(e.references or (e.completion,) for e in task.dev)
        texts = [r for refs in references for r in refs]
    elif task.label_words:
        references, texts = (), list(task.label_words)
    else:
        return CausalDev(sequences, truncated=truncated)
    longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    new = min(longest + 1, max_length - 1)  # + 1: the eos that ends a completion
    # a chat template's prompt holds its own special tokens (train.chat)
    prompts = encode_prompts(tokenizer, [e.prompt for e in task.dev], max_length - new,
                             special_tokens=not task.dev[0].segments)
    gold = tuple(label_word_class(task.label_words, e.completion) for e in task.dev) if task.label_words else ()
    return CausalDev(sequences, prompts, gold, references, new, truncated)


@torch.no_grad()
def generate_packed(model: nn.Module, prompts: PromptBatch, index: Tensor, K: int, max_new_tokens: int,
                    tokenizer, device: torch.device) -> list[list[str]]:
    """Greedy completions of prompts `index` by each of the pack's K cells: [cell][prompt] texts, in
    one ``generate`` call of K·len(index) cell-major rows (left padded, KV cache), cut at eos."""
    inputs = {k: v.repeat(K, 1).to(device) for k, v in prompts.batch(index).items()}
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    b = len(index)
    return [texts[n * b:(n + 1) * b] for n in range(K)]


@torch.no_grad()
def evaluate_causal(model: nn.Module, K: int, dev: CausalDev, task: Task, tokenizer, device: torch.device,
                    batch_size: int, autocast: bool) -> list[dict[str, float]]:
    """Each cell's dev metrics: completion_loss (mean over every dev completion token, which is also
    its dev_loss) and perplexity = exp(completion_loss); the classification metrics of the greedy
    completion's label word; the task's text metrics of greedy decoding for generation tasks
    (``maths.nlg_metrics``: E2E's five, exact match)."""
    sums, counts = torch.zeros(K, device=device), torch.zeros(K, device=device)
    sequences = dev.sequences.to(device)
    texts: list[list[str]] = [[] for _ in range(K)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for start in range(0, len(dev), batch_size):
            index = torch.arange(start, min(start + batch_size, len(dev)))
            inputs, labels = sequences.batch(index.repeat(K))
            s, c = completion_losses(hidden_states(model, **inputs), labels, model.get_output_embeddings(), K)
            sums, counts = sums + s, counts + c
            if dev.prompts is not None:
                for n, out in enumerate(generate_packed(model, dev.prompts, index, K, dev.max_new_tokens,
                                                        tokenizer, device)):
                    texts[n] += out
    losses = (sums / counts).tolist()
    return [{**_text_scores(task, dev, texts[n]), "completion_loss": losses[n],
             "perplexity": math.exp(min(losses[n], 700.0)), "dev_loss": losses[n]} for n in range(K)]


def _text_scores(task: Task, dev: CausalDev, texts: list[str]) -> dict[str, float]:
    if dev.prompts is None:
        return {}
    if task.kind == "generation":
        hypotheses = [t.strip() for t in texts]
        references = [tuple(r.strip() for r in refs) for refs in dev.references]
        return text_scores(task.metrics, hypotheses, references, wordnet_reader() if "meteor" in task.metrics else None)
    classes = [label_word_class(task.label_words, t) for t in texts]
    return compute_metrics(tuple(m for m in task.metrics if m in METRICS), classes, list(dev.gold))
