"""The memory plan (issue 27, ``train.plan``): its counts against the pack it plans (the trained
elements are exactly the pack's trainable tensors, the base's bytes its parameters'), the pack size
against the budget, ``rank-sweep`` printing it before the model loads, and a pack that runs out of
memory split in two and retried, said in the log and in each cell's summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep, load_spec
from lowrank_lab.store import layout
from lowrank_lab.store.models import load_base
from lowrank_lab.train import plan
from lowrank_lab.train.pack import build_pack


def _llama(device="cpu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def _cells(method="lora", **sweep):
    spec = ExperimentSpec(model=ModelSpec(name="x"), data=DataSpec(task="file", path="x"), train=TrainSpec(device="cpu"),
                          sweep=SweepSpec(**{"r": (1, 4, 2), "alpha": (4.0,), "targets": ("q,v", "all-linear"), **sweep}))
    cells = expand_sweep(spec)
    return [c for c in cells if c.lora.method == method]


@pytest.mark.parametrize("method", ["lora", "full", "bitfit"])
def test_trained_elements_are_the_packs_trainable_tensors(method, tiny_bert):
    cells = _cells(method, baselines=(method,) if method != "lora" else ())
    encoder = load_base(str(tiny_bert))[0]
    targets = plan.target_shapes(encoder, cells)
    expected = plan.trained_elements(cells, encoder, targets, 3, decoder=False)
    pack = build_pack(cells[:1] if method != "lora" else cells, encoder, 3, "mean")
    assert expected == sum(p.numel() for p in pack.trainable)


def test_a_decoders_lora_elements_and_base_bytes_from_the_meta_model_equal_the_real_ones():
    cells = _cells()
    meta, real = _llama("meta"), _llama()
    elements = plan.trained_elements(cells, meta, plan.target_shapes(meta, cells), 0, decoder=True)
    assert elements == sum(p.numel() for p in build_pack(cells, real, 0, "none", decoder=True).trainable)
    n = sum(p.numel() for p in _llama().parameters()) + sum(b.numel() for b in _llama().buffers())
    assert plan.base_bytes(meta, 2) == 2 * n and plan.base_bytes(meta, 4) == 4 * n


def test_the_pack_size_is_what_fits_the_budget():
    cells = _cells()
    meta = _llama("meta")
    shape, tokens = plan.Shape.of(meta.config, True), plan.Tokens.bound(8, 32)
    base = plan.base_bytes(meta, 4)
    one = plan.estimate_pack([max(cells, key=lambda c: c.lora.r)], meta, shape, plan.target_shapes(meta, cells),
                             tokens, "cpu", 0, base)
    per_cell = one.peak_bytes - base
    assert per_cell > 0 and one.activation_bytes > 0 and one.trained_bytes > 0
    fit = lambda budget, wanted=6: plan.fit_pack_size(cells, meta, shape, tokens, "cpu", 0, budget, wanted)  # noqa: E731
    assert fit(base + int(3.5 * per_cell)) == 3
    assert fit(base + 10 * per_cell) == 6  # never more than wanted
    assert fit(base // 2) == 1  # nothing fits: one cell is tried
    assert fit(None) == 6
    estimate = plan.memory_plan([cells[:3], cells[3:]], meta, True, tokens, "cpu", 0, None)
    assert [p.cells for p in estimate.packs] == [3, len(cells) - 3]
    assert estimate.peak_bytes == max(p.peak_bytes for p in estimate.packs) > base


def test_checkpointing_lowers_the_activation_estimate_to_one_layer_and_the_layer_inputs():
    meta = _llama("meta")
    shape, tokens = plan.Shape.of(meta.config, True), plan.Tokens(100, 0, 10)
    a = plan.layer_elements(shape, 6, 10, False)
    assert a == 7 * 16 + 2 * 8 + 4 * 32 + 6  # 7·d + 2·d_kv + 4·d_ff + Σ r (d_kv: 2 kv heads × 4)
    plain = plan.activation_bytes(shape, tokens, 4, 6, False, False)
    kept = plan.activation_bytes(shape, tokens, 4, 6, True, False)
    assert plain == 4 * 100 * (3 * a + 16) and kept == 4 * 100 * (2 * 16 + 2 * a + 16)


def _spec(tiny_bert, tiny_task, out, **extra):
    sets = {"model.name": str(tiny_bert), "model.pooling": "mean", "data.task": "file", "data.path": str(tiny_task),
            "sweep.out_dir": str(out), "sweep.r": "[1,2,4,8]", "train.batch_size": 8, "model.max_length": 16,
            "train.device": "cpu", "train.max_steps": 3, **extra}
    return load_spec(None, [f"{k}={v}" for k, v in sets.items()])


def test_rank_sweep_prints_the_plan_before_the_model_loads(tiny_bert, tiny_task, tmp_path, monkeypatch):
    from lowrank_lab.train import sweep as sweep_module

    events = []
    loader = sweep_module.load_model
    monkeypatch.setattr(sweep_module, "load_model", lambda *a, **k: events.append("model loaded") or loader(*a, **k))
    sweep_module.run_sweep(_spec(tiny_bert, tiny_task, tmp_path), echo=events.append)
    assert events[0].startswith("memory plan (host memory, base in float32") and "model loaded" in events
    assert events.index("model loaded") > 2
    assert events[1] == "  1 pack(s), cells per pack: 4" and events[2].startswith("  pack 1: 4 cells, estimated peak")


def test_a_pack_out_of_memory_is_split_in_two_and_retried_no_finished_cell_lost(tiny_bert, tiny_task, tmp_path,
                                                                                 monkeypatch):
    from lowrank_lab.train import sweep as sweep_module

    train_pack = sweep_module.train_pack
    sizes = []

    def short_of_memory(pack, *args, **kwargs):
        sizes.append(pack.K)
        if pack.K > 2:  # as a GPU too small for four cells' activations
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return train_pack(pack, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "train_pack", short_of_memory)
    spec = _spec(tiny_bert, tiny_task, tmp_path, **{"sweep.pack": 3, "sweep.r": "[1,2,4,8,16]"})
    messages = []
    sweep = sweep_module.run_sweep(spec, echo=messages.append)
    assert sizes == [3, 2, 1, 2]  # packs of 3 and 2 planned; the 3 split into 2 and 1, before the planned 2
    split = [m for m in messages if "ran out of memory" in m]
    assert len(split) == 1 and "CUDA out of memory. Tried to allocate 2.00 GiB" in split[0]
    assert "pack of 3 cells" in split[0] and "split into packs of 2 and 1, retried" in split[0]
    manifest = layout.read_manifest(sweep)
    assert sorted(manifest.names("done")) == sorted(c.name for c in expand_sweep(spec))
    summaries = [layout.read_summary(layout.cell_dir(sweep, n)) for n in manifest.names("done")]
    assert sorted(s.pack.out_of_memory_splits for s in summaries) == [0, 0, 1, 1, 1]
    assert sorted(s.pack.size for s in summaries if s.pack.out_of_memory_splits) == [1, 2, 2]
    assert not (sweep / "packs").exists()  # the failed pack's checkpoint went with it


def test_a_single_cell_out_of_memory_still_stops_the_sweep(tiny_bert, tiny_task, tmp_path, monkeypatch):
    from lowrank_lab.train import sweep as sweep_module

    def no_memory(pack, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(sweep_module, "train_pack", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        sweep_module.run_sweep(_spec(tiny_bert, tiny_task, tmp_path, **{"sweep.pack": 1, "sweep.r": "[1]"}),
                               echo=lambda *_: None)


BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_peft_cells.py"


def _measured(side: str, device: str = "cpu") -> dict:
    args = [sys.executable, str(BENCH), "--side", side, "--shape", "small", "--device", device, "--ranks", "4,16",
            "--seeds", "0", "--steps", "2", "--max-length", "128", "--batch-size", "4", "--examples", "32", "--dev", "4"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_planned_peak_is_within_the_measured_host_peak_by_a_generous_margin():
    """On the CPU the measured peak is the process's peak resident memory above what it held before
    building the model (benchmarks/bench_peft_cells.py's packed side): allocator slack and the
    interpreter's own allocations come on top of the plan, so the margin is generous."""
    plain, kept = _measured("packed"), _measured("packed-ckpt")
    for run in (plain, kept):
        assert 0.67 < run["peak_bytes"] / run["planned_bytes"] < 1.6, run
    assert kept["planned_bytes"] < plain["planned_bytes"] and kept["peak_bytes"] < plain["peak_bytes"]


@pytest.mark.gpu
def test_the_planned_peak_is_within_the_measured_gpu_peak():
    plain, kept = _measured("packed", "cuda"), _measured("packed-ckpt", "cuda")
    for run in (plain, kept):
        assert 0.67 < run["peak_bytes"] / run["planned_bytes"] < 1.5, run


def test_packs_share_a_frozen_base_in_its_training_precision_and_full_fine_tuning_copies_it(tiny_bert):
    from lowrank_lab.train.examples import Task
    from lowrank_lab.train.sweep import Inputs, _build_pack

    encoder = load_base(str(tiny_bert))[0]
    inputs = Inputs(Task("t", (), (), 2, ("accuracy",), "accuracy", {}), None, None, encoder, None, "mean")
    W = encoder.embeddings.word_embeddings.weight
    shared = [_build_pack(_cells()[:2], inputs, torch.device("cpu")) for _ in range(2)]
    assert all(p.base.embeddings.word_embeddings.weight is W for p in shared)  # one base, not a copy per pack
    assert all(p.base is not encoder for p in shared)  # the modules are copied (LoRA is injected into them)
    full = _build_pack(_cells("full", baselines=("full",))[:1], inputs, torch.device("cpu"))
    copied = full.base.embeddings.word_embeddings.weight
    assert copied is not W and torch.equal(copied, W) and copied.requires_grad and not W.requires_grad
