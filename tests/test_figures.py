"""Every entry of the figure registry renders from the fixture sweep through its script in figures/;
`lowrank-lab tables` and `report` read the same registry; the analysis commands run from the CLI."""

from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowrank_lab.present import registry
from lowrank_lab.store.figures import png_width
from lowrank_lab_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
# Scripts of tables measured by a benchmark, not drawn from a sweep's cached tables, so no registry
# entry (nothing for `lowrank-lab tables` or `report` to render): script -> the file it reads.
STANDALONE = {"table1_latency": "latency.csv of benchmarks/bench_latency.py --out"}
SCRIPTS = sorted((ROOT / "figures").glob("fig*.py"))
TABLE_SCRIPTS = sorted(p for p in (ROOT / "figures").glob("table*.py") if p.stem not in STANDALONE)
EXTENSIONS = {"figure": (("png", 10_000), ("pdf", 2_000)), "table": (("md", 50), ("tex", 50), ("csv", 50))}


def test_there_is_a_script_per_paper_figure():
    names = {p.stem for p in SCRIPTS}
    assert {"fig3_phi_ranks", "fig4_phi_seeds", "fig6_phi_ranks_layers", "fig7_phi_seeds_layers",
            "fig8_phi_w0", "figH4_amplification"} <= names
    assert {"table2_methods", "table5_budget", "table6_rank_by_target", "table7_projections",
            "table18_metric_vs_rank", "table_storage"} <= {p.stem for p in TABLE_SCRIPTS}


def test_scripts_and_registry_are_one_list():
    """Each script is one registry entry (its NAME) and each entry has its script: no second list."""
    scripts = {p.stem: runpy.run_path(str(p))["NAME"] for p in SCRIPTS + TABLE_SCRIPTS}
    assert all(stem == name for stem, name in scripts.items())
    assert sorted(scripts) == sorted(e.name for e in registry.ENTRIES)
    assert len({e.paper for e in registry.ENTRIES}) == len(registry.ENTRIES)  # one paper name each
    assert not set(STANDALONE) & set(scripts) and all((ROOT / "figures" / f"{s}.py").exists() for s in STANDALONE)


def test_the_standalone_table1_script_reproduces_its_committed_tables(tmp_path):
    """figures/table1_latency.py renders the committed CPU benchmark's latency.csv into the tables
    committed beside it, byte for byte."""
    results = ROOT / "figures/results/latency-cpu"
    module = runpy.run_path(str(ROOT / "figures/table1_latency.py"))
    assert module["NAME"] == "table1_latency"
    module["main"]([str(results), "--out", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"table1_latency{s}.{x}" for s, xs in (("", "md tex csv"), ("_min", "md csv"),
                                                                   ("_paper", "md csv")) for x in xs.split())
    for name in written:
        assert (tmp_path / name).read_text() == (results / name).read_text(), name


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_every_entry_says_what_it_shows_and_how_to_get_it(entry):
    assert entry.kind in ("figure", "table") and entry.needs
    assert len(entry.caption_for()) > 60 and "{side}" not in entry.caption_for()
    assert re.search(r"sweep\.\w+|lowrank-lab \w+", entry.skip_note), entry.skip_note


# Entries drawn from a learning-rate axis: rendered from the rank × learning-rate fixture sweep.
LR_ENTRIES = ("fig_lr_curves", "fig_learning_curves", "table_best_lr")
NLG_ENTRIES = ("table3_nlg",)  # from a decoder sweep on E2E-format data


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_every_entry_renders_through_its_script(entry, request, tmp_path):
    fixture = ("lr_analyzed" if entry.name in LR_ENTRIES else "e2e_analyzed" if entry.name in NLG_ENTRIES
               else "after_paper_analyzed" if entry in registry.AFTER_PAPER else "analyzed")
    sweep = request.getfixturevalue(fixture)
    module = runpy.run_path(str(ROOT / "figures" / f"{entry.name}.py"))
    module["main"]([str(sweep), "--out", str(tmp_path)])
    for ext, size in EXTENSIONS[entry.kind]:
        path = tmp_path / f"{entry.name}.{ext}"
        assert path.exists() and path.stat().st_size > size, path


def test_figure_script_skips_with_a_message_when_tables_are_missing(tmp_path, capsys):
    module = runpy.run_path(str(ROOT / "figures/fig4_phi_seeds.py"))
    module["main"]([str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "skipped" in err and not (tmp_path / "out").exists()
    assert "sweep.seeds = [0, 1]" in err  # how to get it, from the registry


def test_tables_command_and_table_script_write_the_same_table(analyzed, tmp_path):
    """Once `lowrank-lab tables` and figures/table2_methods.py wrote different table2_methods.md."""
    sweep = tmp_path / "sweep"
    shutil.copytree(analyzed, sweep)
    assert CliRunner().invoke(cli, ["tables", str(sweep)]).exit_code == 0
    runpy.run_path(str(ROOT / "figures/table2_methods.py"))["main"]([str(sweep), "--out", str(tmp_path / "s")])
    assert (sweep / "analysis/tables/table2_methods.md").read_text() == (tmp_path / "s/table2_methods.md").read_text()
    assert not (sweep / "analysis/tables/storage.md").exists()  # one name: table_storage


def test_tables_command_names_what_is_missing_and_how_to_get_it(analyzed, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(analyzed, sweep)
    (sweep / "analysis/amplification.parquet").unlink()
    result = CliRunner().invoke(cli, ["tables", str(sweep)])
    assert result.exit_code == 0, result.output
    assert "table7_projections (Table 7) skipped" in result.output and "lowrank-lab amplify" in result.output
    assert not (sweep / "analysis/tables/table7_projections.md").exists()


def test_cli_tables_and_report(analyzed):
    runner = CliRunner()
    result = runner.invoke(cli, ["tables", str(analyzed)])
    assert result.exit_code == 0, result.output
    assert "table6_rank_by_target.tex" in result.output
    result = runner.invoke(cli, ["report", str(analyzed)])
    assert result.exit_code == 0, result.output
    html = (analyzed / "analysis/report/report.html").read_text()
    shown = len(registry.FIGURES) - 1  # every figure but fig_lr_curves: the fixture has one learning rate
    assert html.count("<img") == shown and "21.5" in html and "INCLUDES the scaling" in html
    assert "fig_lr_curves" not in html and "sweep.lr = [" in html  # skipped, saying how to get it


def test_report_reads_through(analyzed):
    """Summary first, each entry under its paper name with its caption, no Markdown or Python list
    syntax in the HTML, every figure at one scale, the φ side named."""
    result = CliRunner().invoke(cli, ["report", str(analyzed)])
    assert result.exit_code == 0, result.output
    html = (analyzed / "analysis/report/report.html").read_text()
    body = re.sub(r"<[^>]+>", " ", html.split("<body>")[1])
    assert html.index("Summary") < html.index("Figure 3") < html.index("Table 7")
    for e in registry.ENTRIES:
        assert f"{e.paper}: {e.title}" in html and e.caption_for()[:40] in html
    for leak in ("**", "|---", "![", "['", "[0, 1]", "](", "### "):
        assert leak not in body, leak
    assert "<table>" in html and "<ul>" in html and "side A: right singular vectors of A" in html
    shown = re.findall(r'<img src="([^"]+)"[^>]*width="(\d+)"', html)
    scales = [int(w) / png_width((analyzed / "analysis/report" / src).read_bytes()) for src, w in shown]
    assert len(scales) == len(registry.FIGURES) - 1 and max(scales) - min(scales) < 0.01  # one scale for all


def test_cli_amplify_writes_its_table(analyzed, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(analyzed, sweep)
    result = CliRunner().invoke(cli, ["amplify", str(sweep), "--base", str(ROOT / "tests/fixtures/sweep/base")])
    assert result.exit_code == 0, result.output
    assert (sweep / "analysis/amplification.parquet").exists()


def test_cli_subspace_rejects_an_unknown_side_and_a_folder_without_a_sweep(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["subspace", str(tmp_path), "--side", "C"]).exit_code == 2
    result = runner.invoke(cli, ["spectrum", str(tmp_path)])
    assert result.exit_code == 2 and "manifest.json" in result.output


def test_a_failing_tables_command_writes_none_of_its_tables(analyzed, tmp_path, monkeypatch):
    """Everything is rendered before anything is written: no half set of tables is left behind."""
    import dataclasses

    sweep = tmp_path / "sweep"
    shutil.copytree(analyzed, sweep)
    shutil.rmtree(sweep / "analysis/tables", ignore_errors=True)

    def broken(frames, view):
        raise RuntimeError("drawing failed")

    last = dataclasses.replace(registry.TABLES[-1], draw=broken)
    monkeypatch.setattr(registry, "TABLES", (*registry.TABLES[:-1], last))
    result = CliRunner().invoke(cli, ["tables", str(sweep)])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert not (sweep / "analysis/tables").exists()
