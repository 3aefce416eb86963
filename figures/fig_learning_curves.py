"""Training loss against step at each cell group's best learning rate (LoRA Without Regret, Fig. 1).
Reads analysis/learning_curves.csv and results.csv (`lowrank-lab tables SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig_learning_curves"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
