"""Benchmark: analyse a Llama-7B-shaped PEFT adapter (32 layers, d = 4096, r = 64 on q, k, v, o)
against a synthetic sharded base, on the CPU: loading, spectra, φ and ΔW distances between two
adapters, and amplification with W0's top-r subspace from a dense or a randomized SVD.

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

from lowrank_lab import linalg
from lowrank_lab.adapters import delta_distance, load_external, match_updates, top_r_svd_randomized
from lowrank_lab.runs import LowRankUpdate, save_adapter

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
    for name in ("a", "b"):
        updates = []
        for i in range(layers):
            for kind in KINDS:
                A = torch.randn(r, d, generator=gen) / d ** 0.5
                B = torch.randn(d, r, generator=gen) * 0.01
                updates.append(LowRankUpdate(f"L{i}.{kind[0]}", f"model.layers.{i}.self_attn.{kind}", A, B, 16 / r))
        if name == "b":
            for u, ua in zip(updates, a_updates):
                u.A[: r // 2] = ua.A[: r // 2] + 0.3 * u.A[: r // 2]
        a_updates = updates
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
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    L, d, r = args.layers, args.d, args.r
    need = L * len(KINDS) * d * d * 2
    root = Path(tempfile.mkdtemp(prefix="bench-llama-", dir=args.dir))
    free = shutil.disk_usage(root).free
    if free < 1.5 * need:
        sys.exit(f"{root}: {free / 2**30:.1f} GiB free, need {1.5 * need / 2**30:.1f} GiB")
    gen = torch.Generator().manual_seed(0)
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
        pairs = match_updates(a, b)
        svd = timed(rows, f"spectra: factored_svd + metrics ×{len(pairs)}",
                    lambda: {lab: (s := linalg.factored_svd(u.A, u.B, u.scaling, dtype=torch.float64),
                                   linalg.spectrum_metrics(s[1]))[0] for lab, u, _ in pairs})

        def compare():
            out = {}
            for lab, ua, ub in pairs:
                grid = linalg.phi_grid(linalg.top_right_basis(ua.A, dtype=torch.float64),
                                       linalg.top_right_basis(ub.A, dtype=torch.float64))
                out[lab] = (float(grid[-1, -1]), delta_distance(ua.A, ua.B, ua.scaling, ub.A, ub.B, ub.scaling))
            return out

        phis = timed(rows, f"compare a vs b: φ grid + ΔW distances ×{len(pairs)}", compare)
        # Reading every W0 at once needs 128·64 MiB = 8 GiB in float32: read, use, drop instead.
        first = pairs[0]
        W0_first = timed(rows, "read one W0 (fp16 → fp32)", lambda: a.W0(first[1]))

        def amplify_fast():
            # Table 7 from the factors and ONE randomized SVD of W0, all products in float32:
            # U0ᵀ·W0·Vh0ᵀ = diag(S0) exactly for the randomized factors, so proj_w0 = ‖S0‖.
            out = {}
            for lab, u, _ in pairs:
                W0 = a.W0(u)
                U, S, Vh = svd[lab]
                _, S0, _ = top_r_svd_randomized(W0, r, n_iter=args.n_iter, generator=gen)
                U_rand = linalg.random_orthonormal(d, r, gen).float()
                Vh_rand = linalg.random_orthonormal(d, r, gen).float().mT
                proj = float(torch.linalg.matrix_norm(U.float().mT @ W0 @ Vh.float().mT))
                out[lab] = {"amplification": float(S.norm()) / proj, "proj_delta_w": proj,
                            "proj_w0": float(S0.norm()),
                            "proj_random": float(torch.linalg.matrix_norm(U_rand.mT @ W0 @ Vh_rand.mT))}
            return out

        amp = timed(rows, f"amplification, randomized W0 top-{r} (n_iter={args.n_iter}) ×{len(pairs)}", amplify_fast)
        t_total = time.perf_counter() - t_start

        # The dense route, on one matrix only (linalg.amplification: full float64 SVD of W0).
        u = first[1]
        dense = timed(rows, "amplification, dense linalg.amplification ×1", lambda: linalg.amplification(
            W0_first, u.A, u.B, u.scaling, generator=torch.Generator().manual_seed(0)))
        t_dense_one = rows[-1][1]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rel_w0 = amp[first[0]]["proj_w0"] / dense["proj_w0"]
    rel_amp = amp[first[0]]["amplification"] / dense["amplification"]
    print(f"Llama-shaped adapter: {L} layers × {{q,k,v,o}}, d = k = {d}, r = {r}; base fp16 sharded "
          f"in {args.shards} files ({need / 2**30:.2f} GiB), written in {t_synth:.0f} s (not timed below)")
    print(f"torch {torch.__version__}, os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}, "
          f"1-min load average {os.getloadavg()[0]:.1f}")
    print(f"command: {' '.join([sys.executable, *sys.argv])}\n")
    width = max(len(s) for s, _ in rows)
    print(f"| {'step'.ljust(width)} | seconds |")
    print(f"|{'-' * (width + 2)}|---------|")
    for step, sec in rows:
        print(f"| {step.ljust(width)} | {sec:7.2f} |")
    print(f"\nwhole analysis (load + spectra + compare + randomized amplification): {t_total:.1f} s "
          f"({'PASS' if t_total < 120 else 'FAIL'}: target < 120 s)")
    print(f"dense amplification for all {len(pairs)} matrices would take ≈ {t_dense_one * len(pairs):.0f} s")
    print(f"on {first[0]}: proj_w0 randomized/dense = {rel_w0:.4f}, amplification randomized/dense = "
          f"{rel_amp:.6f} (the ΔW side is exact; only proj_w0 uses the randomized SVD)")
    phi_mean = sum(p for p, _ in phis.values()) / len(phis)
    rel = sum(dd["relative_frobenius"] for _, dd in phis.values()) / len(phis)
    print(f"mean φ(a, b, r, r) = {phi_mean:.3f} (b shares half of a's rows of A); "
          f"mean ‖ΔWa − ΔWb‖_F/‖ΔWa‖_F = {rel:.3f}")


if __name__ == "__main__":
    main()
