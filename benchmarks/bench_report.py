"""Benchmark: `lowrank-lab report` on a trained sweep, today's route against the route before
analysis tables became Parquet (CSV tables, W0 from the loaded model and its SVD once per command
and cell, every intruder by a dense SVD), side by side in one run, on the same copies of the sweep.

    python benchmarks/bench_report.py SWEEP [SWEEP ...] [--before COMMIT] [--device auto]

Each route runs as its own process (`python -m lowrank_lab report`) on a fresh copy of SWEEP with
no analysis/ folder; the "before" route from a git worktree of COMMIT (default: f4a00d6, the last
commit before the analysis corridor was rebuilt). Prints one table: wall seconds, peak resident
memory of the process, size of analysis/ and the ratios, per sweep and route.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


CHILD = """
import atexit, importlib.util, resource, runpy, sys
code = sys.argv.pop(1)
sys.path.insert(0, code)
cli = importlib.util.spec_from_file_location("lowrank_lab_cli", code + "/cli/__init__.py",
                                             submodule_search_locations=[code + "/cli"])
sys.modules["lowrank_lab_cli"] = importlib.util.module_from_spec(cli)
cli.loader.exec_module(sys.modules["lowrank_lab_cli"])
atexit.register(lambda: print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))
runpy.run_module("lowrank_lab", run_name="__main__")
"""


def run_report(code: Path, sweep: Path, extra: list[str]) -> dict:
    """Wall time, peak resident memory and analysis/ size of one `report` run of the code under
    `code` (its lowrank_lab and cli/ first on the path, whatever is installed)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(code), "report", str(sweep), *extra], cwd=code,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"report failed ({code}):\n{out.stderr[-2000:]}")
    kib = int(next(line.split()[1] for line in out.stderr.splitlines() if line.startswith("MAXRSS")))
    return {"seconds": wall, "peak_rss_gb": kib / 2**20, "analysis_mb": folder_bytes(sweep / "analysis") / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--before", default="f4a00d6", help="the commit of the earlier route")
    parser.add_argument("--device", default="auto", help="today's route: where dense SVDs run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    old = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before], check=True,
                   capture_output=True)
    rows = []
    try:
        for sweep in args.sweeps:
            # today's route first: any model conversion it caches (the embedded decoder) is then warm for both
            for route, code, extra in (("today (Parquet, W0 read once)", ROOT, ["--device", args.device]),
                                       (f"before ({args.before}, CSV)", old, [])):
                copy = work / f"{sweep.name}-{len(rows)}"
                shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("analysis"))
                rows.append({"sweep": sweep.name, "route": route, **run_report(code, copy, extra)})
                shutil.rmtree(copy)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print("| sweep | route | report s | peak RSS GB | analysis/ MB | speed-up |")
    print("|---|---|---|---|---|---|")
    for i, row in enumerate(rows):
        base = rows[i - i % 2 + 1]
        print(f"| {row['sweep']} | {row['route']} | {row['seconds']:.1f} | {row['peak_rss_gb']:.2f} | "
              f"{row['analysis_mb']:.1f} | {base['seconds'] / row['seconds']:.2f}× |")


if __name__ == "__main__":
    main()
