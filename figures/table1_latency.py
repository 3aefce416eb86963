"""Table 1's shape (Hu et al. 2021, §3): the median forward latency of the base model, merged and
unmerged LoRA, Houlsby and Pfeiffer adapters and prefix tuning, with the overhead in percent against
the base, per batch size and sequence length, for the embedded encoder and decoder; the paper's GPT-2
medium numbers in table1_latency_paper, and the same shape from each variant's fastest run in
table1_latency_min (less sensitive to other load on a shared machine). Reads latency.csv from the
folder benchmarks/bench_latency.py wrote (its --out); writes table1_latency.{md,tex,csv},
table1_latency_min.{md,csv} and table1_latency_paper.{md,csv} beside it (or under --out).
"""

import argparse
from pathlib import Path

import pandas as pd

from lowrank_lab.present.registry import TABLE1_PAPER
from lowrank_lab.present.tables import latency_table, render
from lowrank_lab.store.figures import write_outputs

NAME = "table1_latency"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("results", type=Path, help="the folder holding latency.csv (bench_latency.py --out)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the results folder)")
    args = parser.parse_args(argv)
    latency = pd.read_csv(args.results / "latency.csv")
    files = {f"{NAME}.{fmt}": render(latency_table(latency), fmt) for fmt in ("md", "tex", "csv")}
    files.update({f"{NAME}_min.{fmt}": render(latency_table(latency, "min_ms"), fmt) for fmt in ("md", "csv")})
    files.update({f"{NAME}_paper.{fmt}": render(TABLE1_PAPER, fmt) for fmt in ("md", "csv")})
    for path in write_outputs(args.out or args.results, files):
        print(path)


if __name__ == "__main__":
    main()
