"""Ctrl-C and SIGTERM: the pack in progress is checkpointed, the CLI says where it stopped and
exits non-zero, the manifest says interrupted, and a rerun resumes as if never stopped."""

import os
import signal

import pytest
import torch
from click.testing import CliRunner

from lowrank_lab.spec import CellSpec, DataSpec, LoRASpec, ModelSpec, TrainSpec, expand_sweep, load_spec
from lowrank_lab.store import checkpoints, layout, runs
from lowrank_lab.store.models import load_base
from lowrank_lab.train.data import load_task
from lowrank_lab.train.interrupt import Interrupted, StopRequest
from lowrank_lab.train.batches import encode
from lowrank_lab.train.loop import train_pack
from lowrank_lab.train.pack import build_pack
from lowrank_lab.train.sweep import pack_id, run_sweep
from lowrank_lab_cli.main import cli


def _train(tiny_bert, tiny_task, stop=None, saved=None, **train):
    """The checkpoint steps of one cell's training."""
    cell = CellSpec(ModelSpec(name=str(tiny_bert), pooling="mean"), DataSpec(task="file", path=str(tiny_task)),
                    LoRASpec(r=2, alpha=4.0), TrainSpec(batch_size=8, epochs=2, lr=1e-2, device="cpu", **train))
    task = load_task(cell.data)
    encoder, tokenizer = load_base(str(tiny_bert))
    pack = build_pack([cell], encoder, task.num_labels, "mean")
    saved = [] if saved is None else saved
    train_pack(pack, task, encode(tokenizer, task.train, 32, False), encode(tokenizer, task.dev, 32, False),
               tokenizer, torch.device("cpu"), on_checkpoint=lambda step, *_: saved.append(step), stop=stop)
    return saved


def test_a_stop_request_checkpoints_the_step_then_raises_interrupted(tiny_bert, tiny_task):
    stop = StopRequest()
    stop.signum = signal.SIGTERM  # as if SIGTERM had arrived during the first step
    saved = []
    with pytest.raises(Interrupted) as err:
        _train(tiny_bert, tiny_task, stop, saved)
    assert err.value.step == 1 and err.value.exit_code == 128 + signal.SIGTERM
    assert str(err.value) == "interrupted at step 1; rerun to resume"
    assert saved == [1]  # checkpointed at the step it stopped after, though checkpoint_every is 200


def test_checkpoints_follow_a_time_cadence_beside_the_step_cadence(tiny_bert, tiny_task):
    by_steps = _train(tiny_bert, tiny_task, max_steps=5, checkpoint_every=2, checkpoint_seconds=1e9)
    by_time = _train(tiny_bert, tiny_task, max_steps=5, checkpoint_every=10_000, checkpoint_seconds=1e-9)
    assert by_steps == [2, 4] and by_time == [1, 2, 3, 4]  # none after the last step: the pack is done


def test_a_stop_request_catches_the_first_signal_and_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _args(tiny_bert, tiny_task, out):
    values = {"model.name": f'"{tiny_bert}"', "model.pooling": "mean", "data.task": "file",
              "data.path": f'"{tiny_task}"', "sweep.out_dir": f'"{out}"', "sweep.r": "[2]",
              "train.batch_size": 8, "sweep.lr": "[1e-2]", "train.device": "cpu", "sweep.alpha": "[4.0]",
              "train.epochs": 2, "train.checkpoint_every": 1000}
    return [f"{k}={v}" for k, v in values.items()]


def _factors(sweep):
    return {f"{run.spec.name}/{label}": (u.A, u.B) for run in runs.load_sweep(sweep) for label, u in run.updates.items()}


def test_ctrl_c_checkpoints_the_pack_says_where_and_a_rerun_resumes_it(tiny_bert, tiny_task, tmp_path, monkeypatch):
    reference = run_sweep(load_spec(None, _args(tiny_bert, tiny_task, tmp_path / "ref")), echo=lambda *_: None)
    overrides = _args(tiny_bert, tiny_task, tmp_path / "out")
    args = ["rank-sweep", *[x for o in overrides for x in ("--set", o)]]
    sweep = tmp_path / "out" / "default"
    append = layout.append_metrics

    def ctrl_c_at_the_first_evaluation(folder, record):
        append(folder, record)
        if record["step"] == 6:  # the end of epoch 1 (6 steps of 8 of the 51 training rows)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(layout, "append_metrics", ctrl_c_at_the_first_evaluation)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 128 + signal.SIGINT, result.output
    assert "interrupted at step 6; rerun to resume" in result.output and "Aborted" not in result.output
    manifest = layout.read_manifest(sweep)
    assert {(e.status, e.step) for e in manifest.cells.values()} == {("interrupted", 6)}
    (cell,) = expand_sweep(load_spec(None, overrides))
    assert checkpoints.load_checkpoint(layout.pack_dir(sweep, pack_id([cell])))[1]["step"] == 6

    monkeypatch.undo()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"resuming {cell.name} from step 6" in result.output
    assert not (sweep / "packs").exists()  # no empty pack folders left behind
    assert layout.read_summary(layout.cell_dir(sweep, cell)).pack.resumed_at_step == 6
    ours, theirs = _factors(sweep), _factors(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=key)
