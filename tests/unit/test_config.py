"""The experiment spec: defaults in one place, files state what differs, overrides checked."""

from pathlib import Path

import pytest

from lowrank_lab.spec import (ExperimentSpec, SpecError, SweepSpec, cell_from_dict, expand_sweep, load_spec,
                                spec_to_dict)

ANALYSES = sorted((Path(__file__).parents[2] / "analyses").glob("*.toml"))


@pytest.mark.parametrize("path", ANALYSES, ids=lambda p: p.name)
def test_every_shipped_spec_loads_validates_and_expands(path):
    spec = load_spec(path)
    cells = expand_sweep(spec)
    assert cells and len({c.name for c in cells}) == len(cells)
    assert spec.sweep.name != ExperimentSpec().sweep.name  # each names its own sweep directory


def test_analyses_folder_is_not_empty():
    assert len(ANALYSES) >= 3


def test_overrides_are_typed_and_nested(tmp_path):
    spec = load_spec(None, ["sweep.r=[8, 64]", "sweep.lr=[2e-4]", "sweep.targets=['q,k,v,o']", "train.max_steps=10"])
    assert spec.sweep.r == (8, 64) and spec.sweep.lr == (2e-4,) and spec.sweep.targets == ("q,k,v,o",)
    assert spec.train.max_steps == 10 and isinstance(spec.sweep.lr[0], float)


def test_a_spec_file_states_only_what_differs_and_overrides_win(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\nname = "x"\nr = [2]\n[train]\nepochs = 3\n')
    spec = load_spec(path, ["train.epochs=5"])
    assert spec.sweep.r == (2,) and spec.train.epochs == 5
    assert spec.lora == ExperimentSpec().lora  # untouched sections keep the defaults


def test_alpha_defaults_to_the_first_rank_of_the_sweep_and_stays_fixed():
    cells = expand_sweep(ExperimentSpec(sweep=SweepSpec(r=(4, 1, 64))))
    assert {c.lora.alpha for c in cells} == {4.0}


def test_budget_mode_gives_r_8_for_one_matrix_type_4_for_two_2_for_four():
    sweep = SweepSpec(budget_rank=8, targets=("q", "q,v", "q,k,v,o"))
    ranks = {c.lora.targets: c.lora.r for c in expand_sweep(ExperimentSpec(sweep=sweep))}
    assert ranks == {"q": 8, "q,v": 4, "q,k,v,o": 2}


def test_sweep_expands_every_axis_and_baselines_once_per_seed():
    sweep = SweepSpec(r=(1, 8), seeds=(0, 1), targets=("q", "q,v"), scaling_rules=("alpha/r", "alpha/sqrt(r)"),
                      inits=("kaiming", "gaussian"), baselines=("full", "head"))
    cells = expand_sweep(ExperimentSpec(sweep=sweep))
    assert len(cells) == 2 * 2 * 2 * 2 * 2 + 2 * 2
    assert {c.name for c in cells if c.lora.method != "lora"} == {"full-seed0", "full-seed1", "head-seed0", "head-seed1"}


def test_a_cell_round_trips_through_its_saved_config():
    cell = expand_sweep(ExperimentSpec())[3]
    assert cell_from_dict(spec_to_dict(cell)) == cell


def test_repeated_axis_values_are_an_error():
    with pytest.raises(SpecError, match="same name"):
        expand_sweep(ExperimentSpec(sweep=SweepSpec(r=(8, 8))))
