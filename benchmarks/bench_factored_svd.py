"""Benchmark: SVD of ΔW = scaling·B·A from the factors (factored_svd) vs dense torch.linalg.svd.

Builds float64 A (r×k), B (d×r), times both in one run, checks they agree, and prints a table.
The factored route costs O((d+k)·r²); the dense one O(d·k·min(d, k)) plus forming ΔW.

    python benchmarks/bench_factored_svd.py --d 4096 --k 4096 --r 64 --repeats 5
"""

import argparse
import os
import statistics
import sys
import time

import torch

from lowrank_lab.maths.linalg import delta_w, factored_svd


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of factored_svd (median)")
    parser.add_argument("--scaling", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(args.seed)
    A = torch.randn(args.r, args.k, generator=gen, dtype=torch.float64)
    B = torch.randn(args.d, args.r, generator=gen, dtype=torch.float64)

    factored_svd(A, B, args.scaling)  # warm-up: first-call LAPACK / thread-pool setup
    runs = [timed(lambda: factored_svd(A, B, args.scaling)) for _ in range(args.repeats)]
    t_factored = statistics.median(t for t, _ in runs)
    U, S, Vh = runs[0][1]

    # Dense timing includes forming ΔW, since that is part of what the factored route avoids.
    t_dense, (U_d, S_d, Vh_d) = timed(
        lambda: torch.linalg.svd(delta_w(A, B, args.scaling), full_matrices=False)
    )

    r = args.r
    s_max = float(S_d[0])
    err_S = float((S - S_d[:r]).abs().max()) / s_max
    # Singular vectors are defined only up to sign (and rotation in ties), so compare the rank-r
    # reconstructions U·diag(S)·Vh instead of U and Vh themselves.
    recon = U @ torch.diag(S) @ Vh
    recon_d = U_d[:, :r] @ torch.diag(S_d[:r]) @ Vh_d[:r]
    err_recon = float((recon - recon_d).abs().max()) / s_max
    ok = err_S < 1e-10 and err_recon < 1e-10

    print(f"d={args.d} k={args.k} r={args.r} float64 scaling={args.scaling} repeats={args.repeats}")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, os.cpu_count()={os.cpu_count()}, torch threads={threads}")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print()
    rows = [
        ("method", "seconds", "ratio", "max rel err S", "max rel err USVh"),
        (f"factored_svd (median of {args.repeats})", f"{t_factored:.4f}", "1.0",
         f"{err_S:.2e}", f"{err_recon:.2e}"),
        ("dense svd(delta_w) (1 run)", f"{t_dense:.4f}", f"{t_dense / t_factored:.1f}",
         "reference", "reference"),
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [x.rjust(w) for x, w in zip(row[1:], widths[1:])]
        print("| " + " | ".join(cells) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()
    print("ratio = seconds / factored seconds; errors are max |difference| / S_max, on the top r")
    verdict = "PASS" if ok else "FAIL"
    print(f"speed-up dense/factored: {t_dense / t_factored:.0f}x; agreement < 1e-10: {verdict}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
