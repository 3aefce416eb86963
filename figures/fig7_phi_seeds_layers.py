"""Figure 7 (Hu et al. 2021, App. H.1): φ(A_r, A'_r, i, j) between two seeds at the largest rank,
ΔWq and ΔWv, at every layer of a small model or the first, ⅓, ⅔ and last layers.
Reads analysis/phi.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting

NAME = "fig7_phi_seeds_layers"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        phi = analysis.read_table(args.sweep, analysis.PHI)
        layers = plotting.spread_layers(phi["layer"].dropna())
        plotting.save_figure(plotting.phi_seeds_figure(phi, layers, random_panel=False), NAME, args.out)


if __name__ == "__main__":
    main()
