"""The LoRA layer against its definition h = W0·x + scaling·B·A·x (Hu et al. 2021, §4.1)."""

import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lowrank_lab.maths.linalg import delta_w
from lowrank_lab.model.lora import LoRALinear, PackedLinear, init_A, inject, weight_as_W0


def _randomise(layer: LoRALinear, gen: torch.Generator) -> None:
    with torch.no_grad():
        for n, r in enumerate(layer.ranks):
            layer.A[n, :r] = torch.randn(r, layer.k, generator=gen)
            layer.B[n, :, :r] = torch.randn(layer.d, r, generator=gen)


def test_fresh_adapter_leaves_outputs_unchanged(gen):
    base = nn.Linear(12, 10)
    x = torch.randn(5, 3, 12, generator=gen)
    expected = base(x)
    layer = LoRALinear(base, [4], [2.0])
    layer.reset_adapter(0, "kaiming", gen)
    assert layer.A.abs().sum() > 0 and layer.B.abs().sum() == 0
    assert torch.equal(layer(x), expected)


def test_forward_equals_W0_plus_scaled_BA(gen):
    base = nn.Linear(12, 10, bias=False)
    layer = LoRALinear(base, [3], [0.5])
    _randomise(layer, gen)
    x = torch.randn(7, 12, generator=gen)
    A, B, s = layer.factors(0)
    expected = x @ (base.weight + delta_w(A, B, s)).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_merged_forward_equals_lora_forward_and_unmerge_restores_W0(kind, gen):
    base = nn.Linear(12, 10) if kind == "linear" else Conv1D(10, 12)
    nn.init.normal_(base.weight, generator=gen)
    W0 = weight_as_W0(base).detach().clone()
    assert W0.shape == (10, 12)
    layer = LoRALinear(base, [4], [1.5])
    _randomise(layer, gen)
    x = torch.randn(6, 12, generator=gen)
    lora_out = layer(x)
    layer.merge()
    layer.merge()  # merging twice is a no-op
    torch.testing.assert_close(layer(x), lora_out, rtol=1e-5, atol=1e-5)
    A, B, s = layer.factors(0)
    torch.testing.assert_close(weight_as_W0(base), W0 + delta_w(A, B, s), rtol=1e-6, atol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(weight_as_W0(base), W0, rtol=0, atol=1e-6)


def test_packed_rows_equal_each_adapter_alone(gen):
    base = nn.Linear(12, 10)
    ranks, scalings = [1, 4, 0], [2.0, 0.25, 1.0]
    packed = LoRALinear(base, ranks, scalings)
    _randomise(packed, gen)
    xs = [torch.randn(3, 5, 12, generator=gen) for _ in ranks]
    out = packed(torch.cat(xs))
    for n, (r, s) in enumerate(zip(ranks, scalings)):
        alone = LoRALinear(nn.Linear(12, 10), [max(r, 1)], [s])
        alone.base.load_state_dict(base.state_dict())
        with torch.no_grad():
            alone.A.zero_(), alone.B.zero_()
            alone.A[0, :r] = packed.A[n, :r]
            alone.B[0, :, :r] = packed.B[n, :, :r]
        torch.testing.assert_close(out[3 * n : 3 * (n + 1)], alone(xs[n]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[6:], base(xs[2]))  # rank 0: the adapter leaves this matrix alone


def test_zero_padding_keeps_each_adapter_exactly_rank_r_under_adamw(gen):
    layer = LoRALinear(nn.Linear(16, 16), [1, 3, 8], [1.0, 1.0, 1.0])
    for n in range(3):
        layer.reset_adapter(n, "kaiming", gen)
    opt = torch.optim.AdamW([layer.A, layer.B], lr=1e-2, weight_decay=0.1)
    for _ in range(20):
        loss = layer(torch.randn(3 * 4, 16, generator=gen)).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, r in enumerate(layer.ranks):
        assert torch.count_nonzero(layer.A[n, r:]) == 0 and torch.count_nonzero(layer.B[n, :, r:]) == 0
        assert torch.linalg.matrix_rank(delta_w(*layer.factors(n))) == r


def test_init_schemes_have_their_documented_distribution(gen):
    k, r = 400, 16
    A = init_A(r, k, "kaiming", gen)
    assert A.abs().max() <= 1 / math.sqrt(k)
    assert A.std().item() == pytest.approx(1 / math.sqrt(3 * k), rel=0.05)  # std of U(−b, b) is b/√3
    G = init_A(r, k, "gaussian", gen)
    assert G.std().item() == pytest.approx(1 / r, rel=0.05)
    with pytest.raises(ValueError, match="init"):
        init_A(r, k, "orthogonal", gen)


def test_rank_above_min_d_k_is_rejected():
    with pytest.raises(ValueError, match="exceeds min"):
        LoRALinear(nn.Linear(4, 6), [5], [1.0])


def test_inject_replaces_only_the_named_modules_and_freezes_W0():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    layers = inject(model, ["0"], [[2, 1]], [1.0, 1.0])
    assert isinstance(model[0], LoRALinear) and isinstance(model[2], nn.Linear)
    assert not model[0].base.weight.requires_grad and layers["0"].A.requires_grad


def test_packed_head_rows_go_to_their_own_head(gen):
    head = PackedLinear(2, 5, 3)
    for n in range(2):
        head.reset_head(n, gen)
    x = torch.randn(4, 5, generator=gen)
    y = head(x)
    torch.testing.assert_close(y[:2], x[:2] @ head.weight[0].T + head.bias[0])
    torch.testing.assert_close(y[2:], x[2:] @ head.weight[1].T + head.bias[1])
