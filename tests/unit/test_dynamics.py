"""Snapshots during training and the dynamics tables: step 0 sits at the random baseline in every
layer (one generator per module), the last snapshot is the saved adapter, a resumed pack rewrites
what came after its checkpoint."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_bert, write_tiny_task
from lowrank_lab.spec import load_spec
from lowrank_lab.store import layout, runs, snapshots
from lowrank_lab.train.sweep import run_sweep
from lowrank_lab.workflow import dynamics as wd


@pytest.fixture(scope="module")
def snapshot_sweep(tmp_path_factory):
    """r ∈ {8, 64} × seeds {0, 1} on a 2-layer BERT with d = k = 128, 6 steps, snapshots every 2."""
    root = tmp_path_factory.mktemp("dyn")
    base = make_tiny_bert(root / "base", layers=2, hidden=128)
    task = write_tiny_task(root / "task.csv", n=96)  # more than 6 batches of training rows: one evaluation
    spec = load_spec(None, [
        f"model.name={base}", "model.pooling=mean", "model.max_length=16", "data.task=file", f"data.path={task}",
        "sweep.alpha=[8.0]", "train.max_steps=6", "train.batch_size=8", "sweep.lr=[1e-2]", "train.device=cpu",
        "train.snapshot_every=2", "sweep.r=[8,64]", "sweep.seeds=[0,1]", f"sweep.out_dir={root}", "sweep.name=s",
    ])
    sweep = run_sweep(spec, echo=lambda *_: None)
    wd.compute_dynamics(sweep, echo=lambda *_: None)
    return sweep


def test_snapshots_at_step_zero_every_n_and_the_last_step_and_the_last_equals_the_saved_adapter(snapshot_sweep):
    for run in runs.load_sweep(snapshot_sweep):
        assert snapshots.snapshot_steps(run.path) == [0, 2, 4, 6]
        first, head0 = snapshots.read_snapshot(run.path, 0)
        assert all(float(u.B.abs().max()) == 0 for u in first.values())  # B = 0 at init
        last, head = snapshots.read_snapshot(run.path, 6)
        assert set(last) == set(run.updates) and head.keys() == {"weight", "bias"}
        assert [m["step"] for m in run.metrics if m["kind"] == "eval"] == [6]
        for label, u in run.updates.items():  # one evaluation, at the end: the saved adapter is the last step's
            assert torch.equal(last[label].A, u.A) and torch.equal(last[label].B, u.B)
            assert last[label].scaling == u.scaling and last[label].path == u.path
            assert not torch.equal(first[label].A, u.A)  # training moved A


def test_phi_at_step_zero_sits_at_the_random_baseline_in_every_layer(snapshot_sweep):
    from lowrank_lab.store import tables as st

    phi = st.read_table(snapshot_sweep, st.DYNAMICS_PHI)
    start = phi[(phi.step == 0) & phi.comparison.isin(["ranks", "seeds"])]
    assert set(start.comparison) == {"ranks", "seeds"} and set(start.layer) == {0, 1}
    assert len(start) == 2 * 2 * 4  # (8 vs 64 at 2 seeds, 2 pairs of seeds) × 2 layers × q, v
    assert (start.n_random >= 100).all()
    z = (start.phi - start.phi_random) / start.phi_random_sd
    assert z.abs().max() < 4, start.assign(z=z)[["comparison", "label", "r1", "r2", "phi", "phi_random", "z"]]
    # the random baseline's mean is max(i, j)/k's
    assert ((start.phi_random - start[["r1", "r2"]].max(axis=1) / start.dim).abs() < 4 * start.phi_random_sd
            / 100 ** 0.5).all()
    final = phi[phi.comparison == "final"]
    assert (final[final.step == 6].phi > 1 - 1e-9).all()


def test_one_generator_per_cell_would_have_failed(snapshot_sweep):
    """The old scheme (one generator per cell, modules drawn in turn) shares rows between ranks."""
    from lowrank_lab.maths.linalg import phi_grid, top_right_basis
    from lowrank_lab.model.lora import init_A

    A8 = init_A(8, 128, "kaiming", torch.Generator().manual_seed(0))
    A64 = init_A(64, 128, "kaiming", torch.Generator().manual_seed(0))
    assert float(phi_grid(top_right_basis(A8.double()), top_right_basis(A64.double()))[-1, -1]) > 0.999


def test_spectrum_over_steps_starts_at_zero_and_grows(snapshot_sweep):
    from lowrank_lab.store import tables as st

    spec = st.read_table(snapshot_sweep, st.DYNAMICS_SPECTRUM)
    assert set(spec.step) == {0, 2, 4, 6}
    start, end = spec[spec.step == 0], spec[spec.step == 6]
    assert (start.frobenius == 0).all() and (start.rank_90 == 0).all() and (start.n_intruders == 0).all()
    assert (end.frobenius > 0).all() and (end.stable_rank >= 1 - 1e-9).all()


def test_a_resumed_pack_drops_the_snapshots_after_its_checkpoint(tmp_path):
    cell = tmp_path / "cell"
    from lowrank_lab.maths.update import LowRankUpdate

    u = LowRankUpdate("L0.q", "encoder.layer.0.attention.self.query", torch.ones(2, 4), torch.zeros(3, 2), 0.5)
    for step in (0, 2, 4):
        snapshots.write_snapshot(cell, step, [u])
    snapshots.keep_snapshots_until(cell, 2)
    assert snapshots.snapshot_steps(cell) == [0, 2]
    back, head = snapshots.read_snapshot(cell, 2)
    assert torch.equal(back["L0.q"].A, u.A) and back["L0.q"].scaling == 0.5 and head == {}
    layout.start_cell(cell, _cell_spec())  # a cell that starts afresh has no snapshots
    assert snapshots.snapshot_steps(cell) == []


def _cell_spec():
    from lowrank_lab.spec import ExperimentSpec, expand_sweep

    return expand_sweep(ExperimentSpec())[0]


def test_an_interrupted_sweep_resumes_to_the_same_snapshots(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import os
    import signal

    from lowrank_lab.train.interrupt import Interrupted

    def spec(out):
        return load_spec(None, [f"model.name={tiny_bert}", "model.pooling=mean", "data.task=file",
                                f"data.path={tiny_task}", f"sweep.out_dir={out}", "sweep.r=[2]", "sweep.alpha=[4.0]",
                                "train.batch_size=8", "sweep.lr=[1e-2]", "train.device=cpu", "train.epochs=2",
                                "train.checkpoint_every=1000", "train.snapshot_every=4"])

    reference = run_sweep(spec(tmp_path / "ref"), echo=lambda *_: None)
    append = layout.append_metrics

    def ctrl_c_at_the_first_evaluation(folder, record):
        append(folder, record)
        if record.get("kind") == "eval" and record["step"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(layout, "append_metrics", ctrl_c_at_the_first_evaluation)
    with pytest.raises(Interrupted):
        run_sweep(spec(tmp_path / "out"), echo=lambda *_: None)
    monkeypatch.undo()
    (cell,) = runs.load_sweep(reference)
    folder = tmp_path / "out" / "default" / "cells" / cell.path.name
    assert snapshots.snapshot_steps(folder) == [0, 4]  # step 6's checkpoint comes before step 8's snapshot
    sweep = run_sweep(spec(tmp_path / "out"), echo=lambda *_: None)
    ours, theirs = snapshots.read_snapshots(layout.cell_dir(sweep, cell.path.name)), snapshots.read_snapshots(cell.path)
    assert list(ours) == list(theirs) == [0, 4, 8, 12]
    for step in ours:
        for label in ours[step]:
            torch.testing.assert_close(ours[step][label].A, theirs[step][label].A, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ours[step][label].B, theirs[step][label].B, rtol=1e-5, atol=1e-6)
