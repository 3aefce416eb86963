"""Plotting: no torch, the paper's layer choices, heat-map orientation, files written."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lowrank_lab.present import plotting


@pytest.mark.parametrize("module", ["lowrank_lab.present.plotting", "lowrank_lab.present.curves"])
def test_plotting_modules_do_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_middle_and_spread_layers_follow_the_paper_for_96_layers():
    assert plotting.middle_layer(range(96)) == 47  # the 48th of 96
    assert plotting.spread_layers(range(96)) == [0, 31, 63, 95]  # 1, 32, 64, 96 (1-based)
    assert plotting.spread_layers(range(6)) == list(range(6))


def test_phi_heatmap_puts_i_1_on_top_and_blanks_the_upper_triangle():
    fig, ax = plotting.plt.subplots()
    im = plotting.phi_heatmap(ax, np.arange(12.0).reshape(3, 4) / 12, triangle=True)
    data = im.get_array()
    assert data.mask[0, 1] and not data.mask[1, 0]  # j > i blank, j ≤ i drawn
    bottom, top = ax.get_ylim()
    assert top < bottom  # i increases downwards: i = 1 at the top


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig, _ = plotting.plt.subplots()
    paths = plotting.save_figure(fig, "x", tmp_path / "out")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_pick_targets_prefers_the_papers_q_v():
    table = pd.DataFrame({"targets": ["q", "q,k,v,o", "q,v", ""]})
    assert plotting.pick_targets(table) == "q,v"
    assert plotting.pick_targets(table[table["targets"] != "q,v"]) == "q,k,v,o"


def test_seed_figure_without_two_seeds_raises_missing_data():
    phi = pd.DataFrame({"comparison": ["ranks"], "side": ["A"], "targets": ["q,v"]})
    with pytest.raises(plotting.MissingData, match="two seeds"):
        plotting.phi_seeds_figure(phi)


def test_index_ticks_label_the_first_cell_and_round_steps():
    assert plotting.index_ticks(64) == [1, 8, 16, 24, 32, 40, 48, 56, 64]
    assert plotting.index_ticks(8) == list(range(1, 9))
    assert plotting.index_ticks(39)[0] == 1 and plotting.index_ticks(39)[-1] == 39
