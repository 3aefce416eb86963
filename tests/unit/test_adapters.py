"""adapters: real PEFT adapters on tiny BERT, RoBERTa, GPT-2 and Llama, checked module by module
against PEFT's own get_delta_weight / merge; W0 read lazily against the model's own weight; every
malformed input gives a RunError naming the file and the key."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

peft = pytest.importorskip("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lowrank_lab.store import peft_format
from lowrank_lab.store.adapters import LazyWeights, find_adapters, load_all, load_external  # noqa: E402
from lowrank_lab.maths.linalg import delta_w  # noqa: E402
from lowrank_lab.store.files import RunError  # noqa: E402

H = 32  # hidden size of every tiny model


def _bert(cls_name: str):
    import transformers

    Config = transformers.RobertaConfig if "Roberta" in cls_name else transformers.BertConfig
    config = Config(vocab_size=100, hidden_size=H, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=2 * H, max_position_embeddings=40, num_labels=2)
    return getattr(transformers, cls_name)(config)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_embd=H, n_layer=2, n_head=2, vocab_size=100, n_positions=32,
                                      bos_token_id=0, eos_token_id=0))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=H, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, vocab_size=100,
                                        max_position_embeddings=32))


def _lora_modules(pm) -> dict[str, torch.nn.Module]:
    return {name.removeprefix("base_model.model."): m for name, m in pm.named_modules()
            if hasattr(m, "lora_A") and "default" in m.lora_A}


def _expected_delta(module, adapter="default") -> torch.Tensor:
    """ΔW in out×in from PEFT itself: get_delta_weight, or W' − W for DoRA through a real merge."""
    W = module.get_base_layer().weight
    if module.lora_magnitude_vector and adapter in module.lora_magnitude_vector:
        before = W.detach().clone()
        module.merge(safe_merge=True, adapter_names=[adapter])
        delta = module.get_base_layer().weight.detach() - before
        module.unmerge()
    else:
        delta = module.get_delta_weight(adapter).detach()
    return delta.mT if module.fan_in_fan_out else delta


def _base_W0(module) -> torch.Tensor:
    W = module.get_base_layer().weight.detach()
    return W.mT if module.fan_in_fan_out else W


CASES = {
    # name: (model factory, what to save as the base, LoraConfig kwargs, shard size)
    "bert": (lambda: _bert("BertForSequenceClassification"), lambda m: m.bert,
             dict(target_modules=["query", "key", "value", "dense"], r=4, lora_alpha=8), None),
    "roberta": (lambda: _bert("RobertaForSequenceClassification"), lambda m: m.roberta,
                dict(target_modules=r".*attention\.self\.(query|value)", r=3, lora_alpha=6, use_rslora=True), None),
    "gpt2": (_gpt2, lambda m: m, dict(target_modules=["c_attn", "c_fc"], r=4, lora_alpha=16,
                                      fan_in_fan_out=True, rank_pattern={"h.1.attn.c_attn": 2}), None),
    "llama": (_llama, lambda m: m,
              dict(target_modules="all-linear", r=4, lora_alpha=8, use_rslora=True,
                   rank_pattern={"q_proj|k_proj": 2, r"layers\.1\.mlp\.down_proj": 6},
                   alpha_pattern={"v_proj": 3.0, "gate_up_proj|up_proj": 5}), "20KB"),
}


def _make(tmp: Path, name: str, seed: int = 0, **extra):
    factory, base_of, kwargs, shard = CASES[name]
    torch.manual_seed(seed)
    model = factory()
    base_dir = tmp / f"{name}-base"
    base_of(model).save_pretrained(base_dir, **({"max_shard_size": shard} if shard else {}))
    pm = get_peft_model(model, LoraConfig(init_lora_weights=False, **{**kwargs, **extra}))
    adapter_dir = tmp / f"{name}-adapter"
    pm.save_pretrained(adapter_dir)
    return pm, adapter_dir, base_dir


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: _make(tmp, name) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_every_delta_w_and_W0_matches_peft(made, name):
    pm, adapter_dir, base_dir = made[name]
    ext = load_external(adapter_dir, base=base_dir)
    modules = _lora_modules(pm)
    assert {u.path for u in ext.updates.values()} == set(modules)
    for label, u in ext.updates.items():
        module = modules[u.path]
        assert ext.kind[label] == "lora"
        assert torch.allclose(delta_w(u.A, u.B, u.scaling), _expected_delta(module), atol=1e-6)
        assert u.scaling == pytest.approx(module.scaling["default"])
        assert torch.equal(ext.W0(u), _base_W0(module))


def test_labels_name_attention_fused_and_mlp_modules(made):
    bert = load_external(made["bert"][1], base=made["bert"][2]).updates
    assert {"L0.q", "L0.k", "L0.v", "L0.o", "L1.up", "L1.down"} <= set(bert)
    gpt2 = load_external(made["gpt2"][1], base=made["gpt2"][2]).updates
    assert set(gpt2) == {"L0.qkv", "L1.qkv", "L0.up", "L1.up"}
    assert gpt2["L0.qkv"].B.shape == (3 * H, 4) and gpt2["L1.qkv"].r == 2  # fused, rank_pattern
    llama = load_external(made["llama"][1], base=made["llama"][2]).updates
    assert {"L0.q", "L0.o", "L1.down", "L0.gate", "L0.up"} <= set(llama)
    assert llama["L0.q"].r == 2 and llama["L1.down"].r == 6 and llama["L0.v"].r == 4
    assert llama["L0.v"].scaling == pytest.approx(3.0 / math.sqrt(4))  # alpha_pattern + rsLoRA


def test_sharded_checkpoint_is_read_through_its_index(made):
    base_dir = made["llama"][2]
    assert (base_dir / "model.safetensors.index.json").exists()
    weights = LazyWeights(base_dir)
    assert len(set(weights.files.values())) > 1
    assert weights.key_for("model.layers.1.self_attn.v_proj") == "model.layers.1.self_attn.v_proj.weight"


def test_task_model_paths_map_to_a_bare_checkpoint():
    weights = LazyWeights.__new__(LazyWeights)
    weights.folder, weights.files = Path("ckpt"), dict.fromkeys(["encoder.layer.0.attention.self.query.weight",
                                                                   "h.0.attn.c_attn.weight"])
    assert weights.key_for("bert.encoder.layer.0.attention.self.query") == "encoder.layer.0.attention.self.query.weight"
    assert weights.key_for("transformer.h.0.attn.c_attn") == "h.0.attn.c_attn.weight"
    with pytest.raises(RunError, match=r"ckpt: no weight for module 'transformer\.h\.1\.attn\.c_attn'"):
        weights.key_for("transformer.h.1.attn.c_attn")


@pytest.mark.parametrize("patterns, path", [
    ({"q_proj|k_proj": 1}, "model.layers.0.self_attn.k_proj"),
    ({"q_proj|k_proj": 1}, "model.layers.0.self_attn.xq_proj"),
    ({r"layers\.1\.mlp\.down_proj": 1, "down_proj": 2}, "model.layers.1.mlp.down_proj"),
    ({"down_proj": 2, r"layers\.1\.mlp\.down_proj": 1}, "model.layers.1.mlp.down_proj"),
    ({"proj": 1}, "model.layers.0.self_attn.q_proj"),
    ({"attn.c_attn": 1}, "transformer.h.0.attn.c_attn"),
    ({"h.0.attn.c_attn": 1}, "transformer.h.10.attn.c_attn"),
])
def test_pattern_key_follows_peft(patterns, path):
    from peft.utils.other import get_pattern_key

    ours = peft_format.pattern_key(patterns, path)
    theirs = get_pattern_key(patterns.keys(), path)
    assert ours == (theirs if theirs in patterns else None)


def _dora(tmp_path):
    """A DoRA adapter on tiny GPT-2 with trained magnitudes: (PEFT model, adapter read back)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm, _, base_dir = _make(tmp_path, "gpt2", use_dora=True, rank_pattern={})
    for module in _lora_modules(pm).values():  # a trained magnitude, not the initial row norms
        m = module.lora_magnitude_vector["default"].weight.data
        m.mul_(1 + 0.3 * torch.rand(m.shape))
    pm.save_pretrained(tmp_path / "dora")
    return pm, load_external(tmp_path / "dora", base=base_dir)


def test_dora_effective_delta_is_dense_and_matches_peft_merge(tmp_path):
    pm, ext = _dora(tmp_path)
    modules = _lora_modules(pm)
    assert set(ext.kind.values()) == {"dora"}
    assert any("DoRA" in note and "not low-rank" in note for note in ext.notes)
    for label, u in ext.updates.items():
        dense = u.delta_w()
        assert torch.allclose(dense, _expected_delta(modules[u.path]), atol=1e-5)
        assert torch.linalg.matrix_rank(dense) > u.r


def test_dora_amplification_records_peft_scaling(tmp_path):
    """DoRA's dense update keeps PEFT's scaling α/r (it was recorded as 1), and its top-r singular
    triplets (what φ and Table 7 use) are those of the dense ΔW."""
    from lowrank_lab.analysis.external import analyze_adapter

    pm, ext = _dora(tmp_path)
    modules = _lora_modules(pm)
    amp = analyze_adapter(ext)["amplification"].set_index("label")
    for label, u in ext.updates.items():
        assert u.kind == "dora" and u.scaling == pytest.approx(modules[u.path].scaling["default"]) == 4.0
        assert amp.loc[label, "scaling"] == pytest.approx(4.0)
        U, S, Vh = torch.linalg.svd(u.delta_w().double())
        Ur, Sr, Vhr = u.svd(torch.float64)
        best = (U[:, :u.r] * S[:u.r]) @ Vh[:u.r]  # Eckart–Young: the rank-r part analysed
        assert torch.allclose((Ur * Sr) @ Vhr, best, atol=1e-10) and Sr.shape == (u.r,)


def test_pissa_delta_is_relative_to_the_original_base(tmp_path):
    torch.manual_seed(0)
    model = _llama()
    model.save_pretrained(tmp_path / "orig")
    W_orig = {k: v.clone() for k, v in model.state_dict().items()}
    pm = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights="pissa"))
    modules = _lora_modules(pm)
    with torch.no_grad():  # "training": move A and B away from their PiSSA init
        for m in modules.values():
            m.lora_A["default"].weight.add_(0.1 * torch.randn_like(m.lora_A["default"].weight))
            m.lora_B["default"].weight.add_(0.1 * torch.randn_like(m.lora_B["default"].weight))
    expected = {p: m.get_base_layer().weight.detach() + m.get_delta_weight("default").detach() - W_orig[f"{p}.weight"]
                for p, m in modules.items()}
    pm.save_pretrained(tmp_path / "adapter")
    pm.unload().save_pretrained(tmp_path / "mutated")

    ext = load_external(tmp_path / "adapter", base=tmp_path / "mutated", original_base=tmp_path / "orig")
    for label, u in ext.updates.items():
        assert ext.kind[label] == "lora-minus-init" and u.r == 4
        assert torch.allclose(delta_w(u.A, u.B, u.scaling), expected[u.path], atol=1e-5)
        assert torch.equal(ext.W0(u), W_orig[f"{u.path}.weight"])
    with pytest.warns(UserWarning, match="mutates the base"):
        plain = load_external(tmp_path / "adapter", base=tmp_path / "mutated")
    assert any("relative to the given base" in note for note in plain.notes)


def test_several_adapters_in_sub_folders(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm, adapter_dir, base_dir = _make(tmp_path, "bert")
        pm.add_adapter("seed1", LoraConfig(target_modules=["query", "value"], r=2, init_lora_weights=False))
        pm.save_pretrained(tmp_path / "two")
    assert find_adapters(tmp_path / "two") == [tmp_path / "two", tmp_path / "two" / "seed1"]
    first, second = load_all(tmp_path / "two", base=base_dir)
    modules = _lora_modules(pm)
    for label, u in second.updates.items():
        assert torch.allclose(delta_w(u.A, u.B, u.scaling), _expected_delta(modules[u.path], "seed1"), atol=1e-6)
    assert [lab for lab in first.updates if lab in second.updates] == [lab for lab in first.updates if lab.endswith((".q", ".v"))]
    with pytest.raises(RunError, match="use load_all"):
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "x").symlink_to(tmp_path / "two" / "seed1")
        load_external(tmp_path / "sub", base=base_dir)


def test_pickled_bin_is_refused_in_one_line_naming_what_is_read(made, tmp_path):
    _, adapter_dir, base_dir = made["bert"]
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((adapter_dir / "adapter_config.json").read_text())
    torch.save(load_file(adapter_dir / "adapter_model.safetensors"), folder / "adapter_model.bin")
    with pytest.raises(RunError, match=r"legacy/adapter_model.bin: a pickle, not read .* reads "
                                       r"adapter_model.safetensors") as err:
        load_external(folder, base=base_dir)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


# --- malformed inputs --------------------------------------------------------------------------


def _copy(adapter_dir: Path, to: Path, config=None, tensors=None) -> Path:
    to.mkdir()
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    (to / "adapter_config.json").write_text(json.dumps(config(cfg) if config else cfg))
    t = load_file(adapter_dir / "adapter_model.safetensors")
    save_file(tensors(t) if tensors else t, to / "adapter_model.safetensors")
    return to


def _drop(key):
    return lambda c: {k: v for k, v in c.items() if k != key}


def _nan(t):
    key = sorted(k for k in t if k.endswith("lora_B.weight"))[0]
    t[key][0, 0] = float("nan")
    return t


@pytest.mark.parametrize("config, tensors, match", [
    (_drop("r"), None, r"adapter_config.json: missing key 'r'"),
    (_drop("lora_alpha"), None, r"adapter_config.json: missing key 'lora_alpha'"),
    (_drop("target_modules"), None, r"adapter_config.json: missing key 'target_modules'"),
    (lambda c: {**c, "r": 5}, None, r"adapter_model.safetensors: .*lora_A.weight .*gives r=5"),
    (lambda c: {**c, "peft_type": "IA3"}, None, r"adapter_config.json: key 'peft_type' is 'IA3'"),
    (None, _nan, r"adapter_model.safetensors: .*lora_B.weight holds NaN or Inf"),
    (None, lambda t: {k: v for k, v in t.items() if "lora_B" not in k}, r"has no matching .*lora_B.weight"),
])
def test_bad_adapter_raises_naming_file_and_key(made, tmp_path, config, tensors, match):
    _, adapter_dir, base_dir = made["bert"]
    with pytest.raises(RunError, match=match):
        load_external(_copy(adapter_dir, tmp_path / "bad", config, tensors), base=base_dir)


def test_missing_or_unreadable_files_raise(made, tmp_path):
    _, adapter_dir, base_dir = made["bert"]
    with pytest.raises(RunError, match=r"adapter_config.json: missing"):
        load_external(tmp_path, base=base_dir)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(RunError, match=r"adapter_config.json: not valid JSON"):
        load_external(tmp_path, base=base_dir)
    (tmp_path / "adapter_config.json").write_text((adapter_dir / "adapter_config.json").read_text())
    with pytest.raises(RunError, match=r"adapter_model.safetensors: missing"):
        load_external(tmp_path, base=base_dir)


def test_base_that_does_not_fit_raises(made, tmp_path):
    _, adapter_dir, _ = made["bert"]
    with pytest.raises(RunError, match=r"small/model.safetensors: encoder\.layer\.0\.\S+\.weight has shape \(16, 16\), but .*32×32"):
        from tests.conftest import make_tiny_bert  # hidden 16 instead of 32

        load_external(adapter_dir, base=make_tiny_bert(tmp_path / "small"))
    with pytest.raises(RunError, match="missing key 'base_model_name_or_path'; give the base with --base"):
        load_external(adapter_dir)
    with pytest.raises(RunError, match="'no-such/model' is not a local folder .* --base"):
        load_external(_copy(adapter_dir, tmp_path / "hub", lambda c: {**c, "base_model_name_or_path": "no-such/model"}))


# --- labels: MLP kinds for analyses, attention only for training ----------------------------


@pytest.mark.parametrize("path, label", [
    ("bert.encoder.layer.1.intermediate.dense", "L1.up"),
    ("bert.encoder.layer.1.output.dense", "L1.down"),
    ("bert.encoder.layer.1.attention.output.dense", "L1.o"),
    ("transformer.h.0.mlp.c_proj", "L0.down"),
    ("transformer.h.0.attn.c_proj", "L0.o"),
    ("model.layers.3.mlp.gate_up_proj", "L3.gate_up"),
    ("model.decoder.layers.2.fc1", "L2.up"),
    ("model.layers.3.block_sparse_moe.gate", "L3.block_sparse_moe.gate"),
    ("lm_head", "lm_head"),
])
def test_label_for_names_attention_and_mlp_kinds(path, label):
    from lowrank_lab.model.base import label_for

    assert label_for(path) == label


def test_find_targets_still_chooses_attention_matrices_only(made):
    from lowrank_lab.model.base import find_targets

    pm, _, _ = made["llama"]
    targets = find_targets(pm.get_base_model(), ("q", "k", "v", "o"))
    assert {lab.split(".")[1] for lab in targets} == {"q", "k", "v", "o"} and len(targets) == 8


def test_read_adapter_uses_peft_pattern_rule(made):
    from lowrank_lab.store.peft_format import read_adapter

    _, adapter_dir, _ = made["llama"]
    _, by_path, _ = read_adapter(adapter_dir)
    ext = load_external(adapter_dir, base=made["llama"][2])
    assert {p: (u.r, u.scaling) for p, u in by_path.items()} == {u.path: (u.r, u.scaling) for u in ext.updates.values()}
