"""The adapter baselines' sizes as cell groups: the best learning rate is chosen per bottleneck size /
prefix length (``analysis.learning_rate.GROUP``), and the learning-rate figures draw every method and
size as its own line, told apart by colour and dash (``present.lr_figures``). No torch."""

from __future__ import annotations

import itertools

import matplotlib.colors
import pandas as pd
import pytest

from lowrank_lab.analysis import learning_rate as lr
from lowrank_lab.present import lr_figures

LRS = [1e-4, 3e-4, 1e-3, 3e-3]
# (method, targets, r, size) -> index into LRS of the planted best learning rate
OPTIMA = {("lora", "q,v", 2, 0): 2, ("lora", "q,v", 8, 0): 1, ("full", "", 0, 0): 0, ("bitfit", "", 0, 0): 3,
          ("head", "", 0, 0): 3, ("houlsby", "", 0, 8): 3, ("houlsby", "", 0, 64): 0, ("pfeiffer", "", 0, 8): 2,
          ("prefix", "", 0, 16): 1}


def planted(seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for (method, targets, r, size), best in OPTIMA.items():
        for seed, (i, rate) in itertools.product(seeds, enumerate(LRS)):
            accuracy = 0.9 - 0.05 * (i - best) ** 2 - 0.01 * seed
            rows.append({"cell": f"{method}-{targets}-r{r}-m{size}-lr{rate:g}-seed{seed}", "method": method,
                         "targets": targets, "r": r, "size": size, "lr": rate, "seed": seed, "metric": "accuracy",
                         "value": accuracy, "final_value": accuracy, "final_dev_loss": 1.0 - accuracy})
    return pd.DataFrame(rows)


def curves_of(results: pd.DataFrame) -> pd.DataFrame:
    """A learning curve per cell, falling from 1 to its final dev loss over four steps."""
    rows = [{**{k: cell[k] for k in ("cell", "method", "targets", "r", "size", "lr", "seed")}, "step": step,
             "train_loss": 1.0 - step / 4 * (1.0 - cell["final_dev_loss"])}
            for _, cell in results.iterrows() for step in (1, 2, 3, 4)]
    return pd.DataFrame(rows)


def test_each_bottleneck_size_gets_its_own_best_learning_rate():
    """Once (method, targets, r) pooled houlsby m=8 (best 3e-3) with m=64 (best 1e-4) into one curve."""
    table = lr.best_lr(planted(), "value").set_index(lr.GROUP)
    assert len(table) == len(OPTIMA)
    for key, best in OPTIMA.items():
        assert table.loc[key, "best_lr"] == LRS[best], key
    chosen = lr.at_best_lr(planted(), "value")
    by_size = chosen[chosen["method"] == "houlsby"].groupby("size")["lr"].unique()
    assert [list(v) for v in by_size] == [[LRS[3]], [LRS[0]]]
    assert not lr.has_lr_axis(chosen)
    at_best = lr.curves_at_best_lr(curves_of(planted()), planted(), "value")
    assert len(at_best[["method", "r", "size"]].drop_duplicates()) == len(OPTIMA)
    # learning curves cached before the size column: each cell's size comes from the results
    cached = lr.curves_at_best_lr(curves_of(planted()).drop(columns="size"), planted(), "value")
    pd.testing.assert_frame_equal(cached, at_best)


def test_a_table_without_sizes_still_groups():
    """Tables written before the adapter baselines have no size column: every cell there is of size 0."""
    old = planted()
    old = old[old["size"] == 0].drop(columns="size")
    table = lr.best_lr(old, "value")
    assert (table["size"] == 0).all() and len(table) == sum(k[3] == 0 for k in OPTIMA)
    assert lr.has_lr_axis(old) and len(lr.at_best_lr(old, "value")) == 2 * len(table)


def _lines(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]


@pytest.mark.parametrize("draw", ["learning_curves", "lr_curves"])
def test_every_method_and_size_is_its_own_colour_and_dash(draw):
    """Once every baseline but full fine-tuning was the same grey, so houlsby, pfeiffer, prefix,
    BitFit and head only could not be told apart."""
    results = planted()
    if draw == "learning_curves":
        fig = lr_figures.learning_curves_figure(curves_of(results), results)
        lines = _lines(fig)
    else:
        fig = lr_figures.lr_curves_figure(results)
        lines = _lines(fig)[:len(OPTIMA)]  # the left panel; the right one repeats its styles
    assert len(lines) == len(OPTIMA)
    labels = [line.get_label() for line in lines]
    assert len(set(labels)) == len(labels)
    assert any("Adapter^H m=64" in label for label in labels) and any("Prefix l_p=16" in label for label in labels)
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in lines]
    assert len(set(colours)) == len(colours), dict(zip(labels, colours))
    # the dash pattern as drawn (get_linestyle() says "--" for every custom pattern): (offset, on-off sequence)
    dashes = {label: (line._unscaled_dash_pattern[0], tuple(line._unscaled_dash_pattern[1] or ()))
              for label, line in zip(labels, lines)}
    kinds = {"BitFit": "bitfit", "head": "head", "Adapter^H": "houlsby", "Adapter^P": "pfeiffer", "Prefix": "prefix"}
    first = {label: label.replace(",", " ").split()[0] for label in labels}
    baselines = {label: kinds[first[label]] for label in labels if first[label] in kinds}
    assert len(set(baselines.values())) == 5
    assert len({dashes[label] for label in baselines}) == 5  # one dash pattern per method, none of them solid
    assert all(dashes[label] != dashes[lora] for label in baselines for lora in labels if lora.startswith("LoRA"))


@pytest.mark.parametrize("last_step, labelled", [(4, True), (1000, False)])
def test_learning_curves_label_minor_steps_only_within_a_decade(last_step, labelled):
    """E2E's curves (steps 50 … 1,168) once printed every minor tick, "6070809100" run together."""
    results = planted()
    curves = curves_of(results)
    curves["step"] = curves["step"].map({1: 1, 2: 2, 3: 3, 4: last_step})
    ax = lr_figures.learning_curves_figure(curves, results).axes[0]
    ax.figure.canvas.draw()
    minor = [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    assert bool(minor) == labelled, minor
