"""Storage per adapted matrix (Hu et al. 2021, §4.1): dense d·k against LoRA's r·(d + k) and the
reduction, for every matrix kind and rank of the sweep. Reads analysis/amplification.csv.
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import tables

NAME = "table_storage"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        amp = analysis.read_table(args.sweep, analysis.AMPLIFICATION)
        tables.save_table(tables.storage_table(amp, amp["r"].unique()), NAME, args.out)


if __name__ == "__main__":
    main()
