"""Unpadded ("varlen") packed training (issue 17): the stream layout, the layer forward against Hugging
Face's padded forward (tiny BERT, tiny RoBERTa, tiny Llama with GQA; logits, losses and the gradients
of every cell's A and B), packed unpadded training against one cell at a time and against the padded
path, the buffered per-cell clipping against ``clip_per_cell``, and the flash varlen kernel (gpu)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from lowrank_lab.model import varlen
from lowrank_lab.model.varlen_layout import segment_lengths, varlen_layout
from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SpecError, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.store.models import load_base
from lowrank_lab.train.batches import Encoded
from lowrank_lab.train.causal import completion_losses, varlen_completion_losses
from lowrank_lab.train.data import load_task
from lowrank_lab.train.batches import encode
from lowrank_lab.train.loop import loss_per_cell, train_pack
from lowrank_lab.train.pack import GradBuffers, build_pack, cell_slices, clip_per_cell

CPU = torch.device("cpu")


def _cells(model, task_file, targets=("q,v",), **train):
    spec = ExperimentSpec(model=ModelSpec(name=str(model), pooling="mean"), data=DataSpec(task="file", path=str(task_file)),
                          train=TrainSpec(batch_size=8, epochs=2, device="cpu", **train),
                          sweep=SweepSpec(r=(1, 4), seeds=(0, 1), alpha=(4.0,), lr=(1e-2,), targets=targets))
    return expand_sweep(spec)


def _randomise(pack, seed=1):
    """Non-zero B (and a random head) so that every factor gets a gradient through the other."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pack.trainable:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for layer in pack.layers.values():  # padding rows and columns stay 0 (rank r_n exactly)
            for n, r in enumerate(layer.ranks):
                layer.A[n, r:] = 0
                layer.B[n, :, r:] = 0


def _random_split(n, width, vocab, gen, per_token=False, pairs=False):
    lengths = torch.randint(2, width + 1, (n,), generator=gen)
    ids = torch.randint(4, vocab, (n, width), generator=gen)
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    if not per_token:  # sentence pairs: segment 1 from half the length on, as BERT's tokenizer gives
        types = (torch.arange(width)[None, :] >= (lengths // 2)[:, None]).long() * (ids > 0) if pairs else None
        return Encoded(ids, types, lengths, torch.randint(0, 2, (n,), generator=gen))
    labels = ids.clone()
    prompt = lengths // 2
    labels[torch.arange(width)[None, :] < prompt[:, None]] = -100
    labels[torch.arange(width)[None, :] >= lengths[:, None]] = -100
    return Encoded(ids, None, lengths, labels)


def _grads(pack):
    return [p.grad.clone() for p in pack.trainable]


def test_the_stream_tiles_every_cell_range_with_its_sequences_then_padding_pieces():
    lengths = torch.tensor([3, 1, 2, 2, 5, 1])  # K = 3 cells of b = 2
    segments, T, counts = segment_lengths(lengths, 3, multiple=4)
    assert T == 8  # the largest cell total, 6, rounded up to 4
    assert segments == [3, 1, 4, 2, 2, 4, 5, 1, 2] and counts == [3, 3, 3]  # tails cut at max len 5
    rows = torch.tensor([10, 11, 12, 13, 14, 15])
    layout, source = varlen_layout(lengths, rows, 7, 3, 4, CPU)
    assert layout.cu_seqlens.tolist() == [0, 3, 4, 8, 10, 12, 16, 21, 22, 24]
    assert layout.positions[:8].tolist() == [0, 1, 2, 0, 0, 1, 2, 3]
    assert layout.seq.tolist() == [0, 0, 0, 1, 6, 6, 6, 6, 2, 2, 3, 3, 6, 6, 6, 6, 4, 4, 4, 4, 4, 5, 6, 6]
    assert layout.first.tolist() == [0, 3, 8, 10, 16, 21]
    assert source[:4].tolist() == [70, 71, 72, 77] and source[16:22].tolist() == [98, 99, 100, 101, 102, 105]
    assert layout.valid.sum() == 24 and layout.gather[layout.valid].tolist() == list(range(24))


@pytest.mark.parametrize("causal", [False, True])
def test_reference_attention_equals_sdpa_on_each_sequence_alone(causal):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([3, 5, 1, 4])
    layout, _ = varlen_layout(lengths, torch.arange(4), 5, 2, 1, CPU)
    N = layout.n_tokens
    q, k, v = torch.randn(N, 4, 8, generator=gen), torch.randn(N, 2, 8, generator=gen), torch.randn(N, 2, 8, generator=gen)
    out = varlen.attend_reference(q, k, v, layout, causal, 0.3)
    cu = layout.cu_seqlens.tolist()
    for s in range(len(cu) - 1):
        a, b = cu[s], cu[s + 1]
        one = torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1).repeat_interleave(2, 0),
            v[a:b].transpose(0, 1).repeat_interleave(2, 0), is_causal=causal, scale=0.3)
        torch.testing.assert_close(out[a:b], one.transpose(0, 1), rtol=1e-5, atol=1e-6)


def _tiny_roberta(folder):
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=40, pad_token_id=1,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_unpadded_encoder_logits_losses_and_gradients_equal_the_padded_forward(arch, pooling, tiny_bert, tmp_path):
    folder = tiny_bert if arch == "bert" else _tiny_roberta(tmp_path / "roberta")
    encoder = load_base(str(folder))[0] if arch == "bert" else __import__("transformers").AutoModel.from_pretrained(folder)
    spec = ExperimentSpec(model=ModelSpec(name=str(folder)), data=DataSpec(task="file", path="x"),
                          sweep=SweepSpec(r=(1, 4, 2), alpha=(4.0,), targets=("q,v", "all-linear")))
    cells = expand_sweep(spec)[1:5]  # mixed ranks and target sets
    pack = build_pack(cells, encoder, 2, pooling)
    _randomise(pack)
    K, gen = pack.K, torch.Generator().manual_seed(0)
    split = _random_split(40, 12, 99, gen, pairs=arch == "bert")
    index = torch.randperm(40, generator=gen)[:K * 5]
    inputs, labels = split.batch(index)
    padded = pack.model(**inputs)
    loss_per_cell(padded, labels, K, False).sum().backward()
    expected = _grads(pack)
    pack.model.zero_grad(set_to_none=True)
    vinputs, vlabels, layout = split.varlen_batch(index, K, multiple=8)
    logits = varlen.classifier_logits(pack.model, vinputs, layout)
    torch.testing.assert_close(logits, padded, rtol=1e-5, atol=1e-5)
    assert torch.equal(vlabels, labels)
    loss_per_cell(logits, vlabels, K, False).sum().backward()
    for got, want in zip(_grads(pack), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def test_unpadded_llama_with_gqa_completion_losses_and_gradients_equal_the_padded_forward():
    lm = _tiny_llama()
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          sweep=SweepSpec(r=(1, 4, 2), alpha=(4.0,), targets=("q,v", "all-linear")))
    pack = build_pack(expand_sweep(spec)[1:5], lm, 0, "none", decoder=True)  # mixed ranks and target sets
    _randomise(pack)
    K, gen = pack.K, torch.Generator().manual_seed(3)
    split = _random_split(30, 14, 50, gen, per_token=True)
    index = torch.randperm(30, generator=gen)[:K * 4]
    inputs, labels = split.batch(index)
    hidden = pack.model.base_model(**inputs, use_cache=False).last_hidden_state
    sums, counts = completion_losses(hidden, labels, pack.model.lm_head, K)
    (sums / counts).sum().backward()
    expected = _grads(pack)
    pack.model.zero_grad(set_to_none=True)
    vinputs, vlabels, layout = split.varlen_batch(index, K)
    vhidden = varlen.decoder_hidden(pack.model, vinputs["input_ids"], layout)
    real = layout.seq < layout.n_seqs
    torch.testing.assert_close(vhidden[real], hidden[inputs["attention_mask"].bool()], rtol=1e-5, atol=1e-5)
    vsums, vcounts = varlen_completion_losses(vhidden, layout, pack.model.lm_head)
    assert torch.equal(vlabels[layout.seq < layout.n_seqs], labels[inputs["attention_mask"].bool()])
    assert torch.equal(vcounts, counts)
    torch.testing.assert_close(vsums, sums, rtol=1e-5, atol=1e-5)
    (vsums / vcounts).sum().backward()
    for got, want in zip(_grads(pack), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _train(cells, tiny_bert, task):
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack(cells, encoder, task.num_labels, "mean")
    states = train_pack(pack, task, encode(tokenizer, task.train, 32, False), encode(tokenizer, task.dev, 32, False),
                        tokenizer, CPU)
    return pack, states


@pytest.mark.parametrize("fused_clip", [False, True])
def test_a_packed_unpadded_pack_equals_each_cell_alone_and_the_padded_pack(fused_clip, tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, unpadded=True, fused_clip=fused_clip, grad_clip=0.05)
    task = load_task(cells[0].data)
    packed, states = _train(cells, tiny_bert, task)
    padded, padded_states = _train([replace(c, train=replace(c.train, unpadded=False, fused_clip=False)) for c in cells],
                                   tiny_bert, task)
    for n, cell in enumerate(cells):
        alone, alone_states = _train([cell], tiny_bert, task)
        for other, m in ((alone, 0), (padded, n)):
            ours, theirs = cell_slices(packed, n), cell_slices(other, m)
            assert ours.keys() == theirs.keys()
            for key in ours:
                torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
        assert states[n].best["accuracy"] == pytest.approx(alone_states[0].best["accuracy"])
        assert states[n].best["train_loss"] == pytest.approx(padded_states[n].best["train_loss"], rel=1e-5)


def test_buffered_per_cell_clipping_equals_clip_per_cell(tiny_bert):
    spec = ExperimentSpec(model=ModelSpec(name=str(tiny_bert)), data=DataSpec(task="file", path="x"),
                          sweep=SweepSpec(r=(1, 4, 8), alpha=(4.0,), targets=("q,v", "all-linear")))
    pack = build_pack(expand_sweep(spec), load_base(str(tiny_bert))[0], 2, "mean")
    _randomise(pack)
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen) * (1 + torch.arange(pack.K).view(-1, *[1] * (p.dim() - 1)))
             for p in pack.trainable]
    for p, g in zip(pack.trainable, grads, strict=True):
        p.grad = g.clone()
    want = clip_per_cell(pack, 150.0)
    expected = _grads(pack)
    buffers = GradBuffers(pack)
    assert len(buffers.buffers) < len(pack.trainable)
    for p, g in zip(pack.trainable, grads, strict=True):
        p.grad.add_(g)  # in place: the views stay the gradients
    got = buffers.clip(150.0)
    torch.testing.assert_close(got, want)
    assert (got > 150.0).any() and (got < 150.0).any()  # some cells clipped, some not
    for g, e in zip(_grads(pack), expected, strict=True):
        torch.testing.assert_close(g, e)
    pack.model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="GradBuffers"):
        buffers.check()


def test_backward_accumulates_into_the_buffers_in_place(tiny_bert):
    spec = ExperimentSpec(model=ModelSpec(name=str(tiny_bert)), data=DataSpec(task="file", path="x"),
                          sweep=SweepSpec(r=(1, 4), alpha=(4.0,)))
    pack = build_pack(expand_sweep(spec), load_base(str(tiny_bert))[0], 2, "mean")
    buffers = GradBuffers(pack)
    split = _random_split(8, 6, 99, torch.Generator().manual_seed(0))
    inputs, labels = split.batch(torch.arange(8))
    loss_per_cell(pack.model(**inputs), labels, pack.K, False).sum().backward()
    buffers.check()
    assert sum(float(b.abs().sum()) for b in buffers.buffers) > 0


def test_unpadded_spec_errors_name_the_key(tmp_path):
    assert TrainSpec(unpadded=True, compile=True).compile  # the compiled unpadded layers (varlen.compiled)
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="gpt2"):
        varlen.check_supported(model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("causal,heads", [(False, (4, 4)), (True, (4, 2))])
def test_the_flash_varlen_kernel_equals_the_reference_attention_on_a_gpu(causal, heads):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (24,), generator=gen)
    layout, _ = varlen_layout(lengths, torch.arange(24), 40, 3, 8, torch.device("cuda"))
    N, (hq, hkv) = layout.n_tokens, heads
    q, k, v = (torch.randn(N, h, 64, generator=gen).cuda().bfloat16().requires_grad_() for h in (hq, hkv, hkv))
    assert varlen.kernel_available(q)
    out = varlen.attend_kernel(q, k, v, layout, causal, 0.125)
    ref = varlen.attend_reference(q.float(), k.float(), v.float(), layout, causal, 0.125)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.float(), r.float(), rtol=5e-2, atol=5e-2)


def _bf16_llama_pack(device="cuda", trained=False):
    """A tiny all-linear Llama pack on `device` (default the GPU), its base in bf16 (the adapters
    float32), and a split. The adapters are `_randomise`d, or with `trained` at a trained adapter's
    scale (B ~ N(0, 0.02²)): the randomised ΔW outweighs W0 many times over, and bf16 rounding then
    decides the gradients."""
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          sweep=SweepSpec(r=(1, 4, 2), alpha=(4.0,), targets=("all-linear",)))
    pack = build_pack(expand_sweep(spec)[:3], _tiny_llama(), 0, "none", decoder=True)
    if trained:
        with torch.no_grad():
            for n, layer in enumerate(pack.layers.values()):
                layer.B.copy_(torch.randn(layer.B.shape, generator=torch.Generator().manual_seed(n)) * 0.02)
                for cell, r in enumerate(layer.ranks):
                    layer.B[cell, :, r:] = 0
    else:
        _randomise(pack)
    pack.model.to(device)
    for p in pack.model.parameters():
        if not p.requires_grad:
            p.data = p.data.bfloat16()
    split = _random_split(30, 14, 50, torch.Generator().manual_seed(3), per_token=True).to(torch.device(device))
    return pack, split


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_unpadded_llama_pack_trains_on_a_gpu_in_bf16_close_to_the_padded_loss():
    pack, split = _bf16_llama_pack()
    index = torch.arange(12)
    inputs, labels = split.batch(index)
    hidden = pack.model.base_model(**inputs, use_cache=False).last_hidden_state
    sums, counts = completion_losses(hidden, labels, pack.model.lm_head, pack.K)
    vinputs, vlabels, layout = split.varlen_batch(index, pack.K)
    assert varlen.kernel_available(vinputs["input_ids"].new_zeros(1, dtype=torch.bfloat16))
    vsums, vcounts = varlen_completion_losses(varlen.decoder_hidden(pack.model, vinputs["input_ids"], layout),
                                              layout, pack.model.lm_head)
    torch.testing.assert_close(vsums / vcounts, sums / counts, rtol=2e-2, atol=2e-2)
    (vsums / vcounts).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pack.trainable)


def _fake_kernel(gqa: bool, window: bool):
    """A CPU stand-in with the signature of torch 2.10's (is_causal, no scale, no GQA) or 2.11+'s
    (scale, window_size, enable_gqa) varlen_attn, computing each sequence by SDPA."""
    def run(q, k, v, cu_q, cu_k, max_q, max_k, scale=None, window_size=(-1, -1), enable_gqa=False, is_causal=False):
        assert cu_q.dtype == torch.int32 and max_q == max_k and (enable_gqa or k.shape[1] == q.shape[1])
        causal = window_size == (-1, 0) if window else is_causal
        out, cu = torch.empty_like(q), cu_q.tolist()
        for a, b in zip(cu[:-1], cu[1:], strict=True):
            ks, vs = (t[a:b].transpose(0, 1).repeat_interleave(q.shape[1] // k.shape[1], 0) for t in (k, v))
            out[a:b] = torch.nn.functional.scaled_dot_product_attention(
                q[a:b].transpose(0, 1), ks, vs, is_causal=causal, scale=scale).transpose(0, 1)
        return out

    def kernel_gqa(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        return run(q, k, v, cu_q, cu_k, max_q, max_k, scale, window_size, enable_gqa)

    def kernel_211(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
        return run(q, k, v, cu_q, cu_k, max_q, max_k, scale, window_size)

    def kernel_210(q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=False):
        return run(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=is_causal)

    return (kernel_gqa if gqa else kernel_211) if window else kernel_210


@pytest.mark.parametrize("gqa,window", [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("causal", [False, True])
def test_the_kernel_call_fits_each_torch_signature_and_equals_the_reference(gqa, window, causal, monkeypatch):
    import inspect

    kernel = _fake_kernel(gqa, window)
    monkeypatch.setattr(varlen, "_varlen_attn", kernel)
    monkeypatch.setattr(varlen, "_PARAMS", set(inspect.signature(kernel).parameters))
    gen = torch.Generator().manual_seed(0)
    layout, _ = varlen_layout(torch.tensor([3, 5, 1, 4, 2, 2]), torch.arange(6), 5, 3, 4, CPU)
    N = layout.n_tokens
    q, k, v = (torch.randn(N, h, 8, generator=gen) for h in (4, 2, 2))
    for scale in (8 ** -0.5, 0.2):
        got = varlen.attend_kernel(q, k, v, layout, causal, scale)
        torch.testing.assert_close(got, varlen.attend_reference(q, k, v, layout, causal, scale), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(varlen, "_PROBED", {})
    assert varlen._kernel_works(CPU, torch.float32, 4, 2, 8, causal)


def test_unpadded_training_of_an_unsupported_model_is_a_spec_error_naming_the_key():
    from transformers import GPT2Config, GPT2LMHeadModel

    from lowrank_lab.train.examples import Task

    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2))
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          train=TrainSpec(device="cpu", unpadded=True, max_steps=1), sweep=SweepSpec(r=(1,)))
    pack = build_pack(expand_sweep(spec), model, 0, "none", decoder=True)
    split = _random_split(8, 6, 20, torch.Generator().manual_seed(0), per_token=True)
    task = Task("t", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")
    with pytest.raises(SpecError, match="train.unpadded.*gpt2"):
        train_pack(pack, task, split, split, None, CPU)


def test_an_unpadded_decoder_pack_trains_as_the_padded_one():
    from lowrank_lab.train.causal import CausalDev
    from lowrank_lab.train.examples import Task

    task = Task("t", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")
    split = _random_split(24, 10, 50, torch.Generator().manual_seed(5), per_token=True)
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          train=TrainSpec(device="cpu", batch_size=4, max_steps=4, grad_clip=0.5),
                          sweep=SweepSpec(r=(1, 4), alpha=(4.0,), lr=(5e-2,), targets=("q,v", "all-linear")))
    packs, histories = [], []
    for unpadded in (False, True):
        cells = [replace(c, train=replace(c.train, unpadded=unpadded, fused_clip=unpadded)) for c in expand_sweep(spec)]
        pack = build_pack(cells, _tiny_llama(), 0, "none", decoder=True)
        states = train_pack(pack, task, split, CausalDev(split), None, CPU)
        packs.append(pack)
        histories.append([s.history[-1]["train_loss"] for s in states])
    assert histories[0] == pytest.approx(histories[1], rel=1e-5)
    for n in range(packs[0].K):
        ours, theirs = cell_slices(packs[1], n), cell_slices(packs[0], n)
        assert ours.keys() == theirs.keys() and ours
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
        assert not torch.equal(ours[key], cell_slices(build_pack([packs[0].cells[n]], _tiny_llama(), 0, "none",
                                                                   decoder=True), 0)[key])  # it moved


# --- compiled layers (train.compile with train.unpadded) ----------------------------------------


def _decoder_step(pack, split, index, layers):
    """(completion loss sums, gradients of every trainable tensor) of one unpadded step."""
    pack.model.zero_grad(set_to_none=True)
    vinputs, _, layout = split.varlen_batch(index, pack.K)
    hidden = varlen.decoder_hidden(pack.model, vinputs["input_ids"], layout, layers)
    sums, counts = varlen_completion_losses(hidden, layout, pack.model.lm_head)
    (sums / counts).sum().backward()
    return sums.detach(), _grads(pack)


def _encoder_step(pack, split, index, layers):
    pack.model.zero_grad(set_to_none=True)
    vinputs, vlabels, layout = split.varlen_batch(index, pack.K, multiple=8)
    logits = varlen.classifier_logits(pack.model, vinputs, layout, layers)
    loss_per_cell(logits, vlabels, pack.K, False).sum().backward()
    return logits.detach(), _grads(pack)


def _check_compiled(backend, tiny_bert):
    """Compiled layers equal the eager ones on a Llama with GQA and a BERT, mixed ranks and target
    sets, over streams of three different lengths (one graph must serve them all)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    layers = varlen.compiled(backend)
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          sweep=SweepSpec(r=(1, 4, 2), alpha=(4.0,), targets=("q,v", "all-linear")))
    decoder = build_pack(expand_sweep(spec)[1:5], _tiny_llama(), 0, "none", decoder=True)
    encoder = build_pack(expand_sweep(spec)[1:5], load_base(str(tiny_bert))[0], 2, "mean")
    for pack, step, split in ((decoder, _decoder_step, _random_split(60, 14, 50, torch.Generator().manual_seed(3), per_token=True)),
                              (encoder, _encoder_step, _random_split(60, 12, 99, torch.Generator().manual_seed(4), pairs=True))):
        _randomise(pack)
        for per_cell in (3, 5, 4):
            index = torch.randperm(60, generator=torch.Generator().manual_seed(per_cell))[:pack.K * per_cell]
            want, want_grads = step(pack, split, index, None)
            got, got_grads = step(pack, split, index, layers)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            for g, w in zip(got_grads, want_grads, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    # Graphs were made, and the three lengths did not each make their own: per family, the part
    # before attention and the part after it, each for a first layer (input without grad) and the rest.
    assert counters["stats"]["unique_graphs"] == 8


def test_compiled_unpadded_layers_equal_the_eager_ones(tiny_bert):
    """Graph capture, the break at attention, dynamic shapes and the backward (aot_eager: the
    graphs as captured, run by eager kernels, so no C++ compiler is needed)."""
    _check_compiled("aot_eager", tiny_bert)


@pytest.mark.slow
def test_inductor_compiled_unpadded_layers_equal_the_eager_ones(tiny_bert):
    """The fused kernels themselves (inductor on the CPU needs a C++ compiler; about a minute)."""
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor on the CPU needs a C++ compiler")
    _check_compiled("inductor", tiny_bert)


def test_a_compiled_unpadded_pack_trains_as_the_eager_one(monkeypatch):
    from lowrank_lab.train.causal import CausalDev
    from lowrank_lab.train.examples import Task

    task = Task("t", (), (), 0, ("completion_loss",), "completion_loss", {}, kind="completion")
    split = _random_split(24, 10, 50, torch.Generator().manual_seed(5), per_token=True)
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"),
                          train=TrainSpec(device="cpu", batch_size=4, max_steps=4, grad_clip=0.5, unpadded=True),
                          sweep=SweepSpec(r=(1, 4), alpha=(4.0,), lr=(5e-2,), targets=("q,v", "all-linear")))
    calls = []
    monkeypatch.setattr(varlen, "compiled", lambda backend="inductor": calls.append(backend) or
                        varlen.LayerForwards(*(torch.compile(f, backend="aot_eager", dynamic=True)
                                               for f in (varlen.EAGER.encoder, varlen.EAGER.decoder))))
    packs, histories = [], []
    for compile_ in (False, True):
        cells = [replace(c, train=replace(c.train, compile=compile_)) for c in expand_sweep(spec)]
        pack = build_pack(cells, _tiny_llama(), 0, "none", decoder=True)
        states = train_pack(pack, task, split, CausalDev(split), None, CPU)
        packs.append(pack)
        histories.append([s.history[-1]["train_loss"] for s in states])
    assert calls == ["inductor"]  # the compiled pack asked for the compiled layers, once
    assert histories[1] == pytest.approx(histories[0], rel=1e-5)
    for n in range(packs[0].K):
        ours, theirs = cell_slices(packs[1], n), cell_slices(packs[0], n)
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)


def _check_bf16_against_fp32(device):
    """Compiled and eager layers under bf16 autocast each give the fp32 eager step's losses and
    gradients to bf16's precision (relative Frobenius error per tensor), over two stream lengths."""
    torch._dynamo.reset()
    pack, split = _bf16_llama_pack(device, trained=True)
    reference = copy.deepcopy(pack)
    reference.model.float()
    layers = varlen.compiled()
    for per_cell in (4, 6):
        index = torch.arange(pack.K * per_cell)
        want, want_grads = _decoder_step(reference, split, index, None)
        for run in (None, layers):
            with torch.autocast(device, dtype=torch.bfloat16):
                got, got_grads = _decoder_step(pack, split, index, run)
            torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
            for g, w in zip(got_grads, want_grads, strict=True):
                assert (g.float() - w).norm() <= 3e-2 * w.norm() + 1e-6, ("compiled" if run else "eager", w.shape)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_unpadded_layers_on_a_gpu_in_bf16_match_the_fp32_step():
    _check_bf16_against_fp32("cuda")


@pytest.mark.slow
def test_compiled_unpadded_layers_on_the_cpu_in_bf16_match_the_fp32_step():
    _check_bf16_against_fp32("cpu")
