"""Table 2's shape (Hu et al. 2021; RoBERTa on GLUE there): full fine-tuning, BitFit, head only and
LoRA on q,v at r = 8 (the paper's configuration; every LoRA row when the sweeps lack it), with
trainable parameters, one column per task (one sweep each), median ± half-range over seeds.
Reads analysis/results.csv of each SWEEP (`lowrank-lab tables SWEEP`); writes .md, .tex, .csv.
"""

import pandas as pd

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import tables

NAME = "table2_methods"
PAPER_LORA = [("q,v", 8)]  # RoBERTa-base/large LoRA in Table 2: rq = rv = 8


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv, several=True)
    with plotting.skip_if_missing(NAME):
        results = pd.concat([analysis.read_table(s, analysis.RESULTS) for s in args.sweeps], ignore_index=True)
        has_paper_row = ((results["targets"] == "q,v") & (results["r"] == 8)).any()
        table = tables.method_table(results, PAPER_LORA if has_paper_row else None)
        if table.empty:
            raise plotting.MissingData("the sweep has no cells for this table")
        tables.save_table(table, NAME, args.out)


if __name__ == "__main__":
    main()
