"""After the paper: the smallest k within 0.5 points (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table_truncation_k"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
