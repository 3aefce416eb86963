"""Bases for speed and memory studies (issue 27): read straight into bf16 (no float32 copy first),
built from the config with random weights (``model.random_init``, or a folder with config.json
alone), and said in the provenance of the cells trained on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lowrank_lab.spec import load_spec
from lowrank_lab.store import layout
from lowrank_lab.store.models import config_model, load_model
from lowrank_lab.spec import ModelSpec
from lowrank_lab.train.sweep import run_sweep


def test_a_base_read_straight_into_bf16_equals_the_float32_one_rounded(tiny_bert):
    bf16 = load_model(str(tiny_bert), dtype=torch.bfloat16, device="cpu")
    fp32 = load_model(str(tiny_bert))
    assert bf16.provenance["dtype"] == "bfloat16" and fp32.provenance["dtype"] == "float32"
    pairs = list(zip(fp32.module.parameters(), bf16.module.parameters(), strict=True))
    assert pairs and all(b.dtype == torch.bfloat16 and torch.equal(a.bfloat16(), b) for a, b in pairs)


def test_random_init_ignores_the_weights_and_is_the_same_every_time(tmp_path):
    from conftest import make_tiny_bert

    folder = make_tiny_bert(tmp_path / "bert", seed=1)
    read = load_model(str(folder))
    first, second = (load_model(str(folder), random_init=True) for _ in range(2))
    assert first.provenance["weights"].startswith("random (seed 0)") and "model.random_init" in first.provenance["weights"]
    assert read.provenance["weights"] == "read from the checkpoint"
    assert all(torch.equal(a, b) for a, b in zip(first.module.parameters(), second.module.parameters(), strict=True))
    assert not torch.equal(first.module.embeddings.word_embeddings.weight, read.module.embeddings.word_embeddings.weight)


def test_a_config_only_folder_trains_on_random_weights_said_in_each_cells_provenance(tiny_bert, tiny_task, tmp_path):
    folder = tmp_path / "shape"
    folder.mkdir()
    shutil.copy(tiny_bert / "config.json", folder / "config.json")  # no weights, no tokenizer
    sets = {"model.name": str(folder), "model.pooling": "mean", "data.task": "file", "data.path": str(tiny_task),
            "sweep.out_dir": str(tmp_path / "runs"), "sweep.r": "[2]", "train.batch_size": 8, "train.max_steps": 2,
            "train.device": "cpu", "model.max_length": 16}
    sweep = run_sweep(load_spec(None, [f"{k}={v}" for k, v in sets.items()]), echo=lambda *_: None)
    [name] = layout.read_manifest(sweep).names("done")
    model = layout.read_summary(layout.cell_dir(sweep, name)).provenance["model"]
    assert model["weights"] == "random (seed 0), from the config alone: the folder holds no weights"
    assert model["tokenizer"].endswith("model")  # the embedded MiniLM's, borrowed
    assert json.loads((sweep / "spec.json").read_text())["provenance"]["model"]["weights"] == model["weights"]


def test_the_llama_8b_shape_config_has_the_shape_the_targets_name():
    folder = Path(__file__).parents[2] / "benchmarks" / "configs" / "llama-3-8b"
    meta, decoder = config_model(ModelSpec(name=str(folder)))
    c = meta.config
    assert decoder and (c.num_hidden_layers, c.hidden_size, c.num_key_value_heads, c.intermediate_size) == (32, 4096, 8, 14336)
    assert 8.0e9 < sum(p.numel() for p in meta.parameters()) < 8.1e9


@pytest.mark.gpu
def test_a_frozen_bf16_base_for_a_gpu_is_read_straight_onto_it(tiny_bert, tiny_task):
    from lowrank_lab.spec import expand_sweep
    from lowrank_lab.train.sweep import load_inputs

    spec = load_spec(None, [f"model.name={tiny_bert}", "data.task=file", f"data.path={tiny_task}", "train.device=cuda",
                                "sweep.r=[1,4]"])
    inputs = load_inputs(spec, expand_sweep(spec), torch.device("cuda"))
    params = list(inputs.base.parameters())
    assert all(p.is_cuda and p.dtype == torch.bfloat16 for p in params)
    assert inputs.provenance["dtype"] == "bfloat16"
