"""Figure 3 (Hu et al. 2021, §7.2): subspace similarity φ(A_r=8, A_r=64, i, j) at the middle layer.

ΔWq and ΔWv: the full r1×r2 grid, then the r1×r1 lower-left corner with j > i blank. The ranks
are the sweep's own (8 and 64 when present, else the two largest). Reads analysis/phi.csv
(`lowrank-lab subspace SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting

NAME = "fig3_phi_ranks"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        phi = analysis.read_table(args.sweep, analysis.PHI)
        layers = None if args.layer is None else [args.layer]
        plotting.save_figure(plotting.phi_ranks_figure(phi, layers), NAME, args.out)


if __name__ == "__main__":
    main()
