"""Decoder adapters as a PEFT user loads them: ``PeftModel.from_pretrained(AutoModelForCausalLM.
from_pretrained(base), adapter)`` with task_type CAUSAL_LM, no missing or unexpected keys, and the
logits of our LoRALinear forward. Tiny GPT-2 (Conv1D, fused c_attn: fan_in_fan_out) and tiny Llama
with grouped-query attention (k_proj, v_proj with d ≠ k)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.model.base import find_targets
from lowrank_lab.model.lora import inject
from lowrank_lab.store import peft_format
from lowrank_lab.store.models import load_model
from tests.unit.test_decoder_model import tiny_gpt2, tiny_llama

peft = pytest.importorskip("peft")

from conftest import peft_from_pretrained  # noqa: E402

IDS = torch.tensor([[1, 5, 9, 3, 7, 2], [4, 4, 8, 60, 11, 0]])


def _base_folder(model, folder: Path) -> Path:
    """The model's folder, with the embedded model's tokenizer (only its pad token is used here)."""
    from transformers import AutoTokenizer

    from lowrank_lab.store.models import embedded_model_dir

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded_model_dir(verify=False)).save_pretrained(folder)
    return folder


def _our_adapted_model(folder: Path, kinds: tuple[str, ...], ranks: dict[str, int], gen, alpha: float = 4.0):
    """Our model: the base loaded by lowrank-lab, LoRALinear (one adapter) on every target, random
    non-zero A and B; returns it and the updates to save (paths relative to AutoModelForCausalLM)."""
    loaded = load_model(str(folder))
    assert loaded.is_decoder
    model = loaded.module.eval()
    targets = find_targets(model, kinds)
    r_of = {p: ranks.get(label.split(".", 1)[1], 2) for label, p in targets.items()}
    layers = inject(model, list(targets.values()), [[r_of[p]] for p in targets.values()], [1.0])
    updates = []
    with torch.no_grad():
        for (label, path), layer in zip(targets.items(), layers.values(), strict=True):
            layer.A.normal_(generator=gen)
            layer.B.normal_(generator=gen).mul_(0.3)
            layer.scaling.fill_(alpha / layer.ranks[0])
            A, B, s = layer.factors(0)
            updates.append(LowRankUpdate(label, path, A.clone(), B.clone(), s, layer.fan_in_fan_out))
    return model, updates, loaded.task_type


def _peft_logits(folder: Path, adapter: Path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model, result, serious = peft_from_pretrained(base, adapter)
    with torch.no_grad():
        return model(input_ids=IDS).logits, result, serious, model


@pytest.mark.parametrize("make, kinds, ranks", [
    (tiny_gpt2, ("qkv",), {}),
    (tiny_gpt2, ("all-linear",), {"up": 3}),
    (tiny_llama, ("all-linear",), {"k": 1, "v": 4}),
], ids=["gpt2-qkv", "gpt2-all-linear", "llama-gqa-all-linear"])
def test_peft_loads_decoder_adapters_with_our_logits(make, kinds, ranks, tmp_path, gen):
    folder = _base_folder(make(), tmp_path / "base")
    ours, updates, task_type = _our_adapted_model(folder, kinds, ranks, gen)
    assert task_type == "CAUSAL_LM"
    adapter = tmp_path / "adapter"
    peft_format.save_adapter(adapter, updates, base_model=str(folder), revision=None, alpha=4.0,
                             scaling_rule="alpha/r", init="kaiming", dropout=0.0, task_type=task_type)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM"
    assert config["fan_in_fan_out"] is (make is tiny_gpt2)  # GPT-2's Conv1D stores W0ᵀ

    logits, result, serious, pm = _peft_logits(folder, adapter)
    assert not serious and not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        expected = ours(input_ids=IDS).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # the adapter changes the output, so equal logits are not the base's by accident
    with torch.no_grad(), pm.disable_adapter():
        assert not torch.allclose(pm(input_ids=IDS).logits, expected, atol=1e-3)


def test_decoder_adapter_reads_back_with_labels_and_shapes(tmp_path, gen):
    folder = _base_folder(tiny_llama(), tmp_path / "base")
    _, updates, task_type = _our_adapted_model(folder, ("all-linear",), {"k": 1}, gen)
    peft_format.save_adapter(tmp_path / "adapter", updates, base_model=str(folder), revision=None, alpha=4.0,
                             scaling_rule="alpha/r", init="kaiming", dropout=0.0, task_type=task_type)
    _, read, _ = peft_format.read_adapter(tmp_path / "adapter")
    assert {u.label for u in read.values()} == {u.label for u in updates} and len(read) == 14
    k = read["model.layers.0.self_attn.k_proj"]
    assert k.label == "L0.k" and k.r == 1 and k.delta_w().shape == (8, 16)  # GQA: d = 8 ≠ k = 16
    gpt2 = _base_folder(tiny_gpt2(layers=1), tmp_path / "gpt2")
    _, updates, _ = _our_adapted_model(gpt2, ("qkv",), {}, gen)
    assert updates[0].delta_w().shape == (48, 16) and updates[0].fan_in_fan_out  # c_attn: d = 3·hidden
