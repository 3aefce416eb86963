"""train.gradient_checkpointing (issue 27): the packed step with each layer checkpointed equals the
step without it (same per-cell losses, the same gradient of every LoRA factor and head to float
tolerance) on the padded and the unpadded paths, for a tiny Llama (GQA, all-linear and q,v cells of
mixed ranks, LoRA dropout on) and a tiny BERT; and checkpointing really happens (each layer runs
again in the backward pass)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lowrank_lab.spec import DataSpec, ExperimentSpec, LoRASpec, ModelSpec, SpecError, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.store.models import load_base
from lowrank_lab.train import loop
from lowrank_lab.train.batches import Encoded
from lowrank_lab.train.causal import CausalDev
from lowrank_lab.train.examples import Task
from lowrank_lab.train.pack import build_pack

CPU = torch.device("cpu")
COMPLETION = Task("t", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")
CLASSES = Task("t", (), (), 2, ("accuracy",), "accuracy", {})


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def _split(n: int, width: int, vocab: int, per_token: bool, seed: int = 3) -> Encoded:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, width + 1, (n,), generator=gen)
    ids = torch.randint(4, vocab, (n, width), generator=gen)
    pos = torch.arange(width)[None, :]
    ids[pos >= lengths[:, None]] = 0
    if not per_token:
        return Encoded(ids, None, lengths, torch.randint(0, 2, (n,), generator=gen))
    labels = ids.masked_fill((pos < (lengths // 2)[:, None]) | (pos >= lengths[:, None]), -100)
    return Encoded(ids, None, lengths, labels)


def _cells(dropout: float, **train):
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          lora=LoRASpec(dropout=dropout), train=TrainSpec(device="cpu", batch_size=4, **train),
                          sweep=SweepSpec(r=(1, 4, 2), alpha=(4.0,), targets=("q,v", "all-linear")))
    return expand_sweep(spec)


def _step(make_base, cells, split, dev, task, decoder: bool, checkpointing: bool):
    """(per-cell losses, every trainable tensor's gradient, forward calls of layer 0's attention output) of
    one training step through the loop's own set-up and loss, B and the heads made non-zero first."""
    cells = [replace(c, train=replace(c.train, gradient_checkpointing=checkpointing)) for c in cells]
    pack = build_pack(cells, make_base(), task.num_labels, "mean", decoder)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in pack.layers.values():
            for n, r in enumerate(layer.ranks):
                layer.B[n, :, :r] = torch.randn(layer.d, r, generator=gen) * 0.3
        for p in pack.heads:
            p.copy_(torch.randn(p.shape, generator=gen))
    t = loop._set_up(pack, task, split, dev, CPU, None, None, (0, 1), None)
    attention = next(m for name, m in pack.base.named_modules()
                     if name.endswith(("layers.0.self_attn.o_proj", "layer.0.attention.output")))
    calls = []
    attention.register_forward_hook(lambda *_: calls.append(1))
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(2))[:pack.K * 4]
    losses, _ = loop._losses(t, index)
    losses.sum().backward()
    return losses.detach(), [p.grad.clone() for p in pack.trainable], len(calls)


def _check(make_base, split, dev, task, decoder, unpadded, dropout=0.0):
    cells = _cells(dropout, unpadded=unpadded)
    plain_loss, plain_grads, plain_calls = _step(make_base, cells, split, dev, task, decoder, False)
    loss, grads, calls = _step(make_base, cells, split, dev, task, decoder, True)
    assert plain_calls == 1 and calls == 2  # recomputed in the backward pass: checkpointing is on
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-7)
    assert len(grads) == len(plain_grads) > 4
    for got, want in zip(grads, plain_grads, strict=True):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("unpadded", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_a_checkpointed_llama_step_equals_the_plain_one(unpadded, dropout):
    split = _split(24, 10, 50, per_token=True)
    _check(_tiny_llama, split, CausalDev(split), COMPLETION, True, unpadded, dropout)


@pytest.mark.parametrize("unpadded", [False, True])
def test_a_checkpointed_bert_step_equals_the_plain_one(unpadded, tiny_bert):
    split = _split(24, 10, 99, per_token=False)
    _check(lambda: load_base(str(tiny_bert))[0], split, split, CLASSES, False, unpadded)


def test_checkpointing_a_model_without_support_is_a_spec_error_naming_the_key():
    from transformers import GPT2Config, GPT2LMHeadModel

    class NoCheckpointing(GPT2LMHeadModel):
        supports_gradient_checkpointing = False

    cells = _cells(0.0, gradient_checkpointing=True)[:1]
    pack = build_pack(cells, NoCheckpointing(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20)), 0, "none", True)
    split = _split(8, 6, 20, per_token=True)
    with pytest.raises(SpecError, match="train.gradient_checkpointing"):
        loop._set_up(pack, COMPLETION, split, CausalDev(split), CPU, None, None, (0, 1), None)
