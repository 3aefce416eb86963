"""Figure 4: φ between two seeds at the largest rank (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "fig4_phi_seeds"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
