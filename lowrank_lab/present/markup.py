"""The Markdown the report writes, as self-contained HTML: headings, paragraphs, bullet lists,
block quotes, images (at one scale: their widths are given), pipe tables, **bold**, *italic* and
`code`. Only this subset is emitted by ``present.report``, so no Markdown package is needed; no
Markdown syntax survives into the HTML. No file is opened here.
"""

from __future__ import annotations

import html
import re

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;"
         "color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"
         "h3{margin-top:1.4em}img{display:block;margin:.5em 0}figure{margin:0}"
         "table{border-collapse:collapse;margin:.5em 0;font-size:.92em}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}"
         "td:first-child,th:first-child{text-align:left}code{background:#f4f4f4;padding:0 .2em}"
         ".caption{color:#333;font-size:.95em}.skip{color:#8a4b00}"
         "blockquote{color:#555;border-left:3px solid #ccc;margin:.5em 0;padding-left:1em}")


def inline(text: str) -> str:
    """Escape, then **bold**, *italic* and `code` (code spans are not formatted further)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        out.append(part)
    return "".join(out)


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    cells = "".join(f"<th>{inline(c)}</th>" for c in head)
    lines = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>"


def _image(line: str, widths: dict[str, int]) -> str:
    alt, _, src = line[2:].partition("](")
    src = src.rstrip(")")
    width = f' width="{widths[src]}"' if src in widths else ""
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}"{width}></figure>'


def _block(kind: str, lines: list[str], widths: dict[str, int]) -> str:
    if kind == "table":
        return _table([[c.strip() for c in line.strip().strip("|").split("|")] for line in lines
                       if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip())])
    if kind == "list":
        return "<ul>" + "".join(f"<li>{inline(line[2:])}</li>" for line in lines) + "</ul>"
    if kind == "quote":
        return "<blockquote>" + " ".join(inline(line[2:]) for line in lines) + "</blockquote>"
    if kind == "image":
        return "".join(_image(line, widths) for line in lines)
    if kind.startswith("h"):
        level = int(kind[1])
        return f"<h{level}>{inline(lines[0][level:].strip())}</h{level}>"
    css = ' class="skip"' if lines[0].startswith("*Skipped") else ""
    return f"<p{css}>" + " ".join(inline(line) for line in lines) + "</p>"


def _kind(line: str) -> str:
    if line.startswith("|"):
        return "table"
    if line.startswith("- "):
        return "list"
    if line.startswith("> "):
        return "quote"
    if line.startswith("!["):
        return "image"
    if re.match(r"#{1,6} ", line):
        return f"h{len(line) - len(line.lstrip('#'))}"
    return "p"


def to_html(markdown: str, title: str, widths: dict[str, int] | None = None) -> str:
    """The whole page; `widths` {image src: CSS pixels} puts every figure at one scale."""
    widths = widths or {}
    blocks, kind, lines = [], None, []
    for line in markdown.splitlines() + [""]:
        k = _kind(line) if line.strip() else None
        if lines and (k != kind or kind.startswith("h") or kind == "image"):
            blocks.append(_block(kind, lines, widths))
            lines = []
        if k:
            kind = k
            lines.append(line)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(blocks) + "\n</body></html>\n")
