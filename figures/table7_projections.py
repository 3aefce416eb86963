"""Table 7 (Hu et al. 2021, §7.3): ‖UᵀW0Vᵀ‖_F with U, V from ΔW, from W0 and random, ‖W0‖_F,
‖ΔW‖_F (α/r included) and the amplification factor per r, middle layer, Wq. Reads
analysis/amplification.csv (`lowrank-lab amplify SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import tables

NAME = "table7_projections"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        table = tables.table7(analysis.read_table(args.sweep, analysis.AMPLIFICATION))
        if table.empty:
            raise plotting.MissingData("the sweep has no cells for this table")
        tables.save_table(table, NAME, args.out)


if __name__ == "__main__":
    main()
