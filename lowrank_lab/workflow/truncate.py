"""``lowrank-lab truncate SWEEP``: every LoRA cell's ΔW and every full fine-tuning cell's dense ΔW
truncated to rank k (``analysis.truncation``), each cell's truncations evaluated on the dev split
in one packed pass (``train.variants``); three tables with their sidecars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from lowrank_lab.analysis import sweep as sa
from lowrank_lab.analysis import truncation as tr
from lowrank_lab.model.base import Conv1D, classify_module, module_label
from lowrank_lab.model.lora import weight_as_W0
from lowrank_lab.store import tables as st
from lowrank_lab.train import variants as tv
from lowrank_lab.workflow.edits import Opened, open_sweep

CONVENTIONS = {
    "truncation": "ΔW_k = U[:, :k]·diag(S[:k])·Vh[:k] from ΔW's SVD (LoRA: from the factors; full fine-tuning: "
                  "dense ΔW = W_ft − W0 of every attention and MLP matrix, its other trained weights and head as "
                  "trained); the same k in every matrix of a cell; k_rule rank_90: each matrix at its own rank_90, "
                  "k = their median; evaluated as W0 + ΔW_k with exact factors in a packed LoRA layer",
    "energy": "Σ_matrices Σ_{i≤k} σ_i² / Σ_matrices Σ σ_i²: the fraction of ‖ΔW‖_F² kept",
    "change": "value − untruncated value, in points (×100) for metrics in [0, 1]; sign flipped for "
              "lower-is-better metrics, so negative is always worse",
    "k_min": f"smallest k whose change ≥ −{tr.WITHIN_POINTS} points",
    "medians": "median over seeds with a percentile bootstrap 95% interval (2000 resamples); lo, hi NaN when n = 1",
}


def _full_variants(opened: Opened, run) -> tuple[torch.nn.Module, list[tv.Variant], list[dict]]:
    """A full fine-tuning cell's base (its trained weights, except the truncated matrices at W0)
    and its truncations."""
    weights = {k.removeprefix("model."): v for k, v in opened.full_weights(run).items() if not k.startswith("head.")}
    deltas, paths = _full_deltas(weights, opened.inputs.base)
    base = tv.with_weights(opened.inputs.base, {k: v for k, v in weights.items()
                                                   if k.removesuffix(".weight") not in paths.values()})
    variants, rows = tr.full_truncations(deltas, paths, opened.head(run))
    return base, variants, rows


def _full_deltas(weights: dict, base: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """({label: ΔW = W_ft − W0, d×k float64}, {label: module path}) of every attention and MLP
    matrix among a full fine-tuning cell's trained `weights` (GPT-2's Conv1D stores W0ᵀ)."""
    deltas, paths = {}, {}
    for key, W in weights.items():
        hit = classify_module(key.removesuffix(".weight"), mlp=True) if key.endswith(".weight") else None
        if hit is None:
            continue
        path, label = key.removesuffix(".weight"), module_label(*hit)
        module = base.get_submodule(path)
        W_ft = W.mT if isinstance(module, Conv1D) else W
        deltas[label] = W_ft.double() - weight_as_W0(module).detach().double()
        paths[label] = path
    return deltas, paths


def compute_truncation(sweep: Path, base: str | None = None, device: str = "cpu", batch_size: int = 64,
                       echo: Callable[[str], None] = print) -> list[Path]:
    """Write truncation, truncation_k and truncation_medians of a sweep; return their paths."""
    opened = open_sweep(sweep, base, device)
    inputs, cells = opened.inputs, []
    todo = [r for r in opened.runs if r.spec.lora.method in ("lora", "full") and (r.updates or r.spec.lora.method == "full")]
    for i, run in enumerate(todo):
        if run.spec.lora.method == "lora":
            model = inputs.base
            variants, rows = tr.lora_truncations(run.updates, opened.head(run))
        else:
            model, variants, rows = _full_variants(opened, run)
        pack = tv.variant_pack(model, variants, run.spec, inputs.pooling, inputs.decoder)
        results = tv.evaluate_variants(pack, inputs.task, inputs.dev, inputs.tokenizer, opened.device, batch_size)
        cells.append((sa.run_columns(run), rows, results))
        echo(f"[{i + 1}/{len(todo)}] {run.path.name}: {len(variants)} truncations evaluated in one pass")
    table = tr.truncation_table(cells, opened.metric, opened.lower_is_better)
    smallest = tr.smallest_k_table(table)
    medians = _medians(table, smallest)
    options = {"base_model": opened.spec.model.name, "metric": opened.metric, "within_points": tr.WITHIN_POINTS,
               "full_max_k": tr.FULL_MAX_K, "device": str(opened.device)}
    return [st.write_table(opened.sweep, name, frame, options, CONVENTIONS)
            for name, frame in ((st.TRUNCATION, table), (st.TRUNCATION_K, smallest), (st.TRUNCATION_MEDIANS, medians))]


def _medians(table: pd.DataFrame, smallest: pd.DataFrame) -> pd.DataFrame:
    by_k = tr.median_table(table[table.k_rule == "k"], ["method", "r", "k"], "value")
    energy = tr.median_table(table[table.k_rule == "k"], ["method", "r", "k"], "energy")
    k_min = tr.median_table(smallest, ["method", "r"], "k_min")
    return pd.concat([by_k, energy, k_min], ignore_index=True)
