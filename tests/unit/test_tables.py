"""Tables in the paper's shapes from small, known results."""

import pandas as pd
import pytest

from lowrank_lab.present import tables


def _results():
    rows = []
    for targets, n in (("q", 1), ("q,v", 2), ("q,k,v,o", 4)):
        for r in (2, 4, 8):
            for seed, bump in ((0, 0.0), (1, 0.02)):
                rows.append({"method": "lora", "targets": targets, "r": r, "seed": seed, "task": "t",
                             "metric": "accuracy", "value": 0.5 + 0.01 * r + bump + 0.1 * n,
                             "dev_accuracy": 0.5 + 0.01 * r + bump, "trainable_total": r * n * 10})
    for method in ("full", "head"):
        rows.append({"method": method, "targets": "", "r": 0, "seed": 0, "task": "t", "metric": "accuracy",
                     "value": 0.9, "dev_accuracy": 0.9, "trainable_total": 1000})
    return pd.DataFrame(rows)


def test_storage_matches_the_paper_example_512_by_512_at_r_8():
    row = tables.storage_table(pd.DataFrame({"module": ["q"], "d": [512], "k": [512]}), [8]).iloc[0]
    assert (row["dense d·k"], row["LoRA r(d+k)"], row["reduction %"]) == (262_144, 8_192, 96.9)


def test_rank_target_table_gives_median_and_half_range_over_seeds():
    table = tables.rank_target_table(_results())
    assert table.loc["q", 4] == "0.6500 ± 0.0100"  # seeds 0.64 and 0.66
    assert list(table.columns) == [2, 4, 8]


def test_budget_table_keeps_r_times_matrices_fixed():
    table = tables.budget_table(_results())
    assert set(zip(table["targets"], table["r"])) == {("q", 8), ("q,v", 4), ("q,k,v,o", 2)}


def test_method_table_lists_baselines_first_with_parameters():
    table = tables.method_table(_results())
    assert list(table.index[:2]) == ["Full fine-tuning", "Head only"]
    assert table.loc["LoRA q,v r=4", "trainable parameters"] == 80


def test_metric_vs_rank_uses_q_v_by_default():
    table = tables.metric_vs_rank_table(_results())
    assert table.index.name == "r (q,v)" and list(table.index) == [2, 4, 8]


def test_table7_is_the_median_over_seeds_at_the_middle_layer():
    amp = pd.DataFrame([{"method": "lora", "targets": "q,v", "layer": layer, "module": "q", "r": 4,
                         "seed": seed, "proj_delta_w": 1.0 + seed, "proj_w0": 2.0, "proj_random": 0.1,
                         "norm_w0": 5.0, "norm_delta_w": 3.0, "amplification": 3.0 / (1.0 + seed)}
                        for layer in range(4) for seed in (0, 1)])
    table = tables.table7(amp)
    assert table.index.name.startswith("L1 Wq")
    assert table.loc["‖UᵀW0Vᵀ‖_F, U,V of ΔW", "r=4"] == pytest.approx(1.5)


def test_render_writes_markdown_latex_and_csv():
    table = tables.rank_target_table(_results())
    assert tables.render(table, "md").startswith("| targets | 2 | 4 | 8 |")
    assert "\\begin{tabular}" in tables.render(table, "tex")
    assert tables.render(table, "csv").startswith("targets,2,4,8")


def test_tables_follow_the_papers_row_order_and_table2_keeps_the_papers_lora_row():
    assert list(tables.rank_target_table(_results()).index) == ["q", "q,v", "q,k,v,o"]
    assert list(tables.budget_table(_results())["targets"]) == ["q", "q,v", "q,k,v,o"]
    table = tables.method_table(_results(), lora=[("q,v", 4)])
    assert list(table.index) == ["Full fine-tuning", "Head only", "LoRA q,v r=4"]
