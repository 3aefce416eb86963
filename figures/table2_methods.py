"""Table 2's shape (Hu et al. 2021; RoBERTa on GLUE there): full fine-tuning, BitFit, head only,
bottleneck adapters (Houlsby, Pfeiffer), prefix tuning and LoRA on q,v at r = 8 (the paper's
configuration; every LoRA row when the sweeps lack it), with trainable parameters (for the adapters
and prefixes also by the paper's formula, which their tensors' count equals), one column per task
(one sweep each), median ± half-range over seeds; the paper's RoBERTa rows, in the same unit (%),
in table2_methods_paper. Reads analysis/results.csv of each SWEEP (`lowrank-lab tables SWEEP`);
writes .md, .tex, .csv.
"""

from lowrank_lab.present import registry, tables
from lowrank_lab.store.figures import write_outputs
from lowrank_lab.workflow.report import run_script

NAME = "table2_methods"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    written = run_script(NAME, __doc__, argv, several=True)
    if written:  # the paper's numbers beside ours
        paper = registry.entry(NAME).paper_table
        write_outputs(written[0].parent, {f"{NAME}_paper.{fmt}": tables.render(paper, fmt) for fmt in ("md", "csv")})


if __name__ == "__main__":
    main()
