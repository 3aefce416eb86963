"""Eckart–Young: the relative error of the best rank-k approximation of full fine-tuning's
ΔW = W_ft − W0 against k, with the sweep's ranks marked and the LoRA adapters of rank r beside it.
Reads analysis/eckart_young.csv (`lowrank-lab spectrum SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import curves as plotting_curves

NAME = "fig_eckart_young"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        ey = analysis.read_table(args.sweep, analysis.ECKART_YOUNG)
        plotting.save_figure(plotting_curves.eckart_young_figure(ey), NAME, args.out)


if __name__ == "__main__":
    main()
