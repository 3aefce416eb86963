"""benchmarks/bench_demo_cpu.py: both variants run whole in one command, and the table says what
each processed and reached."""

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_bench_runs_each_variant_whole(tiny_bert, tiny_task, capsys, monkeypatch):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_demo_cpu.py"))
    common = [f"model.name={tiny_bert}", "model.pooling=mean", "data.task=file", f"data.path={tiny_task}",
              "sweep.r=[1,2]", "train.batch_size=8", "train.device=cpu"]
    argv = ["bench_demo_cpu.py", *[x for s in common for x in ("--set", s)],
            "--variant", "default=", "--variant", "grouped=train.group_by_length=4"]
    monkeypatch.setattr(sys, "argv", argv)
    bench["main"]()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| default", "| grouped"))]
    assert len(rows) == 2
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    padded = [int(c[4].split(" / ")[0].replace(",", "")) for c in cells]
    real = [int(c[4].split(" / ")[1].replace(",", "")) for c in cells]
    # grouping only removes padding (the steps after the first hold other examples, so compare ratios)
    assert padded[1] / real[1] <= padded[0] / real[0] and real[0] > 0
    assert all(0 <= float(c[5].split()[0]) <= 1 for c in cells)


def test_a_variant_names_its_overrides():
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_demo_cpu.py"))
    assert bench["parse_variant"]("grouped=train.group_by_length=8,data.max_train=100") == \
        ("grouped", ["train.group_by_length=8", "data.max_train=100"])
    assert bench["parse_variant"]("default=") == ("default", [])
