"""Storage per adapted matrix (Hu et al. 2021, §4.1): dense d·k against LoRA's r·(d + k) and the
reduction, for every matrix kind and rank of the sweep. Reads analysis/amplification.csv.
"""

from lowrank_lab.workflow.report import run_script

NAME = "table_storage"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
