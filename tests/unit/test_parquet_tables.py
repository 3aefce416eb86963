"""Analysis tables at scale: Parquet that reads back bit-identical, CSV on request and from older
sweeps, complete φ grids only where the figures draw them, the intruders' top-k route measured
against the dense one, and the φ figures of any matrix kind."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from digest import digest
from lowrank_lab.analysis import sweep as sa
from lowrank_lab.present import registry
from lowrank_lab.present.entry import View
from lowrank_lab.store import tables as st
from lowrank_lab.workflow import sweep as ws


def test_a_fresh_analysis_writes_parquet_that_reads_back_bit_identical(analyzed, tmp_path):
    for name in st.TABLES:
        path = st.table_path(analyzed, name)
        assert path.suffix == ".parquet" and path.exists() and not path.with_suffix(".csv").exists()
        table = st.read_table(analyzed, name)
        again = tmp_path / f"{name}.parquet"
        again.write_bytes(st.parquet_bytes(table))
        assert digest(st.read_parquet_table(again)) == digest(table)
        assert json.loads(path.with_suffix(".json").read_text())["format"]["name"] == "parquet"
    text = [f for f in pq.read_metadata(st.table_path(analyzed, st.PHI)).schema.to_arrow_schema()
            if f.name in ("label", "module", "comparison", "grid")]
    row_group = pq.ParquetFile(st.table_path(analyzed, st.PHI)).metadata.row_group(0)
    encodings = {row_group.column(i).path_in_schema: row_group.column(i).encodings for i in range(row_group.num_columns)}
    assert len(text) == 4 and all("RLE_DICTIONARY" in encodings[f.name] or "PLAIN_DICTIONARY" in encodings[f.name]
                                  for f in text)  # labels dictionary-encoded
    assert pd.api.types.is_float_dtype(st.read_table(analyzed, st.PHI)["phi"])


def test_csv_on_request_equals_the_parquet_and_an_older_sweeps_csv_still_reads(analyzed, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(analyzed, sweep)
    [path] = ws.compute_amplification(sweep, csv=True)
    assert path.with_suffix(".csv").exists()
    parquet = st.read_table(sweep, st.AMPLIFICATION)
    assert digest(st.read_csv_table(path.with_suffix(".csv"))) == digest(parquet)
    path.unlink()  # an older sweep: CSV only, the sidecar of the CSV format
    assert digest(st.read_table(sweep, st.AMPLIFICATION)) == digest(parquet)
    assert not st.is_current(sweep, st.AMPLIFICATION)  # and report recomputes it as Parquet


def test_phi_keeps_complete_grids_for_the_figures_pairs_and_diagonals_elsewhere(analyzed):
    phi = st.read_table(analyzed, st.PHI)
    ranks = phi[phi["comparison"] == "ranks"]
    complete = ranks[ranks["grid"] == "complete"]
    assert set(zip(complete["r1"], complete["r2"])) == {(sa.figure_rank([1, 2, 4, 8]), 8)} == {(4, 8)}
    for (r1, r2, label, seed, targets), g in complete.groupby(["r1", "r2", "label", "seed1", "targets"]):
        assert len(g) == r1 * r2  # every (i, j)
    diagonal = phi[phi["grid"] == "diagonal"]
    assert len(diagonal) and (diagonal["i"] == diagonal["j"]).all()
    seeds = phi[(phi["comparison"] == "seeds") & (phi["grid"] == "complete")]
    assert set(seeds["r1"]) == {8}
    w0 = st.read_table(analyzed, st.PHI_W0)
    assert set(w0.loc[w0["grid"] == "complete", "r2"]) == sa.figure_w0_ranks([1, 2, 4, 8]) == {2, 4, 8}
    assert (w0.loc[w0["grid"] == "diagonal", "r2"] == 1).all()


def test_the_intruders_sidecar_states_the_randomized_routes_error(analyzed):
    meta = st.read_sidecar(analyzed, st.INTRUDERS)
    route = meta["options"]["intruders_route"]
    assert route["method"] == "randomized" and route["checked_against_dense"]
    for check in route["checked_against_dense"]:
        assert check["counts_equal"] and 0 <= check["max_abs_error_max_cos"] < 1e-10


def test_the_randomized_intruder_route_equals_the_dense_one_on_a_decaying_spectrum():
    from lowrank_lab.maths.spectrum import intruder_dimensions

    gen = torch.Generator().manual_seed(0)
    d, k = 96, 160
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(k, d, generator=gen, dtype=torch.float64))
    W0 = (U * 0.9 ** torch.arange(d, dtype=torch.float64)) @ V.mT
    W = W0 + 0.5 * torch.randn(d, 2, generator=gen, dtype=torch.float64) @ torch.randn(2, k, generator=gen, dtype=torch.float64) / k
    dense, fast = (intruder_dimensions(W0, W, 10, method=m) for m in ("dense", "randomized"))
    assert torch.allclose(dense["max_cos"], fast["max_cos"], atol=1e-10)
    with pytest.raises(ValueError, match="method='qr'"):
        intruder_dimensions(W0, W, 10, method="qr")


def test_phi_figures_draw_any_matrix_kind(analyzed):
    frames = {st.PHI: st.read_table(analyzed, st.PHI), st.PHI_W0: st.read_table(analyzed, st.PHI_W0)}
    for name in ("fig3_phi_ranks", "fig4_phi_seeds", "fig6_phi_ranks_layers", "fig7_phi_seeds_layers", "fig8_phi_w0"):
        fig = registry.entry(name).render(frames, View(modules=("k",)))
        titles = " ".join(ax.get_title() for ax in fig.axes)
        assert "Wk" in titles and "Wq" not in titles, (name, titles)


def test_an_unknown_or_absent_analysis_device_is_one_line():
    from lowrank_lab.store.files import RunError

    with pytest.raises(RunError, match="--device 'tpu'"):
        ws.check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="no CUDA device"):
            ws.check_device("cuda")


@pytest.mark.gpu
def test_the_gpu_route_equals_the_cpu_route_in_float64(analyzed, tmp_path):
    tables = {}
    for device in ("cpu", "cuda"):
        sweep = tmp_path / device
        shutil.copytree(analyzed, sweep)
        inputs = ws.SweepInputs(sweep, device=device)
        ws.compute_subspace(sweep, inputs=inputs)
        ws.compute_amplification(sweep, inputs=inputs)
        ws.compute_spectrum(sweep, inputs=inputs)
        tables[device] = {name: st.read_table(sweep, name) for name in (st.PHI_W0, st.AMPLIFICATION, st.INTRUDERS)}
    for name, cpu in tables["cpu"].items():
        gpu = tables["cuda"][name]
        for column in cpu.select_dtypes("float").columns:
            np.testing.assert_allclose(gpu[column], cpu[column], rtol=1e-10, atol=1e-12, err_msg=f"{name}.{column}")
