"""Figure 6 (Hu et al. 2021, App. H.1): φ(A_r=8, A_r=64, i, j) for ΔWq and ΔWv at every layer of
a small model, or at the first, ⅓, ⅔ and last layers (the paper's 1, 32, 64, 96 of 96).
Reads analysis/phi.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting

NAME = "fig6_phi_ranks_layers"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        phi = analysis.read_table(args.sweep, analysis.PHI)
        layers = plotting.spread_layers(phi["layer"].dropna())
        plotting.save_figure(plotting.phi_ranks_figure(phi, layers), NAME, args.out)


if __name__ == "__main__":
    main()
