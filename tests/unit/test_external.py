"""external: analyze / compare on real PEFT adapters (tiny Llama, GPT-2 DoRA) against dense
recomputation; sidecars; the randomized W0 route equals the dense one on a low-rank W0; CLI smoke."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("peft")
from click.testing import CliRunner  # noqa: E402
from peft import LoraConfig  # noqa: E402

from cli.main import cli  # noqa: E402
from lowrank_lab.analysis import tables as an  # noqa: E402
from lowrank_lab.store import tables as st
from lowrank_lab.analysis import external
from lowrank_lab.workflow import external as wx
from lowrank_lab.maths import linalg  # noqa: E402
from lowrank_lab.store.adapters import load_all, load_external  # noqa: E402
from lowrank_lab.store.external_adapter import ExternalAdapter  # noqa: E402
from lowrank_lab.maths.update import LowRankUpdate  # noqa: E402
from tests.unit.test_adapters import _lora_modules, _make  # noqa: E402


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A tiny Llama adapter (all-linear, rank/alpha patterns) with a second adapter "seed1" (q, v)
    in a sub-folder; (folder, base folder)."""
    tmp = tmp_path_factory.mktemp("external")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm, _, base = _make(tmp, "llama")
        pm.add_adapter("seed1", LoraConfig(target_modules=["q_proj", "v_proj"], r=4, init_lora_weights=False))
        pm.save_pretrained(tmp / "two")
    return tmp / "two", base


def _dense(u: LowRankUpdate) -> torch.Tensor:
    return linalg.delta_w(u.A.double(), u.B.double(), u.scaling)


def test_analyze_tables_match_dense_recomputation(two):
    folder, base = two
    ext = load_external(folder, base=base)
    tables = external.analyze_adapter(ext)
    metrics = tables[st.SPECTRUM_METRICS].set_index("label")
    amp = tables[st.AMPLIFICATION].set_index("label")
    for label, u in ext.updates.items():
        D, W0 = _dense(u), ext.W0(u).double()
        S = torch.linalg.svdvals(D)
        assert metrics.loc[label, "sigma_max"] == pytest.approx(float(S[0]), rel=1e-9)
        U, _, Vh = torch.linalg.svd(D)
        proj = torch.linalg.matrix_norm(U[:, :u.r].mT @ W0 @ Vh[:u.r].mT)
        assert amp.loc[label, "amplification"] == pytest.approx(float(S.norm() / proj), rel=1e-9)
        assert amp.loc[label, "proj_w0"] == pytest.approx(float(torch.linalg.svdvals(W0)[:u.r].norm()), rel=1e-9)
    assert set(tables[st.INTRUDERS]["label"]) == set(ext.updates)
    assert {"up", "down", "gate", "q"} <= set(tables[st.SPECTRUM]["module"])


def test_phi_w0_equals_the_sweep_analysis_phi_w0_table(two):
    folder, base = two
    ext = load_external(folder, base=base)
    ours = external.analyze_adapter(ext)[st.PHI_W0]
    ours = ours[ours["source"] == "adapter"].reset_index(drop=True)
    theirs = an.phi_w0_table(ext.updates, ext.W0)
    merged = ours.merge(theirs, on=["label", "i", "j"], suffixes=("", "_ref"))
    assert len(merged) == len(theirs) and len(theirs) > 0
    assert (merged["phi"] - merged["phi_ref"]).abs().max() < 1e-9


def test_randomized_w0_route_is_exact_for_a_low_rank_w0(gen):
    d, k, r = 80, 60, 3
    W0 = torch.randn(d, 10, generator=gen) @ torch.randn(10, k, generator=gen)  # rank 10 ≤ r + oversampling
    u = LowRankUpdate("L0.q", "x", torch.randn(r, k, generator=gen), torch.randn(d, r, generator=gen), 0.5)
    ext = ExternalAdapter(None, {}, {"L0.q": u}, lambda _: W0)
    dense = external.analyze_adapter(ext, external.AnalysisOptions(n_w0=r))
    fast = external.analyze_adapter(ext, external.AnalysisOptions(n_w0=r, dense_max=10))
    cols = ["proj_delta_w", "proj_w0", "norm_delta_w", "amplification"]
    assert fast[st.AMPLIFICATION][cols].to_numpy() == pytest.approx(dense[st.AMPLIFICATION][cols].to_numpy(), rel=1e-5)
    adapter = lambda t: t[t["source"] == "adapter"]["phi"].to_numpy()  # noqa: E731
    assert adapter(fast[st.PHI_W0]) == pytest.approx(adapter(dense[st.PHI_W0]), abs=1e-5)
    assert fast[st.INTRUDERS].empty and fast[st.AMPLIFICATION]["w0_svd"].item() == "randomized"


def test_compare_distances_and_phi_match_dense(two):
    folder, base = two
    a, b = load_all(folder, base=base)
    result = external.compare_adapters(a, b)
    dist = result[external.DISTANCES].set_index("label")
    assert set(dist.index) == {lab for lab in a.updates if lab.endswith((".q", ".v"))}
    for label, row in dist.iterrows():
        ua, ub = a.updates[label], b.updates[label]
        diff = _dense(ua) - _dense(ub)
        assert row["frobenius"] == pytest.approx(float(diff.norm()), rel=1e-9)
        assert row["spectral"] == pytest.approx(float(torch.linalg.matrix_norm(diff, ord=2)), rel=1e-9)
        V1, V2 = ua.basis(), ub.basis()
        assert row["phi"] == pytest.approx(float((V1.mT @ V2).square().sum() / min(ua.r, ub.r)), abs=1e-9)
        # φ(r1, r2) = 1 − d²/p with d the projection distance (Hu et al. 2021, App. G)
        assert row["phi"] == pytest.approx(1 - row["projection"] ** 2 / min(ua.r, ub.r), abs=1e-9)
    assert set(result[external.COMPARE_PHI]["label"]) == set(dist.index)


def test_compare_with_itself_has_zero_distance_and_phi_one(two):
    folder, base = two
    a = load_external(folder, base=base)
    dist = external.compare_adapters(a, a)[external.DISTANCES]
    assert dist["frobenius"].max() < 1e-9 * dist["frobenius"].size + 1e-9
    assert dist["phi"].to_numpy() == pytest.approx(1.0) and dist["cosine"].to_numpy() == pytest.approx(1.0)


def test_dora_is_analysed_as_its_dense_effective_delta(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm, _, base = _make(tmp_path, "gpt2", use_dora=True, rank_pattern={})
    for module in _lora_modules(pm).values():
        m = module.lora_magnitude_vector["default"].weight.data
        m.mul_(1 + 0.3 * torch.rand(m.shape))
    pm.save_pretrained(tmp_path / "dora")
    ext = load_external(tmp_path / "dora", base=base)
    tables = external.analyze_adapter(ext)
    metrics = tables[st.SPECTRUM_METRICS].set_index("label")
    amp = tables[st.AMPLIFICATION].set_index("label")
    for label in ext.updates:
        D = ext.updates[label].delta_w().double()
        assert metrics.loc[label, "kind"] == "dora"
        assert metrics.loc[label, "n_sigma"] == min(D.shape)  # the dense spectrum, not r values
        assert metrics.loc[label, "frobenius"] == pytest.approx(float(D.norm()), rel=1e-6)
        assert amp.loc[label, "norm_delta_w"] == pytest.approx(float(D.norm()), rel=1e-6)
    same = external.compare_adapters(ext, ext)[external.DISTANCES]
    assert same["frobenius"].max() < 1e-6


def test_analyze_writes_every_table_with_sidecar_and_figures(two, tmp_path):
    folder, base = two
    paths, notes = wx.analyze(folder, base=base, out=tmp_path / "out")
    for name in external.ANALYZE_TABLES:
        table = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        assert set(table["adapter"]) == {"two", "two/seed1"}
        side = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert side["rows"] == len(table) and side["provenance"]["torch"] == torch.__version__
        assert side["options"]["side"] == "A" and [a["name"] for a in side["adapters"]] == ["two", "two/seed1"]
        assert side["adapters"][0]["notes"] and "conventions" in side
    assert (tmp_path / "out" / "amplification.md").exists()
    assert (tmp_path / "out" / "figures" / "two-spectrum.png").exists()
    assert any(note.startswith("two: ΔW = scaling·B·A") for note in notes)


def test_cli_analyze_and_compare_print_notes_and_paths(two, tmp_path):
    folder, base = two
    runner = CliRunner()
    result = runner.invoke(cli, ["analyze", str(folder), "--base", str(base), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "note: two: ΔW = scaling·B·A" in result.output and f"wrote {tmp_path / 'a' / 'phi_w0.csv'}" in result.output
    result = runner.invoke(cli, ["compare", str(folder), "--base", str(base), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'c' / 'distances.csv'}" in result.output
    distances = pd.read_csv(tmp_path / "c" / "distances.csv")
    assert set(zip(distances["adapter1"], distances["adapter2"])) == {("two", "two/seed1")}


def test_cli_bad_input_is_one_line_and_exit_2(two, tmp_path):
    folder, _ = two
    result = CliRunner().invoke(cli, ["analyze", str(folder), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "give the base with --base" in result.output
    result = CliRunner().invoke(cli, ["compare", str(folder / "seed1"), "--base", str(tmp_path)])
    assert result.exit_code == 2


# ---------------------------------------------------------------------------------------------
# Adapters of the committed fixture sweep (read only: copied before anything writes)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sweep"
FIXTURE_BASE = FIXTURE / "base"
CELL_R4 = "lora-qv-r4-alpha_r-kaiming-seed0"


def _cell_copy(tmp_path: Path, cell: str, keep: tuple[str, ...] | None = None) -> Path:
    """tmp_path/<cell>/adapter: the cell's adapter folder copied, with only the modules whose
    path contains one of `keep` (e.g. ("self.key", "output.dense") for a k, o adapter)."""
    from safetensors.torch import load_file, save_file

    src, dst = FIXTURE / "cells" / cell / "adapter", tmp_path / cell / "adapter"
    shutil.copytree(src, dst)
    if keep is not None:
        lora = lambda k: ".lora_" in k  # noqa: E731
        tensors = {k: v for k, v in load_file(dst / "adapter_model.safetensors").items()
                   if not lora(k) or any(m in k for m in keep)}
        save_file(tensors, dst / "adapter_model.safetensors")
        config = json.loads((dst / "adapter_config.json").read_text())
        config["target_modules"] = [m for m in config["target_modules"] if any(k in m for k in keep)]
        (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


def test_compare_two_folders_named_adapter_compares_the_two_cells(tmp_path):
    a = _cell_copy(tmp_path, "lora-qv-r4-alpha_r-kaiming-seed0")
    b = _cell_copy(tmp_path, "lora-qv-r4-alpha_r-kaiming-seed1")
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--base", str(FIXTURE_BASE),
                                      "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    dist = pd.read_csv(tmp_path / "c" / "distances.csv")
    assert set(zip(dist["adapter1"], dist["adapter2"])) == {("lora-qv-r4-alpha_r-kaiming-seed0",
                                                             "lora-qv-r4-alpha_r-kaiming-seed1")}
    assert dist["frobenius"].min() > 1e-3 and dist["phi"].max() < 1 - 1e-6  # two seeds, not one adapter twice
    figures = list((tmp_path / "c" / "figures").glob("*.png"))
    assert [p.name for p in figures] == ["lora-qv-r4-alpha_r-kaiming-seed0-vs-lora-qv-r4-alpha_r-kaiming-seed1-phi.png"]


def test_compare_names_the_compared_adapters_in_the_figure_title(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(wx.store_figures, "figure_bytes", lambda fig: titles.append(fig._suptitle.get_text()) or {})
    a = _cell_copy(tmp_path, "lora-qv-r4-alpha_r-kaiming-seed0")
    b = _cell_copy(tmp_path, "lora-qv-r8-alpha_r-kaiming-seed1")
    wx.compare([a, b], base=FIXTURE_BASE, out=tmp_path / "c")
    assert len(titles) == 1 and "lora-qv-r4-alpha_r-kaiming-seed0" in titles[0]
    assert "lora-qv-r8-alpha_r-kaiming-seed1" in titles[0] and "seed 0 vs" not in titles[0]


def test_the_same_folder_twice_is_one_adapter_not_a_comparison(tmp_path):
    a = _cell_copy(tmp_path, "lora-qv-r4-alpha_r-kaiming-seed0")
    result = CliRunner().invoke(cli, ["compare", str(a), str(a / ".." / "adapter"), "--base", str(FIXTURE_BASE)])
    assert result.exit_code == 2 and "two different adapters, found 1" in result.output


def test_compare_adapters_with_no_matrix_in_common_is_an_error(tmp_path):
    q = _cell_copy(tmp_path, "lora-q-r4-alpha_r-kaiming-seed0")
    ko = _cell_copy(tmp_path, "lora-qkvo-r4-alpha_r-kaiming-seed0", keep=("self.key", "output.dense"))
    out = tmp_path / "c"
    result = CliRunner().invoke(cli, ["compare", str(q), str(ko), "--base", str(FIXTURE_BASE), "--out", str(out)])
    assert result.exit_code == 2 and "no matrix is adapted in both" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
    assert not out.exists()


def test_analyze_without_a_q_matrix_draws_its_spectrum_from_the_matrices_it_has(tmp_path, monkeypatch):
    titles = {}
    real = wx.store_figures.figure_bytes

    def spy(fig):  # the figure's title: its suptitle, or its one axes' title
        titles[len(titles)] = fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()
        return real(fig)

    monkeypatch.setattr(wx.store_figures, "figure_bytes", spy)
    ko = _cell_copy(tmp_path, "lora-qkvo-r4-alpha_r-kaiming-seed0", keep=("self.key", "output.dense"))
    paths, notes = wx.analyze(ko, base=FIXTURE_BASE, out=tmp_path / "a")
    name = "lora-qkvo-r4-alpha_r-kaiming-seed0"
    assert (tmp_path / "a" / "figures" / f"{name}-spectrum.png").exists(), notes
    assert not [n for n in notes if "skipped" in n and "spectrum" in n]
    assert all(name in t and "seed 0" not in t and "seeds" not in t for t in titles.values()), titles
    assert any("ΔWk" in t or "ΔWo" in t for t in titles.values())


def test_analyze_on_a_sweep_says_it_is_a_sweep_and_names_the_command(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(FIXTURE / "manifest.json", sweep / "manifest.json")
    result = CliRunner().invoke(cli, ["analyze", str(sweep)])
    assert result.exit_code == 2 and "is a sweep" in result.output and "lowrank-lab report" in result.output


@pytest.mark.parametrize("command", ["subspace", "amplify", "spectrum"])
def test_the_base_model_option_is_base_in_every_command(command, tmp_path):
    result = CliRunner().invoke(cli, [command, str(tmp_path), "--base-model", "x"])
    assert result.exit_code == 2 and "--base" in result.output
    result = CliRunner().invoke(cli, [command, str(tmp_path), "--base", "x"])
    assert result.exit_code == 2 and "manifest.json" in result.output  # --base parsed; the folder is no sweep


def test_adapters_of_two_sweeps_with_the_same_cell_name_get_different_names(tmp_path):
    a = _cell_copy(tmp_path / "sweepA" / "cells", CELL_R4)
    b = _cell_copy(tmp_path / "sweepB" / "cells", CELL_R4)
    names = [name for name, _ in wx.find([a, b], base=FIXTURE_BASE)]
    assert names == [f"sweepA/cells/{CELL_R4}", f"sweepB/cells/{CELL_R4}"]


def test_a_cell_folder_or_its_adapter_folder_is_named_after_the_cell():
    cell = FIXTURE / "cells" / CELL_R4
    assert [n for n, _ in wx.find([cell], base=FIXTURE_BASE)] == [CELL_R4]
    assert [n for n, _ in wx.find([cell / "adapter"], base=FIXTURE_BASE)] == [CELL_R4]
