"""`make demo`'s training (``lowrank-lab rank-sweep`` with no spec) and variants of it, side by
side in one command, on the machine it runs on: wall and CPU seconds, the tokens the packed
steps processed (padded) against the examples' own (real), and the dev accuracy each variant
reaches (median and range over its cells).

    python benchmarks/bench_demo_cpu.py                                   # the default against ungrouped batches
    python benchmarks/bench_demo_cpu.py --variant "grouped 64=train.group_by_length=64" ...
    python benchmarks/bench_demo_cpu.py --set model.name=PATH ...         # applied to every variant

Each variant is one `rank-sweep` in a fresh folder, run one after another in the order given
and then again in reverse when ``--rounds 2`` (so that a change in the machine's load falls on
both); the load average before and after each run is printed beside it, since on a shared
machine wall time follows the other jobs. The set-up (``make setup``) is not part of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VARIANTS = ("default=", "batches in data order=train.group_by_length=0")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """"NAME=key=value,key=value" → (NAME, ["key=value", ...]); "NAME=" is the default spec."""
    name, _, sets = text.partition("=")
    return name, [s for s in sets.split(",") if s]


def run_variant(sets: list[str], common: list[str], folder: Path) -> dict:
    """One rank-sweep; its wall and CPU seconds, load averages, tokens and dev accuracies."""
    args = [sys.executable, "-m", "lowrank_lab", "rank-sweep", "--set", f"sweep.out_dir={folder}"]
    for s in [*common, *sets]:
        args += ["--set", s]
    load0, before, start = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True)
    wall, after, load1 = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
    if run.returncode != 0:
        raise SystemExit(f"rank-sweep {' '.join(sets)} failed ({run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    summaries = [json.loads(p.read_text()) for p in sorted(folder.glob("*/cells/*/summary.json"))]
    meters = [s["throughput"] for s in summaries if s.get("throughput")]
    accuracy = [s["best"][s["main_metric"]] for s in summaries]
    return {"wall": wall, "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "load": (load0, load1), "padded": meters[0]["tokens_padded"] if meters else 0,
            "real": meters[0]["tokens_real"] if meters else 0, "accuracy": accuracy}


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| variant | wall s | CPU s | load before → after | tokens processed / real (one cell) | dev acc median [min, max] |",
             "|---|---|---|---|---|---|"]
    for name, r in rows:
        acc = r["accuracy"]
        lines.append(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['load'][0]:.1f} → {r['load'][1]:.1f} | "
                     f"{r['padded']:,} / {r['real']:,} | {statistics.median(acc):.4f} [{min(acc):.4f}, {max(acc):.4f}] |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", help="NAME=key=value,... (repeatable; default: %(default)s)")
    ap.add_argument("--set", dest="common", action="append", default=[], help="key=value for every variant")
    ap.add_argument("--rounds", type=int, default=1, help="2: run the variants again in reverse order")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    order = variants + (variants[::-1] if args.rounds == 2 else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, sets) in enumerate(order):
            print(f"running {name} ({i + 1}/{len(order)})", flush=True)
            rows.append((name, run_variant(sets, args.common, Path(tmp) / f"run{i}")))
    print(f"\n{os.cpu_count()} CPUs; command: {' '.join(sys.argv)}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
