"""The statistics that documents quote (bootstrap medians over seeds, paired sign tests), for the
figures/ scripts, which reach the library through store, present and workflow only."""

from lowrank_lab.maths.stats import N_BOOT, bootstrap_median, sign_test, spearman

__all__ = ["N_BOOT", "bootstrap_median", "sign_test", "spearman"]
