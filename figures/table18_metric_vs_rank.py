"""Table 18's shape (Hu et al. 2021, App. H.2): every dev metric against r for one target set
(q,v by default). Reads analysis/results.csv.
"""

from lowrank_lab.workflow.report import run_script

NAME = "table18_metric_vs_rank"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
