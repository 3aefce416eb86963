"""Table 2: methods: full fine-tuning, BitFit, head only, adapters, prefix tuning, LoRA (`--help` shows the registry's caption)."""

from lowrank_lab.workflow.report import run_script

NAME = "table2_methods"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn, its caption


def main(argv=None) -> None:
    run_script(NAME, argv, several=True)


if __name__ == "__main__":
    main()
