"""Intruder dimensions (Shuttleworth et al. 2024) of W0 + ΔW against W0: among the top 10 singular
vectors, how many have max |cos| < ε with every singular vector of W0, against ε, per rank and for
full fine-tuning. Reads analysis/intruders.csv (`lowrank-lab spectrum SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig_intruders"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
