"""Table 5 (Hu et al. 2021, §7.1): which matrices to adapt at a fixed budget r × (number of
matrix kinds); the budget shared by the most target sets of the sweep. Reads analysis/results.csv.
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import tables

NAME = "table5_budget"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        table = tables.budget_table(analysis.read_table(args.sweep, analysis.RESULTS))
        if table.empty:
            raise plotting.MissingData("the sweep has no cells for this table")
        tables.save_table(table, NAME, args.out)


if __name__ == "__main__":
    main()
