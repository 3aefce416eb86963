"""Spec input a user can get wrong: sweep-set fields, NaN/Inf, unknown keys, split --set values, sweep names."""

import json
import re

import pytest
from click.testing import CliRunner

from lowrank_lab.spec import (CellSpec, ExperimentSpec, LoRASpec, SpecError, SweepSpec, TrainSpec, changed_keys,
                              expand_sweep, load_spec, spec_to_dict)
from lowrank_lab_cli.main import cli

SWEPT = [("lora.r=4", "sweep.r"), ("lora.targets=q", "sweep.targets"), ("lora.init=gaussian", "sweep.inits"),
         ("lora.scaling_rule=alpha/sqrt(r)", "sweep.scaling_rules"), ("lora.method=full", "sweep.baselines"),
         ("train.seed=1", "sweep.seeds")]


# ---------------------------------------------------------------------------------------------
# One home per quantity: what the sweep sets per cell is set on the sweep only


@pytest.mark.parametrize("override, axis", SWEPT)
def test_a_field_the_sweep_sets_is_refused_naming_the_sweep_field(override, axis):
    key = override.partition("=")[0]
    with pytest.raises(SpecError, match=re.escape(f"--set '{override}': {key} is set by the sweep: use {axis}")):
        load_spec(None, [override])


def test_a_swept_field_in_a_spec_file_names_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[lora]\nr = 8\n")  # even the default value: the field is not the lora section's
    with pytest.raises(SpecError, match=r"s\.toml: lora\.r is set by the sweep: use sweep\.r"):
        load_spec(path)


def test_an_experiment_spec_built_in_code_refuses_swept_values_too():
    with pytest.raises(SpecError, match="lora.r is set by the sweep"):
        ExperimentSpec(lora=LoRASpec(r=4))
    with pytest.raises(SpecError, match="train.seed is set by the sweep"):
        ExperimentSpec(train=TrainSpec(seed=3))
    with pytest.raises(SpecError, match="lora.alpha is set by the sweep: use sweep.alpha"):
        ExperimentSpec(lora=LoRASpec(alpha=4.0))
    with pytest.raises(SpecError, match="train.lr is set by the sweep: use sweep.lr"):
        ExperimentSpec(train=TrainSpec(lr=1e-3))


def test_spec_show_no_longer_prints_swept_fields_but_cells_keep_them():
    result = CliRunner().invoke(cli, ["spec", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert set(shown["lora"]) == {"dropout"} and not {"seed", "lr", "full_lr", "bitfit_lr"} & set(shown["train"])
    assert shown == spec_to_dict(ExperimentSpec())
    cell = spec_to_dict(expand_sweep(ExperimentSpec())[0])
    assert cell["lora"]["r"] == 1 and cell["train"]["seed"] == 0


def test_expand_sweep_makes_the_same_cells_and_names_as_before():
    spec = ExperimentSpec(sweep=SweepSpec(r=(1, 8), seeds=(0, 2), targets=("q", "q,v"),
                                          scaling_rules=("alpha/sqrt(r)",), baselines=("head",)))
    cells = expand_sweep(spec)
    assert [c.name for c in cells] == [
        "lora-q-r1-alpha_sqrt_r-kaiming-seed0", "lora-q-r1-alpha_sqrt_r-kaiming-seed2",
        "lora-q-r8-alpha_sqrt_r-kaiming-seed0", "lora-q-r8-alpha_sqrt_r-kaiming-seed2",
        "lora-qv-r1-alpha_sqrt_r-kaiming-seed0", "lora-qv-r1-alpha_sqrt_r-kaiming-seed2",
        "lora-qv-r8-alpha_sqrt_r-kaiming-seed0", "lora-qv-r8-alpha_sqrt_r-kaiming-seed2",
        "head-seed0", "head-seed2"]
    assert cells[2] == CellSpec(spec.model, spec.data, LoRASpec(targets="q", r=8, alpha=1.0,
                                                                scaling_rule="alpha/sqrt(r)"), TrainSpec(seed=0))


# ---------------------------------------------------------------------------------------------
# Numbers must be finite


@pytest.mark.parametrize("override", ["train.warmup_ratio=nan", "sweep.lr=[nan]", "sweep.alpha=[inf]", "train.weight_decay=-inf",
                                      "train.grad_clip=nan", "lora.dropout=nan", "train.head_lr=+inf"])
def test_nan_and_inf_are_refused_naming_the_key(override):
    key = override.partition("=")[0]
    with pytest.raises(SpecError, match=rf"{key}=\S+: must be a finite number"):
        load_spec(None, [override])


def test_nan_in_a_file_or_in_code_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[train]\nweight_decay = nan\n")
    with pytest.raises(SpecError, match=r"s\.toml: train\.weight_decay=nan: must be a finite number"):
        load_spec(path)
    with pytest.raises(SpecError, match="lora.alpha=inf"):
        LoRASpec(alpha=float("inf"))


# ---------------------------------------------------------------------------------------------
# Messages: did you mean, which --set, a value the shell split


@pytest.mark.parametrize("override, suggestion", [
    ("lora.alpah=8", "sweep.alpha"), ("train.seeds=[1]", "sweep.seeds"), ("lora.rank=4", "sweep.r"),
    ("data.label_colum=y", "data.label_column"), ("swep.r=[1]", "[sweep]"),
])
def test_unknown_keys_and_sections_get_a_did_you_mean(override, suggestion):
    with pytest.raises(SpecError, match=rf"unknown .*; did you mean {re.escape(suggestion)}\?"):
        load_spec(None, [override])


def test_an_error_names_the_set_that_caused_it_not_the_defaults(tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(None, ["train.epochs=2", "train.head_lr=-1", "train.batch_size=4"])
    assert str(err.value).startswith("--set 'train.head_lr=-1': ") and "defaults" not in str(err.value)
    path = tmp_path / "s.toml"
    path.write_text("[sweep]\nbogus = 1\n")
    with pytest.raises(SpecError, match=r"^\S*s\.toml: unknown key sweep\.bogus"):
        load_spec(path, ["sweep.lr=[1e-3]"])
    # Only the whole set is checked: a pair of overrides valid together is accepted in either order.
    assert load_spec(None, ["sweep.budget_rank=3", "sweep.targets=['q']"]).sweep.budget_rank == 3


@pytest.mark.parametrize("args", [
    ["spec", "show", "--set", "sweep.r=[1,", "8]"],
    ["spec", "show", "SPEC", "--set", "sweep.r=[1,", "8]"],  # click would call "8]" an extra argument
    ["rank-sweep", "--set", "sweep.seeds=[0,", "1]"],
])
def test_a_set_value_split_by_the_shell_gets_a_hint_to_quote_it(args, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\nname = "x"\n')
    result = CliRunner().invoke(cli, [str(spec) if a == "SPEC" else a for a in args])
    assert result.exit_code == 2, result.output
    assert "is not a complete value" in result.output and "quote the whole value" in result.output
    assert "Traceback" not in result.output and "no such spec file" not in result.output


# ---------------------------------------------------------------------------------------------
# sweep.name is one folder under sweep.out_dir


@pytest.mark.parametrize("name", ["../escape", "a/b", "/absolute", "..", "a\\b", "x/../../y", ""])
def test_a_sweep_name_that_would_leave_out_dir_is_refused(name):
    with pytest.raises(SpecError, match="sweep.name=.*must be one folder name"):
        SweepSpec(name=name)


def test_ordinary_sweep_names_are_accepted():
    assert load_spec(None, ["sweep.name=glue-sst2_v1.2"]).sweep.name == "glue-sst2_v1.2"


# ---------------------------------------------------------------------------------------------
# changed_keys: what differs between two resolved specs


def test_changed_keys_lists_the_dotted_keys_that_differ():
    old = spec_to_dict(load_spec(None, ["train.head_lr=1e-3"]))
    new = spec_to_dict(load_spec(None, ["train.head_lr=2e-3", "data.path=x", "sweep.r=[1]"]))
    assert changed_keys(old, new) == ["data.path", "sweep.r", "train.head_lr"]
    assert changed_keys(old, old) == []
    assert changed_keys({"a": {"b": 1}}, {"a": {"c": 1}, "d": [1]}) == ["a.b", "a.c", "d"]
    assert changed_keys({"a": {"b": 1}}, {"a": 1}) == ["a"]
