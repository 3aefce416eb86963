"""``lowrank-lab dynamics SWEEP``: read every LoRA cell's factor snapshots (``store.snapshots``),
compute how its subspaces form (``analysis.dynamics``), write the two tables with their sidecars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lowrank_lab.analysis import dynamics as dyn
from lowrank_lab.analysis import sweep as sa
from lowrank_lab.store import files, runs, snapshots
from lowrank_lab.store import tables as st
from lowrank_lab.workflow.edits import base_weights

CONVENTIONS = {
    "snapshots": "factors A, B of every LoRA cell at step 0, every train.snapshot_every steps and the last step",
    "phi": "φ(i, j) = ‖V1[:, :i]ᵀ V2[:, :j]‖_F² / min(i, j) on the right singular vectors of A (Hu et al. "
           "2021, Eq. 4, side A); phi_top: i = j = 1; phi: i = r1, j = r2 (the whole subspaces)",
    "comparison": "final: A_t against the cell's last snapshot; ranks: two ranks at one seed; seeds: two "
                  "seeds at one rank, at the same step",
    "random": f"phi_random(_sd): mean (standard deviation) over {dyn.stats.N_RANDOM} pairs of Haar-random "
              "subspaces of dimensions r1, r2 in ℝ^dim",
    "spectrum": "ΔW_t = scaling·B_t·A_t (scaling included): frobenius, stable_rank = Σσ²/σ₁², effective_rank "
                "(Roy & Vetterli 2007), rank_90 (Biderman et al. 2024)",
    "intruders": "top 10 left singular vectors of W0 + ΔW_t whose max |cos| with every left singular vector "
                 "of W0 is below ε = 0.5 (Shuttleworth et al. 2024)",
}


def snapshot_cells(sweep: Path, sweep_runs: list[runs.Run]) -> list[tuple[dict, dyn.Snapshots]]:
    """(spec columns, snapshots) of every finished LoRA cell that has snapshots; RunError when none has."""
    found = []
    for run in sa.lora_runs(sweep_runs):
        snaps = snapshots.read_snapshots(run.path)
        if snaps:
            found.append((sa.run_columns(run), snaps))
    if not found:
        raise files.RunError(f"{sweep}: no LoRA cell has snapshots; train the sweep with train.snapshot_every > 0")
    return found


def compute_dynamics(sweep: Path, base: str | None = None, echo: Callable[[str], None] = print) -> list[Path]:
    """Write dynamics_phi and dynamics_spectrum of a sweep; return their paths."""
    sweep = Path(sweep)
    sweep_runs = runs.load_sweep(sweep)
    cells = snapshot_cells(sweep, sweep_runs)
    W0 = base_weights(sweep_runs[0].spec, base)
    echo(f"{len(cells)} cells, {sum(len(s) for _, s in cells)} snapshots")
    phi = dyn.dynamics_phi_table(cells, seed=sa.RANDOM_SEED)
    spectra = dyn.dynamics_spectrum_table(cells, W0, svd0=W0.svd)
    options = {"base_model": W0.name, "random_seed": sa.RANDOM_SEED, "delta_w_includes_scaling": True}
    return [st.write_table(sweep, st.DYNAMICS_PHI, phi, options, CONVENTIONS),
            st.write_table(sweep, st.DYNAMICS_SPECTRUM, spectra, options, CONVENTIONS)]
