"""Bad inputs end in one clear line naming the file, key or option (exit 2), and write nothing."""

import math
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_lab.store import files, layout, runs
from lowrank_lab.spec import (CellSpec, DataSpec, LoRASpec, ModelSpec, SpecError, TrainSpec, build_spec,
                                load_spec, parse_override)
from lowrank_lab.train.data import load_task
from lowrank_lab.model.base import ModelError
from lowrank_lab.store.models import load_base
from lowrank_lab.train.sweep import run_sweep
from lowrank_lab.train.batches import encode
from lowrank_lab.train.loop import train_pack
from lowrank_lab.train.pack import build_pack
from lowrank_lab_cli.main import cli


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("override, named", [
    ("sweep.r=[0,8]", "sweep.r"), ("sweep.alpha=[-1]", "sweep.alpha"), ("sweep.alpha=[0]", "sweep.alpha"),
    ("sweep.bogus=1", "sweep.bogus"), ("nosuch.r=1", "nosuch"), ("sweep.r", "section.key=value"),
    ("sweep.lr=fast", "sweep.lr"), ("sweep.targets=['q,x']", "q,x"), ("lora.scaling_rule=r", "lora.scaling_rule"),
    ("train.device=tpu", "train.device"), ("train.device=cuda", "train.device"),
    ("sweep.budget_rank=3", "sweep.budget_rank"),
])
def test_bad_spec_values_give_one_line_naming_the_key_and_exit_2(override, named, tmp_path):
    if override == "train.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _invoke("rank-sweep", "--set", override, "--set", f"sweep.out_dir={tmp_path}")
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_spec_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\nr = 1")
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.toml")
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="bad.toml"):
        load_spec(bad)


def test_rank_larger_than_the_matrix_is_rejected_before_anything_is_written(tiny_bert, tiny_task, tmp_path):
    result = _invoke("rank-sweep", "--set", f"model.name={tiny_bert}", "--set", "data.task=file",
                     "--set", f"data.path={tiny_task}", "--set", "sweep.r=[4,32]", "--set", f"sweep.out_dir={tmp_path / 'out'}")
    assert result.exit_code == 2 and "r=32 exceeds min(d, k) = 16" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_data_columns_are_named_and_nothing_is_written(tiny_bert, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,y\nhello,1\n")
    out = tmp_path / "out"
    result = _invoke("rank-sweep", "--set", f"model.name={tiny_bert}", "--set", "data.task=file",
                     "--set", f"data.path={data}", "--set", f"sweep.out_dir={out}")
    assert result.exit_code == 2 and "d.csv" in result.output and "sentence" in result.output
    assert not out.exists()


def test_a_model_without_the_target_matrices_is_a_clear_error(tmp_path):
    from torch import nn

    from lowrank_lab.model.base import find_targets

    with pytest.raises(ModelError, match="no attention matrix of kind q"):
        find_targets(nn.Sequential(nn.Linear(3, 3)), ("q",))
    with pytest.raises(ModelError, match="model.name="):
        load_base(str(tmp_path / "no-model-here"))


def test_a_second_sweep_into_the_same_directory_is_refused(tiny_bert, tiny_task, tmp_path):
    spec = load_spec(None, [f"model.name={tiny_bert}", "data.task=file", f"data.path={tiny_task}",
                            f"sweep.out_dir={tmp_path}", "sweep.r=[1]", "train.device=cpu"])
    with files.sweep_lock(layout.sweep_dir(spec)):
        with pytest.raises(files.RunError, match="another sweep is writing"):
            run_sweep(spec, echo=lambda *_: None)


def test_a_diverging_cell_is_marked_failed_and_its_pack_mates_finish(tiny_bert, tiny_task):
    base = CellSpec(ModelSpec(name=str(tiny_bert), pooling="mean"), DataSpec(task="file", path=str(tiny_task)),
                    LoRASpec(r=2, alpha=4.0), TrainSpec(batch_size=8, epochs=2, lr=1e-2, device="cpu"))
    other = replace(base, train=replace(base.train, seed=1))
    task = load_task(base.data)
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack([base, other], encoder, task.num_labels, "mean")
    with torch.no_grad():
        pack.model.head.bias[1, 0] = float("nan")  # cell 1's loss is NaN from the first step
    states = train_pack(pack, task, encode(tokenizer, task.train, 32, False),
                        encode(tokenizer, task.dev, 32, False), tokenizer, torch.device("cpu"))
    assert states[0].failed is None and states[0].best is not None
    assert "training loss became" in states[1].failed
    assert all(math.isfinite(h["train_loss"]) for h in states[0].history)


def test_a_sweep_with_a_failed_cell_goes_on_lists_it_and_exits_1(tiny_bert, tiny_task, tmp_path):
    result = _invoke("rank-sweep", "--set", f"model.name={tiny_bert}", "--set", "data.task=file",
                     "--set", f"data.path={tiny_task}", "--set", "sweep.r=[1,2]", "--set", "sweep.lr=[1e30]", "--set", "train.head_lr=1e-3",
                     "--set", "sweep.baselines=['head']", "--set", "train.batch_size=8",
                     "--set", f"sweep.out_dir={tmp_path}", "--set", "train.device=cpu")
    assert result.exit_code == 1, result.output
    assert "FAILED lora-qv-r1" in result.output and "FAILED lora-qv-r2" in result.output
    manifest = files.read_json(tmp_path / "default" / "manifest.json")
    assert manifest["cells"]["head-seed0"]["status"] == "done"


def test_same_spec_and_seeds_give_bit_identical_adapters_on_the_cpu(tiny_bert, tiny_task, tmp_path):
    def factors(out):
        spec = load_spec(None, [f"model.name={tiny_bert}", "data.task=file", f"data.path={tiny_task}",
                                f"sweep.out_dir={out}", "sweep.r=[2]", "sweep.seeds=[3]", "train.data_seed=5",
                                "train.device=cpu", "train.batch_size=8", "lora.dropout=0.1"])
        (run,) = runs.load_sweep(run_sweep(spec, echo=lambda *_: None))
        assert run.spec.train.seed == 3 and run.spec.train.data_seed == 5  # both seeds recorded
        return {k: (u.A, u.B) for k, u in run.updates.items()}

    first, second = factors(tmp_path / "a"), factors(tmp_path / "b")
    for label in first:
        assert torch.equal(first[label][0], second[label][0]) and torch.equal(first[label][1], second[label][1])


# ---------------------------------------------------------------------------------------------
# Fuzzing the spec parser: every input gives a spec or a SpecError.

_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                       | st.text(max_size=12), lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_keys = st.sampled_from(["r", "seeds", "targets", "alpha", "lr", "epochs", "max_train", "name", "task",
                         "pooling", "budget_rank", "scaling_rules", "method", "device", "x"])
_sections = st.sampled_from(["model", "data", "lora", "train", "sweep", "other"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_sections, st.dictionaries(_keys, _values, max_size=4) | _values, max_size=4))
def test_fuzz_build_spec_returns_a_spec_or_a_spec_error(values):
    try:
        build_spec(values)
    except SpecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_overrides_parse_or_raise_spec_error(text):
    try:
        section, key, _ = parse_override(text)
        load_spec(None, [text])
    except SpecError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_fuzz_spec_files_load_or_raise_spec_error(tmp_path, content):
    path = tmp_path / "spec.toml"
    path.write_bytes(content)
    try:
        load_spec(path)
    except SpecError:
        pass
