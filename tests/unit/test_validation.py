"""Selection never on the scored split: data.validation_size holds training examples out, each
cell's best evaluation is chosen on them, and the dev metrics of that evaluation are reported
beside the last evaluation's."""

import math
from collections import Counter

import pytest
import torch

from lowrank_lab.spec.sections import SpecError
from lowrank_lab.store.datasets import DataError
from lowrank_lab.spec import DataSpec, ExperimentSpec, ModelSpec, SweepSpec, TrainSpec, expand_sweep
from lowrank_lab.store.models import load_base
from lowrank_lab.train.batches import encode
from lowrank_lab.train.data import load_task
from lowrank_lab.train.loop import VAL, train_pack
from lowrank_lab.train.pack import build_pack


def test_the_held_out_split_leaves_training_and_never_meets_dev(tiny_task):
    whole = load_task(DataSpec(task="file", path=str(tiny_task)))
    task = load_task(DataSpec(task="file", path=str(tiny_task), validation_size=10))
    assert len(task.validation) == 10 and len(task.train) == len(whole.train) - 10
    # the training rows split in two, each row in one of them (the tiny task repeats sentences: count them)
    assert Counter(task.train) + Counter(task.validation) == Counter(whole.train) and task.dev == whole.dev
    again = load_task(DataSpec(task="file", path=str(tiny_task), validation_size=10))
    assert again.validation == task.validation  # deterministic (ranked by sha256 of the row keys)
    assert task.source["counts"]["validation"] == 10 and task.source["caps"]["validation_size"] == 10


def test_a_validation_split_as_large_as_training_is_refused(tiny_task):
    n = len(load_task(DataSpec(task="file", path=str(tiny_task))).train)
    with pytest.raises(DataError, match="data.validation_size=.* leaves no training examples"):
        load_task(DataSpec(task="file", path=str(tiny_task), validation_size=n))
    with pytest.raises(SpecError, match="data.validation_size=0"):
        DataSpec(validation_size=0)


def test_e2e_holds_out_training_pairs_and_a_decoder_task_keeps_its_split(tmp_path, tiny_task):
    """E2E (trained on valid.txt here, scored on test.txt) holds out training pairs, never test MRs;
    a classification task for a decoder keeps the same held-out examples as label words."""
    from test_decoder_data import ALL, write_e2e

    folder = write_e2e(tmp_path / "e2e")
    whole = load_task(DataSpec(task="e2e", path=str(folder), **ALL), causal=True)
    task = load_task(DataSpec(task="e2e", path=str(folder), **{**ALL, "validation_size": 2}), causal=True)
    assert len(task.validation) == 2 and Counter(task.train) + Counter(task.validation) == Counter(whole.train)
    assert task.dev == whole.dev and task.source["counts"]["validation"] == 2
    encoder_task = load_task(DataSpec(task="file", path=str(tiny_task), validation_size=6))
    decoder_task = load_task(DataSpec(task="file", path=str(tiny_task), validation_size=6), causal=True)
    assert [e.completion for e in decoder_task.validation] == \
        [decoder_task.label_words[e.label] for e in encoder_task.validation]


def test_the_best_evaluation_is_chosen_on_the_held_out_split(tiny_bert, tiny_task, monkeypatch):
    """With a validation split, every evaluation scores it and dev; the best is the one best on
    validation (here made to differ from dev's best), and its dev metrics are what is kept."""
    spec = ExperimentSpec(model=ModelSpec(name=str(tiny_bert), pooling="mean"),
                          data=DataSpec(task="file", path=str(tiny_task), validation_size=12),
                          train=TrainSpec(batch_size=8, epochs=3, device="cpu"),
                          sweep=SweepSpec(r=(2,), alpha=(4.0,), lr=(1e-2,)))
    [cell] = expand_sweep(spec)
    task = load_task(spec.data)
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack([cell], encoder, task.num_labels, "mean")
    train, dev, val = (encode(tokenizer, x, 32, False) for x in (task.train, task.dev, task.validation))
    from lowrank_lab.train import loop

    real, calls = loop.evaluate, []

    def scripted(pack, split, *args):
        out = real(pack, split, *args)
        calls.append(split)
        # validation is best at the first evaluation, dev at the last
        n = sum(c is val for c in calls) if split is val else sum(c is dev for c in calls)
        return [{**o, "accuracy": (1.0 / n) if split is val else n / 10} for o in out]
    monkeypatch.setattr(loop, "evaluate", scripted)
    [state] = train_pack(pack, task, train, dev, tokenizer, torch.device("cpu"), validation=val)
    assert len(state.history) == 3 and all(f"{VAL}accuracy" in h for h in state.history)
    assert state.best is state.history[0] and state.best["accuracy"] == pytest.approx(0.1)
    assert state.history[-1]["accuracy"] == pytest.approx(0.3)  # dev's best, not chosen


def test_results_table_says_where_the_step_was_chosen():
    from types import SimpleNamespace

    from lowrank_lab.analysis.tables import results_table

    [cell] = expand_sweep(ExperimentSpec(sweep=SweepSpec(r=(2,))))
    params = SimpleNamespace(adapter=1, total=2)
    held = SimpleNamespace(best={"epoch": 1, "accuracy": 0.8, "val_accuracy": 0.9}, main_metric="accuracy",
                           final={"accuracy": 0.85}, task="vader", provenance={}, trainable_parameters=params,
                           examples_per_second=1.0)
    old = SimpleNamespace(**{**vars(held), "best": {"epoch": 1, "accuracy": 0.8}})
    table = results_table([("a", cell, held), ("b", cell, old)])
    assert table.selected_on.tolist() == ["validation", "dev"]
    assert table.val_value[0] == 0.9 and math.isnan(table.val_value[1])
    assert table.value.tolist() == [0.8, 0.8] and table.final_value.tolist() == [0.85, 0.85]
    assert "dev_val_accuracy" not in table


def test_a_sweep_with_a_validation_split_reports_where_it_chose(tiny_bert, tiny_task, tmp_path):
    """rank-sweep → tables end to end: every cell's best evaluation chosen on the held-out split."""
    import pandas as pd
    from click.testing import CliRunner

    from lowrank_lab_cli.main import cli

    common = ["--set", f"model.name={tiny_bert}", "--set", "data.task=file", "--set", f"data.path={tiny_task}",
              "--set", "sweep.r=[1,2]", "--set", "train.batch_size=8", "--set", "train.epochs=2",
              "--set", "data.validation_size=10", "--set", f"sweep.out_dir={tmp_path}", "--set", "train.device=cpu"]
    result = CliRunner().invoke(cli, ["rank-sweep", *common])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["tables", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    from lowrank_lab.store import tables as st

    table = st.read_table(tmp_path / "default", st.RESULTS)
    assert (table.selected_on == "validation").all() and table.val_value.notna().all()
    assert table.final_value.notna().all() and "dev_val_accuracy" not in table
