"""Figure 8 (Hu et al. 2021, App. H.3): φ(Wq, A_r, i, j) between W0's top-i singular directions and
the adapter's top-j, for the sweep's largest ranks and a random basis, middle layer.
Reads analysis/phi_w0.csv (`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting

NAME = "fig8_phi_w0"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        phi_w0 = analysis.read_table(args.sweep, analysis.PHI_W0)
        plotting.save_figure(plotting.phi_w0_figure(phi_w0, args.layer), NAME, args.out)


if __name__ == "__main__":
    main()
