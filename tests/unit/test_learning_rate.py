"""Best learning rate per rank on planted metrics whose answer is known."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lowrank_lab.analysis.learning_rate import at_best_lr, best_lr, has_lr_axis, lr_curves

LRS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
# planted optimum per (method, targets, r) and per seed: index into LRS
OPTIMA = {("full", "", 0): {0: 1, 1: 1, 2: 2}, ("lora", "q,v", 1): {0: 4, 1: 4, 2: 5},
          ("lora", "q,v", 8): {0: 4, 1: 3, 2: 4}, ("lora", "q,k,v,o", 8): {0: 6, 1: 6, 2: 6}}


def planted() -> pd.DataFrame:
    rows = []
    for (method, targets, r), seeds in OPTIMA.items():
        for seed, (i, lr) in itertools.product(seeds, enumerate(LRS)):
            accuracy = 0.9 - 0.05 * (i - seeds[seed]) ** 2  # peaks at the planted index
            rows.append({"method": method, "targets": targets, "r": r, "lr": lr, "seed": seed,
                         "final_accuracy": accuracy, "final_dev_loss": 1.0 - accuracy})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("value", ["final_accuracy", "final_dev_loss"])
def test_best_lr_finds_the_planted_optimum_and_the_seed_interval(value):
    table = best_lr(planted(), value).set_index(["method", "targets", "r"])
    for key, seeds in OPTIMA.items():
        row = table.loc[key]
        median_index = int(np.median(list(seeds.values())))
        assert row["best_lr"] == LRS[median_index]
        assert (row["lr_low"], row["lr_high"]) == (LRS[min(seeds.values())], LRS[max(seeds.values())])
        assert row["n_seeds"] == 3 and row["n_lr"] == len(LRS)
    assert table.loc[("lora", "q,k,v,o", 8), "at_edge"] and not table.loc[("lora", "q,v", 8), "at_edge"]
    # full fine-tuning's best is 3e-5: LoRA r=1's 1e-3 is 33.3× it
    assert table.loc[("lora", "q,v", 1), "ratio_to_full"] == pytest.approx(1e-3 / 3e-5)
    assert table.loc[("full", "", 0), "ratio_to_full"] == 1.0


def test_ties_go_to_the_smaller_learning_rate():
    flat = planted().assign(final_accuracy=0.5)
    assert (best_lr(flat, "final_accuracy")["best_lr"] == LRS[0]).all()


def test_curves_pool_seeds_and_at_best_lr_keeps_every_seed_of_the_best():
    results = planted()
    curves = lr_curves(results, "final_accuracy")
    assert len(curves) == len(OPTIMA) * len(LRS) and (curves["n_seeds"] == 3).all()
    r1 = curves[(curves["r"] == 1) & (curves["lr"] == 1e-3)].iloc[0]
    assert (r1["median"], r1["min"], r1["max"]) == pytest.approx((0.9, 0.85, 0.9))
    chosen = at_best_lr(results, "final_accuracy")
    assert len(chosen) == 3 * len(OPTIMA)
    assert set(chosen[chosen["r"] == 8]["lr"]) == {1e-3, 1e-2}  # q,v r=8 at 1e-3, q,k,v,o r=8 at 1e-2
    assert has_lr_axis(results) and not has_lr_axis(chosen)
