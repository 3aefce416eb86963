"""Table 6: main metric by target set and r (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table6_rank_by_target"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
