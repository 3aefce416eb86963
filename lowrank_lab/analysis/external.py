"""Analyse and compare PEFT LoRA adapters that lowrank-lab did not train: adapters in, tidy tables
and figures out.

``analyze_adapter`` runs on one ``adapters.ExternalAdapter`` what ``sweep_analysis`` runs on a
sweep's cells: spectra of ΔW, φ between W0's and ΔW's directions (Fig. 8), amplification
(Table 7) and intruder dimensions, through ``analysis``'s functions. ``compare_adapters`` gives,
for every label two adapters share, the φ grid between their subspaces (two tasks, two seeds or
two ranks: Fig. 3, 4) and the distances between the two ΔW (Frobenius, spectral, cosine, principal
angles). ``analyze`` / ``compare`` read the folders and write CSV + Markdown with a sidecar JSON
each (adapters, their notes, options, conventions, provenance), and figures (``plotting``).

What is analysed per kind of update (``LowRankUpdate.kind``):
- "lora", "lora-minus-init": ΔW = scaling·B·A from the factors, never d×k.
- "dora": the effective ΔW = W' − W0 is dense. Spectra are of the dense ΔW; φ, amplification and
  distances use its best rank-r approximation U_r·diag(S_r)·Vh_r (r = the adapter's rank), and
  norm_delta_w is the dense ‖ΔW‖_F.
W0 with min(d, k) > ``AnalysisOptions.dense_max`` (a 7B model's 4096²) gets a randomized top-n SVD
(``linalg.top_r_svd_randomized``), read once per matrix and shared by φ and amplification; its
intruders, which need all of W0's singular vectors, are skipped with a note.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from lowrank_lab.analysis import tables as an
from lowrank_lab.maths import linalg
from lowrank_lab.store import files
from lowrank_lab.store.adapters import ExternalAdapter, load_all
from lowrank_lab.maths.update import LowRankUpdate

DISTANCES = "distances"  # one row per shared label: φ(r1, r2), principal angles, ‖ΔWa − ΔWb‖
COMPARE_PHI = "phi"  # φ grids between two adapters, per label
ANALYZE_TABLES = (an.SPECTRUM, an.SPECTRUM_METRICS, an.PHI_W0, an.AMPLIFICATION, an.INTRUDERS)
MARKDOWN_MAX_ROWS = 2000  # longer tables (φ grids, spectra) are CSV only

CONVENTIONS = {
    **an.CONVENTIONS,
    "dora": "DoRA's effective ΔW = W' − W0 is dense: spectra of the dense ΔW; φ, amplification and "
            "distances from its best rank-r approximation; norm_delta_w of the dense ΔW",
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
    """Singular basis for φ and principal angles: A, B, dW_right or dW_left (``analysis.SIDES``)."""
    n_w0: int | None = None
    """W0 directions in φ(W0, ΔW); None: ``analysis.default_n_w0`` for a dense SVD, r for a randomized one."""
    dense_max: int = 1024
    """Largest min(d, k) for which W0 gets a dense SVD and intruders are computed."""
    n_iter: int = 2
    """Power iterations of the randomized SVD of W0 (more: closer top-r energy on a flat spectrum)."""
    seed: int = 0
    """Seed of the generator behind every random baseline and randomized SVD."""

    def __post_init__(self):
        if self.side not in an.SIDES:
            raise files.RunError(f"AnalysisOptions.side={self.side!r}: use one of {', '.join(an.SIDES)}")
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


def _factors(U: Tensor, S: Tensor, Vh: Tensor, like: LowRankUpdate) -> LowRankUpdate:
    """U·diag(S)·Vh as a LowRankUpdate (A = diag(S)·Vh, B = U·diag(S), scaling 1): its A's right and B's
    left singular vectors are Vh's rows and U's columns in the order of S, so ``analysis.basis``
    returns them for every side."""
    root = S.double().clamp(min=0).sqrt()
    return LowRankUpdate(like.label, like.path, root[:, None] * Vh.double(), U.double() * root,
                         1.0, like.fan_in_fan_out, like.kind)


def effective_updates(ext: ExternalAdapter, opts: AnalysisOptions = AnalysisOptions()) -> dict[str, LowRankUpdate]:
    """The updates analysed: PEFT's factors, and for DoRA the best rank-r approximation of the dense ΔW."""
    gen = torch.Generator().manual_seed(opts.seed)
    out = {}
    for label, u in ext.updates.items():
        out[label] = (_factors(*_top_svd(ext.dense_delta[label], u.r, opts, gen), u) if u.kind == "dora" else u)
    return out


def analyze_adapter(ext: ExternalAdapter, opts: AnalysisOptions = AnalysisOptions()) -> dict[str, pd.DataFrame]:
    """{spectrum, spectrum_metrics, phi_w0, amplification, intruders} of one adapter, the columns of
    ``analysis``'s tables plus kind (and r where missing). Each W0 is read once and dropped."""
    gen = torch.Generator().manual_seed(opts.seed)
    updates = effective_updates(ext, opts)
    spectra = {lab: (torch.linalg.svdvals(ext.dense_delta[lab].double()) if u.kind == "dora"
                     and min(u.B.shape[0], u.A.shape[1]) <= opts.dense_max
                     else linalg.factored_svd(u.A, u.B, u.scaling, dtype=torch.float64)[1])
               for lab, u in updates.items()}
    phi, amp, intr = [], [], []
    for label, u in updates.items():
        W0 = ext.W0(ext.updates[label])
        d, k = W0.shape
        dense = min(d, k) <= opts.dense_max
        n_w0 = opts.n_w0 or (an.default_n_w0(d, k) if dense else u.r)
        U0, S0, Vh0 = _top_svd(W0, min(max(n_w0, u.r), d, k), opts, gen)
        phi.append(an.phi_w0_table({label: u}, {label: W0}, opts.side, n_w0, gen, svd0=lambda _: (U0, S0, Vh0)))
        row = linalg.amplification(W0, u.A, u.B, u.scaling, gen, w0_top=(U0, S0, Vh0),
                                   dtype=torch.float64 if dense else torch.float32)
        if u.kind == "dora":  # ‖ΔW‖_F of the dense update, not of its rank-r part
            row["norm_delta_w"] = float(torch.linalg.matrix_norm(ext.dense_delta[label].double()))
            row["amplification"] = row["norm_delta_w"] / row["proj_delta_w"]
        amp.append({**an.label_columns(label), "kind": u.kind, "r": u.r, "d": d, "k": k,
                    "scaling": u.scaling, "w0_svd": "dense" if dense else "randomized", **row})
        if dense:
            D = (ext.dense_delta[label] if u.kind == "dora" else linalg.delta_w(u.A, u.B, u.scaling)).double()
            intr += an.intruder_rows(label, W0.double(), W0.double() + D)
        del W0
    kinds = pd.DataFrame([{"label": lab, "kind": u.kind, "r": u.r} for lab, u in updates.items()])
    tables = {an.SPECTRUM: an.spectrum_table(spectra), an.SPECTRUM_METRICS: an.spectrum_metrics_table(spectra),
              an.PHI_W0: pd.concat(phi, ignore_index=True), an.AMPLIFICATION: pd.DataFrame(amp),
              an.INTRUDERS: pd.DataFrame(intr)}
    for name in (an.SPECTRUM, an.SPECTRUM_METRICS, an.INTRUDERS):
        if not tables[name].empty:
            tables[name] = tables[name].merge(kinds, on="label", how="left")
    return tables


# ---------------------------------------------------------------------------------------------
# Two adapters


def compare_adapters(a: ExternalAdapter, b: ExternalAdapter, opts: AnalysisOptions = AnalysisOptions(),
                     effective: tuple[dict[str, LowRankUpdate], dict[str, LowRankUpdate]] | None = None
                     ) -> dict[str, pd.DataFrame]:
    """{phi, distances} between the updates of `a` and `b` at every label both adapt (same d×k).

    phi: ``analysis.phi_table`` rows, i ≤ r1 over a's directions, j ≤ r2 over b's.
    distances: one row per label: phi = φ(r1, r2), principal angles between the two `side`
    subspaces, and ‖ΔWa − ΔWb‖ from ``linalg.delta_distance`` (for DoRA: the dense ΔW when
    min(d, k) ≤ dense_max, else the rank-r approximations). `effective`: both adapters'
    ``effective_updates`` when the caller has them (comparing many pairs)."""
    ua, ub = effective or (effective_updates(a, opts), effective_updates(b, opts))
    shared = [lab for lab in ua if lab in ub and ua[lab].B.shape[0] == ub[lab].B.shape[0]
              and ua[lab].A.shape[1] == ub[lab].A.shape[1]]
    bases = {id(u): an.basis(u, opts.side) for lab in shared for u in (ua[lab], ub[lab])}
    phi = an.phi_table({lab: ua[lab] for lab in shared}, ub, opts.side, lambda u, _: bases[id(u)])
    rows = []
    for label in shared:
        u1, u2 = ua[label], ub[label]
        V1, V2 = bases[id(u1)], bases[id(u2)]
        theta = linalg.principal_angles(V1, V2)
        if "dora" in (u1.kind, u2.kind) and min(u1.B.shape[0], u1.A.shape[1]) <= opts.dense_max:
            dist = _dense_distance(*(ext.dense_delta[label] if u.kind == "dora" else
                                     linalg.delta_w(u.A.double(), u.B.double(), u.scaling)
                                     for ext, u in ((a, u1), (b, u2))))
        else:
            dist = linalg.delta_distance(u1.A, u1.B, u1.scaling, u2.A, u2.B, u2.scaling)
        rows.append({**an.label_columns(label), "kind1": u1.kind, "kind2": u2.kind, "r1": u1.r, "r2": u2.r,
                     "d": u1.B.shape[0], "k": u1.A.shape[1],
                     "phi": float(linalg.phi_grid(V1, V2)[-1, -1]), "phi_random": max(u1.r, u2.r) / V1.shape[0],
                     "angle_max": float(theta.max()), "angle_mean": float(theta.mean()),
                     "grassmann": float(torch.linalg.vector_norm(theta)),
                     "projection": float(linalg.projection_distance(V1, V2)), **dist})
    return {COMPARE_PHI: phi, DISTANCES: pd.DataFrame(rows)}


def _dense_distance(D1: Tensor, D2: Tensor) -> dict[str, float]:
    """What ``linalg.delta_distance`` returns, for dense d×k updates (DoRA)."""
    D1, D2 = D1.double(), D2.double()
    n1, n2, diff = D1.norm(), D2.norm(), D1 - D2
    fro = float(diff.norm())
    return {"frobenius": fro, "spectral": float(torch.linalg.matrix_norm(diff, ord=2)),
            "relative_frobenius": fro / float(n1) if n1 > 0 else float("inf"),
            "cosine": float((D1 * D2).sum() / (n1 * n2)) if n1 > 0 and n2 > 0 else 0.0}


# ---------------------------------------------------------------------------------------------
# Folders in, files out


def adapter_name(ext: ExternalAdapter, root: Path) -> str:
    """The name of the folder given, then the sub-folder the adapter is in: "run", "run/seed1"."""
    root = Path(root)
    return root.name if Path(ext.path) == root else f"{root.name}/{Path(ext.path).relative_to(root)}"


def _describe(ext: ExternalAdapter, name: str) -> dict:
    return {"name": name, "path": str(ext.path), "base": str(ext.base), "config": ext.config, "notes": ext.notes}


def write_table(out: Path, name: str, table: pd.DataFrame, options: dict, adapters: list[dict]) -> list[Path]:
    """<out>/<name>.csv, .md (tables up to MARKDOWN_MAX_ROWS rows) and the sidecar .json."""
    from lowrank_lab.present.tables import to_markdown

    out = Path(out)
    paths = [out / f"{name}.csv"]
    files.write_text(paths[0], table.to_csv(index=False, float_format="%.6g"))
    if len(table) <= MARKDOWN_MAX_ROWS:
        paths.append(out / f"{name}.md")
        files.write_text(paths[-1], to_markdown(table))
    paths.append(out / f"{name}.json")
    files.write_json(paths[-1], {"table": name, "rows": len(table), "columns": list(table.columns),
                                "options": options, "conventions": CONVENTIONS, "adapters": adapters,
                                "provenance": files.provenance()})
    return paths


def _plot_columns(frame: pd.DataFrame, index: int) -> pd.DataFrame:
    """The columns ``plotting`` groups by (method, targets, seed), for a figure of one adapter:
    plotting copies only, never written to the tables."""
    targets = ",".join(dict.fromkeys(frame["module"].astype(str))) if "module" in frame else ""
    return frame.assign(method="lora", targets=targets, seed=index)


def _figures(out: Path, tables: dict[str, pd.DataFrame], name: str, side: str, notes: list[str]) -> list[Path]:
    """Spectrum, φ(W0, ΔW), amplification and intruder figures of one adapter (``plotting``)."""
    from lowrank_lab.present import plotting
    from lowrank_lab.present import curves as plotting_curves

    t = {key: _plot_columns(frame, 0) for key, frame in tables.items() if not frame.empty}
    safe = name.replace("/", "__")
    drawings = {
        "spectrum": lambda: plotting_curves.spectrum_figure(t[an.SPECTRUM], t[an.SPECTRUM_METRICS]),
        "phi_w0": lambda: plotting.phi_w0_figure(t[an.PHI_W0].assign(side=side), side=side,
                                                 module=str(t[an.PHI_W0]["module"].iloc[0])),
        "amplification": lambda: plotting_curves.amplification_figure(t[an.AMPLIFICATION], paper=False),
        "intruders": lambda: plotting_curves.intruders_figure(t[an.INTRUDERS]),
    }
    return _draw(out, {f"{safe}-{key}": fn for key, fn in drawings.items()}, notes)


def _draw(out: Path, drawings: dict, notes: list[str]) -> list[Path]:
    from lowrank_lab.present import plotting

    paths = []
    for fig_name, draw in drawings.items():
        try:
            paths += plotting.save_figure(draw(), fig_name, Path(out) / "figures")
        except (plotting.MissingData, KeyError, ValueError, IndexError) as err:
            notes.append(f"figure {fig_name} skipped: {err}")
    return paths


def analyze(adapter: str | Path, base: str | Path | None = None, original_base: str | Path | None = None,
            out: str | Path | None = None, opts: AnalysisOptions = AnalysisOptions(),
            figures: bool = True) -> tuple[list[Path], list[str]]:
    """Analyse every adapter in folder `adapter` (itself and its sub-folders) against its base;
    write the tables (one file per table, an ``adapter`` column) and figures under `out`
    (default ADAPTER/analysis). Returns (paths written, the adapters' notes)."""
    root = Path(adapter)
    out = Path(out) if out is not None else root / "analysis"
    exts = load_all(root, base, original_base)
    names = [adapter_name(e, root) for e in exts]
    notes = [f"{n}: {note}" for n, e in zip(names, exts, strict=True) for note in e.notes]
    per = {n: analyze_adapter(e, opts) for n, e in zip(names, exts, strict=True)}
    described = [_describe(e, n) for n, e in zip(names, exts, strict=True)]
    options = {**asdict(opts), "base": None if base is None else str(base),
               "original_base": None if original_base is None else str(original_base)}
    paths = []
    for table in ANALYZE_TABLES:
        frame = pd.concat([an.lead_columns(per[n][table], adapter=n) for n in names if not per[n][table].empty]
                          or [pd.DataFrame()], ignore_index=True)
        paths += write_table(out, table, frame, options, described)
    if figures:
        for n in names:
            paths += _figures(out, per[n], n, opts.side, notes)
    return paths, notes


def compare(adapters: Sequence[str | Path], base: str | Path | None = None, out: str | Path | None = None,
            opts: AnalysisOptions = AnalysisOptions(), figures: bool = True) -> tuple[list[Path], list[str]]:
    """Compare every pair of the adapters found in `adapters` (each a folder, sub-folders included):
    φ grids and ΔW distances per shared label, in one table each with columns adapter1, adapter2;
    under `out` (default FIRST/analysis/compare). Returns (paths written, the adapters' notes)."""
    roots = [Path(p) for p in adapters]
    found = [(adapter_name(e, root), e) for root in roots for e in load_all(root, base)]
    if len(found) < 2:
        raise files.RunError(f"{', '.join(map(str, roots))}: compare needs two adapters, found {len(found)}")
    out = Path(out) if out is not None else roots[0] / "analysis" / "compare"
    notes = [f"{n}: {note}" for n, e in found for note in e.notes]
    frames: dict[str, list[pd.DataFrame]] = {COMPARE_PHI: [], DISTANCES: []}
    effective = {n: effective_updates(e, opts) for n, e in found}  # once per adapter, not per pair
    for (n1, e1), (n2, e2) in itertools.combinations(found, 2):
        result = compare_adapters(e1, e2, opts, (effective[n1], effective[n2]))
        if result[DISTANCES].empty:
            notes.append(f"{n1} vs {n2}: no label adapted in both (with the same shape)")
        for key, frame in result.items():
            if not frame.empty:
                frames[key].append(an.lead_columns(frame, adapter1=n1, adapter2=n2, side=opts.side))
    options = {**asdict(opts), "base": None if base is None else str(base)}
    described = [_describe(e, n) for n, e in found]
    paths = []
    for key, parts in frames.items():
        paths += write_table(out, key, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(),
                             options, described)
    if figures and frames[COMPARE_PHI]:
        paths += _compare_figures(out, frames[COMPARE_PHI], notes)
    return paths, notes


def _compare_figures(out: Path, parts: list[pd.DataFrame], notes: list[str]) -> list[Path]:
    """Fig. 4's layout (same ranks) or Fig. 3's (two ranks) for each pair, through ``plotting``."""
    from lowrank_lab.present import plotting

    drawings = {}
    for part in parts:
        n1, n2 = part["adapter1"].iloc[0], part["adapter2"].iloc[0]
        same_r = bool((part["r1"] == part["r2"]).all())
        t = _plot_columns(part, 0).assign(comparison="seeds" if same_r else "ranks", seed1=0,
                                          seed2=1 if same_r else 0)
        name = f"{n1}-vs-{n2}".replace("/", "__")
        draw = plotting.phi_seeds_figure if same_r else plotting.phi_ranks_figure
        drawings[f"{name}-phi"] = lambda t=t, draw=draw: draw(t, side=t["side"].iloc[0])
    return _draw(out, drawings, notes)
