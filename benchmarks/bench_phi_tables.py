"""The φ tables of a decoder sweep: analysis.sweep.phi_tables (side A) on 42 synthetic LoRA cells of
SmolLM2-135M's shapes (r = 1…64 × {q,v, all-linear} × 3 seeds, random factors, random W0), then
their CSV text as store.tables writes it: rows, seconds, megabytes. What `lowrank-lab subspace`
costs on a decoder before any file is written (benchmarks/RESULTS.md).

    python benchmarks/bench_phi_tables.py [LAYERS]     # default 30, SmolLM2's; 6 for a quick look
"""

import sys
import time
from types import SimpleNamespace

import torch

from lowrank_lab.analysis import sweep as sa
from lowrank_lab.analysis.base import W0Source
from lowrank_lab.maths.update import LowRankUpdate

SHAPES = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576),  # (d, k) of SmolLM2-135M
          "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536)}
TARGETS = {"q,v": ("q", "v"), "all-linear": tuple(SHAPES)}
RANKS = (1, 2, 4, 8, 16, 32, 64)


def synthetic_runs(layers: int) -> list[SimpleNamespace]:
    """Stand-ins for store.runs.Run with what phi_tables reads: the spec's keys and the updates."""
    runs = []
    for targets, modules in TARGETS.items():
        for seed in range(3):
            for r in RANKS:
                updates = {f"L{n}.{m}": LowRankUpdate(f"L{n}.{m}", f"model.layers.{n}.{m}", torch.randn(r, SHAPES[m][1]),
                                                      torch.randn(SHAPES[m][0], r), 32 / r)
                           for n in range(layers) for m in modules}
                lora = SimpleNamespace(method="lora", targets=targets, r=r, alpha=32.0, scaling_rule="alpha/r",
                                       init="kaiming")
                spec = SimpleNamespace(lora=lora, train=SimpleNamespace(seed=seed), data=SimpleNamespace(task="vader"))
                runs.append(SimpleNamespace(spec=spec, summary=SimpleNamespace(task="vader"),
                                            path=SimpleNamespace(name=f"{targets}-r{r}-s{seed}"), updates=updates))
    return runs


def random_base(updates) -> W0Source:
    """W0 of random matrices, by module path, as the analyses take it (its SVDs cached)."""
    W0 = {u.path: torch.randn(*SHAPES[lab.split(".")[1]], dtype=torch.float64) for lab, u in updates.items()}
    return W0Source(W0.__getitem__, "random")


def main() -> None:
    layers = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    torch.manual_seed(0)
    runs = synthetic_runs(layers)
    base = random_base(runs[-1].updates)
    for update in runs[-1].updates.values():  # W0's SVDs first, as map_runs does: not timed below
        base.svd(update)
    t = time.perf_counter()
    phi, phi_w0 = sa.phi_tables(runs, "A", base)
    computed = time.perf_counter() - t
    t = time.perf_counter()
    size = len(phi.to_csv(index=False)) + len(phi_w0.to_csv(index=False))  # as store.tables writes them
    written = time.perf_counter() - t
    print("| layers | phi rows | phi_w0 rows | compute s | CSV MB | CSV s |\n|---|---|---|---|---|---|")
    print(f"| {layers} | {len(phi):,} | {len(phi_w0):,} | {computed:.1f} | {size / 1e6:,.0f} | {written:.1f} |")


if __name__ == "__main__":
    main()
