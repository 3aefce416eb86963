"""Figure 6 (Hu et al. 2021, App. H.1): φ(A_r=8, A_r=64, i, j) for ΔWq and ΔWv at every layer of
a small model, or at the first, ⅓, ⅔ and last layers (the paper's 1, 32, 64, 96 of 96).
Reads analysis/phi.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig6_phi_ranks_layers"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
