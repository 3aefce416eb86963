"""One sweep on one GPU and on several (torchrun), timed end to end (issue: multi-GPU sweeps).

    python benchmarks/bench_multi_gpu.py run --gpus 1 --json one.json -- SPEC [--set ...]
    python benchmarks/bench_multi_gpu.py run --gpus 2 --json two.json -- SPEC [--set ...]
    python benchmarks/bench_multi_gpu.py table one.json two.json

`run` starts ``lowrank-lab rank-sweep`` (one GPU) or ``torchrun --nproc-per-node N -m lowrank_lab
rank-sweep`` into a fresh sweep directory, times the whole command, then reads every cell's
summary.json: which process trained each pack, its training seconds, and the best dev metric.
`table` prints the Markdown table of benchmarks/RESULTS.md, speed-ups against the first file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def sweep_summaries(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("cells/*/summary.json"))]


def run(gpus: int, args: list[str]) -> dict:
    cli = [sys.executable, "-m", "lowrank_lab", "rank-sweep", *args]
    if gpus > 1:
        cli = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}", "-m", "lowrank_lab",
               "rank-sweep", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cli, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    if done.returncode:
        raise SystemExit(f"rank-sweep exited with {done.returncode}")
    sweep = Path(next(line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("sweep ")))
    summaries = sweep_summaries(sweep)
    packs = {}
    for s in summaries:
        packs[s["pack"]["id"]] = {"rank": s["pack"]["rank"], "cells": s["pack"]["size"],
                                  "seconds": s["wall_seconds"], "steps": s["steps"]}
    best = [s["best"][s["main_metric"]] for s in summaries if s["status"] == "done"]
    return {"gpus": gpus, "wall_seconds": wall, "cells_done": len(best), "cells": len(summaries),
            "packs": list(packs.values()), "metric_median": statistics.median(best), "command": " ".join(cli)}


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| GPUs | wall s (whole command) | packs: process → training s | busiest process s | "
             "speed-up (wall) | speed-up (busiest process) | cells done | median dev metric |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        busy = {}
        for p in r["packs"]:
            busy[p["rank"]] = busy.get(p["rank"], 0.0) + p["seconds"]
        packs = ", ".join(f"{p['rank']} → {p['seconds']:.1f}" for p in sorted(r["packs"], key=lambda p: p["rank"]))
        base_busy = sum(p["seconds"] for p in base["packs"])
        lines.append(f"| {r['gpus']} | {r['wall_seconds']:.1f} | {packs} | {max(busy.values()):.1f} | "
                     f"{base['wall_seconds'] / r['wall_seconds']:.2f}× | {base_busy / max(busy.values()):.2f}× | "
                     f"{r['cells_done']}/{r['cells']} | {r['metric_median']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run")
    r.add_argument("--gpus", type=int, required=True)
    r.add_argument("--json", required=True)
    r.add_argument("sweep_args", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.verb == "run":
        row = run(args.gpus, [a for a in args.sweep_args if a != "--"])
        Path(args.json).write_text(json.dumps(row, indent=2))
        print(json.dumps(row))
    else:
        print(table([json.loads(Path(f).read_text()) for f in args.files]))


if __name__ == "__main__":
    main()
