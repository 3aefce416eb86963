"""Low-rank updates in, tidy pandas tables out (long format, one number per row).

The functions here take ``updates: Mapping[label, Update]`` (``maths.update``: a
``LowRankUpdate`` ΔW = scaling·B·A with A r×k, B d×r, or a ``DenseUpdate``; each answers for its
own SVD, bases and norms) and, where W0 matters, ``W0``: a ``analysis.base.W0Source`` (W0 and its
thin SVD per update, read once) or a mapping label → d×k tensor. They know nothing of sweeps, so
the same functions serve adapters trained here and external PEFT adapters. ``analysis.sweep``
iterates the runs of a sweep and adds the spec keys as columns; ``workflow.sweep`` caches the
tables through ``store.tables``. Nothing here opens a file or loads a model.

Conventions (stated again in every table's sidecar JSON, ``CONVENTIONS``):
- ΔW includes its scaling α/r (or α/√r): norms, spectra and amplification are of the update the
  model actually applies. Sec. 7.3 and Table 7 do not say whether their ‖ΔW‖_F includes it.
- φ (Hu et al. 2021, Sec. 7.2, Eq. 4) compares singular bases chosen by ``side``: "A" (right
  singular vectors of A, the paper's choice), "B" (left of B, footnote 7), "dW_right"/"dW_left"
  (ΔW's, from ``linalg.factored_svd``). Against W0 (App. H.3, Fig. 8), W0's right singular vectors
  go with the input-side bases (A, dW_right) and its left with the output-side ones.
- Every SVD is float64; dense d×k matrices are formed only for W0 + ΔW (intruders) and for full
  fine-tuning's ΔW, which is dense by nature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.maths import distances, linalg, spectrum
from lowrank_lab.maths.update import INPUT_SIDES, Update
from lowrank_lab.model.base import parse_label
from lowrank_lab.spec import CellSpec
from lowrank_lab.store.records import CellSummary

EPSILONS = tuple(round(0.1 * n, 1) for n in range(1, 10))  # Shuttleworth et al. 2024 sweep ε
INTRUDER_TOP_K = 10  # their find_intruder_dimensions.py default

CONVENTIONS = {
    "delta_w": "ΔW = scaling·B·A with scaling = α/r (or α/√r for rsLoRA); every norm, spectrum and "
               "amplification factor of ΔW INCLUDES the scaling",
    "phi": "φ(i, j) = ‖V1[:, :i]ᵀ V2[:, :j]‖_F² / min(i, j) (Hu et al. 2021, Eq. 4); phi_random = "
           "max(i, j)/dim, the mean for independent random subspaces",
    "phi_grid": "grid 'complete': every (i, j) of the pairs the figures draw (ranks: r = 8, else the largest "
                "below the largest, against the largest, at every seed; seeds: every pair at the largest rank; "
                "W0: ranks 4, 8, 64 when all present, else the three largest); 'diagonal': φ(i, i) of every "
                "other pair, which the summaries aggregate (φ(1, 1) first)",
    "sides": {"A": "right singular vectors of A (r×k), the paper's choice (Sec. 7.2)",
              "B": "left singular vectors of B (d×r), the paper's footnote 7",
              "dW_right": "right singular vectors of ΔW (from the factors)",
              "dW_left": "left singular vectors of ΔW (from the factors)"},
    "phi_w0": "i = top-i singular directions of W0 (right ones for sides A and dW_right, left ones "
              "for B and dW_left), up to n_w0 = max(32, ⌈10% of min(d, k)⌉) capped at min(d, k) "
              "(the paper: ~10% of 12,288); j = top-j directions of the adapter",
    "random": "Haar-random orthonormal bases (the singular vectors of Gaussian matrices), seeded",
    "amplification": "U, Vh = top-r singular vectors of ΔW, of W0, or random; amplification = "
                     "‖ΔW‖_F / ‖Uᵀ W0 Vhᵀ‖_F (Sec. 7.3, App. H.4)",
    "intruders": f"top {INTRUDER_TOP_K} left singular vectors of W0 + ΔW whose max |cos| with every "
                 "left singular vector of W0 is below ε (Shuttleworth et al. 2024)",
    "eckart_young": "rel_error(k) = ‖ΔW_full − best rank-k‖_F / ‖ΔW_full‖_F, ΔW_full = W_ft − W0; "
                    "LoRA rows: ‖ΔW_full − ΔW_lora‖_F / ‖ΔW_full‖_F at k = r, same seed",
    "layers": "0-based; figures default to the middle layer, layers[(n − 1) // 2] (the paper's 48th "
              "of 96), and to first / ⅓ / ⅔ / last for per-layer figures",
}

W0Source = Callable[[Update], Tensor] | Mapping[str, Tensor]
SVD = tuple[Tensor, Tensor, Tensor]


def _w0(W0: W0Source, update: Update) -> Tensor:
    """W0 of the update in float64, on the source's device (the CPU for a mapping)."""
    W = W0[update.label] if isinstance(W0, Mapping) else W0(update)
    return W.detach().to(getattr(W0, "device", W.device), torch.float64)


def _w0_svd(W0: W0Source, update: Update) -> SVD:
    """W0's thin float64 SVD: the source's cached one when it keeps one (``analysis.base``), else
    computed here."""
    cached = getattr(W0, "svd", None)
    return cached(update) if callable(cached) else w0_svd(_w0(W0, update))


def w0_svd(W: Tensor) -> SVD:
    """Thin SVD of W0 (d×k) in float64: U (d×p), S (p,), Vh (p×k), p = min(d, k)."""
    return torch.linalg.svd(W.detach().to(torch.float64), full_matrices=False)


def lead_columns(frame: pd.DataFrame, **columns) -> pd.DataFrame:
    """`frame` with constant columns put first (the tidy tables lead with the spec keys)."""
    return frame.assign(**columns)[[*columns, *[c for c in frame.columns if c not in columns]]]


def label_columns(label: str) -> dict:
    """``L3.q`` → {label, layer: 3, module: "q"}; other labels keep layer = None."""
    try:
        layer, module = parse_label(label)
    except ValueError:
        return {"label": label, "layer": None, "module": label}
    return {"label": label, "layer": layer, "module": module}


def default_n_w0(d: int, k: int) -> int:
    """How many of W0's top directions Fig. 8 scans: ~10% as the paper, at least 32, at most all."""
    p = min(d, k)
    return min(p, max(32, math.ceil(0.1 * p)))


def _grid_block(grid: Tensor, dim: int, diagonal: bool = False, **columns) -> dict[str, np.ndarray]:
    """Columns (columns…, grid, i, j, phi, phi_random, dim) of an r1×r2 φ grid in long form, i, j
    from 1: every (i, j) (grid "complete"), or with `diagonal` only i = j (grid "diagonal")."""
    r1, r2 = grid.shape
    i, j = np.meshgrid(np.arange(1, r1 + 1), np.arange(1, r2 + 1), indexing="ij")
    phi = grid.double().numpy()
    if diagonal:
        keep = i == j
        i, j, phi = i[keep], j[keep], phi[keep]
    i, j, phi = i.ravel(), j.ravel(), phi.ravel()
    n = len(i)
    const = {k: np.full(n, v, dtype=object if v is None or isinstance(v, str) else None)
             for k, v in columns.items()}
    return {**const, "grid": np.full(n, "diagonal" if diagonal else "complete", dtype=object), "i": i, "j": j,
            "phi": phi, "phi_random": np.maximum(i, j) / dim, "dim": np.full(n, dim)}


def _frame(blocks: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    # One DataFrame from many grids: constructing one small frame per grid (thousands in a
    # sweep) was most of the analysis time.
    if not blocks:
        return pd.DataFrame()
    return pd.DataFrame({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}).infer_objects()


# ---------------------------------------------------------------------------------------------
# Subspace similarity φ (Sec. 7.2, Fig. 3, 4, 6, 7; App. H.3, Fig. 8)


def phi_table(first: Mapping[str, Update], second: Mapping[str, Update], side: str = "A",
              diagonal: bool = False) -> pd.DataFrame:
    """φ grid of every label present in both: rows (label, layer, module, r1, r2, grid, i, j, phi,
    phi_random, dim), i ≤ r1 over `first`'s directions, j ≤ r2 over `second`'s, on the singular
    basis `side` of each (``Update.basis``, cached by the update); with `diagonal`, i = j only."""
    blocks = []
    for label in [lab for lab in first if lab in second]:
        V1, V2 = first[label].basis(side), second[label].basis(side)
        blocks.append(_grid_block(linalg.phi_grid(V1, V2), V1.shape[0], diagonal, **label_columns(label),
                                  r1=V1.shape[1], r2=V2.shape[1]))
    return _frame(blocks)


def random_phi_table(r1: int, r2: int, dim: int, generator: torch.Generator) -> pd.DataFrame:
    """φ grid of two Haar-random bases of ℝ^dim (dim×r1, dim×r2): Fig. 4's "Random" panel."""
    grid = linalg.phi_grid(linalg.random_orthonormal(dim, r1, generator),
                           linalg.random_orthonormal(dim, r2, generator))
    return _frame([_grid_block(grid, dim, label="random", layer=None, module="random", r1=r1, r2=r2)])


def w0_basis(svd0: SVD, side: str, n: int) -> Tensor:
    """W0's top-n singular directions in the space `side` lives in, from its SVD (U, S, Vh):
    right (k×n) for A and dW_right, left (d×n) for B and dW_left."""
    U0, _, Vh0 = svd0
    return Vh0[:n].mT if side in INPUT_SIDES else U0[:, :n]


def phi_w0_table(updates: Mapping[str, Update], W0: W0Source, side: str = "A",
                 n_w0: int | None = None, generator: torch.Generator | None = None,
                 diagonal: bool = False) -> pd.DataFrame:
    """φ(W0, ΔW, i, j) per label: i ≤ n_w0 over W0's top directions, j ≤ r over the adapter's
    (App. H.3, Fig. 8). With a generator, also a "random" row block per label: the same W0
    against a Haar-random r-dimensional basis (Fig. 8's A_rand; drawn whatever `diagonal` says,
    so that the random stream does not depend on what is stored). Columns as ``phi_table`` plus
    source ("adapter" | "random"), r1 = n_w0, r2 = r; with `diagonal`, i = j only."""
    blocks = []
    for label, u in updates.items():
        svd0 = _w0_svd(W0, u)
        n = n_w0 or default_n_w0(svd0[0].shape[0], svd0[2].shape[1])
        V0, V = w0_basis(svd0, side, n), u.basis(side)
        cols = label_columns(label)
        blocks.append(_grid_block(linalg.phi_grid(V0, V), V.shape[0], diagonal, **cols, source="adapter",
                                  r1=n, r2=V.shape[1]))
        if generator is not None:
            Vr = linalg.random_orthonormal(V.shape[0], V.shape[1], generator)
            blocks.append(_grid_block(linalg.phi_grid(V0, Vr), V.shape[0], diagonal, **cols, source="random",
                                      r1=n, r2=V.shape[1]))
    return _frame(blocks)


# ---------------------------------------------------------------------------------------------
# ΔW against W0 (Sec. 7.3, Table 7, App. H.4)


def amplification_table(updates: Mapping[str, Update], W0: W0Source,
                        generator: torch.Generator | None = None) -> pd.DataFrame:
    """Table 7 per label: proj_delta_w, proj_w0, proj_random (‖Uᵀ W0 Vhᵀ‖_F), norm_w0,
    norm_delta_w (scaling included), amplification = norm_delta_w / proj_delta_w; r, d, k, scaling."""
    rows = []
    for label, u in updates.items():
        W = _w0(W0, u)
        values = linalg.amplification(W, u, generator, w0_top=_w0_svd(W0, u))
        rows.append({**label_columns(label), "r": u.r, "d": W.shape[0], "k": W.shape[1],
                     "scaling": u.scaling, **values})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Spectra (Sec. 7.2 "intrinsic rank"; Biderman et al. 2024) and intruders (Shuttleworth et al. 2024)


def spectra(updates: Mapping[str, Update]) -> dict[str, Tensor]:
    """The singular values of each ΔW in float64: r of them from the factors for a LoRA update
    (never d×k), all min(d, k) for a dense one (full fine-tuning, DoRA)."""
    return {label: u.singular_values() for label, u in updates.items()}


def spectrum_table(spectra: Mapping[str, Tensor]) -> pd.DataFrame:
    """Rows (label, layer, module, n, sigma, energy): σ_n and Σ_{m≤n} σ_m² / Σ σ², n from 1."""
    frames = []
    for label, S in spectra.items():
        S = S.sort(descending=True).values
        frames.append(pd.DataFrame({"n": np.arange(1, len(S) + 1), "sigma": S.numpy(),
                                    "energy": spectrum.energy_fraction(S).numpy()})
                      .assign(**label_columns(label)))
    cols = ["label", "layer", "module", "n", "sigma", "energy"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def spectrum_metrics_table(spectra: Mapping[str, Tensor]) -> pd.DataFrame:
    """One row per label: sigma_max, frobenius, stable_rank, effective_rank, rank_90, n_sigma."""
    return pd.DataFrame([{**label_columns(label), **spectrum.spectrum_metrics(S), "n_sigma": len(S)}
                         for label, S in spectra.items()])


INTRUDER_METHOD = "randomized"  # only the top 10 of W0 + ΔW's singular vectors are needed (its error: intruder_route_check)


def intruder_rows(label: str, W0: Tensor, W_tuned: Tensor, epsilons=EPSILONS,
                  top_k: int = INTRUDER_TOP_K, U_w0: Tensor | None = None,
                  method: str = INTRUDER_METHOD) -> list[dict]:
    """Rows (label, epsilon, n_intruders, top_k) for one matrix, reused for all ε: W_tuned's top_k
    left singular vectors (``spectrum.intruder_dimensions``, `method`) against all of W0's (U_w0
    when given, else a dense SVD of W0)."""
    found = spectrum.intruder_dimensions(W0, W_tuned, top_k, dtype=torch.float64, U_w0=U_w0, method=method)
    counts = spectrum.intruder_counts(found["max_cos"], torch.tensor(epsilons, dtype=torch.float64))
    top_k = len(found["max_cos"])
    return [{**label_columns(label), "epsilon": eps, "n_intruders": int(c), "top_k": top_k}
            for eps, c in zip(epsilons, counts.tolist(), strict=True)]


def intruder_table(updates: Mapping[str, Update], W0: W0Source, epsilons=EPSILONS,
                   top_k: int = INTRUDER_TOP_K, method: str = INTRUDER_METHOD) -> pd.DataFrame:
    """Intruder counts of W0 + ΔW against W0 per label and ε (ΔW dense here: W0 is dense anyway)."""
    rows = []
    for label, u in updates.items():
        W = _w0(W0, u)
        U_w0 = _w0_svd(W0, u)[0].to(W.device)
        rows += intruder_rows(label, W, W + u.delta_w(torch.float64).to(W.device), epsilons, top_k, U_w0, method)
    return pd.DataFrame(rows)


def intruder_route_check(updates: Mapping[str, Update], W0: W0Source, top_k: int = INTRUDER_TOP_K) -> list[dict]:
    """The randomized route's error against the dense one, on the first matrix of each shape among
    `updates`: max |Δ max_cos| over the top_k directions and whether the counts at every ε agree.
    Saved in the intruders table's sidecar, so that the table says how exact it is."""
    checked, rows = set(), []
    for label, u in updates.items():
        if tuple(u.shape) in checked:
            continue
        checked.add(tuple(u.shape))
        W = _w0(W0, u)
        W_tuned, U_w0 = W + u.delta_w(torch.float64).to(W.device), _w0_svd(W0, u)[0].to(W.device)
        dense, fast = (spectrum.intruder_dimensions(W, W_tuned, top_k, dtype=torch.float64, U_w0=U_w0, method=m)
                       for m in ("dense", "randomized"))
        eps = torch.tensor(EPSILONS, dtype=torch.float64)
        rows.append({"label": label, "shape": list(u.shape),
                     "max_abs_error_max_cos": float((dense["max_cos"] - fast["max_cos"]).abs().max()),
                     "counts_equal": bool(torch.equal(spectrum.intruder_counts(dense["max_cos"], eps),
                                                      spectrum.intruder_counts(fast["max_cos"], eps)))})
    return rows


# ---------------------------------------------------------------------------------------------
# Eckart–Young: how far full fine-tuning's ΔW is from rank k, and where LoRA lands


def eckart_young_table(full: Mapping[str, Update],
                       lora: Mapping[str, Mapping[str, Update]] | None = None) -> pd.DataFrame:
    """Rows (label, source, k, rel_error) for each dense update ΔW of `full` (full fine-tuning).
    source "best_rank_k": ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F for k = 0..min(d, k) (Eckart & Young 1936). For
    each entry `name` of `lora` ({name: updates}), source = name, k = r: ‖ΔW − ΔW_lora‖_F / ‖ΔW‖_F,
    from ‖ΔW‖² − 2⟨ΔW_lora, ΔW⟩ + ‖ΔW_lora‖² without forming ΔW_lora (``distances.inner_with_dense``).
    A LoRA point above the curve is worse than the best rank-r update."""
    frames = []
    for label, update in full.items():
        D = update.delta_w(torch.float64)
        curve = spectrum.eckart_young_curve(update.singular_values())
        frames.append(pd.DataFrame({"source": "best_rank_k", "k": np.arange(len(curve)),
                                    "rel_error": curve.numpy()}).assign(**label_columns(label)))
        norm2 = float(D.square().sum())
        for name, updates in (lora or {}).items():
            if label not in updates or norm2 == 0:
                continue
            u = updates[label]
            lora2 = distances.frobenius_inner(u, u)  # ‖ΔW_lora‖², r×r products only
            err2 = norm2 - 2 * distances.inner_with_dense(u, D) + lora2
            frames.append(pd.DataFrame([{"source": name, "k": u.r, "rel_error": math.sqrt(max(err2, 0.0) / norm2),
                                         **label_columns(label)}]))
    cols = ["label", "layer", "module", "source", "k", "rel_error"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


# ---------------------------------------------------------------------------------------------
# Results of the cells (Table 2, 5, 6, 18)


def results_table(cells: Iterable[tuple[str, CellSpec, CellSummary]]) -> pd.DataFrame:
    """One row per finished cell (name, CellSpec, CellSummary): method, targets, r, alpha, lr (the
    learning rate of the trained weights), scaling_rule, init, seed, the main metric at the best
    evaluation (`metric`, `value`) and at the last (`final_value`), every dev metric of the best
    evaluation (`dev_<metric>`), the dev and training losses of both, and parameter counts. The
    best evaluation is the one best on the held-out split when the sweep has one
    (`data.validation_size`; `selected_on` "validation", its metric `val_value`), else on dev itself
    (`selected_on` "dev": then `value` is chosen on the split it reports). The
    adapter baselines add `size` (bottleneck m, prefix length l_p; 0 for the other methods) and the
    paper's formula for their trainable parameters with its value (`trainable_formula`,
    `trainable_by_formula`), which the count of their tensors (`trainable_adapter`) equals."""
    rows = []
    for name, spec, summary in cells:
        lora, best, main = spec.lora, summary.best, summary.main_metric
        final = summary.final or {}
        is_lora = lora.method == "lora"
        formula = summary.provenance.get("trainable_formula") or {}
        rows.append({
            "cell": name, "task": summary.task, "method": lora.method,
            "targets": lora.targets if is_lora else "", "r": lora.r if is_lora else 0,
            "alpha": lora.alpha, "lr": spec.lr, "scaling_rule": lora.scaling_rule, "init": lora.init,
            "seed": spec.train.seed, "metric": main, "value": best[main], "best_epoch": best["epoch"],
            "final_value": final.get(main, math.nan), "dev_loss": best.get("dev_loss", math.nan),
            "final_dev_loss": final.get("dev_loss", math.nan), "final_train_loss": final.get("train_loss", math.nan),
            "trainable_adapter": summary.trainable_parameters.adapter,
            "trainable_total": summary.trainable_parameters.total,
            "size": spec.size, "trainable_formula": _formula_text(formula),
            "trainable_by_formula": formula.get("value", math.nan),
            "examples_per_second": summary.examples_per_second,
            # where the best evaluation was chosen: a held-out split of the training data, or dev itself
            "selected_on": "validation" if f"val_{main}" in best else "dev",
            "val_value": best.get(f"val_{main}", math.nan),
            **{f"dev_{k}": v for k, v in best.items()
               if k not in ("step", "epoch", "train_loss", "dev_loss") and not k.startswith("val_")},
        })
    return pd.DataFrame(rows)


def _formula_text(formula: dict) -> str:
    """"L̂_Adpt·(2·d_model·m + m + d_model), L̂_Adpt=12, d_model=384, m=16": the formula and its symbols."""
    if not formula:
        return ""
    symbols = ", ".join(f"{k}={v}" for k, v in formula.items() if k not in ("formula", "value"))
    return f"{formula['formula']}, {symbols}"
