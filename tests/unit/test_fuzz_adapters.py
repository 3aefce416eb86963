"""Fuzzing the adapter reader: any adapter folder gives updates or a RunError naming the file."""

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from lowrank_lab.store import files
from lowrank_lab.store import peft_format

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEY = "base_model.model.encoder.layer.0.attention.self.query"


def _valid_tensors(r=2, d=6, k=5, dtype=torch.float32):
    return {f"{KEY}.lora_A.weight": torch.randn(r, k).to(dtype), f"{KEY}.lora_B.weight": torch.randn(d, r).to(dtype)}


def _write(folder, config, weights: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / peft_format.ADAPTER_CONFIG).write_text(config if isinstance(config, str) else json.dumps(config))
    (folder / peft_format.ADAPTER_WEIGHTS).write_bytes(weights)


def _read_or_clean_error(folder):
    try:
        _, updates, _ = peft_format.read_adapter(folder)
    except files.RunError as err:
        assert str(folder) in str(err)  # the message names the file
        return None
    return updates


_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 70) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=10)


@SETTINGS
@given(config=st.dictionaries(st.sampled_from(["r", "lora_alpha", "target_modules", "use_rslora", "rank_pattern",
                                               "alpha_pattern", "fan_in_fan_out", "peft_type"]), _json, max_size=8))
def test_fuzz_config_values(tmp_path, config):
    _write(tmp_path / "a", config, save(_valid_tensors()))
    _read_or_clean_error(tmp_path / "a")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_fuzz_weight_bytes(tmp_path, data):
    _write(tmp_path / "a", {"r": 2, "lora_alpha": 4, "target_modules": ["query"]}, data)
    _read_or_clean_error(tmp_path / "a")


@SETTINGS
@given(cut=st.integers(0, 400), flip=st.integers(0, 400), byte=st.integers(0, 255))
def test_fuzz_truncated_or_corrupted_safetensors(tmp_path, cut, flip, byte):
    data = bytearray(save(_valid_tensors()))
    if flip < len(data):
        data[flip] = byte
    _write(tmp_path / "a", {"r": 2, "lora_alpha": 4, "target_modules": ["query"]}, bytes(data[: len(data) - cut]))
    updates = _read_or_clean_error(tmp_path / "a")
    if updates is not None:  # a flipped byte inside the data may still read; it must then be finite
        assert all(torch.isfinite(u.A).all() and torch.isfinite(u.B).all() for u in updates.values())


@pytest.mark.parametrize("problem", ["not json", "no r", "rank mismatch", "nan", "int dtype", "no B",
                                     "huge header"])
def test_each_bad_adapter_is_a_clean_error(tmp_path, problem):
    config = {"r": 2, "lora_alpha": 4, "target_modules": ["query"]}
    tensors = _valid_tensors()
    weights = None
    if problem == "not json":
        config = "{r: 2"
    elif problem == "no r":
        del config["r"]
    elif problem == "rank mismatch":
        config["r"] = 3
    elif problem == "nan":
        tensors[f"{KEY}.lora_B.weight"][0, 0] = float("nan")
    elif problem == "int dtype":
        tensors = {k: v.round().to(torch.int32) for k, v in tensors.items()}
    elif problem == "no B":
        del tensors[f"{KEY}.lora_B.weight"]
    elif problem == "huge header":
        weights = struct.pack("<Q", 2**40) + b"{}"
    _write(tmp_path / "a", config, weights if weights is not None else save(tensors))
    with pytest.raises(files.RunError, match=str(tmp_path / "a")):
        peft_format.read_adapter(tmp_path / "a")


_module = st.lists(st.sampled_from(["encoder", "layer", "0", "1", "attention", "self", "query", "head", "model"]),
                   min_size=1, max_size=6).map(".".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(_module, min_size=1, max_size=4, unique=True), r=st.integers(1, 3))
def test_fuzz_saved_paths_read_back_unchanged(tmp_path, paths, r):
    """What save_adapter writes is never taken for the first format: every path (a BERT path starts
    with the model's own "encoder.") reads back as written, with its factors."""
    gen = torch.Generator().manual_seed(0)
    updates = [peft_format.LowRankUpdate("", p, torch.randn(r, 5, generator=gen), torch.randn(4, r, generator=gen), 1.0)
               for p in paths]
    peft_format.save_adapter(tmp_path / "a", updates, base_model="x", revision=None, alpha=2.0,
                             scaling_rule="alpha/r", init="kaiming", dropout=0.0)
    _, read, other = peft_format.read_adapter(tmp_path / "a")
    assert set(read) == set(paths) and other == {}
    assert all(torch.equal(read[u.path].A, u.A) and torch.equal(read[u.path].B, u.B) for u in updates)
