"""A decoder rank sweep end to end on tiny GPT-2 (Conv1D, fused c_attn): its cells save PEFT CAUSAL_LM
adapters that PeftModel loads on AutoModelForCausalLM with identical logits, the summary says where the
data and W0 came from, and the sweep's analysis tables carry MLP labels."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lowrank_lab.spec import load_spec
from lowrank_lab.store import layout, runs
from lowrank_lab.train.sweep import run_sweep

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_decoder_train import save_decoder, word_tokenizer  # noqa: E402

from conftest import write_tiny_task  # noqa: E402


@pytest.fixture(scope="module")
def decoder_sweep(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("decoder-sweep")
    gpt2 = save_decoder(tmp / "gpt2", "gpt2")
    task = write_tiny_task(tmp / "task.csv", n=40)
    values = {"model.name": f'"{gpt2}"', "model.max_length": 32, "data.task": "file", "data.path": f'"{task}"',
              "sweep.out_dir": f'"{tmp / "runs"}"', "sweep.r": "[2,4]", "sweep.seeds": "[0,1]",
              "sweep.targets": '["q,v", "all-linear"]', "train.batch_size": 4, "sweep.lr": "[2e-2]",
              "sweep.alpha": "[4.0]", "train.device": "cpu", "train.evals_per_epoch": 1}
    spec = load_spec(None, [f"{k}={v}" for k, v in values.items()])
    return run_sweep(spec, echo=lambda *_: None)


def test_decoder_cells_load_with_peft_on_the_causal_lm_with_identical_logits(decoder_sweep):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lowrank_lab.store.models import load_model
    from lowrank_lab.train.pack import build_pack

    manifest = layout.read_manifest(decoder_sweep)
    assert len(manifest.cells) == 8 and set(manifest.names("done")) == set(manifest.cells)
    ids = word_tokenizer()(["Text: a wonderful film Label: 1", "Text: I hated it Label: 0"])["input_ids"]
    ids = torch.tensor(ids)
    for run in runs.load_sweep(decoder_sweep):
        adapter = layout.adapter_dir(run.path)
        assert not (run.path / "head.safetensors").exists()
        base = AutoModelForCausalLM.from_pretrained(run.spec.model.name)
        peft = PeftModel.from_pretrained(base, adapter).eval()
        assert peft.peft_config["default"].task_type == "CAUSAL_LM"
        ours = build_pack([run.spec], load_model(run.spec.model.name).module, 0, "none", decoder=True)
        with torch.no_grad():
            for path, layer in ours.layers.items():
                u = run.updates[ours.labels[path]]
                layer.A[0, :u.r], layer.B[0, :, :u.r] = u.A, u.B
            torch.testing.assert_close(peft(input_ids=ids).logits, ours.model.eval()(input_ids=ids).logits,
                                       rtol=1e-5, atol=1e-5)
        assert any(u.B.abs().max() > 0 for u in run.updates.values())
        summary = run.summary
        assert summary.main_metric == "accuracy" and {"completion_loss", "perplexity"} <= set(summary.best)
        assert summary.trainable_parameters.head == 0
        assert summary.provenance["model"]["kind"] == "causal" and "fitted" in summary.data
        if run.spec.lora.targets == "all-linear":
            assert {"L0.qkv", "L0.o", "L0.up", "L0.down"} <= set(run.updates)


def test_decoder_sweep_analysis_tables_label_mlp_matrices(decoder_sweep):
    from lowrank_lab.workflow.sweep import ensure_tables

    paths = ensure_tables(decoder_sweep, echo=lambda *_: None)
    tables = {p.stem: p for p in paths if p.suffix == ".parquet"}
    amplification = pd.read_parquet(next(p for name, p in tables.items() if "amplification" in name))
    assert {"up", "down", "qkv"} <= set(amplification["module"])
    phi = pd.read_parquet(next(p for name, p in tables.items() if name.startswith("phi")))
    assert not phi.empty
