"""The analysis tables of the fixture sweep are bit-identical to those computed before the analysis
corridor was rebuilt around the update value objects (fingerprints in fixtures/golden_tables.json,
made by the code of commit f4a00d6; ``digest`` says what a fingerprint covers). The results table is
not among them: it is read from the cells' summaries, not computed from their adapters, and gained
the held-out selection's columns since. Since the tables became Parquet, φ keeps only some rows
(the golden file's _note says which); those it keeps are still the ones computed before."""

import json
import shutil
from pathlib import Path

import pytest

from digest import digest
from lowrank_lab.store import tables as st
from lowrank_lab.workflow.sweep import compute_subspace

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden_tables.json").read_text())


@pytest.fixture(scope="module")
def every_side(analyzed, tmp_path_factory):
    """A copy of the analysed fixture sweep with φ computed for every side, not only A."""
    sweep = tmp_path_factory.mktemp("golden") / "sweep"
    shutil.copytree(analyzed, sweep)
    compute_subspace(sweep, st.SIDES[1:], base=str(Path(__file__).parents[1] / "fixtures" / "sweep" / "base"))
    return sweep


@pytest.mark.parametrize("stem", sorted(k for k in GOLDEN if not k.startswith("_")))
def test_fixture_tables_equal_the_golden_ones_bit_for_bit(every_side, stem):
    name, side = next((n, s) for n in st.TABLES for s in st.SIDES if st.table_file(n, s) == stem)
    table = st.read_table(every_side, name, side).drop(columns="grid", errors="ignore")  # new since (GOLDEN's _note)
    assert list(table.columns) == GOLDEN[stem]["columns"] and len(table) == GOLDEN[stem]["rows"]
    assert digest(table) == GOLDEN[stem]["sha256"]
