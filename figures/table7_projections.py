"""Table 7 (Hu et al. 2021, §7.3): ‖UᵀW0Vᵀ‖_F with U, V from ΔW, from W0 and random, ‖W0‖_F,
‖ΔW‖_F (α/r included) and the amplification factor per r, middle layer, Wq. Reads
analysis/amplification.csv (`lowrank-lab amplify SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "table7_projections"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
