"""Benchmark: analyse a Llama-7B-shaped PEFT adapter (32 layers, d = 4096, r = 64 on q, k, v, o)
against a synthetic sharded base, on the CPU, through the library path that `lowrank-lab analyze`
and `compare` take (lowrank_lab.analysis.external): loading, spectra, φ(W0, ΔW) and amplification with a
randomized top-r SVD of each W0 read once, φ and ΔW distances between two adapters, writing the
tables with their sidecars. One W0 also goes through the dense route, for accuracy and cost.

Writes the base's attention matrices (fp16, 32·4·4096²·2 B = 4 GiB) as a sharded safetensors
checkpoint with model.safetensors.index.json into a temporary folder, deletes it afterwards.

    python benchmarks/bench_analyze_llama.py                      # the full 7B shape
    python benchmarks/bench_analyze_llama.py --layers 2 --d 1024  # a quick check
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from lowrank_lab.store import tables as st
from lowrank_lab.analysis import external
from lowrank_lab.workflow import external as wx
from lowrank_lab.maths import linalg
from lowrank_lab.store.adapters import load_external
from lowrank_lab.maths.update import LowRankUpdate
from lowrank_lab.store.peft_format import save_adapter

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_base(folder: Path, layers: int, d: int, n_shards: int, gen: torch.Generator) -> None:
    """W0 = G/√d (G Gaussian, a flat spectrum: the hard case for a randomized SVD), fp16, sharded."""
    keys = [f"model.layers.{i}.self_attn.{kind}.weight" for i in range(layers) for kind in KINDS]
    per_shard = -(-len(keys) // n_shards)
    weight_map = {}
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        chunk = keys[s * per_shard:(s + 1) * per_shard]
        tensors = {k: (torch.randn(d, d, generator=gen) / d ** 0.5).half() for k in chunk}
        save_file(tensors, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, name))
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": d,
                                                    "num_hidden_layers": layers}))


def write_adapters(folder: Path, base: Path, layers: int, d: int, r: int, gen: torch.Generator) -> None:
    """Adapters a and b; b's A shares a's top half of rows (plus noise), so φ is neither 0 nor 1."""
    previous: list[LowRankUpdate] = []
    for name in ("a", "b"):
        updates = []
        for i in range(layers):
            for kind in KINDS:
                A = torch.randn(r, d, generator=gen) / d ** 0.5
                B = torch.randn(d, r, generator=gen) * 0.01
                updates.append(LowRankUpdate(f"L{i}.{kind[0]}", f"model.layers.{i}.self_attn.{kind}", A, B, 16 / r))
        if name == "b":
            for u, ua in zip(updates, previous):
                u.A[: r // 2] = ua.A[: r // 2] + 0.3 * u.A[: r // 2]
        previous = updates
        save_adapter(folder / name, updates, base_model=str(base), revision=None, alpha=16,
                     scaling_rule="alpha/r", init="kaiming", dropout=0.0)


def timed(rows: list, step: str, fn):
    start = time.perf_counter()
    out = fn()
    rows.append((step, time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--n-iter", type=int, default=1, help="power iterations of the randomized SVD")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared 2-core machine 1 is faster: see RESULTS.md)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    L, d, r = args.layers, args.d, args.r
    need = L * len(KINDS) * d * d * 2
    root = Path(tempfile.mkdtemp(prefix="bench-llama-", dir=args.dir))
    free = shutil.disk_usage(root).free
    if free < 1.5 * need:
        sys.exit(f"{root}: {free / 2**30:.1f} GiB free, need {1.5 * need / 2**30:.1f} GiB")
    gen = torch.Generator().manual_seed(0)
    opts = external.AnalysisOptions(n_iter=args.n_iter)
    load_before = os.getloadavg()[0]
    try:
        (root / "base").mkdir()
        t0 = time.perf_counter()
        write_base(root / "base", L, d, args.shards, gen)
        write_adapters(root, root / "base", L, d, r, gen)
        t_synth = time.perf_counter() - t0

        rows: list[tuple[str, float]] = []
        t_start = time.perf_counter()
        a = timed(rows, "load adapter a (+ W0 header checks)", lambda: load_external(root / "a"))
        b = timed(rows, "load adapter b", lambda: load_external(root / "b"))
        n = len(a.updates)
        tables = timed(rows, f"analyze_adapter(a): spectra, φ(W0, ΔW), amplification ×{n}",
                       lambda: external.analyze_adapter(a, opts))
        compared = timed(rows, f"compare_adapters(a, b): φ grid, angles, ΔW distances ×{n}",
                         lambda: external.compare_adapters(a, b, opts))

        def write():
            sidecar = {"options": vars(opts), "adapters": [wx.describe("a", a), wx.describe("b", b)]}
            return wx.write_folder_tables(root / "out", {**tables, **compared}, sidecar)

        written = timed(rows, "write tables (CSV, Markdown, sidecar JSON)", write)
        t_total = time.perf_counter() - t_start

        # The dense route on one matrix: linalg.amplification with a full float64 SVD of W0.
        label, u = next(iter(a.updates.items()))
        W0_first = a.W0(u)
        dense = timed(rows, "amplification, dense SVD of W0 ×1 (reference)", lambda: linalg.amplification(
            W0_first, u, generator=torch.Generator().manual_seed(0)))
        t_dense_one = rows[-1][1]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    amp = tables[st.AMPLIFICATION].set_index("label")
    dist = compared[external.DISTANCES]
    rel_w0 = amp.loc[label, "proj_w0"] / dense["proj_w0"]
    rel_amp = amp.loc[label, "amplification"] / dense["amplification"]
    print(f"Llama-shaped adapter: {L} layers × {{q,k,v,o}}, d = k = {d}, r = {r}; base fp16 sharded "
          f"in {args.shards} files ({need / 2**30:.2f} GiB), written in {t_synth:.0f} s (not timed below)")
    print(f"torch {torch.__version__}, os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}, "
          f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"command: {' '.join([sys.executable, *sys.argv])}\n")
    width = max(len(s) for s, _ in rows)
    print(f"| {'step'.ljust(width)} | seconds |")
    print(f"|{'-' * (width + 2)}|---------|")
    for step, sec in rows:
        print(f"| {step.ljust(width)} | {sec:7.2f} |")
    print(f"\nwhole analysis (load + analyze + compare + write {len(written)} files): {t_total:.1f} s "
          f"({'PASS' if t_total < 120 else 'FAIL'}: target < 120 s)")
    print(f"dense amplification for all {n} matrices would take ≈ {t_dense_one * n:.0f} s")
    print(f"on {label}: proj_w0 randomized/dense = {rel_w0:.4f}, amplification randomized/dense = "
          f"{rel_amp:.6f} (the ΔW side is exact; only proj_w0 uses the randomized SVD)")
    print(f"mean φ(a, b, r, r) = {dist['phi'].mean():.3f} (b shares half of a's rows of A); "
          f"mean ‖ΔWa − ΔWb‖_F/‖ΔWa‖_F = {dist['relative_frobenius'].mean():.3f}")


if __name__ == "__main__":
    main()
