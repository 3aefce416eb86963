"""Figure 6: φ between ranks, across layers (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "fig6_phi_ranks_layers"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
