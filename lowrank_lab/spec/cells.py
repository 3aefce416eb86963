"""A sweep's cells: ``expand_sweep`` turns an ``ExperimentSpec`` into one ``CellSpec`` per trained
model, each with the swept values (``lora.r``, ``train.seed``, ...) filled in and its folder name."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from lowrank_lab.spec.sections import (ADAPTER_METHODS, DataSpec, ExperimentSpec, LoRASpec, ModelSpec, SpecError, TrainSpec,
                                       budget_r)

# The size axis of each adapter baseline, and the letter its cells' names carry (houlsby-m16, prefix-l16).
ADAPTER_SIZE = {"houlsby": ("bottleneck", "m"), "pfeiffer": ("bottleneck", "m"), "prefix": ("prefix_length", "l")}
assert set(ADAPTER_SIZE) == set(ADAPTER_METHODS)


@dataclass(frozen=True)
class CellSpec:
    """One trained model of a sweep: everything needed to train and to name it. ``named`` lists the
    axes ("lr", "alpha") whose value the name must carry because the sweep varies them."""

    model: ModelSpec
    data: DataSpec
    lora: LoRASpec
    train: TrainSpec
    named: tuple[str, ...] = ()

    @property
    def lr(self) -> float:
        """The learning rate of the trained weights: LoRA's (head-only: the head's), or the baseline's."""
        return {"full": self.train.full_lr, "bitfit": self.train.bitfit_lr}.get(self.lora.method, self.train.lr)

    @property
    def size(self) -> int:
        """The adapter baselines' size: bottleneck m (houlsby, pfeiffer) or prefix length l_p
        (prefix); 0 for the other methods."""
        axis = ADAPTER_SIZE.get(self.lora.method, (None,))[0]
        return getattr(self.lora, axis) if axis else 0

    @property
    def name(self) -> str:
        """Directory name of the cell, e.g. ``lora-qv-r8-alpha_r-kaiming-seed0``, with ``-lr0.001`` /
        ``-alpha16`` before the seed when the sweep varies them."""
        lora = self.lora
        if lora.method in ADAPTER_SIZE:
            return f"{lora.method}-{ADAPTER_SIZE[lora.method][1]}{self.size}{self._axes()}-seed{self.train.seed}"
        if lora.method != "lora":
            return f"{lora.method}{self._axes()}-seed{self.train.seed}"
        rule = "alpha_r" if lora.scaling_rule == "alpha/r" else "alpha_sqrt_r"
        return f"lora-{''.join(lora.kinds)}-r{lora.r}-{rule}-{lora.init}{self._axes()}-seed{self.train.seed}"

    def _axes(self) -> str:
        values = {"lr": self.lr, "alpha": self.lora.alpha}
        return "".join(f"-{axis}{values[axis]:g}" for axis in self.named)


def expand_sweep(spec: ExperimentSpec, model_kinds: tuple[str, ...] | None = None) -> list[CellSpec]:
    """All cells of a sweep: LoRA over targets × r × scaling rules × inits × α × lr × seeds, then
    each baseline over its own learning rates × seeds (adapters and prefixes also over their sizes:
    sweep.bottleneck, sweep.prefix_length). `model_kinds` (the kinds the model has) is
    needed only by a budget sweep over "all-linear" (``budget_r``)."""
    sweep = spec.sweep
    alphas = sweep.alpha or (float(sweep.r[0]),)
    cells = []
    for targets in sweep.targets:
        ranks = sweep.r if sweep.budget_rank is None else (budget_r(sweep.budget_rank, targets, model_kinds),)
        named = tuple(axis for axis, grid in (("alpha", alphas), ("lr", sweep.lr)) if len(grid) > 1)
        for r, rule, init, alpha, lr, seed in itertools.product(ranks, sweep.scaling_rules, sweep.inits, alphas,
                                                                sweep.lr, sweep.seeds):
            lora = replace(spec.lora, method="lora", targets=targets, r=r, alpha=alpha, scaling_rule=rule, init=init)
            train = replace(spec.train, seed=seed, lr=lr)
            cells.append(CellSpec(spec.model, spec.data, lora, train, named))
    for method in sweep.baselines:
        key = {"full": "full_lr", "bitfit": "bitfit_lr"}.get(method, "lr")
        grid = getattr(sweep, key)
        size_axis = ADAPTER_SIZE.get(method, (None,))[0]
        sizes = getattr(sweep, size_axis) if size_axis else (None,)
        for size, lr, seed in itertools.product(sizes, grid, sweep.seeds):
            lora = replace(spec.lora, method=method, alpha=alphas[0], **({size_axis: size} if size_axis else {}))
            # a baseline's head trains at the first LoRA learning rate, as before the grids existed
            train = replace(spec.train, seed=seed, **{"lr": sweep.lr[0], key: lr})
            cells.append(CellSpec(spec.model, spec.data, lora, train, ("lr",) if len(grid) > 1 else ()))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise SpecError("sweep: two cells have the same name; remove repeated values from the sweep axes")
    return cells
