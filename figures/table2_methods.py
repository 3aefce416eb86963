"""Table 2's shape (Hu et al. 2021; RoBERTa on GLUE there): full fine-tuning, BitFit, head only and
LoRA on q,v at r = 8 (the paper's configuration; every LoRA row when the sweeps lack it), with
trainable parameters, one column per task (one sweep each), median ± half-range over seeds.
Reads analysis/results.csv of each SWEEP (`lowrank-lab tables SWEEP`); writes .md, .tex, .csv.
"""

from lowrank_lab.workflow.report import run_script

NAME = "table2_methods"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv, several=True)


if __name__ == "__main__":
    main()
