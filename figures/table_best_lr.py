"""The best learning rate per rank and method, with the seeds' range and the ratio to full fine-tuning's.
Reads analysis/results.csv (`lowrank-lab tables SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "table_best_lr"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
