"""LoRA Without Regret (2025), §3: the best learning rate per rank and method (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table_best_lr"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv)


if __name__ == "__main__":
    main()
