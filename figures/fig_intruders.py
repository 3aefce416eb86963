"""Intruder dimensions (Shuttleworth et al. 2024) of W0 + ΔW against W0: among the top 10 singular
vectors, how many have max |cos| < ε with every singular vector of W0, against ε, per rank and for
full fine-tuning. Reads analysis/intruders.csv (`lowrank-lab spectrum SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import curves as plotting_curves

NAME = "fig_intruders"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        intruders = analysis.read_table(args.sweep, analysis.INTRUDERS)
        plotting.save_figure(plotting_curves.intruders_figure(intruders), NAME, args.out)


if __name__ == "__main__":
    main()
