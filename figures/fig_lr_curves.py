"""Dev metric and loss against learning rate, one curve per rank, full fine-tuning beside (LoRA Without Regret, Fig. 2).
Reads analysis/results.csv (`lowrank-lab tables SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig_lr_curves"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
