"""truncate and mitigate on a tiny sweep: truncation to k = r is the trained cell, to k = 0 the base
with its head; λ = 1 is the adapter, and λ changes nothing in a cell without intruders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowrank_lab.store import runs
from lowrank_lab.store import tables as st


@pytest.fixture
def tiny_sweep(after_paper_analyzed):
    return after_paper_analyzed


def _summaries(sweep):
    return {run.path.name: run for run in runs.load_sweep(sweep)}


def test_truncation_to_k_r_is_the_trained_cell_and_to_k_0_the_base_with_its_head(tiny_sweep):
    table = st.read_table(tiny_sweep, st.TRUNCATION)
    cells = _summaries(tiny_sweep)
    assert set(table.cell) == set(cells)
    for name, run in cells.items():
        t = table[(table.cell == name) & (table.k_rule == "k")].set_index("k")
        top = 4 if run.spec.lora.method == "lora" and run.spec.lora.r == 4 else (2 if run.spec.lora.method == "lora" else 16)
        assert list(t.index) == [0, 1, 2, 4, 8, 16][: len(t)] and t.index.max() == top
        best = run.summary.best
        assert t.loc[top, "value"] == best["accuracy"]
        assert t.loc[top, "dev_loss"] == pytest.approx(best["dev_loss"], rel=1e-5)
        assert t.loc[top, "energy"] == pytest.approx(1.0) and t.loc[0, "energy"] == 0.0
        assert (np.diff(t.energy.to_numpy()) >= -1e-12).all()
    lora = [n for n, r in cells.items() if r.spec.lora.method == "lora"]
    base_acc = _base_with_head(tiny_sweep, cells[lora[0]])
    assert table[(table.cell == lora[0]) & (table.k == 0) & (table.k_rule == "k")].value.item() == base_acc


def _base_with_head(sweep, run) -> float:
    """Accuracy on dev of the plain base model with the cell's head, computed without the pack."""
    from lowrank_lab.model.base import Classifier
    from lowrank_lab.store.peft_format import read_head
    from lowrank_lab.workflow.edits import open_sweep

    opened = open_sweep(sweep)
    weight, bias, pooling = read_head(run.path)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight), head.bias.copy_(bias)
    model = Classifier(opened.inputs.base, head, pooling).eval()
    dev = opened.inputs.dev
    with torch.no_grad():
        inputs, labels = dev.batch(torch.arange(len(dev)))
        return float((model(**inputs).argmax(-1) == labels).double().mean())


def test_smallest_k_and_medians_come_with_their_intervals(tiny_sweep):
    k = st.read_table(tiny_sweep, st.TRUNCATION_K)
    assert (k.k_min <= k.k_max).all() and (k.k_min >= 0).all()
    med = st.read_table(tiny_sweep, st.TRUNCATION_MEDIANS)
    lora = med[(med.method == "lora") & (med.quantity == "value")]
    assert (lora.n == 2).all() and (lora.lo <= lora["median"]).all() and (lora["median"] <= lora.hi).all()
    full = med[med.method == "full"]
    assert (full.n == 2).all()


def test_lambda_one_is_the_adapter_and_counts_agree_with_the_spectrum_command(tiny_sweep):
    table = st.read_table(tiny_sweep, st.MITIGATION)
    cells = _summaries(tiny_sweep)
    at1 = table[table.lam == 1.0]
    assert set(at1.definition) == {"W0+dW", "dW"} and len(at1) == 2 * 4
    for _, row in at1.iterrows():
        best = cells[row.cell].summary.best
        assert row.value == best["accuracy"] and row.dev_loss == pytest.approx(best["dev_loss"], rel=1e-5)
        assert row.embedding_shift > 0  # the adapter moved the sentence vectors
    # the intruder count of W0 + ΔW at ε = 0.5 is the spectrum command's, summed over matrices
    from lowrank_lab.workflow.sweep import compute_spectrum

    compute_spectrum(tiny_sweep)
    intr = st.read_table(tiny_sweep, st.INTRUDERS)
    ours = at1[at1.definition == "W0+dW"].set_index("cell").n_intruders
    theirs = intr[(intr.epsilon == 0.5) & (intr.method == "lora")].groupby("cell").n_intruders.sum()
    assert ours.sort_index().tolist() == theirs.loc[ours.index].sort_index().tolist()


def test_lambda_zero_changes_only_cells_with_intruders_and_the_tables_are_complete(tiny_sweep):
    table = st.read_table(tiny_sweep, st.MITIGATION)
    for (cell, definition), g in table.groupby(["cell", "definition"]):
        g = g.set_index("lam")
        assert sorted(g.index) == [0.0, 0.25, 0.5, 0.75, 1.0]
        if g.n_intruders.iloc[0] == 0:  # nothing to scale: every λ is the adapter
            assert g.embedding_shift.nunique() == 1
    trade = st.read_table(tiny_sweep, st.MITIGATION_TRADEOFF)
    assert set(trade.n) == {2}
    corr = st.read_table(tiny_sweep, st.MITIGATION_CORRELATION)
    assert set(corr.definition) == {"W0+dW", "dW"} and (corr.n == 4).all()
    signs = st.read_table(tiny_sweep, st.MITIGATION_SIGN_TESTS)
    assert ((signs.wins + signs.losses + signs.ties) == 4).all() and signs.p_value.between(0, 1).all()
