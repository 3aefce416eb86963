"""Bottleneck adapters (issue 18): the parameter count is the paper's formula, the model at
initialisation is the base exactly, packed adapters equal each adapter alone (padding stays zero),
and a saved adapter reloads and reproduces its outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from lowrank_lab.model.base import find_targets
from lowrank_lab.model.bottleneck import (ACTIVATIONS, PLACEMENTS, BottleneckAdapter, adapter_parameters,
                                          inject_bottleneck, reset_bottleneck)
from lowrank_lab.store import peft_format


def tiny(arch: str):
    torch.manual_seed(0)
    if arch == "bert":
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=32, hidden_dropout_prob=0.0)).eval()
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def out(model, ids):
    result = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return result.last_hidden_state if hasattr(result, "last_hidden_state") else result.logits


def adapt(model, method: str, sizes, seed: int = 0):
    for p in model.parameters():  # a frozen base, as build_pack leaves it
        p.requires_grad_(False)
    paths = list(find_targets(model, PLACEMENTS[method]).values())
    layers = inject_bottleneck(model, paths, sizes, ACTIVATIONS[method])
    for n in range(len(sizes)):
        reset_bottleneck(layers, n, seed + n)
    return layers


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_parameter_count_is_the_papers_formula_and_the_model_starts_as_the_base(arch, method):
    base = tiny(arch)
    ids = torch.randint(0, 50, (3, 7))
    model = copy.deepcopy(base)
    layers = adapt(model, method, [5])
    n_layers = 2
    assert len(layers) == n_layers * len(PLACEMENTS[method])  # Houlsby: 2 per layer, Pfeiffer: 1
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # |Θ| = L̂_Adpt·(2·d·m + m + d), d = 16, m = 5: 2·16·5 + 5 + 16 = 181 per adapter
    assert trained == adapter_parameters(16, 5, len(layers)) == 181 * len(layers)
    assert torch.equal(out(model, ids), out(base, ids))  # W_up = 0, b_up = 0: exactly the base
    assert all(layer.down.abs().sum() > 0 for layer in layers.values())  # W_down is not zero


def test_each_adapter_is_the_residual_mlp_of_its_formula():
    base = torch.nn.Linear(6, 4)
    layer = BottleneckAdapter(copy.deepcopy(base), [3], "relu")
    layer.reset_adapter(0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer.up.normal_()
        layer.up_bias.normal_()
    x = torch.randn(5, 6)
    h = base(x)
    f = layer.factors(0)
    expected = h + torch.relu(h @ f["down"].T + f["down_bias"]) @ f["up"].T + f["up_bias"]
    torch.testing.assert_close(layer(x), expected)


def test_packed_adapters_of_different_sizes_equal_each_alone_and_padding_gets_no_gradient():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 8)
    packed = BottleneckAdapter(copy.deepcopy(base), [2, 5], "silu")
    alone = [BottleneckAdapter(copy.deepcopy(base), [m], "silu") for m in (2, 5)]
    for n, layer in enumerate(alone):
        packed.reset_adapter(n, torch.Generator().manual_seed(n))
        layer.reset_adapter(0, torch.Generator().manual_seed(n))
        with torch.no_grad():  # a trained W_up, so that every weight gets a gradient
            up = torch.randn(8, layer.sizes[0])
            layer.up[0].copy_(up)
            packed.up[n, :, : layer.sizes[0]].copy_(up)
    x = torch.randn(2, 3, 8)  # rows 0 and 1 belong to adapters 0 and 1
    packed(x).square().sum().backward()
    for n, layer in enumerate(alone):
        layer(x[n : n + 1]).square().sum().backward()
        torch.testing.assert_close(packed.up.grad[n, :, : layer.sizes[0]], layer.up.grad[0])
        torch.testing.assert_close(packed.down.grad[n, : layer.sizes[0]], layer.down.grad[0])
    assert packed.down.grad[0, 2:].abs().sum() == 0 and packed.up.grad[0, :, 2:].abs().sum() == 0
    assert packed.down_bias.grad[0, 2:].abs().sum() == 0


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_a_saved_bottleneck_adapter_reloads_and_reproduces_its_outputs(arch, tmp_path):
    base = tiny(arch)
    model = copy.deepcopy(base)
    layers = adapt(model, "houlsby", [4])
    with torch.no_grad():
        for layer in layers.values():
            layer.up.normal_(std=0.1)
            layer.up_bias.normal_(std=0.1)
    ids = torch.randint(0, 50, (2, 6))
    tensors = {f"{p}.{k}": v.detach().clone() for p, layer in layers.items() for k, v in layer.factors(0).items()}
    peft_format.save_bottleneck(tmp_path, tensors, method="houlsby", bottleneck=4, activation=ACTIVATIONS["houlsby"],
                                base_model="tiny", revision=None, task_type="FEATURE_EXTRACTION")
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))  # safetensors only
    reloaded = copy.deepcopy(base)
    peft_format.load_bottleneck(reloaded, tmp_path)
    assert not torch.equal(out(model, ids), out(base, ids))
    torch.testing.assert_close(out(reloaded, ids), out(model, ids), rtol=0, atol=0)


def test_a_bottleneck_file_of_another_size_is_refused_with_the_key(tmp_path):
    model = tiny("bert")
    layers = adapt(model, "pfeiffer", [4])
    tensors = {f"{p}.{k}": v.detach().clone() for p, layer in layers.items() for k, v in layer.factors(0).items()}
    peft_format.save_bottleneck(tmp_path, tensors, method="pfeiffer", bottleneck=8, activation="relu",
                                base_model="tiny", revision=None, task_type="FEATURE_EXTRACTION")
    with pytest.raises(Exception, match="bottleneck size m = 8"):
        peft_format.read_bottleneck(tmp_path)
