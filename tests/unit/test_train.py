"""Training by what it changes: packed cells equal cells trained alone; loss falls; ΔW ≠ 0."""

from dataclasses import replace

import pytest
import torch

from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.train.data import load_task
from lowrank_lab.store.models import load_base
from lowrank_lab.train.batches import encode
from lowrank_lab.train.loop import train_pack
from lowrank_lab.train.pack import build_pack, cell_slices


def _cells(tiny_bert, tiny_task, **sweep):
    spec = ExperimentSpec(
        model=ModelSpec(name=str(tiny_bert), pooling="mean"),
        data=DataSpec(task="file", path=str(tiny_task)),
        train=TrainSpec(batch_size=8, epochs=2, device="cpu"),
        sweep=SweepSpec(**{"alpha": (4.0,), "lr": (1e-2,), **sweep}),
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


def test_cells_with_their_own_learning_rate_and_alpha_in_one_pack_equal_each_alone(tiny_bert, tiny_task):
    from lowrank_lab.train.plan import plan_packs

    cells = _cells(tiny_bert, tiny_task, r=(2,), lr=(1e-2, 3e-3), alpha=(4.0, 16.0), seeds=(0,))
    cells = [replace(c, train=replace(c.train, head_lr=c.train.lr / 2)) for c in cells]  # heads differ too
    assert [c.name for c in cells] == [f"lora-qv-r2-alpha_r-kaiming-alpha{a}-lr{lr}-seed0"
                                       for a in ("4", "16") for lr in ("0.01", "0.003")]
    assert len(plan_packs(cells, pack_size=8)) == 1  # learning rates and α do not split a pack
    task = load_task(cells[0].data)
    packed, packed_states = _train(cells, task, tiny_bert)
    moved = []
    for n, cell in enumerate(cells):
        alone, alone_states = _train([cell], task, tiny_bert)
        ours, theirs = cell_slices(packed, n), cell_slices(alone, 0)
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
        assert [h["train_loss"] for h in packed_states[n].history] == pytest.approx(
            [h["train_loss"] for h in alone_states[0].history], rel=1e-4)
        moved.append(next(v for k, v in ours.items() if "lora_B" in k).abs().sum().item())
    assert len({round(m, 6) for m in moved}) == len(cells)  # each cell really took its own steps


def test_training_lowers_the_loss_and_moves_delta_w_away_from_zero(tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, r=(4,))
    cells = [replace(c, train=replace(c.train, epochs=6, evals_per_epoch=1)) for c in cells]
    task = load_task(cells[0].data)
    pack, states = _train(cells, task, tiny_bert)
    losses = [h["train_loss"] for h in states[0].history]
    assert losses[-1] < losses[0]
    for layer in pack.layers.values():
        assert layer.B.abs().max() > 0  # B starts at 0, so ΔW = 0 until training moves it


def test_sentence_pairs_keep_their_segment_ids(tiny_bert):
    from lowrank_lab.train.data import Example
    from lowrank_lab.store.models import load_base

    _, tokenizer = load_base(str(tiny_bert))
    pairs = encode(tokenizer, [Example("a cat sat", "on the mat", 1), Example("yes", "no", 0)], 32, False)
    inputs, labels = pairs.batch(torch.tensor([0, 1]))
    types = inputs["token_type_ids"]
    assert types.shape == inputs["input_ids"].shape and labels.tolist() == [1, 0]
    # BERT marks the second sentence (and its [SEP]) with segment 1: "[CLS] a cat sat [SEP]" is 0.
    assert types[0].tolist()[:5] == [0, 0, 0, 0, 0] and types[0, 5:9].tolist() == [1, 1, 1, 1]
    assert (types * (1 - inputs["attention_mask"])).sum() == 0


def test_grouped_order_is_a_permutation_of_sorted_runs_aligned_across_cells():
    from lowrank_lab.train.batches import epoch_order

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (1000,), generator=gen)
    b, group = 8, 16
    full = len(lengths) // b * b
    widths = {}
    for seed in (0, 1, 2):
        order = epoch_order(len(lengths), seed, epoch=1, lengths=lengths, batch_size=b, group=group)
        assert sorted(order.tolist()) == list(range(len(lengths)))
        plain = epoch_order(len(lengths), seed, epoch=1)
        assert torch.equal(order[full:], plain[full:])  # the dropped tail is untouched
        for start in range(0, full, group * b):  # a run holds the same examples, sorted batch by batch
            run, ref = order[start:start + group * b], plain[start:start + group * b]
            assert sorted(run.tolist()) == sorted(ref.tolist())
            batches = lengths[run].reshape(-1, b)
            lo, hi = batches.min(1).values, batches.max(1).values
            ranks = lo.argsort(stable=True)
            assert (hi[ranks][:-1] <= lo[ranks][1:]).all()  # batches do not overlap in length
        widths[seed] = lengths[order[:full]].reshape(-1, b).max(1).values
    # Every cell is at the same length quantile at the same step: the pack's padded width (the
    # max over cells) stays near each cell's own, far below the ungrouped pack's.
    pack_width = torch.stack(list(widths.values())).max(0).values.float()
    own = torch.stack(list(widths.values())).float().mean(0)
    assert (pack_width - own).mean() < 4
    ungrouped = torch.stack([lengths[epoch_order(len(lengths), s, 1)[:full]].reshape(-1, b).max(1).values
                             for s in (0, 1, 2)]).max(0).values.float()
    assert pack_width.mean() < 0.8 * ungrouped.mean()


def test_grouped_packs_still_equal_cells_trained_alone(tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, r=(2, 4), seeds=(0, 1))[:3]
    cells = [replace(c, train=replace(c.train, group_by_length=2)) for c in cells]
    task = load_task(cells[0].data)
    packed, _ = _train(cells, task, tiny_bert)
    for n, cell in enumerate(cells):
        alone, _ = _train([cell], task, tiny_bert)
        for key, value in cell_slices(packed, n).items():
            torch.testing.assert_close(value, cell_slices(alone, 0)[key], rtol=1e-4, atol=1e-5, msg=key)


def test_packs_are_dealt_round_robin_so_each_holds_the_same_mix(tiny_bert, tiny_task):
    from lowrank_lab.train.plan import plan_packs

    cells = _cells(tiny_bert, tiny_task, r=(1, 2, 4, 8), seeds=(0, 1, 2), targets=("q", "q,k,v,o"))
    packs = plan_packs(cells, 10)
    assert [len(p) for p in packs] == [8, 8, 8]
    assert sorted(c.name for p in packs for c in p) == sorted(c.name for c in cells)
    for p in packs:  # every pack holds both target sets and every rank
        assert {c.lora.kinds for c in p} == {("q",), ("q", "k", "v", "o")}
        assert {c.lora.r for c in p} == {1, 2, 4, 8}


def test_gpu_precision_keeps_trained_tensors_float32_and_the_bf16_forward_close(tiny_bert, tiny_task):
    from lowrank_lab.train.pack import set_precision

    cells = _cells(tiny_bert, tiny_task, r=(2, 4))
    task = load_task(cells[0].data)
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack(cells, encoder, task.num_labels, "mean")
    for layer in pack.layers.values():  # a nonzero ΔW, so the adapters take part in the forward
        torch.nn.init.normal_(layer.B, std=0.1)
    inputs, _ = encode(tokenizer, task.train, 32, False).batch(torch.arange(8).repeat(2))
    reference = pack.model(**inputs)
    # The rule is decided by the device type alone; the casts themselves run on the CPU here.
    assert set_precision(pack, torch.device("cuda"), bf16=True) is False  # LoRA: no autocast
    assert all(p.dtype == torch.float32 for p in pack.trainable)
    frozen = [p for p in pack.model.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    logits = pack.model(**inputs)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=0.05, rtol=0.05)
    logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in pack.trainable)

    full = [c for c in _cells(tiny_bert, tiny_task, r=(2,), baselines=("full",)) if c.lora.method == "full"]
    full_pack = build_pack(full, load_base(str(tiny_bert))[0], task.num_labels, "mean")
    assert set_precision(full_pack, torch.device("cuda"), bf16=True) is True  # autocast, float32 masters
    assert all(p.dtype == torch.float32 for p in full_pack.model.parameters())
    assert set_precision(pack, torch.device("cpu"), bf16=True) is False


def test_step_meter_counts_steps_tokens_and_seconds(tiny_bert, tiny_task):
    from lowrank_lab.train.loop import StepMeter

    cells = _cells(tiny_bert, tiny_task, r=(2,))
    task = load_task(cells[0].data)
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack(cells, encoder, task.num_labels, "mean")
    train = encode(tokenizer, task.train, 32, False)
    meter = StepMeter()
    train_pack(pack, task, train, encode(tokenizer, task.dev, 32, False), tokenizer, torch.device("cpu"), meter=meter)
    steps = 2 * (len(train) // 8)  # 2 epochs of batch 8
    assert meter.steps == steps
    assert 0 < meter.tokens_real <= meter.tokens_padded <= (steps - 1) * 8 * train.input_ids.shape[1]
    assert meter.train_seconds > 0 and meter.warmup_seconds > 0 and meter.eval_seconds > 0


@pytest.mark.slow
def test_compiled_training_equals_eager(tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, r=(2, 4))
    task = load_task(cells[0].data)
    eager, _ = _train(cells, task, tiny_bert)
    compiled, _ = _train([replace(c, train=replace(c.train, compile=True)) for c in cells], task, tiny_bert)
    for n in range(len(cells)):
        for key, value in cell_slices(compiled, n).items():
            torch.testing.assert_close(value, cell_slices(eager, n)[key], rtol=1e-4, atol=1e-5, msg=key)
