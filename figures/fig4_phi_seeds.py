"""Figure 4 (Hu et al. 2021, §7.2): φ(A_r, A'_r, i, j) between two seeds at the sweep's largest
rank (the paper's r = 64), middle layer, for ΔWq, ΔWv and two random Gaussian matrices of the same
shape. Reads analysis/phi.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig4_phi_seeds"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
