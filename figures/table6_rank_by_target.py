"""Table 6 (Hu et al. 2021, §7.2): the main metric by target set (rows) and r (columns),
median ± half-range over seeds. Reads analysis/results.csv.
"""

from lowrank_lab.workflow.report import run_script

NAME = "table6_rank_by_target"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
