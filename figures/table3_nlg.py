"""Table 3: e2E NLG: BLEU, NIST, METEOR, ROUGE-L, CIDEr (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table3_nlg"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
