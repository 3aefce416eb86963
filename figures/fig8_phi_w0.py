"""Figure 8: φ between W0's and ΔW's directions (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "fig8_phi_w0"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
