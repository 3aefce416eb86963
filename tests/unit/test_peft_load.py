"""A cell saved by rank-sweep, loaded as a PEFT user would: ``PeftModel.from_pretrained(
AutoModel.from_pretrained(base), cell/adapter)`` on the plain base, with no missing or unexpected
keys and lowrank-lab's hidden states; the head beside it gives our logits (``load_classifier``).
Also: the first adapter format is still read, and a model folder that cannot be loaded is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lowrank_lab.model.base import ModelError
from lowrank_lab.spec import CellSpec, DataSpec, LoRASpec, ModelSpec, TrainSpec
from lowrank_lab.store import peft_format
from lowrank_lab.store.adapters import load_external, resolve_base
from lowrank_lab.store.models import (EMBEDDED_HUB_ID, embedded_model_dir, load_base, load_classifier,
                                      portable_name, resolve_model_path)
from lowrank_lab.store.tensors import read_tensors
from lowrank_lab.train.pack import build_pack
from lowrank_lab.train.saving import save_cell

peft = pytest.importorskip("peft")

from conftest import peft_from_pretrained  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests/fixtures/legacy_cell"  # a cell of the first format, as the fixtures were before
# PEFT 0.21 reads model.is_gradient_checkpointing, which transformers 5 deprecates: unrelated to the files
TEXTS = ["a wonderful film", "a dull, tedious mess of a movie"]


def _trained_pack(model_name, targets, r, rule, gen, pooling="mean"):
    """A pack of one cell with random, non-zero B and head, as if trained."""
    cell = CellSpec(ModelSpec(name=model_name), DataSpec(), LoRASpec(targets=targets, r=r, alpha=8.0,
                                                                    scaling_rule=rule), TrainSpec())
    encoder, tokenizer = load_base(model_name)
    pack = build_pack([cell], encoder, 3, pooling)
    with torch.no_grad():
        for layer in pack.layers.values():
            layer.B.normal_(generator=gen)
        pack.model.head.weight.normal_(generator=gen)
        pack.model.head.bias.normal_(generator=gen)
    pack.model.eval()
    return pack, tokenizer


def _peft_on_plain_base(adapter: Path):
    """PeftModel on AutoModel of the base the adapter names; the warnings of loading, and the
    load_result of the same files loaded again (from_pretrained reports no unexpected keys)."""
    from transformers import AutoModel

    config = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModel.from_pretrained(resolve_model_path(config["base_model_name_or_path"]), dtype=torch.float32)
    return peft_from_pretrained(base, adapter)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 (Conv1D, fused c_attn), with the embedded model's tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir(verify=False))
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=64)
              ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model, rule", [("tiny", "alpha/r"), ("tiny", "alpha/sqrt(r)"), ("embedded", "alpha/r"),
                                         ("gpt2", "alpha/r")])
def test_saved_cell_loads_on_the_plain_base_with_our_hidden_states(model, rule, request, tmp_path, gen):
    name = {"tiny": lambda: str(request.getfixturevalue("tiny_bert")), "embedded": lambda: "embedded",
            "gpt2": lambda: str(request.getfixturevalue("tiny_gpt2"))}[model]()
    pack, tokenizer = _trained_pack(name, "q,k,v,o", 4, rule, gen)
    save_cell(tmp_path, pack, 0, name)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "FEATURE_EXTRACTION" and config["modules_to_save"] is None
    assert config["base_model_name_or_path"] == (EMBEDDED_HUB_ID if model == "embedded" else name)
    assert all(t.startswith("h." if model == "gpt2" else "encoder.layer.") for t in config["target_modules"])
    assert config["fan_in_fan_out"] is (model == "gpt2")  # GPT-2's Conv1D stores W0 in×out
    assert not any("head" in k for k in read_tensors(tmp_path / "adapter" / "adapter_model.safetensors"))

    peft_model, result, serious = _peft_on_plain_base(tmp_path / "adapter")
    assert not serious and not result.missing_keys and not result.unexpected_keys
    inputs = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        ours = pack.model.encoder(**inputs).last_hidden_state
        theirs = peft_model(**inputs).last_hidden_state
        plain = peft_model.get_base_model()
        with peft_model.disable_adapter():
            unadapted = plain(**inputs).last_hidden_state
    assert (ours - unadapted).abs().max() > 1e-2  # the adapter matters, so equality means something
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_load_classifier_gives_the_training_time_logits(pooling, tiny_bert, tmp_path, gen):
    pack, tokenizer = _trained_pack(str(tiny_bert), "q,v", 2, "alpha/sqrt(r)", gen, pooling)
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    assert json.loads((tmp_path / "head.json").read_text())["pooling"] == pooling
    inputs = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    model = load_classifier(tmp_path)
    with torch.no_grad():
        want, got = pack.model(**inputs), model(**inputs)
    assert got.shape == (2, 3) and want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_documented_recipe_gives_our_logits_through_peft(tiny_bert, tmp_path, gen):
    """load_classifier's docstring: PEFT on the plain base + head.safetensors + head.json."""
    from safetensors.torch import load_file

    pack, tokenizer = _trained_pack(str(tiny_bert), "q,k,v,o", 4, "alpha/r", gen)
    save_cell(tmp_path, pack, 0, str(tiny_bert))
    m, _, _ = _peft_on_plain_base(tmp_path / "adapter")
    inputs = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    mask = inputs["attention_mask"]
    with torch.no_grad():
        h = m(**inputs).last_hidden_state
        w = load_file(tmp_path / "head.safetensors")
        assert json.loads((tmp_path / "head.json").read_text())["pooling"] == "mean"
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        logits = pooled @ w["weight"].T + w["bias"]
        torch.testing.assert_close(logits, pack.model(**inputs), rtol=1e-5, atol=1e-5)


def test_embedded_hub_id_resolves_offline_and_no_venv_path_is_recorded(tmp_path):
    folder = embedded_model_dir()
    assert portable_name("embedded") == portable_name(str(folder)) == EMBEDDED_HUB_ID
    assert portable_name("tests/fixtures/sweep/base") == "tests/fixtures/sweep/base"
    assert resolve_base(None, {"base_model_name_or_path": EMBEDDED_HUB_ID}, tmp_path / "a.json") == folder
    assert resolve_model_path(EMBEDDED_HUB_ID) == str(folder)


def test_committed_fixture_cell_loads_on_its_plain_base(monkeypatch):
    """tests/fixtures/sweep was written in the PEFT-loadable format (tests/fixtures/make_sweep.py)."""
    from transformers import AutoTokenizer

    monkeypatch.chdir(ROOT)  # base_model_name_or_path is the relative tests/fixtures/sweep/base
    cell = ROOT / "tests/fixtures/sweep/cells/lora-qkvo-r4-alpha_r-kaiming-seed1"
    peft_model, result, serious = _peft_on_plain_base(cell / "adapter")
    assert not serious and not result.missing_keys and not result.unexpected_keys
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "tests/fixtures/sweep/base")
    inputs = dict(tokenizer(["a wonderful film"], return_tensors="pt"))
    with torch.no_grad():
        ours = load_classifier(cell).encoder(**inputs).last_hidden_state
        torch.testing.assert_close(peft_model(**inputs).last_hidden_state, ours, rtol=1e-5, atol=1e-5)


# --- the first format ---------------------------------------------------------------------------


def test_first_format_adapter_is_still_read_with_base_model_paths():
    config, updates, other = peft_format.read_adapter(LEGACY / "adapter")
    raw = read_tensors(LEGACY / "adapter" / "adapter_model.safetensors")
    assert config["target_modules"][0].startswith("encoder.encoder.")  # what the file says
    assert sorted(u.label for u in updates.values()) == [f"L{i}.{k}" for i in range(4) for k in "qv"]
    for path, u in updates.items():
        assert path.startswith("encoder.layer.") and u.r == 2 and u.scaling == 4.0
        assert torch.equal(u.A, raw[f"base_model.model.encoder.{path}.lora_A.weight"])
    assert set(other) == {"head.weight", "head.bias"}
    weight, bias, pooling = peft_format.read_head(LEGACY)
    assert torch.equal(weight, raw["base_model.model.head.weight"]) and pooling == "mean"
    ext = load_external(LEGACY / "adapter", base=ROOT / "tests/fixtures/sweep/base")
    assert {u.path for u in ext.updates.values()} == {"encoder." + p for p in updates}  # PEFT's raw paths


def test_first_format_cell_loads_as_a_classifier(monkeypatch):
    monkeypatch.chdir(ROOT)  # its base_model_name_or_path is relative to the repository
    model = load_classifier(LEGACY)
    _, updates, _ = peft_format.read_adapter(LEGACY / "adapter")
    layer = model.get_submodule("encoder." + next(iter(updates)))
    assert torch.equal(layer.A[0], next(iter(updates.values())).A)


# --- model folders that cannot be loaded: one line naming the folder or file --------------------


def _copy_model(tiny_bert: Path, to: Path) -> Path:
    shutil.copytree(tiny_bert, to)
    return to


def test_unknown_model_type_names_config_json(tiny_bert, tmp_path):
    folder = _copy_model(tiny_bert, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    with pytest.raises(ModelError, match=r"m/config.json: model_type 'no-such-arch' is not one") as err:
        load_base(str(folder))
    assert "\n" not in str(err.value)


def test_truncated_safetensors_names_the_file(tiny_bert, tmp_path):
    folder = _copy_model(tiny_bert, tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"m/model.safetensors: not a readable safetensors file") as err:
        load_base(str(folder))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["no-model-here/x/y", "./missing", "/abs/missing"])
def test_missing_local_folder_is_not_called_a_bad_repo_id(name, tmp_path):
    with pytest.raises(ModelError, match=r"does not exist, and the name is not a hub id") as err:
        load_base(name)
    assert "Repo id" not in str(err.value) and "\n" not in str(err.value)
