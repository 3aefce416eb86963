"""Adapters on disk in PEFT's format, read back by lowrank-lab (loading them in PEFT: test_peft_load)."""

import json

import pytest
import torch

from lowrank_lab.maths.linalg import scaling_factor
from lowrank_lab.model.base import CLASSIFIER_PREFIX
from lowrank_lab.store import peft_format, runs
from lowrank_lab.store.models import load_base
from lowrank_lab.train.saving import save_cell
from tests.unit.test_peft_load import _trained_pack


def test_read_adapter_returns_the_saved_factors_and_scaling(tiny_bert, tmp_path, gen):
    pack, _ = _trained_pack(str(tiny_bert), "q,v", 2, "alpha/sqrt(r)", gen)
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    config, updates, other = peft_format.read_adapter(tmp_path / "adapter")
    assert config["use_rslora"] is True and other == {}  # the head is beside the adapter, not in it
    assert sorted(u.label for u in updates.values()) == ["L0.q", "L0.v", "L1.q", "L1.v"]
    for path, layer in pack.layers.items():
        u = updates[path.removeprefix(CLASSIFIER_PREFIX)]  # paths of the plain base model
        torch.testing.assert_close(u.A, layer.A[0].detach())
        torch.testing.assert_close(u.B, layer.B[0].detach())
        assert u.scaling == pytest.approx(scaling_factor(8.0, 2, "alpha/sqrt(r)"))
    weight, bias, pooling = peft_format.read_head(tmp_path)
    assert torch.equal(weight, pack.model.head.weight[0].detach()) and pooling == "mean"
    assert torch.equal(bias, pack.model.head.bias[0].detach())


def test_saved_paths_are_modules_of_the_plain_encoder(tiny_bert, tmp_path, gen):
    pack, _ = _trained_pack(str(tiny_bert), "q", 1, "alpha/r", gen)
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    _, updates, _ = peft_format.read_adapter(tmp_path / "adapter")
    encoder, _ = load_base(str(tiny_bert))
    for u in updates.values():  # every path names a module of the plain encoder
        assert encoder.get_submodule(u.path).weight.shape == (u.B.shape[0], u.A.shape[1])


def test_rank_pattern_gives_each_module_its_own_rank_and_scaling(tmp_path, gen):
    updates = [runs.LowRankUpdate("L0.q", "m.q", torch.randn(2, 6, generator=gen), torch.randn(5, 2, generator=gen), 1.0),
               runs.LowRankUpdate("L0.v", "m.v", torch.randn(4, 6, generator=gen), torch.randn(5, 4, generator=gen), 1.0)]
    peft_format.save_adapter(tmp_path, updates, base_model="x", revision=None, alpha=8.0, scaling_rule="alpha/r",
                      init="kaiming", dropout=0.0)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["rank_pattern"] and len(config["rank_pattern"]) == 1
    _, read, _ = peft_format.read_adapter(tmp_path)
    assert {p: (u.r, u.scaling) for p, u in read.items()} == {"m.q": (2, 4.0), "m.v": (4, 2.0)}
