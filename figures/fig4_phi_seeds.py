"""Figure 4 (Hu et al. 2021, §7.2): φ(A_r, A'_r, i, j) between two seeds at the sweep's largest
rank (the paper's r = 64), middle layer, for ΔWq, ΔWv and two random Gaussian matrices of the same
shape. Reads analysis/phi.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting

NAME = "fig4_phi_seeds"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        phi = analysis.read_table(args.sweep, analysis.PHI)
        layers = None if args.layer is None else [args.layer]
        plotting.save_figure(plotting.phi_seeds_figure(phi, layers, random_panel=True), NAME, args.out)


if __name__ == "__main__":
    main()
