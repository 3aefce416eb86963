"""Figures, display tables and report files on disk: where they go and in which formats; every
write atomic (``files``). No torch, so that the figure scripts read a CSV and save a PNG without it.

    <sweep>/analysis/figures/<name>.png, .pdf     one figure script each (figures/*.py)
    <sweep>/analysis/tables/<name>.md, .tex, .csv  ``lowrank-lab tables``
    <sweep>/analysis/report/report.md, report.html and the figures and tables they show
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from lowrank_lab.store import files
from lowrank_lab.store.layout import analysis_dir

FIGURE_FORMATS = ("png", "pdf")
TABLE_FORMATS = ("md", "tex", "csv")
DPI = 150  # every PNG at one resolution, so that the report shows every figure at one scale
REPORT_MD, REPORT_HTML = "report.md", "report.html"


def figures_dir(sweep: Path) -> Path:
    return analysis_dir(Path(sweep)) / "figures"


def tables_dir(sweep: Path) -> Path:
    return analysis_dir(Path(sweep)) / "tables"


def report_dir(sweep: Path) -> Path:
    return analysis_dir(Path(sweep)) / "report"


def figure_bytes(fig) -> dict[str, bytes]:
    """A matplotlib Figure as {"png": …, "pdf": …} (PNG at 150 dpi, tight box), the figure closed."""
    import matplotlib.pyplot as plt

    out = {}
    try:
        for fmt in FIGURE_FORMATS:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight")
            out[fmt] = buffer.getvalue()
    finally:
        plt.close(fig)
    return out


def write_outputs(out_dir: str | Path, contents: dict[str, bytes | str]) -> list[Path]:
    """Write {file name: bytes or text} into out_dir, each file atomically; the paths. Callers
    render everything first and call this last, so that a failure writes nothing."""
    paths = []
    for name, data in contents.items():
        paths.append(Path(out_dir) / name)
        raw = data.encode() if isinstance(data, str) else data
        files.atomic_write(paths[-1], lambda f, raw=raw: f.write(raw))
    return paths


def table_files(texts: dict[str, str], name: str) -> dict[str, str]:
    """{<name>.<fmt>: text} for each {fmt: text} (``present.tables.render`` makes the text)."""
    for fmt in texts:
        if fmt not in TABLE_FORMATS:
            raise ValueError(f"table format {fmt!r}: use one of {', '.join(TABLE_FORMATS)}")
    return {f"{name}.{fmt}": text for fmt, text in texts.items()}


def figure_file(name: str, fmt: str = "png") -> str:
    """The file name a figure is saved under, as the report links it."""
    return f"{name}.{fmt}"


def png_width(png: bytes) -> int:
    """Width in pixels of a PNG, from its IHDR chunk (bytes 16–20)."""
    return struct.unpack(">I", png[16:20])[0]


def png_widths(contents: dict[str, bytes | str]) -> dict[str, int]:
    """{file name: pixel width} of the PNGs among `contents`."""
    return {name: png_width(data) for name, data in contents.items() if name.endswith(".png")}


def report_files(markdown: str, html: str) -> dict[str, str]:
    """The report's two files, for ``write_outputs``."""
    return {REPORT_MD: markdown, REPORT_HTML: html}
