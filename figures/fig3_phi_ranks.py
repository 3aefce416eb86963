"""Figure 3 (Hu et al. 2021, §7.2): subspace similarity φ(A_r=8, A_r=64, i, j) at the middle layer.

ΔWq and ΔWv: the full r1×r2 grid, then the r1×r1 lower-left corner with j > i blank. The ranks
are the sweep's own (8 and 64 when present, else the two largest). Reads analysis/phi.csv
(`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig3_phi_ranks"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
