"""Appendix H.4 (Hu et al. 2021) as a figure: the amplification factor ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F against
r (the paper states ≈20 at r = 4 and ≈2 at r = 64 in words only), per target set and matrix.
Reads analysis/amplification.csv (`lowrank-lab amplify SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "figH4_amplification"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
