"""Adapters on disk in PEFT's format: read back by lowrank-lab, loaded by PEFT with equal outputs."""

import json

import pytest
import torch
from torch import nn

from lowrank_lab.store import peft_format
from lowrank_lab.store import runs
from lowrank_lab.spec import CellSpec, DataSpec, LoRASpec, ModelSpec, TrainSpec
from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.model.base import Classifier, load_base
from lowrank_lab.train.sweep import save_cell
from lowrank_lab.train.loop import build_pack

peft = pytest.importorskip("peft")


def _trained_pack(model_name, targets, r, rule, gen):
    """A pack of one cell with random, non-zero A, B and head, as if trained."""
    cell = CellSpec(ModelSpec(name=model_name), DataSpec(), LoRASpec(targets=targets, r=r, alpha=8.0,
                                                                    scaling_rule=rule), TrainSpec())
    encoder, tokenizer = load_base(model_name)
    pack = build_pack([cell], encoder, 2, "mean")
    with torch.no_grad():
        for layer in pack.layers.values():
            layer.B.normal_(generator=gen)
        pack.model.head.weight.normal_(generator=gen)
    return pack, tokenizer


def _peft_outputs(model_name, folder, inputs):
    encoder, _ = load_base(model_name)
    plain = Classifier(encoder, nn.Linear(encoder.config.hidden_size, 2), "mean")
    model = peft.PeftModel.from_pretrained(plain, str(folder))
    model.eval()
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize("model", ["tiny", "embedded"])
@pytest.mark.parametrize("rule", ["alpha/r", "alpha/sqrt(r)"])
def test_saved_adapter_loads_in_peft_with_the_same_outputs(model, rule, tiny_bert, tmp_path, gen):
    name = str(tiny_bert) if model == "tiny" else "embedded"
    pack, tokenizer = _trained_pack(name, "q,k,v,o", 4, rule, gen)
    save_cell(tmp_path, pack, 0, name)
    inputs = dict(tokenizer(["a wonderful film", "a dull, tedious mess of a movie"], padding=True, return_tensors="pt"))
    pack.model.eval()
    with torch.no_grad():
        ours = pack.model(**inputs)
    theirs = _peft_outputs(name, tmp_path / "adapter", inputs)
    assert ours.abs().max() > 0
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_read_adapter_returns_the_saved_factors_and_scaling(tiny_bert, tmp_path, gen):
    pack, _ = _trained_pack(str(tiny_bert), "q,v", 2, "alpha/sqrt(r)", gen)
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    config, updates, other = peft_format.read_adapter(tmp_path / "adapter")
    assert config["use_rslora"] is True and set(other) == {"head.weight", "head.bias"}
    assert sorted(u.label for u in updates.values()) == ["L0.q", "L0.v", "L1.q", "L1.v"]
    for path, layer in pack.layers.items():
        u = updates[path]
        torch.testing.assert_close(u.A, layer.A[0].detach())
        torch.testing.assert_close(u.B, layer.B[0].detach())
        assert u.scaling == pytest.approx(scaling_factor(8.0, 2, "alpha/sqrt(r)"))


def test_rank_pattern_gives_each_module_its_own_rank_and_scaling(tmp_path, gen):
    updates = [runs.LowRankUpdate("L0.q", "m.q", torch.randn(2, 6, generator=gen), torch.randn(5, 2, generator=gen), 1.0),
               runs.LowRankUpdate("L0.v", "m.v", torch.randn(4, 6, generator=gen), torch.randn(5, 4, generator=gen), 1.0)]
    peft_format.save_adapter(tmp_path, updates, base_model="x", revision=None, alpha=8.0, scaling_rule="alpha/r",
                      init="kaiming", dropout=0.0)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["rank_pattern"] and len(config["rank_pattern"]) == 1
    _, read, _ = peft_format.read_adapter(tmp_path)
    assert {p: (u.r, u.scaling) for p, u in read.items()} == {"m.q": (2, 4.0), "m.v": (4, 2.0)}
