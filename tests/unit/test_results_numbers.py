"""figures/RESULTS.md quotes the five-task GLUE numbers as figures/check_results.py recomputes them
from the committed Parquet files; a changed file or an edited number fails here."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "figures" / "check_results.py"

pytest.importorskip("pyarrow")


def test_results_md_holds_the_recomputed_numbers():
    run = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_check_fails_on_a_changed_number(tmp_path, monkeypatch):
    check = runpy.run_path(str(SCRIPT))
    block = check["block"]()
    row = next(line for line in block.splitlines() if line.startswith("| Full fine-tuning |"))
    number = row.split(" | ")[1]  # full fine-tuning on SST-2, "median ± half-range"
    changed = row.replace(number, f"{float(number.split()[0]) + 0.1:.1f} ± {number.split()[-1]}", 1)
    edited = (ROOT / "figures" / "RESULTS.md").read_text().replace(row, changed)
    assert edited != (ROOT / "figures" / "RESULTS.md").read_text()
    (tmp_path / "RESULTS.md").write_text(edited)
    (tmp_path / "results").symlink_to(ROOT / "figures" / "results")
    copy = tmp_path / "check_results.py"
    copy.write_text(SCRIPT.read_text())
    run = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True)
    assert run.returncode == 1 and "differ from the committed data" in run.stderr


TEXT_COLUMNS = ("task", "targets", "lora_targets", "scaling_rule", "init")


@pytest.mark.parametrize("path", sorted((ROOT / "figures" / "results").glob("*/data/*.parquet")), ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_committed_tables_keep_empty_text_as_written(path):
    """A non-LoRA cell's targets are "" in every saved table; the exporter once read the CSVs with
    plain pandas, which turns "" into NaN, and such rows fell out of every targets == … filter."""
    import pandas as pd

    table = pd.read_parquet(path)
    for column in TEXT_COLUMNS:
        if column in table:
            assert not table[column].isna().any(), f"{path}: NaN in {column}"


def test_export_reads_tables_as_the_store_wrote_them(tmp_path):
    import pandas as pd

    from lowrank_lab.store import exported

    analysis = tmp_path / "analysis"
    analysis.mkdir()
    written = pd.DataFrame({"cell": ["full", "lora"], "targets": ["", "q,v"], "seed": [0, 1], "value": [0.1, 1 / 3]})
    written.to_csv(analysis / "results.csv", index=False)
    table = exported.read_analysis(analysis, "results")
    assert table.targets.tolist() == ["", "q,v"] and table.value.tolist() == [0.1, 1 / 3]


def test_render_results_draws_what_the_committed_tables_allow(tmp_path):
    import shutil

    folder = tmp_path / "e2e-smollm2"
    shutil.copytree(ROOT / "figures" / "results" / "e2e-smollm2" / "data", folder / "data")
    run = subprocess.run([sys.executable, str(ROOT / "figures" / "render_results.py"), str(folder)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    drawn = {p.name for p in folder.iterdir() if p.is_file()}
    assert {"figH4_amplification.png", "fig_spectrum.png", "table18_metric_vs_rank.md"} <= drawn
    assert "fig3_phi_ranks: not drawn" in run.stdout and "fig3_phi_ranks.png" not in drawn  # no φ came back
    import pandas as pd

    header, _, first = (folder / "table18_metric_vs_rank.md").read_text().splitlines()[:3]
    res = pd.read_parquet(folder / "data" / "results.parquet")
    bleu = res[(res.targets == "q,v") & (res.r == 1)].dev_bleu.median()  # on its 0–100 scale, not ×100
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert first.strip("|").split("|")[columns.index("bleu")].strip() == f"{bleu:.1f}"
