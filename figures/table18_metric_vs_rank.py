"""Table 18's shape (Hu et al. 2021, App. H.2): every dev metric against r for one target set
(q,v by default). Reads analysis/results.csv.
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import tables

NAME = "table18_metric_vs_rank"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        table = tables.metric_vs_rank_table(analysis.read_table(args.sweep, analysis.RESULTS))
        if table.empty:
            raise plotting.MissingData("the sweep has no cells for this table")
        tables.save_table(table, NAME, args.out)


if __name__ == "__main__":
    main()
