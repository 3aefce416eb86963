"""Edits of ΔW as exact factors against their definitions: the best rank-k truncation
(Eckart–Young), and intruder directions scaled by λ (λ = 1 the adapter, λ = 0 exactly without them)."""

import pytest
import torch

from lowrank_lab.maths import rank_edit, spectrum
from lowrank_lab.maths.linalg import delta_w


def _factors(gen, d=48, k=40, r=6):
    return torch.randn(r, k, generator=gen, dtype=torch.float64), torch.randn(d, r, generator=gen, dtype=torch.float64)


def test_truncation_to_r_is_delta_w_to_zero_is_nothing_and_between_is_the_eckart_young_error(gen):
    A, B = _factors(gen)
    D = delta_w(A, B, 0.5)
    A_r, B_r = rank_edit.truncated_factors(A, B, 0.5, 6)
    torch.testing.assert_close(B_r @ A_r, D, rtol=1e-12, atol=1e-12)
    A_0, B_0 = rank_edit.truncated_factors(A, B, 0.5, 0)
    assert A_0.shape == (0, 40) and B_0.shape == (48, 0)
    S = torch.linalg.svdvals(D)
    for k in (1, 2, 4):
        A_k, B_k = rank_edit.truncated_factors(A, B, 0.5, k)
        assert A_k.shape == (k, 40)
        err = float(torch.linalg.matrix_norm(D - B_k @ A_k) / torch.linalg.matrix_norm(D))
        assert err == pytest.approx(spectrum.eckart_young_error(S, k), rel=1e-9)
        assert int(torch.linalg.matrix_rank(B_k @ A_k)) == k
    A_d, B_d = rank_edit.dense_truncated_factors(D, 3)
    torch.testing.assert_close(B_d @ A_d, rank_edit.truncated_factors(A, B, 0.5, 3)[1]
                               @ rank_edit.truncated_factors(A, B, 0.5, 3)[0], rtol=1e-10, atol=1e-10)


def _with_intruders(gen, d=64):
    """W0 with σ ≤ ~16 and a rank-2 ΔW of σ ≈ 100 along random directions: W0 + ΔW's top two
    left singular vectors are new (max |cos| with W0's ≈ 0.4 < 0.5 in ℝ⁶⁴)."""
    W0 = torch.randn(d, d, generator=gen, dtype=torch.float64)
    A = torch.randn(2, d, generator=gen, dtype=torch.float64) / d**0.5 * 10
    B = torch.randn(d, 2, generator=gen, dtype=torch.float64) / d**0.5 * 10
    return W0, A, B


@pytest.mark.parametrize("definition", rank_edit.DEFINITIONS)
def test_lambda_one_is_the_adapter_and_lambda_zero_removes_exactly_the_intruder_directions(gen, definition):
    W0, A, B = _with_intruders(gen)
    t = rank_edit.intruder_triplets(W0, A, B, 1.0, definition, top_k=10, epsilon=0.5)
    assert len(t["index"]) >= 1 and (t["max_cos"][t["index"]] < 0.5).all()
    A1, B1 = rank_edit.scaled_intruder_factors(A, B, 1.0, t, 1.0)
    torch.testing.assert_close(B1 @ A1, delta_w(A, B, 1.0), rtol=1e-12, atol=1e-12)
    A0, B0 = rank_edit.scaled_intruder_factors(A, B, 1.0, t, 0.0)
    base = W0 + delta_w(A, B, 1.0) if definition == "W0+dW" else delta_w(A, B, 1.0)
    edited = base + (B0 @ A0 - delta_w(A, B, 1.0))  # W_λ = W_tuned − Σ σ_j y_j z_jᵀ (or ΔW_λ)
    U, S, Vh = torch.linalg.svd(base, full_matrices=False)
    J = t["index"]  # indices into base's own SVD (of W0 + ΔW, or of ΔW)
    keep = torch.ones(len(S), dtype=torch.bool)
    keep[J] = False
    # the intruder directions are gone: the edit maps them to 0 ...
    torch.testing.assert_close(edited @ Vh[J].mT, torch.zeros(len(S), len(J), dtype=torch.float64), atol=1e-9, rtol=0)
    # ... and every other singular triplet is unchanged
    torch.testing.assert_close(edited @ Vh[keep].mT, U[:, keep] * S[keep], atol=1e-9, rtol=0)
    half = rank_edit.scaled_intruder_factors(A, B, 1.0, t, 0.5)
    torch.testing.assert_close((base + half[1] @ half[0] - delta_w(A, B, 1.0)) @ Vh[J].mT, U[:, J] * S[J] * 0.5,
                               atol=1e-9, rtol=0)


def test_no_intruders_when_delta_w_lies_in_w0s_top_directions(gen):
    W0 = torch.randn(32, 32, generator=gen, dtype=torch.float64)
    U0, S0, Vh0 = torch.linalg.svd(W0)
    A, B = Vh0[:2] * 3, U0[:, :2]  # ΔW along W0's own top directions
    for definition in rank_edit.DEFINITIONS:
        t = rank_edit.intruder_triplets(W0, A, B, 1.0, definition)
        assert len(t["index"]) == 0
        A_, B_ = rank_edit.scaled_intruder_factors(A, B, 1.0, t, 0.0)
        torch.testing.assert_close(B_ @ A_, delta_w(A, B, 1.0))
