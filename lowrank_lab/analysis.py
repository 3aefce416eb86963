"""Saved runs in, tidy pandas tables out (long format, the spec's keys as columns)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import runs


def results_table(sweep: Path) -> pd.DataFrame:
    """One row per finished cell: method, targets, r, alpha, scaling_rule, init, seed, the main
    metric (`metric`, `value`), every dev metric of the best evaluation, and parameter counts."""
    manifest = runs.read_json(Path(sweep) / "manifest.json")
    rows = []
    for name, entry in manifest["cells"].items():
        if entry.get("status") != "done":
            continue
        folder = Path(sweep) / "cells" / name
        spec = runs.read_json(folder / "config.json")
        summary = runs.read_json(folder / "summary.json")
        lora, best = spec["lora"], summary["best"]
        rows.append({
            "cell": name, "task": summary["task"], "method": lora["method"],
            "targets": lora["targets"] if lora["method"] == "lora" else "",
            "r": lora["r"] if lora["method"] == "lora" else 0,
            "alpha": lora["alpha"], "scaling_rule": lora["scaling_rule"], "init": lora["init"],
            "seed": spec["train"]["seed"], "metric": summary["main_metric"],
            "value": best[summary["main_metric"]], "best_epoch": best["epoch"],
            "trainable_adapter": summary["trainable_parameters"]["adapter"],
            "trainable_total": summary["trainable_parameters"]["total"],
            "examples_per_second": summary["examples_per_second"],
            **{f"dev_{k}": v for k, v in best.items() if k not in ("step", "epoch", "train_loss")},
        })
    return pd.DataFrame(rows)
