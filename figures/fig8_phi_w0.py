"""Figure 8 (Hu et al. 2021, App. H.3): φ(Wq, A_r, i, j) between W0's top-i singular directions and
the adapter's top-j, for the sweep's largest ranks and a random basis, middle layer.
Reads analysis/phi_w0.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig8_phi_w0"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
