"""Analysis tables against direct dense computations on small cases, and the fixture sweep's tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from lowrank_lab.analysis import tables as an
from lowrank_lab.maths import linalg
from lowrank_lab.store import layout, runs, tensors
from lowrank_lab.store import tables as st
from lowrank_lab.analysis import sweep as sa
from lowrank_lab.workflow import sweep as ws
from lowrank_lab.maths.update import DenseUpdate, LowRankUpdate

ROOT = Path(__file__).resolve().parents[2]


def _update(gen, r, d=12, k=10, label="L0.q", scaling=0.5) -> LowRankUpdate:
    A = torch.randn(r, k, generator=gen, dtype=torch.float64)
    B = torch.randn(d, r, generator=gen, dtype=torch.float64)
    return LowRankUpdate(label, f"encoder.layer.0.{label}", A, B, scaling)


def _dense_basis(u: LowRankUpdate, side: str) -> torch.Tensor:
    dW = u.scaling * u.B @ u.A
    if side == "A":
        return torch.linalg.svd(u.A, full_matrices=False)[2].mT
    if side == "B":
        return torch.linalg.svd(u.B, full_matrices=False)[0]
    U, _, Vh = torch.linalg.svd(dW, full_matrices=False)
    return (Vh.mT if side == "dW_right" else U)[:, : u.r]


@pytest.mark.parametrize("side", st.SIDES)
def test_phi_table_equals_dense_formula_on_every_cell(gen, side):
    u1, u2 = _update(gen, 3), _update(gen, 5)
    table = an.phi_table({"L0.q": u1}, {"L0.q": u2}, side)
    V1, V2 = _dense_basis(u1, side), _dense_basis(u2, side)
    assert len(table) == 3 * 5 and set(table["label"]) == {"L0.q"}
    for row in table.itertuples():
        expected = (V1[:, : row.i].mT @ V2[:, : row.j]).square().sum() / min(row.i, row.j)
        assert row.phi == pytest.approx(float(expected), abs=1e-9)
        assert row.phi_random == pytest.approx(max(row.i, row.j) / V1.shape[0])


def test_phi_table_only_compares_labels_present_in_both(gen):
    table = an.phi_table({"L0.q": _update(gen, 2), "L0.v": _update(gen, 2, label="L0.v")},
                         {"L0.q": _update(gen, 2)})
    assert set(table["label"]) == {"L0.q"} and set(table["layer"]) == {0} and set(table["module"]) == {"q"}


def test_phi_w0_uses_w0_right_singular_vectors_for_side_A(gen):
    u = _update(gen, 4)
    W0 = torch.randn(12, 10, generator=gen, dtype=torch.float64)
    table = an.phi_w0_table({"L0.q": u}, {"L0.q": W0}, "A", n_w0=6, generator=gen)
    V0 = torch.linalg.svd(W0)[2].mT[:, :6]
    V = _dense_basis(u, "A")
    mine = table[table["source"] == "adapter"]
    assert len(mine) == 6 * 4 and len(table[table["source"] == "random"]) == 6 * 4
    for row in mine.itertuples():
        expected = (V0[:, : row.i].mT @ V[:, : row.j]).square().sum() / min(row.i, row.j)
        assert row.phi == pytest.approx(float(expected), abs=1e-9)


def test_amplification_table_equals_dense_recomputation_and_accepts_a_w0_callable(gen):
    u = _update(gen, 3)
    W0 = torch.randn(12, 10, generator=gen, dtype=torch.float64)
    table = an.amplification_table({"L0.q": u}, lambda update: W0)
    dW = u.scaling * u.B @ u.A
    U, S, Vh = torch.linalg.svd(dW)
    proj = torch.linalg.matrix_norm(U[:, :3].mT @ W0 @ Vh[:3].mT)
    row = table.iloc[0]
    assert row["norm_delta_w"] == pytest.approx(float(torch.linalg.matrix_norm(dW)))
    assert row["proj_delta_w"] == pytest.approx(float(proj))
    assert row["amplification"] == pytest.approx(float(torch.linalg.matrix_norm(dW) / proj))
    assert row["norm_w0"] == pytest.approx(float(torch.linalg.matrix_norm(W0)))
    assert (row["d"], row["k"], row["r"]) == (12, 10, 3)


def test_spectrum_table_equals_svdvals_of_dense_delta_w(gen):
    u = _update(gen, 4)
    table = an.spectrum_table(an.spectra({"L0.q": u}))
    dense = torch.linalg.svdvals(linalg.delta_w(u.A, u.B, u.scaling))[:4]
    torch.testing.assert_close(torch.tensor(table["sigma"].to_numpy()), dense)
    assert table["energy"].iloc[-1] == pytest.approx(1.0)
    metrics = an.spectrum_metrics_table(an.spectra({"L0.q": u})).iloc[0]
    assert metrics["stable_rank"] == pytest.approx(float(dense.square().sum() / dense[0] ** 2))


def test_intruder_table_counts_match_a_dense_recount(gen):
    u = _update(gen, 2, scaling=5.0)
    W0 = torch.randn(12, 10, generator=gen, dtype=torch.float64)
    table = an.intruder_table({"L0.q": u}, {"L0.q": W0}, epsilons=(0.3, 0.6, 0.9), top_k=4)
    U0 = torch.linalg.svd(W0, full_matrices=False)[0]
    Ut = torch.linalg.svd(W0 + u.scaling * u.B @ u.A, full_matrices=False)[0][:, :4]
    max_cos = (Ut.mT @ U0).abs().amax(dim=1)
    assert table["n_intruders"].tolist() == [int((max_cos < e).sum()) for e in (0.3, 0.6, 0.9)]


def test_eckart_young_lora_point_equals_dense_relative_error(gen):
    u = _update(gen, 3)
    D = torch.randn(12, 10, generator=gen, dtype=torch.float64)
    table = an.eckart_young_table({"L0.q": DenseUpdate("L0.q", "x", D, 10, "full")}, {"cell": {"L0.q": u}})
    point = table[table["source"] == "cell"].iloc[0]
    dense = torch.linalg.matrix_norm(D - u.scaling * u.B @ u.A) / torch.linalg.matrix_norm(D)
    assert point["k"] == 3 and point["rel_error"] == pytest.approx(float(dense))
    curve = table[table["source"] == "best_rank_k"]
    assert curve["rel_error"].iloc[0] == pytest.approx(1.0) and curve["rel_error"].iloc[-1] == pytest.approx(0.0)


def test_default_n_w0_is_ten_percent_with_a_floor_and_a_cap():
    assert an.default_n_w0(16, 16) == 16
    assert an.default_n_w0(384, 384) == 39
    assert an.default_n_w0(12288, 12288) == 1229  # the paper's ≈10% of GPT-3's d


# ---------------------------------------------------------------------------------------------
# The fixture sweep


def test_sweep_phi_compares_ranks_at_one_seed_and_seeds_at_one_rank(analyzed):
    phi = st.read_table(analyzed, st.PHI)
    ranks = phi[phi["comparison"] == "ranks"]
    assert (ranks["seed1"] == ranks["seed2"]).all() and (ranks["r1"] < ranks["r2"]).all()
    seeds = phi[phi["comparison"] == "seeds"]
    assert (seeds["r1"] == seeds["r2"]).all() and (seeds["seed1"] < seeds["seed2"]).all()
    assert set(phi.loc[phi["comparison"] == "random", "label"]) == {"random"}
    assert phi["phi"].between(0, 1).all()


def test_sweep_amplification_matches_the_run_and_base_weights_directly(analyzed):
    amp = st.read_table(analyzed, st.AMPLIFICATION)
    run = runs.load_run(analyzed / "cells" / "lora-qv-r4-alpha_r-kaiming-seed1")
    u = run.updates["L2.v"]
    from lowrank_lab.store.models import load_base

    encoder, _ = load_base(str(ROOT / "tests/fixtures/sweep/base"))
    W0 = encoder.encoder.layer[2].attention.self.value.weight.detach().double()
    row = amp[(amp["cell"] == run.path.name) & (amp["label"] == "L2.v")].iloc[0]
    dW = u.scaling * u.B.double() @ u.A.double()
    assert row["norm_delta_w"] == pytest.approx(float(torch.linalg.matrix_norm(dW)), rel=1e-5)
    assert row["norm_w0"] == pytest.approx(float(torch.linalg.matrix_norm(W0)), rel=1e-5)
    assert (row["r"], row["seed"], row["targets"], row["layer"], row["module"]) == (4, 1, "q,v", 2, "v")


def test_full_fine_tuning_delta_is_trained_minus_base_weight(analyzed):
    from lowrank_lab.store.models import load_base
    from lowrank_lab.workflow.sweep import SweepInputs

    inputs = SweepInputs(analyzed, str(ROOT / "tests/fixtures/sweep/base"))
    full = next(r for r in inputs.runs if r.spec.lora.method == "full")
    weights = tensors.read_tensors(layout.weights_path(full.path))
    deltas = {label: u.delta_w() for label, u in inputs.full[full.path.name].items()}
    encoder, _ = load_base(str(ROOT / "tests/fixtures/sweep/base"))  # W0 from the model itself, not the reader
    layer = encoder.encoder.layer[1]
    W_ft = weights["encoder.layer.1.attention.output.dense.weight"]
    torch.testing.assert_close(deltas["L1.o"], W_ft.double() - layer.attention.output.dense.weight.double())
    W_up, W_down = weights["encoder.layer.1.intermediate.dense.weight"], weights["encoder.layer.1.output.dense.weight"]
    torch.testing.assert_close(deltas["L1.up"], W_up.double() - layer.intermediate.dense.weight.double())  # MLP too
    torch.testing.assert_close(deltas["L1.down"], W_down.double() - layer.output.dense.weight.double())
    assert list(deltas)[:6] == ["L0.q", "L0.k", "L0.v", "L0.o", "L0.up", "L0.down"]
    spectrum = st.read_table(analyzed, st.SPECTRUM)
    assert {"lora", "full"} <= set(spectrum["method"])


def test_every_table_has_a_sidecar_with_conventions_spec_and_provenance(analyzed):
    for name in st.TABLES:
        side = json.loads(st.table_path(analyzed, name).with_suffix(".json").read_text())
        assert side["table"] == name and "git_commit" in side["provenance"]
        assert side["conventions"]["delta_w"].endswith("INCLUDES the scaling")
        assert side["sweep_spec"]["sweep"]["r"] == [1, 2, 4, 8]
        # where the analysis ran, and where the cells were trained
        assert side["provenance"]["device"] == "cpu" and "cuda_driver" in side["provenance"]
        assert side["training_provenance"] == side["sweep_spec"]["provenance"]
        assert side["training_provenance"]["device_name"]


def test_reading_a_table_that_was_not_computed_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="lowrank-lab subspace"):
        st.read_table(tmp_path, st.PHI)


def _sweep_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("figures", "report", "tables"))
    return dst


def test_subspace_of_side_B_keeps_the_side_A_table_that_report_reads(analyzed, tmp_path):
    sweep = _sweep_copy(analyzed, tmp_path / "sweep")
    before = st.read_table(sweep, st.PHI)
    paths = ws.compute_subspace(sweep, ["B"], base=str(ROOT / "tests/fixtures/sweep/base"))
    assert {p.name for p in paths} == {"phi_B.parquet", "phi_w0_B.parquet"}
    after = st.read_table(sweep, st.PHI)
    assert set(after["side"]) == {"A"} and after.equals(before)
    assert set(st.read_table(sweep, st.PHI, side="B")["side"]) == {"B"}
    assert (st.table_side(sweep, st.PHI), st.table_side(sweep, st.PHI, "B")) == ("A", "B")
    assert st.sides_computed(sweep) == ["A", "B"] and st.table_side(sweep, st.AMPLIFICATION) is None


def test_a_table_read_back_is_bit_identical_and_its_sidecar_states_the_format(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("spec.json", "manifest.json"):
        shutil.copy(ROOT / "tests/fixtures/sweep" / name, sweep / name)
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = (values * 10.0 ** torch.randint(-30, 30, (1000,), generator=torch.Generator().manual_seed(1))).numpy()
    frame = pd.DataFrame({"label": "L0.q", "phi": values, "third": [1 / 3] * 1000})
    st.write_table(sweep, st.AMPLIFICATION, frame, {}, an.CONVENTIONS)
    back = st.read_table(sweep, st.AMPLIFICATION)
    assert (back["phi"].to_numpy() == values).all() and (back["third"] == 1 / 3).all()
    assert st.read_sidecar(sweep, st.AMPLIFICATION)["format"]["floats"].startswith("float64 stored exactly")
    assert st.is_current(sweep, st.AMPLIFICATION)


def test_ensure_tables_recomputes_only_what_is_stale(analyzed, tmp_path):
    sweep = _sweep_copy(analyzed, tmp_path / "sweep")
    assert ws.stale(sweep) == {}
    meta = json.loads(st.table_path(sweep, st.AMPLIFICATION).with_suffix(".json").read_text())
    meta["cells"] = meta["cells"][:-1]  # as if a cell had finished since
    st.table_path(sweep, st.AMPLIFICATION).with_suffix(".json").write_text(json.dumps(meta))
    assert ws.stale(sweep) == {"amplify": ("A",)}
    written = ws.ensure_tables(sweep, base=str(ROOT / "tests/fixtures/sweep/base"), echo=lambda _: None)
    assert [p.name for p in written] == ["amplification.parquet"] and ws.stale(sweep) == {}


def test_analysis_tables_does_not_import_the_sweep_module():
    import ast

    source = (ROOT / "lowrank_lab/analysis/tables.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert "lowrank_lab.analysis.sweep" not in imported
