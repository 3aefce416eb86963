"""CellAdamW: a pack of K cells with their own learning rates takes the steps of K separate AdamW runs."""

import pytest
import torch

from lowrank_lab.train.optim import CellAdamW


def run(make_opt, params, grads, schedule=lambda t: 1.0):
    opt = make_opt(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    for g in grads:
        for p, gp in zip(params, g):
            p.grad = gp.clone()
        opt.step()
        sched.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_each_slice_steps_as_its_own_adamw(weight_decay):
    gen = torch.Generator().manual_seed(0)
    lrs, K, steps = [1e-3, 3e-2, 2e-4], 3, 12
    shapes = [(K, 4, 5), (K, 2)]
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(steps)]
    schedule = lambda t: min(1.0, (t + 1) / 3) * max(0.0, 1 - t / steps)  # warm-up then decay
    packed = [p.clone().requires_grad_() for p in init]
    got = run(lambda ps: CellAdamW([{"params": ps, "cell_lr": lrs}], weight_decay=weight_decay), packed, grads, schedule)
    for n, lr in enumerate(lrs):
        alone = [p[n].clone().requires_grad_() for p in init]
        want = run(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay, foreach=False), alone,
                   [[g[n] for g in step] for step in grads], schedule)
        for p_got, p_want in zip(got, want):
            torch.testing.assert_close(p_got[n], p_want, rtol=1e-12, atol=1e-14)


def test_state_dict_round_trip_resumes_the_same_steps():
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    grads = [[torch.randn(2, 3, generator=gen, dtype=torch.float64)] for _ in range(6)]
    straight = run(lambda ps: CellAdamW([{"params": ps, "cell_lr": [1e-2, 1e-3]}]), [init.clone().requires_grad_()], grads)
    p = init.clone().requires_grad_()
    first = CellAdamW([{"params": [p], "cell_lr": [1e-2, 1e-3]}])
    for g in grads[:3]:
        p.grad = g[0].clone()
        first.step()
    second = CellAdamW([{"params": [p], "cell_lr": [1e-2, 1e-3]}])
    second.load_state_dict(first.state_dict())
    for g in grads[3:]:
        p.grad = g[0].clone()
        second.step()
    torch.testing.assert_close(p.detach(), straight[0], rtol=0, atol=0)


def test_a_parameter_without_one_slice_per_cell_is_refused():
    with pytest.raises(ValueError, match="no slice per cell"):
        CellAdamW([{"params": [torch.zeros(4, 2, requires_grad=True)], "cell_lr": [1e-3, 1e-2]}])
