"""Plotting: no torch, the paper's layer choices, heat-map orientation, files written, titles and
panels that follow what the table holds (analyze/compare of one adapter)."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lowrank_lab.present import curves, plotting
from lowrank_lab.present import select as sel
from lowrank_lab.present.select import pooled
from lowrank_lab.store import figures as out


@pytest.mark.parametrize("module", ["lowrank_lab.present.plotting", "lowrank_lab.present.curves",
                                    "lowrank_lab.present.registry", "lowrank_lab.present.report",
                                    "lowrank_lab.workflow.report", "lowrank_lab.store.figures"])
def test_plotting_modules_do_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_middle_and_spread_layers_follow_the_paper_for_96_layers():
    assert sel.middle_layer(range(96)) == 47  # the 48th of 96
    assert sel.spread_layers(range(96)) == [0, 31, 63, 95]  # 1, 32, 64, 96 (1-based)
    assert sel.spread_layers(range(6)) == list(range(6))


def test_phi_heatmap_puts_i_1_on_top_and_blanks_the_upper_triangle():
    fig, ax = plotting.plt.subplots()
    im = plotting.phi_heatmap(ax, np.arange(12.0).reshape(3, 4) / 12, triangle=True)
    data = im.get_array()
    assert data.mask[0, 1] and not data.mask[1, 0]  # j > i blank, j ≤ i drawn
    bottom, top = ax.get_ylim()
    assert top < bottom  # i increases downwards: i = 1 at the top


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig, _ = plotting.plt.subplots()
    paths = out.write_outputs(tmp_path / "out", {out.figure_file("x", fmt): data for fmt, data in out.figure_bytes(fig).items()})
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_pick_targets_prefers_the_papers_q_v():
    table = pd.DataFrame({"targets": ["q", "q,k,v,o", "q,v", ""]})
    assert sel.pick_targets(table) == "q,v"
    assert sel.pick_targets(table[table["targets"] != "q,v"]) == "q,k,v,o"


def test_seed_figure_without_two_seeds_raises_missing_data():
    phi = pd.DataFrame({"comparison": ["ranks"], "side": ["A"], "targets": ["q,v"]})
    with pytest.raises(sel.MissingData, match="two seeds"):
        plotting.phi_seeds_figure(phi)


def test_index_ticks_label_the_first_cell_and_round_steps():
    assert plotting.index_ticks(64) == [1, 8, 16, 24, 32, 40, 48, 56, 64]
    assert plotting.index_ticks(8) == list(range(1, 9))
    assert plotting.index_ticks(39)[0] == 1 and plotting.index_ticks(39)[-1] == 39


def _phi(modules=("q", "v"), layers=(0, 1, 2), comparison="ranks", pairs=((2, 4),)):
    rows = []
    for layer in layers:
        for m in modules:
            for r1, r2 in pairs:
                for i in range(1, r1 + 1):
                    for j in range(1, r2 + 1):
                        rows.append({"comparison": comparison, "side": "A", "targets": ",".join(modules), "seed1": 0,
                                     "seed2": 0 if comparison == "ranks" else 1, "layer": layer, "module": m,
                                     "r1": r1, "r2": r2, "i": i, "j": j, "phi": 1.0 / (i + j)})
    return pd.DataFrame(rows)


def test_phi_figures_use_the_matrices_the_adapter_has_and_take_a_title():
    fig = plotting.phi_ranks_figure(_phi(modules=("v",)))  # a v-only adapter: no ΔWq to show
    assert [ax.get_title() for ax in fig.axes[:2]] == ["L1 ΔWv: φ(A_r=2, A_r=4)", "L1 ΔWv: j ≤ 2"]
    fig = plotting.phi_seeds_figure(_phi(comparison="seeds", pairs=((4, 4),)), title="φ between run/a and run/b")
    assert fig._suptitle.get_text() == "φ between run/a and run/b"
    with pytest.raises(sel.MissingData, match="no matrix k"):
        plotting.phi_ranks_figure(_phi(), modules=["k"])


def test_phi_figure_drops_a_layer_with_nothing_to_show():
    phi = _phi(layers=(0, 1))
    phi = phi[~((phi["layer"] == 1) & (phi["module"] == "v"))]
    fig = plotting.phi_ranks_figure(phi, [0, 1])
    assert {ax.get_title().split(":")[0] for ax in fig.axes if ax.get_title()} == {"L0 ΔWq", "L0 ΔWv"}


def _spectrum(ranks, modules=("v",)):
    spec = pd.DataFrame([{"method": "lora", "targets": ",".join(modules), "layer": 0, "module": m, "seed": 0, "r": r,
                          "n": n, "sigma": 1.0 / n, "energy": n / r} for r in ranks for m in modules
                         for n in range(1, r + 1)])
    metrics = pd.DataFrame([{"method": "lora", "targets": ",".join(modules), "layer": 0, "module": m, "seed": 0,
                             "r": r, "rank_90": 1, "stable_rank": 1.0, "effective_rank": 1.0}
                            for r in ranks for m in modules])
    return spec, metrics


def test_spectrum_of_an_adapter_without_q_and_of_one_rank_draws_what_it_has():
    fig = curves.spectrum_figure(*_spectrum([4]))
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "L0 ΔWv: singular values"  # no panel against r
    assert len(curves.spectrum_figure(*_spectrum([2, 4])).axes) == 3


def test_amplification_of_one_rank_is_drawn_against_the_layer_and_says_what_is_pooled():
    amp = pd.DataFrame([{"method": "lora", "targets": "q", "module": "q", "layer": layer, "seed": 0, "r": 8,
                         "amplification": 2.0 + layer} for layer in range(3)])
    fig = curves.amplification_figure(amp, paper=False, title="adapter run/a")
    assert fig.axes[0].get_xlabel() == "layer" and fig._suptitle.get_text() == "adapter run/a"
    both = pd.concat([amp, amp.assign(r=4, seed=1)])
    assert "median over 3 layers and 2 seeds" in curves.amplification_figure(both)._suptitle.get_text()


def test_pooled_says_what_a_median_pools():
    t = pd.DataFrame({"layer": [0, 1, 0, 1], "seed": [0, 0, 0, 0]})
    assert pooled(t) == "median over 2 layers (seed 0)"
