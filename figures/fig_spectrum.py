"""Spectrum of ΔW (Hu et al. 2021, §7.2 "intrinsic rank"; Biderman et al. 2024): singular values
and cumulative energy at the middle layer per rank, with full fine-tuning's, and rank_90 / stable /
effective rank against r. Reads analysis/spectrum.csv and spectrum_metrics.csv
(`lowrank-lab spectrum SWEEP`).
"""

from lowrank_lab.analysis import tables as analysis
from lowrank_lab.present import plotting
from lowrank_lab.present import curves as plotting_curves

NAME = "fig_spectrum"


def main(argv=None) -> None:
    args = plotting.figure_args(__doc__, argv)
    with plotting.skip_if_missing(NAME):
        spectrum = analysis.read_table(args.sweep, analysis.SPECTRUM)
        metrics = analysis.read_table(args.sweep, analysis.SPECTRUM_METRICS)
        plotting.save_figure(plotting_curves.spectrum_figure(spectrum, metrics, args.layer), NAME, args.out)


if __name__ == "__main__":
    main()
