"""Figure 7 (Hu et al. 2021, App. H.1): φ(A_r, A'_r, i, j) between two seeds at the largest rank,
ΔWq and ΔWv, at every layer of a small model or the first, ⅓, ⅔ and last layers.
Reads analysis/phi.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig7_phi_seeds_layers"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
