"""Appendix H.4 (Hu et al. 2021) as a figure: the amplification factor ‖ΔW‖_F / ‖UᵀW0Vᵀ‖_F against
r (the paper states ≈20 at r = 4 and ≈2 at r = 64 in words only), per target set and matrix.
Reads analysis/amplification.csv (`lowrank-lab amplify SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import curves as plotting_curves

NAME = "figH4_amplification"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        amp = analysis.read_table(args.sweep, analysis.AMPLIFICATION)
        plotting.save_figure(plotting_curves.amplification_figure(amp), NAME, args.out)


if __name__ == "__main__":
    main()
