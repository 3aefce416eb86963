"""figures/RESULTS.md's after-paper block is what figures/after_paper_results.py computes from the
committed tables; an edited number fails the check."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "figures" / "after_paper_results.py"

pytest.importorskip("pyarrow")


def test_results_md_holds_the_after_paper_block_as_computed():
    run = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_check_fails_on_an_edited_number(tmp_path):
    block = runpy.run_path(str(SCRIPT))["block"]()
    line = next(x for x in block.splitlines() if x.startswith("- At step 0"))
    edited_line = line.replace("within ", "within 9", 1)
    text = (ROOT / "figures" / "RESULTS.md").read_text()
    assert line in text
    (tmp_path / "RESULTS.md").write_text(text.replace(line, edited_line))
    (tmp_path / "results").symlink_to(ROOT / "figures" / "results")
    (tmp_path / SCRIPT.name).write_text(SCRIPT.read_text())
    run = subprocess.run([sys.executable, str(tmp_path / SCRIPT.name), "--check"], capture_output=True, text=True)
    assert run.returncode == 1 and "stale" in run.stderr


def test_every_verdict_follows_from_its_test():
    check = runpy.run_path(str(SCRIPT))
    assert check["verdict"](0.01, True) == "supported here"
    assert check["verdict"](0.2, True).endswith("not significant")
    assert check["verdict"](0.01, False) == "not seen here"
