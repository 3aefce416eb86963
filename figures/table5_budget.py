"""Table 5 (Hu et al. 2021, §7.1): which matrices to adapt at a fixed budget r × (number of
matrix kinds); the budget shared by the most target sets of the sweep. Reads analysis/results.csv.
"""

from lowrank_lab.workflow.report import run_script

NAME = "table5_budget"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
