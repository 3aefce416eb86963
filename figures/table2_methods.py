"""Table 2's shape (Hu et al. 2021): method × task with trainable parameters: full fine-tuning,
BitFit, head only and every LoRA target set and rank; median ± half-range over seeds.
Reads analysis/results.csv (`lowrank-lab tables SWEEP` or `report`); writes .md, .tex, .csv.
"""

from lowrank_lab import analysis, plotting, tables

NAME = "table2_methods"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        table = tables.method_table(analysis.read_table(args.sweep, analysis.RESULTS))
        if table.empty:
            raise plotting.MissingData("the sweep has no cells for this table")
        tables.save_table(table, NAME, args.out)


if __name__ == "__main__":
    main()
