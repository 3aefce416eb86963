"""Shuttleworth et al. 2024: metric and forgetting per λ (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table_tradeoff"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
