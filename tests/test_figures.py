"""Every figure script renders from the fixture sweep; the analysis commands run from the CLI."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowrank_lab_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "figures").glob("fig*.py"))
TABLE_SCRIPTS = sorted((ROOT / "figures").glob("table*.py"))


def test_there_is_a_script_per_paper_figure():
    names = {p.stem for p in SCRIPTS}
    assert {"fig3_phi_ranks", "fig4_phi_seeds", "fig6_phi_ranks_layers", "fig7_phi_seeds_layers",
            "fig8_phi_w0", "figH4_amplification"} <= names
    assert {"table2_methods", "table5_budget", "table6_rank_by_target", "table7_projections",
            "table18_metric_vs_rank", "table_storage"} <= {p.stem for p in TABLE_SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_figure_script_renders_png_and_pdf(script, analyzed, tmp_path):
    module = runpy.run_path(str(script))
    module["main"]([str(analyzed), "--out", str(tmp_path)])
    for ext, size in (("png", 10_000), ("pdf", 2_000)):
        path = tmp_path / f"{module['NAME']}.{ext}"
        assert path.exists() and path.stat().st_size > size, path


@pytest.mark.parametrize("script", TABLE_SCRIPTS, ids=lambda p: p.stem)
def test_table_script_writes_markdown_latex_and_csv(script, analyzed, tmp_path):
    module = runpy.run_path(str(script))
    module["main"]([str(analyzed), "--out", str(tmp_path)])
    for ext in ("md", "tex", "csv"):
        path = tmp_path / f"{module['NAME']}.{ext}"
        assert path.exists() and path.stat().st_size > 50, path


def test_figure_script_skips_with_a_message_when_tables_are_missing(tmp_path, capsys):
    module = runpy.run_path(str(ROOT / "figures/fig4_phi_seeds.py"))
    module["main"]([str(tmp_path), "--out", str(tmp_path / "out")])
    assert "skipped" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_cli_tables_and_report(analyzed):
    runner = CliRunner()
    result = runner.invoke(cli, ["tables", str(analyzed)])
    assert result.exit_code == 0, result.output
    assert "table6_rank_by_target.tex" in result.output
    result = runner.invoke(cli, ["report", str(analyzed)])
    assert result.exit_code == 0, result.output
    html = (analyzed / "analysis/report/report.html").read_text()
    assert html.count("<img") == 9 and "21.5" in html and "INCLUDES the scaling" in html


def test_cli_amplify_writes_its_table(analyzed, tmp_path):
    sweep = tmp_path / "sweep"
    import shutil

    shutil.copytree(analyzed, sweep)
    result = CliRunner().invoke(cli, ["amplify", str(sweep), "--base-model", str(ROOT / "tests/fixtures/sweep/base")])
    assert result.exit_code == 0, result.output
    assert (sweep / "analysis/amplification.csv").exists()


def test_cli_subspace_rejects_an_unknown_side_and_a_folder_without_a_sweep(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["subspace", str(tmp_path), "--side", "C"]).exit_code == 2
    result = runner.invoke(cli, ["spectrum", str(tmp_path)])
    assert result.exit_code == 2 and "manifest.json" in result.output
