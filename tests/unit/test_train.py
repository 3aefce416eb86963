"""Training by what it changes: packed cells equal cells trained alone; loss falls; ΔW ≠ 0."""

from dataclasses import replace

import pytest
import torch

from lowrank_lab.config import DataSpec, ExperimentSpec, LoRASpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.data import load_task
from lowrank_lab.models import load_base
from lowrank_lab.train import build_pack, cell_slices, encode, train_pack


def _cells(tiny_bert, tiny_task, **sweep):
    spec = ExperimentSpec(
        model=ModelSpec(name=str(tiny_bert), pooling="mean"),
        data=DataSpec(task="file", path=str(tiny_task)),
        lora=LoRASpec(alpha=4.0),
        train=TrainSpec(batch_size=8, epochs=2, lr=1e-2, device="cpu"),
        sweep=SweepSpec(**sweep),
    )
    return expand_sweep(spec)


def _train(cells, task, tiny_bert):
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack(cells, encoder, task.num_labels, "mean")
    train = encode(tokenizer, task.train, 32, False)
    dev = encode(tokenizer, task.dev, 32, False)
    states = train_pack(pack, task, train, dev, tokenizer, torch.device("cpu"))
    return pack, states


def test_packed_cells_equal_each_cell_trained_alone(tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, r=(1, 4), seeds=(0, 1), targets=("q,v", "q,k,v,o"),
                   scaling_rules=("alpha/r", "alpha/sqrt(r)"))[::3]
    cells = cells + [replace(cells[0], train=replace(cells[0].train, seed=7, data_seed=3))]
    task = load_task(cells[0].data)
    packed, packed_states = _train(cells, task, tiny_bert)
    for n, cell in enumerate(cells):
        alone, alone_states = _train([cell], task, tiny_bert)
        ours, theirs = cell_slices(packed, n), cell_slices(alone, 0)
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
        assert packed_states[n].best["accuracy"] == pytest.approx(alone_states[0].best["accuracy"])


def test_training_lowers_the_loss_and_moves_delta_w_away_from_zero(tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, r=(4,))
    cells = [replace(c, train=replace(c.train, epochs=6, evals_per_epoch=1)) for c in cells]
    task = load_task(cells[0].data)
    pack, states = _train(cells, task, tiny_bert)
    losses = [h["train_loss"] for h in states[0].history]
    assert losses[-1] < losses[0]
    for layer in pack.layers.values():
        assert layer.B.abs().max() > 0  # B starts at 0, so ΔW = 0 until training moves it


def test_pack_size_follows_the_spec_then_free_memory(tiny_bert):
    from transformers import BertConfig

    from lowrank_lab.config import ExperimentSpec, SweepSpec
    from lowrank_lab.sweep import activation_bytes_per_cell, auto_pack_size

    spec = ExperimentSpec()
    minilm = BertConfig(hidden_size=384, num_attention_heads=12, num_hidden_layers=6)

    class Encoder:
        config = minilm

    per_cell = activation_bytes_per_cell(minilm, spec.train.batch_size, spec.model.max_length)
    assert per_cell == 32 * 48 * 6 * (34 * 384 + 5 * 12 * 48)
    assert auto_pack_size(spec, 21, 1) == 21  # no memory limit known (CPU)
    assert auto_pack_size(spec, 21, 2) == 11  # split over two processes
    assert auto_pack_size(spec, 21, 1, Encoder(), free_bytes=10 * per_cell) == 8  # 80% of free memory
    assert auto_pack_size(replace(spec, sweep=SweepSpec(pack=5)), 21, 1, Encoder(), 10 * per_cell) == 5


def test_sentence_pairs_keep_their_segment_ids(tiny_bert):
    from lowrank_lab.data import Example
    from lowrank_lab.models import load_base

    _, tokenizer = load_base(str(tiny_bert))
    pairs = encode(tokenizer, [Example("a cat sat", "on the mat", 1), Example("yes", "no", 0)], 32, False)
    inputs, labels = pairs.batch(torch.tensor([0, 1]))
    types = inputs["token_type_ids"]
    assert types.shape == inputs["input_ids"].shape and labels.tolist() == [1, 0]
    # BERT marks the second sentence (and its [SEP]) with segment 1: "[CLS] a cat sat [SEP]" is 0.
    assert types[0].tolist()[:5] == [0, 0, 0, 0, 0] and types[0, 5:9].tolist() == [1, 1, 1, 1]
    assert (types * (1 - inputs["attention_mask"])).sum() == 0
