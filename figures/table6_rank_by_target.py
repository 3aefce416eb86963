"""Table 6 (Hu et al. 2021, §7.2): the main metric by target set (rows) and r (columns),
median ± half-range over seeds. Reads analysis/results.csv.
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import tables

NAME = "table6_rank_by_target"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        table = tables.rank_target_table(analysis.read_table(args.sweep, analysis.RESULTS))
        if table.empty:
            raise plotting.MissingData("the sweep has no cells for this table")
        tables.save_table(table, NAME, args.out)


if __name__ == "__main__":
    main()
