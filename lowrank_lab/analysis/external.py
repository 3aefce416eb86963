"""Analyse and compare PEFT LoRA adapters that lowrank-lab did not train: adapters in, tidy tables
out.

``analyze_adapter`` runs on one ``store.adapters.ExternalAdapter`` what ``analysis.sweep`` runs on a
sweep's cells: spectra of ΔW, φ between W0's and ΔW's directions (Fig. 8), amplification
(Table 7) and intruder dimensions, through ``analysis``'s functions. ``compare_adapters`` gives,
for every label two adapters share, the φ grid between their subspaces (two tasks, two seeds or
two ranks: Fig. 3, 4) and the distances between the two ΔW (Frobenius, spectral, cosine, principal
angles). ``workflow.external`` reads the folders, writes the tables with their sidecars and
draws the figures; nothing here opens a file.

Each update answers for itself (``maths.update``): a ``LowRankUpdate`` ("lora",
"lora-minus-init") from its factors, never d×k; a ``DenseUpdate`` (DoRA's effective ΔW = W' − W0)
with its whole spectrum for spectra and norms and its top-r directions (r = the adapter's rank)
for φ and Table 7; distances between two updates are exact for both kinds.
W0 with min(d, k) > ``AnalysisOptions.dense_max`` (a 7B model's 4096²) gets a randomized top-n SVD
(``linalg.top_r_svd_randomized``), read once per matrix and shared by φ and amplification; its
intruders, which need all of W0's singular vectors, are skipped with a note.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.analysis import tables as an
from lowrank_lab.analysis.base import W0Source
from lowrank_lab.maths import distances, linalg
from lowrank_lab.maths.update import Update
from lowrank_lab.store import files
from lowrank_lab.store import tables as st
from lowrank_lab.store.external_adapter import ExternalAdapter

DISTANCES = "distances"  # one row per shared label: φ(r1, r2), principal angles, ‖ΔWa − ΔWb‖
COMPARE_PHI = "phi"  # φ grids between two adapters, per label
ANALYZE_TABLES = (st.SPECTRUM, st.SPECTRUM_METRICS, st.PHI_W0, st.AMPLIFICATION, st.INTRUDERS)

CONVENTIONS = {
    **an.CONVENTIONS,
    "dora": "DoRA's effective ΔW = W' − W0 is dense: spectra, norm_delta_w and distances of the dense "
            "ΔW; φ and the projections of Table 7 from its top-r singular directions",
    "lora-minus-init": "PiSSA / OLoRA / ... against the original W0: ΔW = s·B·A − (W0 − W_res), rank 2r",
    "w0_svd": "W0 with min(d, k) > dense_max: randomized top-n SVD (Halko et al. 2011), n = max(n_w0, r), "
              "amplification in float32 (relative error ~1e-6); its intruders are skipped (they need "
              "every singular vector of W0)",
    "distances": "frobenius, spectral = ‖ΔWa − ΔWb‖_F, ‖·‖_2; relative_frobenius ÷ ‖ΔWa‖_F; cosine = "
                 "⟨ΔWa, ΔWb⟩_F / (‖ΔWa‖‖ΔWb‖); phi = φ(r1, r2); angles between the `side` subspaces "
                 "(radians): max, mean, grassmann = ‖θ‖₂, projection = sqrt(p − Σcos²θ)",
}


@dataclass(frozen=True)
class AnalysisOptions:
    """How ``analyze_adapter`` and ``compare_adapters`` run; saved in every sidecar."""

    side: str = "A"
    """Singular basis for φ and principal angles: A, B, dW_right or dW_left (``maths.update.SIDES``)."""
    n_w0: int | None = None
    """W0 directions in φ(W0, ΔW); None: ``analysis.default_n_w0`` for a dense SVD, r for a randomized one."""
    dense_max: int = 1024
    """Largest min(d, k) for which W0 gets a dense SVD and intruders are computed."""
    n_iter: int = 2
    """Power iterations of the randomized SVD of W0 (more: closer top-r energy on a flat spectrum)."""
    seed: int = 0
    """Seed of the generator behind every random baseline and randomized SVD."""

    def __post_init__(self):
        if self.side not in st.SIDES:
            raise files.RunError(f"AnalysisOptions.side={self.side!r}: use one of {', '.join(st.SIDES)}")
        if self.n_w0 is not None and self.n_w0 < 1:
            raise files.RunError(f"AnalysisOptions.n_w0={self.n_w0}: must be >= 1")


# ---------------------------------------------------------------------------------------------
# One adapter


def _top_svd(M: Tensor, n: int, opts: AnalysisOptions, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Top-n U, S, Vh of a dense d×k matrix: dense SVD up to dense_max, randomized above."""
    if min(M.shape) <= opts.dense_max:
        U, S, Vh = torch.linalg.svd(M.double(), full_matrices=False)
        return U[:, :n], S[:n], Vh[:n]
    return linalg.top_r_svd_randomized(M, n, n_iter=opts.n_iter, generator=gen)


def _n_top(update: Update, opts: AnalysisOptions) -> tuple[int, int, bool]:
    """(n_w0, how many of W0's directions to compute, whether W0 gets a dense SVD)."""
    d, k = update.shape
    dense = min(d, k) <= opts.dense_max
    n_w0 = opts.n_w0 or (an.default_n_w0(d, k) if dense else update.r)
    return n_w0, min(max(n_w0, update.r), d, k), dense


def analyze_adapter(ext: ExternalAdapter, opts: AnalysisOptions = AnalysisOptions()) -> dict[str, pd.DataFrame]:
    """{spectrum, spectrum_metrics, phi_w0, amplification, intruders} of one adapter, the columns of
    ``analysis``'s tables plus kind (and r where missing). Each W0's SVD is computed once."""
    gen = torch.Generator().manual_seed(opts.seed)
    updates = ext.updates
    current: dict[str, Tensor] = {}  # the W0 of the label being analysed: read once, then dropped
    W0 = W0Source(current.__getitem__, str(ext.base), svd_of=lambda W, u: _top_svd(W, _n_top(u, opts)[1], opts, gen),
                  keep_weights=False)
    phi, amp, intr = [], [], []
    for label, u in updates.items():
        current.clear()
        current[u.path] = ext.W0(u)
        n_w0, _, dense = _n_top(u, opts)
        phi.append(an.phi_w0_table({label: u}, W0, opts.side, n_w0, gen))
        row = linalg.amplification(W0(u), u, gen, w0_top=W0.svd(u), dtype=torch.float64 if dense else torch.float32)
        d, k = u.shape
        amp.append({**an.label_columns(label), "kind": u.kind, "r": u.r, "d": d, "k": k,
                    "scaling": u.scaling, "w0_svd": "dense" if dense else "randomized", **row})
        if dense:
            intr += an.intruder_rows(label, W0(u).double(), W0(u).double() + u.delta_w(torch.float64),
                                     method="dense")
    current.clear()
    spectra = an.spectra(updates)
    kinds = pd.DataFrame([{"label": lab, "kind": u.kind, "r": u.r} for lab, u in updates.items()])
    tables = {st.SPECTRUM: an.spectrum_table(spectra), st.SPECTRUM_METRICS: an.spectrum_metrics_table(spectra),
              st.PHI_W0: pd.concat(phi, ignore_index=True), st.AMPLIFICATION: pd.DataFrame(amp),
              st.INTRUDERS: pd.DataFrame(intr)}
    for name in (st.SPECTRUM, st.SPECTRUM_METRICS, st.INTRUDERS):
        if not tables[name].empty:
            tables[name] = tables[name].merge(kinds, on="label", how="left")
    return tables


# ---------------------------------------------------------------------------------------------
# Two adapters


def compare_adapters(a: ExternalAdapter, b: ExternalAdapter, opts: AnalysisOptions = AnalysisOptions()
                     ) -> dict[str, pd.DataFrame]:
    """{phi, distances} between the updates of `a` and `b` at every label both adapt (same d×k).

    phi: ``analysis.phi_table`` rows, i ≤ r1 over a's directions, j ≤ r2 over b's.
    distances: one row per label: phi = φ(r1, r2), principal angles between the two `side`
    subspaces, and ‖ΔWa − ΔWb‖ from ``distances.delta_distance`` (exact, dense updates included)."""
    ua, ub = a.updates, b.updates
    shared = shared_labels(ua, ub)
    phi = an.phi_table({lab: ua[lab] for lab in shared}, ub, opts.side)
    rows = []
    for label in shared:
        u1, u2 = ua[label], ub[label]
        V1, V2 = u1.basis(opts.side), u2.basis(opts.side)
        theta = linalg.principal_angles(V1, V2)
        d, k = u1.shape
        rows.append({**an.label_columns(label), "kind1": u1.kind, "kind2": u2.kind, "r1": u1.r, "r2": u2.r,
                     "d": d, "k": k,
                     "phi": float(linalg.phi_grid(V1, V2)[-1, -1]), "phi_random": max(u1.r, u2.r) / V1.shape[0],
                     "angle_max": float(theta.max()), "angle_mean": float(theta.mean()),
                     "grassmann": float(torch.linalg.vector_norm(theta)),
                     "projection": float(linalg.projection_distance(V1, V2)), **distances.delta_distance(u1, u2)})
    return {COMPARE_PHI: phi, DISTANCES: pd.DataFrame(rows)}


# ---------------------------------------------------------------------------------------------
# Several adapters, by name


def analyze_many(adapters: Sequence[tuple[str, ExternalAdapter]], opts: AnalysisOptions = AnalysisOptions()
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, pd.DataFrame]]]:
    """({table: one frame, an ``adapter`` column first}, {name: that adapter's own tables}) of
    ``analyze_adapter`` over (name, adapter) pairs; names must be unique."""
    per = {name: analyze_adapter(ext, opts) for name, ext in adapters}
    joined = {table: pd.concat([an.lead_columns(per[n][table], adapter=n) for n in per if not per[n][table].empty]
                               or [pd.DataFrame()], ignore_index=True) for table in ANALYZE_TABLES}
    return joined, per


def shared_labels(ua: dict[str, Update], ub: dict[str, Update]) -> list[str]:
    """Labels both adapt with the same d×k, in `ua`'s order."""
    return [lab for lab in ua if lab in ub and tuple(ua[lab].shape) == tuple(ub[lab].shape)]


def compare_many(adapters: Sequence[tuple[str, ExternalAdapter]], opts: AnalysisOptions = AnalysisOptions()
                 ) -> tuple[dict[str, list[pd.DataFrame]], list[str]]:
    """``compare_adapters`` over every pair of (name, adapter): ({phi: [frame per pair], distances:
    [...]}, notes), columns adapter1, adapter2, side first. Adapters are told apart by position, so
    two with the same name are still two. RunError when no pair adapts a matrix in common."""
    frames: dict[str, list[pd.DataFrame]] = {COMPARE_PHI: [], DISTANCES: []}
    notes = []
    for i, j in itertools.combinations(range(len(adapters)), 2):
        (n1, e1), (n2, e2) = adapters[i], adapters[j]
        if not shared_labels(e1.updates, e2.updates):
            notes.append(f"{n1} vs {n2}: no matrix adapted in both (with the same shape)")
            continue
        for key, frame in compare_adapters(e1, e2, opts).items():
            frames[key].append(an.lead_columns(frame, adapter1=n1, adapter2=n2, side=opts.side))
    if not frames[DISTANCES]:
        raise files.RunError(f"{', '.join(n for n, _ in adapters)}: no matrix is adapted in both "
                             "(same module, same shape), so there is nothing to compare")
    return frames, notes
