"""Spectrum of ΔW (Hu et al. 2021, §7.2 "intrinsic rank"; Biderman et al. 2024): singular values
and cumulative energy at the middle layer per rank, with full fine-tuning's, and rank_90 / stable /
effective rank against r. Reads analysis/spectrum.csv and spectrum_metrics.csv
(`lowrank-lab spectrum SWEEP`).
"""

from lowrank_lab.workflow.report import run_script

NAME = "fig_spectrum"  # an entry of lowrank_lab.present.registry: what it needs, how it is drawn


def main(argv=None) -> None:
    run_script(NAME, __doc__, argv)


if __name__ == "__main__":
    main()
