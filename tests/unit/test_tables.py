"""Tables in the paper's shapes from small, known results."""

import re

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


def test_sweep_table_pools_only_the_seeds():
    """rank-sweep's table said "median over seeds" while it also pooled scaling rules and inits."""
    rows = [{"cell": f"c{n}", "method": "lora", "targets": "q,v", "r": 4, "seed": seed, "scaling_rule": rule,
             "init": "kaiming", "task": "t", "metric": "accuracy", "value": value + 0.01 * seed}
            for n, (rule, value, seed) in enumerate([("alpha/r", 0.5, 0), ("alpha/r", 0.5, 1),
                                                     ("alpha/sqrt(r)", 0.9, 0), ("alpha/sqrt(r)", 0.9, 1)])]
    text = tables.sweep_table(pd.DataFrame(rows))
    assert "median over seeds {0, 1}" in text and "LoRA by targets × scaling_rule × r (task t, init kaiming)" in text
    assert "0.5050" in text and "0.9050" in text and "0.7050" not in text  # one row per rule, not their median


def test_sweep_table_lists_the_baselines_by_method():
    text = tables.sweep_table(_results())
    assert "LoRA by targets × r (task t):" in text and re.search(r"full +0\.9000", text) and re.search(r"head +0\.9000", text)
    assert [line.split()[0] for line in text.splitlines()[4:7]] == ["q", "q,v", "q,k,v,o"]  # the paper's order


def test_number_is_the_one_format_of_every_table():
    assert [tables.number(v) for v in (0.123456, 21.5, 116.953, 262_144, 2082, 3.0, float("nan"), 1e-5, "q,v")] == \
        ["0.1235", "21.5", "117", "262,144", "2082", "3", "", "1.000e-05", "q,v"]


def test_metrics_in_percent_as_the_paper():
    table = tables.rank_target_table(tables.in_percent(_results()))
    assert table.loc["q", 4] == "65.0 ± 1.0"
    assert tables.budget_table(tables.in_percent(_results())).columns[-1] == "accuracy (%)"


def test_only_scores_on_a_0_1_scale_go_to_percent():
    """E2E's Table 18 once printed BLEU 60 as "6000 (%)" and perplexity ×100: BLEU and ROUGE-L are
    already on the paper's 0–100 scale, perplexity and losses have no percent."""
    e2e = pd.DataFrame({"method": ["lora"] * 2, "targets": ["q,v"] * 2, "r": [4, 4], "seed": [0, 1], "task": "e2e",
                        "metric": "bleu", "value": [60.0, 62.0], "dev_bleu": [60.0, 62.0], "dev_rouge_l": [63.0, 64.0],
                        "dev_perplexity": [4.0, 4.2], "dev_completion_loss": [1.4, 1.44]})
    table = tables.metric_vs_rank_table(tables.in_percent(e2e))
    assert table.loc[4].to_dict() == {"bleu": 61.0, "rouge_l": 63.5, "perplexity": 4.1, "completion_loss": 1.42}
    shown = tables.one_decimal(table)
    assert shown.loc[4].to_dict() == {"bleu": "61.0", "rouge_l": "63.5", "perplexity": "4.1", "completion_loss": "1.42"}
    assert tables.rank_target_table(tables.in_percent(e2e)).loc["q,v", 4] == "61.0 ± 1.0"
    mixed = tables.in_percent(pd.concat([e2e, _results()], ignore_index=True))
    assert mixed.loc[mixed.metric == "bleu", "value"].tolist() == [60.0, 62.0]
    assert mixed.loc[mixed.metric == "accuracy (%)", "value"].max() == pytest.approx(100 * _results().value.max())
    assert "dev_accuracy (%)" in mixed and "dev_bleu" in mixed


def test_markup_renders_the_markdown_it_is_given_without_leaking_syntax():
    from lowrank_lab.present import markup

    md = "## A\n\n- **x**: `y` *z*\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![t](f.png)\n\n> q"
    html = markup.to_html(md, "t", {"f.png": 300})
    assert "<ul><li><strong>x</strong>: <code>y</code> <em>z</em></li><li>two</li></ul>" in html
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody>" in html
    assert '<img src="f.png" alt="t" width="300">' in html and "<blockquote>q</blockquote>" in html
    assert "**" not in html and "|" not in html and "](" not in html


def test_report_section_names_the_paper_shows_the_caption_and_says_how_to_get_a_skipped_entry():
    from lowrank_lab.present import registry
    from lowrank_lab.present.entry import View
    from lowrank_lab.present.report import Shown, section

    entry = registry.entry("fig4_phi_seeds")
    text = "\n".join(section(Shown(entry, skipped="the sweep has no two seeds at one rank (side B)"),
                             View(side="B")))
    assert text.startswith("### Figure 4: ") and "add sweep.seeds = [0, 1]" in text
    assert "side B: left singular vectors of B" in text and "*Skipped: the sweep has no two seeds" in text


def test_sweep_table_keeps_the_baselines_learning_rates_apart():
    """With sweep.full_lr a grid, rank-sweep's table gave one full fine-tuning median over every lr."""
    rows = [{"cell": f"full-{lr}-{seed}", "method": "full", "targets": "", "r": 0, "lr": lr, "seed": seed,
             "task": "t", "metric": "accuracy", "value": value} for lr, value in ((1e-5, 0.6), (1e-4, 0.9))
            for seed in (0, 1)]
    text = tables.sweep_table(pd.DataFrame(rows))
    assert re.search(r"full +0\.00001 +0\.6000", text) and re.search(r"0\.00010 +0\.9000", text), text
    assert "0.7500" not in text


def test_method_table_gives_the_last_evaluation_beside_a_held_out_choice():
    """Chosen on a held-out split: the best-on-held-out metric and the last evaluation's side by
    side, both ×100 by in_percent; chosen on dev itself: no extra column (as before)."""
    results = _results()
    assert not any("last evaluation" in c for c in tables.method_table(results).columns)
    held = results.assign(selected_on="validation", final_value=results["value"] - 0.05, val_value=0.7)
    table = tables.method_table(tables.in_percent(held))
    assert list(table.columns[-2:]) == ["t", "t, last evaluation"]
    assert table.loc["Full fine-tuning", "t"] == "90.0" and table.loc["Full fine-tuning", "t, last evaluation"] == "85.0"
