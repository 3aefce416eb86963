"""Eckart–Young: the relative error of the best rank-k approximation of full fine-tuning's
ΔW = W_ft − W0 against k, with the sweep's ranks marked and the LoRA adapters of rank r beside it.
Reads analysis/eckart_young.csv (`lowrank-lab spectrum SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig_eckart_young"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
