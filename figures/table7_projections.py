"""Table 7: projections of W0 onto ΔW's subspace (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table7_projections"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
