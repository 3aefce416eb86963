"""Attention-only against more matrices at equal rank, at the best learning rate (LoRA Without Regret, Fig. 3).
Reads analysis/results.csv (`lowrank-lab tables SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig_targets_by_rank"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
