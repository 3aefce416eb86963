"""Table 3's metrics (Hu et al. 2021, §5.4, E2E NLG): BLEU, NIST, METEOR, ROUGE-L and CIDEr of each
method, target set and r, with the implementation of each in the caption. Reads analysis/results.csv.
"""

from lowrank_lab.workflow.report import run_script

NAME = "table3_nlg"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
