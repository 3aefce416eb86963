"""The notebook API on the committed fixture sweep (copied to tmp_path before anything writes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lowrank_lab as ll
from lowrank_lab.store import files
from lowrank_lab.store import tables as st
from lowrank_lab.workflow import sweep as ws

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "sweep"
BASE = FIXTURE / "base"
CELL = "lora-qv-r4-alpha_r-kaiming-seed0"


@pytest.fixture
def sweep(tmp_path) -> Path:
    """The fixture sweep, copied."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "sweep", ignore=shutil.ignore_patterns("analysis")))


@pytest.fixture
def analyzed_sweep(analyzed, tmp_path) -> Path:
    """The fixture sweep with its side-A tables computed (conftest's `analyzed`), copied."""
    return Path(shutil.copytree(analyzed, tmp_path / "sweep", ignore=shutil.ignore_patterns("figures", "report")))


def test_cells_are_the_finished_cells_with_their_spec_fields_and_best_metric(sweep):
    s = ll.open_sweep(sweep, base=BASE)
    cells = s.cells
    assert len(cells) == len(st.done_cells(sweep))
    row = cells.set_index("cell").loc[CELL]
    assert (row["method"], row["targets"], row["r"], row["seed"]) == ("lora", "q,v", 4, 0)
    assert {"metric", "value", "alpha", "scaling_rule", "init"} <= set(cells.columns)


def test_tables_are_computed_once_saved_and_read_back_when_current(analyzed_sweep, monkeypatch):
    sweep = analyzed_sweep
    st.table_path(sweep, st.AMPLIFICATION).unlink()
    amp = ll.open_sweep(sweep, base=BASE).amplification()
    assert st.is_current(sweep, st.AMPLIFICATION) and len(amp) > 0
    monkeypatch.setattr(ws, "compute_amplification", lambda *a, **k: pytest.fail("recomputed a current table"))
    again = ll.open_sweep(sweep, base=BASE)
    assert again.amplification().equals(st.read_table(sweep, st.AMPLIFICATION))
    assert again.amplification() is again.amplification()  # cached in memory too


def test_phi_of_each_side_is_its_own_table(analyzed_sweep):
    sweep = analyzed_sweep
    s = ll.open_sweep(sweep, base=BASE)
    a, b = s.phi(), s.phi(side="B")
    assert set(a["side"]) == {"A"} and set(b["side"]) == {"B"}
    assert st.sides_computed(sweep) == ["A", "B"]
    assert set(s.phi_w0()["source"]) == {"adapter", "random"}


def test_load_adapter_gives_updates_and_the_analysis_tables(tmp_path):
    adapter = ll.load_adapter(FIXTURE / "cells" / CELL / "adapter", base=BASE)
    assert adapter.name == CELL and {"L0.q", "L0.v"} <= set(adapter.updates)
    u = adapter.updates["L1.q"]
    U, S, Vh = u.svd()
    torch.testing.assert_close(U @ torch.diag(S) @ Vh, u.delta_w(), atol=1e-5, rtol=1e-4)
    metrics = adapter.spectrum_metrics().set_index("label")
    assert metrics.loc["L1.q", "sigma_max"] == pytest.approx(float(S[0]), rel=1e-5)
    assert set(adapter.amplification()["label"]) == set(adapter.updates)
    assert not (tmp_path / "analysis").exists() and not (FIXTURE / "cells" / CELL / "adapter" / "analysis").exists()


def test_compare_gives_phi_and_distances_named_by_cell():
    a = ll.load_adapter(FIXTURE / "cells" / CELL / "adapter", base=BASE)
    frames = ll.compare(a, FIXTURE / "cells" / "lora-qv-r4-alpha_r-kaiming-seed1" / "adapter", base=BASE)
    dist = frames["distances"]
    assert set(dist["adapter1"]) == {CELL} and set(dist["adapter2"]) == {"lora-qv-r4-alpha_r-kaiming-seed1"}
    assert (dist["frobenius"] > 0).all() and set(frames["phi"]["label"]) == set(dist["label"])


def test_open_sweep_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    with pytest.raises(files.RunError, match="not a sweep"):
        ll.open_sweep(tmp_path)


def test_importing_the_package_or_present_does_not_import_torch():
    code = "import sys, lowrank_lab, lowrank_lab.present.plotting; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
