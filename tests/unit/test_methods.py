"""The adapter baselines as sweep methods (issue 18): spec and cell names, packed cells equal cells
trained alone (per-cell clipping included), each method trains (loss falls) on an encoder and on a
decoder, a saved cell reloads and reproduces its outputs, and Table 2 gets their rows with the
count of their tensors equal to the paper's formula."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lowrank_lab.model.base import Classifier
from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SpecError, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.spec.load import load_spec
from lowrank_lab.store import layout, peft_format, runs
from lowrank_lab.store.models import load_base, load_model
from lowrank_lab.train.causal import causal_dev, causal_encoded
from lowrank_lab.train.data import load_task
from lowrank_lab.train.batches import encode
from lowrank_lab.train.loop import train_pack
from lowrank_lab.train.plan import plan_packs
from lowrank_lab.train.saving import save_cell
from lowrank_lab.train.sweep import Inputs, _build_pack, run_sweep

from test_decoder_train import save_decoder

METHODS = ("houlsby", "pfeiffer", "prefix")


def _cells(model, task, method, causal=False, **sweep):
    spec = ExperimentSpec(model=ModelSpec(name=str(model), pooling=None if causal else "mean", max_length=32),
                          data=DataSpec(task="file", path=str(task)),
                          train=TrainSpec(batch_size=8 if not causal else 4, epochs=2, evals_per_epoch=2,
                                          log_every=1, device="cpu"),
                          sweep=SweepSpec(**{"lr": (1e-2,), "baselines": (method,), **sweep}))
    return [c for c in expand_sweep(spec) if c.lora.method == method]


def _train(cells, model_dir, causal=False):
    loaded = load_model(str(model_dir))
    task = load_task(cells[0].data, causal=causal)
    if causal:
        train, dev = causal_encoded(loaded.tokenizer, task.train, 32)[0], causal_dev(loaded.tokenizer, task, 32)
    else:
        train, dev = (encode(loaded.tokenizer, split, 32, False) for split in (task.train, task.dev))
    inputs = Inputs(task, train, dev, loaded.module, loaded.tokenizer, "none" if causal else "mean", causal)
    pack = _build_pack(cells, inputs)
    return pack, train_pack(pack, task, train, dev, loaded.tokenizer, torch.device("cpu")), inputs


def test_the_new_methods_have_sizes_names_and_one_line_errors():
    spec = ExperimentSpec(sweep=SweepSpec(r=(8,), baselines=METHODS, bottleneck=(8, 32), prefix_length=(10,)))
    names = [c.name for c in expand_sweep(spec)][1:]
    assert names == ["houlsby-m8-seed0", "houlsby-m32-seed0", "pfeiffer-m8-seed0", "pfeiffer-m32-seed0",
                     "prefix-l10-seed0"]
    for key, value in (("bottleneck", (0,)), ("prefix_length", ())):
        with pytest.raises(SpecError, match=f"sweep.{key}"):
            SweepSpec(**{key: value})
    with pytest.raises(SpecError, match="lora.bottleneck is set by the sweep: use sweep.bottleneck"):
        load_spec(None, ["lora.bottleneck=4"])
    with pytest.raises(SpecError, match="sweep.baselines: 'adapter'"):
        SweepSpec(baselines=("adapter",))


@pytest.mark.parametrize("method", METHODS)
def test_packed_cells_equal_each_cell_trained_alone(method, tiny_bert, tiny_task):
    cells = _cells(tiny_bert, tiny_task, method, seeds=(0, 1), bottleneck=(2, 6), lr=(1e-2, 3e-3))[::2]
    assert len(cells) >= 2 and len(plan_packs(cells, 8)) == 1
    packed, packed_states, _ = _train(cells, tiny_bert)
    for n, cell in enumerate(cells):
        alone, alone_states, _ = _train([cell], tiny_bert)
        ours, theirs = packed.adapters.slices(n), alone.adapters.slices(0)
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5, msg=key)
        assert packed.adapters.count(n) == packed.adapters.formula(n)["value"]
        assert [h["train_loss"] for h in packed_states[n].history] == pytest.approx(
            [h["train_loss"] for h in alone_states[0].history], rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_the_loss_falls_and_its_adapter_moves(method, tiny_bert, tiny_task):
    (cell,) = _cells(tiny_bert, tiny_task, method, bottleneck=(4,), prefix_length=(4,))
    cell = replace(cell, train=replace(cell.train, epochs=6, evals_per_epoch=1))
    pack, states, _ = _train([cell], tiny_bert)
    losses = [h["train_loss"] for h in states[0].history]
    assert losses[-1] < losses[0]
    if method == "prefix":
        assert not torch.equal(pack.adapters.prefix.prompt, _train([replace(cell, train=replace(
            cell.train, max_steps=1))], tiny_bert)[0].adapters.prefix.prompt)
    else:
        assert all(layer.up.abs().max() > 0 for layer in pack.adapters.layers.values())  # W_up starts at 0


@pytest.mark.parametrize("method", ["pfeiffer", "prefix"])
def test_a_decoder_trains_with_the_new_methods(method, tmp_path):
    from conftest import write_tiny_task

    folder = save_decoder(tmp_path / "llama", "llama")
    task = write_tiny_task(tmp_path / "task.csv", n=40)
    (cell,) = _cells(folder, task, method, causal=True, lr=(3e-2,))
    pack, states, _ = _train([cell], folder, causal=True)
    assert not pack.heads and pack.adapters.count(0) == pack.adapters.formula(0)["value"]
    losses = [h["train_loss"] for h in states[0].history]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("method", METHODS)
def test_a_saved_cell_reloads_and_reproduces_its_outputs(method, tiny_bert, tiny_task, tmp_path):
    (cell,) = _cells(tiny_bert, tiny_task, method, bottleneck=(3,), prefix_length=(4,))
    pack, _, inputs = _train([cell], tiny_bert)
    batch, _ = inputs.dev.batch(torch.arange(6))
    pack.model.eval()
    with torch.no_grad():
        expected = pack.model(**batch)
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    encoder, _ = load_base(str(tiny_bert))
    folder = peft_format.method_adapter_dir(tmp_path, method)
    assert not layout.adapter_dir(tmp_path).exists()  # adapter/ holds LoRA adapters only
    if method == "prefix":
        peft_format.load_prefix(encoder, folder)
    else:
        peft_format.load_bottleneck(encoder, folder)
    weight, bias, pooling = peft_format.read_head(tmp_path)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
        torch.testing.assert_close(Classifier(encoder, head, pooling).eval()(**batch), expected, rtol=1e-5, atol=1e-6)


def test_a_sweep_prints_its_packing_and_table2_gets_rows_counted_and_by_formula(tiny_bert, tiny_task, tmp_path):
    from lowrank_lab.analysis.tables import results_table
    from lowrank_lab.present import registry

    spec = load_spec(None, [f"model.name={tiny_bert}", "data.task=file", f"data.path={tiny_task}",
                            f"sweep.out_dir={tmp_path}", "sweep.r=[2]", "sweep.baselines=['houlsby','pfeiffer','prefix','bitfit']",
                            "sweep.bottleneck=[4]", "sweep.prefix_length=[3]", "train.device=cpu", "train.batch_size=8"])
    printed = []
    sweep = run_sweep(spec, echo=printed.append)
    assert any("packed (K cells per pack" in line and "houlsby" in line and "cell by cell" in line and "bitfit" in line
               for line in printed)
    done = runs.load_sweep(sweep)
    results = results_table((r.path.name, r.spec, r.summary) for r in done)
    new = results[results["method"].isin(METHODS)]
    assert len(new) == 3 and (new["trainable_adapter"] == new["trainable_by_formula"]).all()
    # d = 16, 2 layers: Houlsby 4·(2·16·4 + 4 + 16), Pfeiffer 2·(…), prefix 2·L·l_p·d_kv = 2·2·3·16
    assert dict(zip(new["method"], new["trainable_adapter"], strict=True)) == {"houlsby": 592, "pfeiffer": 296,
                                                                                "prefix": 192}
    table = registry.entry("table2_methods").render({"results": results.assign(value=results["value"])})
    assert {"Adapter^H m=4", "Adapter^P m=4", "Prefix l_p=3"} <= set(table.index)
    assert table.loc["Adapter^H m=4", "by the formula (excl. head)"] == 592
    assert list(table.index).index("BitFit") < list(table.index).index("Adapter^H m=4") < list(table.index).index("LoRA q,v r=2")
    paper = registry.entry("table2_methods").paper_table
    assert paper.loc["RoBERTa-large LoRA", "MNLI (%)"] == "90.6±.2" and "RoBERTa-large Adpt^H†" in paper.index
