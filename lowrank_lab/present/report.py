"""One Markdown and one HTML report of a sweep: every figure and table, the paper's numbers beside
ours where the paper has them, and the conventions used (``lowrank-lab report SWEEP``).

Missing analysis tables are computed first (``sweep_analysis.analyze_sweep``); figures whose cells
the sweep lacks are listed as skipped with the reason. The HTML is hand-written and
self-contained apart from the PNG files next to it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from lowrank_lab.analysis import tables as an
from lowrank_lab.present import plotting
from lowrank_lab.present import curves as plotting_curves
from lowrank_lab.store import files
from lowrank_lab.store import runs
from lowrank_lab.present import tables

# (file name, title, tables it reads, how to draw it, the paper's statement to compare with)
FIGURES: list[tuple[str, str, tuple[str, ...], Callable, str]] = [
    ("fig3_phi_ranks", "Figure 3: φ between two ranks, middle layer", (an.PHI,),
     lambda t: plotting.phi_ranks_figure(t[an.PHI]),
     "Paper (GPT-3, layer 48, r=8 vs 64): the top direction is shared, φ > 0.5 at i = j = 1."),
    ("fig4_phi_seeds", "Figure 4: φ between two seeds at the largest rank", (an.PHI,),
     lambda t: plotting.phi_seeds_figure(t[an.PHI], random_panel=True),
     "Paper (r=64): ΔWq shares more directions across seeds than ΔWv; random Gaussian pairs share none."),
    ("fig6_phi_ranks_layers", "Figure 6: φ between ranks, across layers", (an.PHI,),
     lambda t: plotting.phi_ranks_figure(t[an.PHI], plotting.spread_layers(t[an.PHI]["layer"].dropna())),
     "Paper: the conclusion of Figure 3 holds in layers 1, 32, 64 and 96."),
    ("fig7_phi_seeds_layers", "Figure 7: φ between seeds, across layers", (an.PHI,),
     lambda t: plotting.phi_seeds_figure(t[an.PHI], plotting.spread_layers(t[an.PHI]["layer"].dropna())),
     "Paper: as Figure 4, in layers 1, 32, 64 and 96."),
    ("fig8_phi_w0", "Figure 8: φ between W0's and ΔW's directions", (an.PHI_W0,),
     lambda t: plotting.phi_w0_figure(t[an.PHI_W0]),
     "Paper: the top 4 directions of ΔWq and the top 10% of Wq's barely exceed φ = 0.2; larger r "
     "picks up more of W's directions."),
    ("figH4_amplification", "Appendix H.4: amplification factor against r", (an.AMPLIFICATION,),
     lambda t: plotting_curves.amplification_figure(t[an.AMPLIFICATION]),
     "Paper (GPT-3 ΔWq, layer 48): 21.5 at r = 4 (\"as large as 20\"), about 2 at r = 64 (3.57/1.90)."),
    ("fig_spectrum", "Spectrum of ΔW, energy and rank", (an.SPECTRUM, an.SPECTRUM_METRICS),
     lambda t: plotting_curves.spectrum_figure(t[an.SPECTRUM], t[an.SPECTRUM_METRICS]),
     "Biderman et al. 2024: full fine-tuning's ΔW needs 10–100× the rank of typical LoRA for 90% energy."),
    ("fig_intruders", "Intruder dimensions against ε", (an.INTRUDERS,),
     lambda t: plotting_curves.intruders_figure(t[an.INTRUDERS]),
     "Shuttleworth et al. 2024: LoRA creates high-ranking intruder dimensions; full fine-tuning few."),
    ("fig_eckart_young", "Eckart–Young curve of full fine-tuning's ΔW", (an.ECKART_YOUNG,),
     lambda t: plotting_curves.eckart_young_figure(t[an.ECKART_YOUNG]), ""),
]

# The paper's numbers for the tables that have them (paper.md §1.1, §1.2, §1.5).
PAPER_TABLES = {
    "table5_budget": pd.DataFrame(
        {"weight type": ["Wq", "Wk", "Wv", "Wo", "Wq,Wk", "Wq,Wv", "Wq,Wk,Wv,Wo"], "r": [8, 8, 8, 8, 4, 4, 2],
         "WikiSQL": [70.4, 70.0, 73.0, 73.2, 71.4, 73.7, 73.7], "MultiNLI": [91.0, 90.8, 91.0, 91.3, 91.3, 91.3, 91.7]}),
    "table6_rank_by_target": pd.DataFrame(
        {"dataset": ["WikiSQL"] * 3 + ["MultiNLI"] * 3, "weight type": ["Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"] * 2,
         "r=1": [68.8, 73.4, 74.1, 90.7, 91.3, 91.2], "r=2": [69.6, 73.3, 73.7, 90.9, 91.4, 91.7],
         "r=4": [70.5, 73.7, 74.0, 91.1, 91.3, 91.7], "r=8": [70.4, 73.8, 74.0, 90.7, 91.6, 91.5],
         "r=64": [70.0, 73.5, 73.9, 90.7, 91.4, 91.4]}),
    "table7_projections": pd.DataFrame(
        {"GPT-3 L48 Wq": ["‖UᵀWqVᵀ‖_F, U,V of ΔWq", "‖UᵀWqVᵀ‖_F, U,V of Wq", "‖UᵀWqVᵀ‖_F, random",
                          "‖Wq‖_F", "‖ΔWq‖_F", "amplification"],
         "r=4": [0.32, 21.67, 0.02, 61.95, 6.91, 21.5], "r=64": [1.90, 37.71, 0.33, 61.95, 3.57, 1.88]}),
}


def _ensure_tables(sweep: Path, base_model: str | None, echo) -> None:
    missing = [name for name in an.TABLES if not an.table_path(sweep, name).exists()]
    if missing:
        from lowrank_lab.analysis.sweep import analyze_sweep

        echo(f"computing the analysis tables ({', '.join(missing)} missing) …")
        analyze_sweep(sweep, base_model=base_model, echo=echo)


def render_figures(sweep: Path, out_dir: Path) -> list[tuple[str, str, str | None, str]]:
    """Draw every figure into out_dir; (name, title, skip reason or None, paper note) each."""
    cache: dict[str, pd.DataFrame] = {}
    done = []
    for name, title, needs, draw, paper in FIGURES:
        try:
            for table in needs:
                cache.setdefault(table, an.read_table(sweep, table))
            plotting.save_figure(draw(cache), name, out_dir)
            done.append((name, title, None, paper))
        except (plotting.MissingData, FileNotFoundError) as err:
            done.append((name, title, str(err), paper))
    return done


def _conventions(sweep: Path) -> list[str]:
    side = an.read_sidecar(sweep, an.PHI) if an.table_path(sweep, an.PHI).exists() else {}
    lines = [f"**{key}**: {value}" for key, value in an.CONVENTIONS.items() if key != "sides"]
    lines += [f"**side {key}**: {value}" for key, value in an.CONVENTIONS["sides"].items()]
    if side:
        lines.append(f"**φ computed for sides**: {', '.join(side['options']['sides'])}; base model "
                     f"{side['options']['base_model']}; provenance git {side['provenance'].get('git_commit')}")
    return lines


def write_report(sweep: Path, base_model: str | None = None, echo=print) -> tuple[Path, Path]:
    """Write <analysis>/report/report.md and report.html (figures as PNG/PDF beside them)."""
    sweep = Path(sweep)
    _ensure_tables(sweep, base_model, echo)
    out = runs.analysis_dir(sweep) / "report"
    figures = render_figures(sweep, out)
    ours = tables.sweep_tables(sweep)
    tables.write_tables(sweep, ours)
    spec = files.read_json(sweep / "spec.json")
    md = [f"# lowrank-lab report: {sweep.name}", "",
          f"Model `{spec['model']['name']}`, task `{spec['data']['task']}`; sweep axes: r = {spec['sweep']['r']}, "
          f"seeds = {spec['sweep']['seeds']}, targets = {spec['sweep']['targets']}, "
          f"baselines = {spec['sweep']['baselines']}. Paper: Hu et al. 2021 (arXiv:2106.09685).", "",
          "## Conventions", "", *[f"- {line}" for line in _conventions(sweep)], "", "## Figures", ""]
    for name, title, skipped, paper in figures:
        md += [f"### {title}", ""]
        if skipped:
            md += [f"_Skipped: {skipped}_", ""]
        else:
            md += [f"![{title}]({name}.png)", ""]
        if paper:
            md += [f"> {paper}", ""]
    md += ["## Tables", ""]
    for name, table in ours.items():
        md += [f"### {name}", "", "Ours:", "", tables.to_markdown(table)]
        if name in PAPER_TABLES:
            md += ["Paper (GPT-3 175B):", "", tables.to_markdown(PAPER_TABLES[name].set_index(PAPER_TABLES[name].columns[0]))]
    md_text = "\n".join(md)
    html = _html(md_text)
    md_path, html_path = out / "report.md", out / "report.html"
    files.write_text(md_path, md_text)
    files.write_text(html_path, html)
    return md_path, html_path


def _html(md_text: str) -> str:
    """A small Markdown subset (headings, lists, quotes, images, tables, paragraphs) as HTML."""
    body, table_rows = [], []

    def flush_table() -> None:
        if table_rows:
            head, *rows = table_rows
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
            table_rows.clear()

    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table_rows.append(cells)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, _, src = line[2:].partition("](")
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}"></p>')
        elif line.startswith("- "):
            body.append(f"<ul><li>{html.escape(line[2:]).replace('**', '')}</li></ul>")
        elif line.startswith("> "):
            body.append(f"<blockquote>{html.escape(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{html.escape(line.strip('_'))}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "img{max-width:100%}table{border-collapse:collapse;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "blockquote{color:#555;border-left:3px solid #ccc;margin:0.5em 0;padding-left:1em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>lowrank-lab report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
