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


def documents(check) -> dict[str, str]:
    return {name: path.read_text() for name, path in check["DOCUMENTS"].items()}


@pytest.fixture(scope="module")
def check():
    return runpy.run_path(str(SCRIPT))


def test_the_check_fails_on_a_changed_number_in_the_block(check):
    texts = documents(check)
    row = next(line for line in check["block"]().splitlines() if line.startswith("| Full fine-tuning |"))
    number = row.split(" | ")[1]  # full fine-tuning on SST-2, "median ± half-range"
    changed = row.replace(number, f"{float(number.split()[0]) + 0.1:.1f} ± {number.split()[-1]}", 1)
    texts["figures/RESULTS.md"] = texts["figures/RESULTS.md"].replace(row, changed)
    assert any("differ from the committed data" in p for p in check["check_documents"](texts))


@pytest.mark.parametrize("name", ["figures/RESULTS.md", "benchmarks/RESULTS.md", "README.md"])
def test_the_check_fails_on_any_changed_number_in_the_prose(check, name):
    """Every reference of the document with a digit of its number nudged: the check names each one."""
    import re

    texts = documents(check)
    assert check["check_documents"]({name: texts[name]}) == []
    refs = [m for m in re.finditer(r"<!--=(.*?)-->(.*?)<!--/-->", texts[name], re.S) if re.search(r"\d", m.group(2))]
    assert refs, f"{name} quotes no number through a reference"

    def nudge(match: re.Match) -> str:
        digit = re.search(r"\d", match.group(2))
        value = match.group(2)
        return f"<!--={match.group(1)}-->{value[:digit.start()]}{(int(digit.group()) + 1) % 10}{value[digit.end():]}<!--/-->"
    problems = check["check_documents"]({name: re.sub(r"<!--=(.*?)-->(.*?)<!--/-->",
                                                      lambda m: nudge(m) if re.search(r"\d", m.group(2)) else m.group(0),
                                                      texts[name], flags=re.S)})
    assert len([p for p in problems if " is '" in p]) == len(refs)


def test_a_number_typed_by_hand_in_the_prose_fails(check):
    texts = documents(check)
    text = texts["figures/RESULTS.md"]
    at = text.index("## Table 6")
    texts["figures/RESULTS.md"] = text[:at] + "LoRA wins by 2.5 points here.\n\n" + text[at:]
    problems = check["check_documents"](texts)
    assert any("a number typed by hand" in p and "2.5 points" in p for p in problems)


def test_names_years_and_code_are_not_numbers():
    import sys

    sys.path.insert(0, str(ROOT / "figures"))
    import quoted

    text = ("Hu et al. 2021 (arXiv:2106.09685), Table 6, Figs. 3, 4 and 7, §7.2, App. H.4, SST-2 on an H200\n"
            "at L2, fp16, Q4_1, r = 8, `r = 3`, <!--=x-->0.5<!--/--> and ![a](results/glue-sst2/fig3.png)\n\n"
            "    python figures/check_results.py --d 4096\n\n"
            "```\n| 98.2 |\n```\n")
    assert quoted.typed_numbers(text, labels={"r": {"8"}}) == []
    assert [n for n, _ in quoted.typed_numbers("r = 3 of them\nat 5 s\n", labels={"r": {"8"}})] == [1, 2]


def test_a_stale_reference_is_named_and_write_renders_it():
    import sys

    sys.path.insert(0, str(ROOT / "figures"))
    import quoted

    space = {"half": lambda x: f"{x / 2:.1f}"}
    text = "a <!--=half(3)-->1.4<!--/--> b"
    [stale] = quoted.stale(text, space)
    assert stale.computed == "1.5" and stale.written == "1.4" and stale.line == 1
    assert quoted.render(text, space) == "a <!--=half(3)-->1.5<!--/--> b"
    assert quoted.stale(quoted.render(text, space), space) == []


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


def test_a_committed_result_from_a_dirty_tree_fails_the_check(check, monkeypatch):
    """Provenance: a new folder without a clean commit (or without device, driver and CUDA) fails;
    a listed folder that is clean now must leave the list."""
    scope = check["check_provenance"].__globals__
    listed = list(scope["MADE_BEFORE_THE_CHECK"])
    monkeypatch.setitem(scope, "made_dirty", lambda: sorted([*listed, "new-sweep"]))
    assert check["check_provenance"]() == [
        "figures/results/new-sweep: made from a dirty tree or without device, driver and CUDA versions in its "
        "provenance (commit first, then run)"]
    monkeypatch.setitem(scope, "made_dirty", lambda: listed[1:])
    assert check["check_provenance"]() == [
        f"figures/results/{listed[0]}: its provenance is complete now; take it off MADE_BEFORE_THE_CHECK"]
    clean = {"git_dirty": False, "device_name": "NVIDIA H200", "torch_cuda": "13.0", "cuda_driver": "580.159.04"}
    provenances = list(scope["_provenances"]({"provenance": clean, "sweep_spec": {"provenance": {"git_dirty": True}}}))
    assert provenances == [clean, {"git_dirty": True}]
