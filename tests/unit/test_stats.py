"""The statistics against closed forms: bootstrap intervals, the exact sign test, Spearman's ρ,
random φ baselines."""

import math

import pytest
import torch

from lowrank_lab.maths import stats


def test_bootstrap_median_of_one_value_says_n_1_and_has_no_interval():
    out = stats.bootstrap_median([0.7])
    assert out["median"] == 0.7 and out["n"] == 1 and math.isnan(out["lo"]) and math.isnan(out["hi"])


def test_bootstrap_interval_holds_the_median_within_the_range_and_shrinks_with_n():
    gen = torch.Generator().manual_seed(1)
    small = stats.bootstrap_median(torch.randn(5, generator=gen))
    large = stats.bootstrap_median(torch.randn(500, generator=gen))
    for out in (small, large):
        assert out["lo"] <= out["median"] <= out["hi"]
    assert large["hi"] - large["lo"] < small["hi"] - small["lo"]
    # the median of N(0, 1) has standard error ≈ 1.2533/√n: a 95% interval ≈ ±2.46/√n
    assert large["hi"] - large["lo"] == pytest.approx(2 * 1.96 * 1.2533 / math.sqrt(500), rel=0.35)
    assert stats.bootstrap_median([1.0, 3.0])["median"] == 2.0  # numpy's median, not torch's lower one
    assert stats.bootstrap_median([2.0, 2.0, 2.0])["lo"] == 2.0


def test_sign_test_is_the_exact_binomial_tail():
    # 8 wins, 1 loss, 1 tie: p = 2·(C(9,0) + C(9,1))/2⁹
    out = stats.sign_test([1, 2, 3, 4, 5, 6, 7, 8, 0, 5], [0, 0, 0, 0, 0, 0, 0, 0, 1, 5])
    assert (out["wins"], out["losses"], out["ties"], out["n"]) == (8, 1, 1, 9)
    assert out["p_value"] == pytest.approx(2 * (1 + 9) / 2**9)
    assert stats.sign_test([1, 0], [0, 1])["p_value"] == 1.0
    with pytest.raises(ValueError):
        stats.sign_test([1, 2], [1])


def test_spearman_is_one_for_monotone_pairs_and_averages_ties():
    x = torch.arange(10.0)
    assert stats.spearman(x, x.exp())["rho"] == pytest.approx(1.0)
    assert stats.spearman(x, -x)["rho"] == pytest.approx(-1.0)
    assert stats.spearman(x, -x)["p_value"] < 0.01
    # ties: ranks (1.5, 1.5, 3) against (1, 2, 3) → Pearson of the centred ranks
    assert stats.spearman([1, 1, 2], [1, 2, 3])["rho"] == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3])["rho"])


def test_random_phi_baseline_mean_is_max_ij_over_k_within_its_spread():
    gen = torch.Generator().manual_seed(0)
    out = stats.random_phi_baseline(4, 16, 64, n_draws=200, generator=gen)
    assert out["n_draws"] == 200 and out["sd"] > 0
    assert abs(out["mean"] - 16 / 64) < 4 * out["sd"] / math.sqrt(200)
