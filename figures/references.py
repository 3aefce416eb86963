"""What the prose of figures/RESULTS.md, benchmarks/RESULTS.md and README.md may quote: the
functions their references (figures/quoted.py) are evaluated with. Each reads a committed file: an
exported table (figures/results/*/data/), a committed CSV table, a sweep's resolved spec (from a
sidecar or spec.json), a timing file, the paper's numbers (figures/paper.toml and the registry's
paper tables) or a table printed by a benchmark into benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import re
import tomllib
from functools import cache
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent  # figures/
REPO = ROOT.parent
RESULTS = ROOT / "results"


def num(text: str) -> float:
    """The first number in a rendered value ("57.8 ± 2.5" → 57.8, "1,369" → 1369, "42.3×" → 42.3)."""
    match = re.search(r"[−-]?\d[\d,]*(?:\.\d+)?(?:e[−-]?\d+)?", str(text))
    if match is None:
        raise ValueError(f"{text!r}: no number")
    return float(match.group(0).replace(",", "").replace("−", "-"))


def span(values, sep: str = "–") -> str:
    """The smallest and the largest of rendered values, as written ("0.17–0.62"); one when equal."""
    values = list(values)
    low, high = min(values, key=num), max(values, key=num)
    return low if num(low) == num(high) else f"{low}{sep}{high}"


def f(value: float, spec: str = ".1f") -> str:
    """`value` formatted (".1f", ",d", ".0%", …); thousands separated by commas."""
    return format(int(value) if spec.endswith("d") else value, spec)


def diff(a: str, b: str, spec: str = ".1f") -> str:
    return f(num(a) - num(b), spec)


def ratio(a: str, b: str, spec: str = ".1f") -> str:
    return f(num(a) / num(b), spec)


def part(value: str, i: int, sep: str = " / ") -> str:
    """The i-th of a value's parts ("89.6 / 0.108" → "89.6", "0.108")."""
    return value.split(sep)[i]


def lr(value: float) -> str:
    """A learning rate as the specs write it: 5e-4, 2e-5, 1e-3."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e-{int(exponent[1:])}" if exponent.startswith("-") else f"{value:g}"


def show(value) -> str:
    """A spec value as the text writes it: integers with commas, lists as "1, 2, 4", rates as 5e-4."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return lr(value) if value < 0.05 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value)
    return str(value)


@cache
def resolved_spec(folder: str) -> dict:
    """The resolved spec a committed result folder was made with (its results sidecar, else spec.json)."""
    side = RESULTS / folder / "data" / "results.json"
    if side.exists():
        return json.loads(side.read_text())["sweep_spec"]
    return json.loads((RESULTS / folder / "spec.json").read_text())


def setup(folder: str, key: str) -> str:
    """One value of a committed sweep's resolved spec ("train.lr", "sweep.r"), as the text writes it."""
    value = resolved_spec(folder)
    for part_ in key.split("."):
        value = value[part_]
    return show(value)


def cap(folder: str, key: str) -> str:
    """A cap on examples from a committed sweep's spec: the number, or "all" when unset."""
    value = raw_setup(folder, key)
    return "all" if value is None else show(value)


def trained_with(folder: str, key: str) -> str:
    """A key of the provenance a committed sweep was trained with ("torch", "device_name")."""
    spec = resolved_spec(folder)
    return str(spec["provenance"][key])


def raw_setup_cells(folder: str) -> list[str]:
    """The finished cells of a committed sweep (its results sidecar)."""
    return json.loads((RESULTS / folder / "data" / "results.json").read_text())["cells"]


def csv_column(path: str, column: str) -> list[str]:
    return committed_csv(path)[column].tolist()


def raw_setup(folder: str, key: str):
    value = resolved_spec(folder)
    for part_ in key.split("."):
        value = value[part_]
    return value


@cache
def paper_numbers() -> dict:
    return tomllib.loads((ROOT / "paper.toml").read_text())


def paper(key: str, spec: str | None = None) -> str:
    """A number the paper states (figures/paper.toml), as written there or formatted by `spec`."""
    value = paper_numbers()
    for part_ in key.split("."):
        value = value[part_]
    if spec is not None:
        return f(value, spec)
    return f"{value:,}" if isinstance(value, int) else str(value)


def paper_table(entry: str, row, column: str) -> str:
    """A cell of the paper's table that the registry draws beside ours (Tables 2, 5, 6)."""
    from lowrank_lab.present import registry

    table = next(e for e in registry.ENTRIES if e.name == entry).paper_table
    value = table.loc[row, column]
    return str(value) if isinstance(value, str) else f"{value:.1f}"


@cache
def committed_csv(path: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / path, dtype=str, keep_default_na=False)


def csv_cell(path: str, row: str, column: str, key: str | None = None) -> str:
    """A cell of a committed CSV table under figures/results/ (the row whose `key` column, by
    default the first, is `row`), as written."""
    table = committed_csv(path)
    key = key or table.columns[0]
    rows = table[table[key] == row]
    if len(rows) != 1:
        raise KeyError(f"{path}: {len(rows)} rows with {key} = {row!r}")
    return rows.iloc[0][column]


def timing(path: str, label: str) -> str:
    """Seconds from a committed timing file's line "LABEL ... at N s" (figures/results/…)."""
    for line in (RESULTS / path).read_text().splitlines():
        match = re.match(rf"{re.escape(label)}\b.* at (\d+) s$", line)
        if match:
            return f"{int(match.group(1)):,}"
    raise KeyError(f"{path}: no line {label!r} … at N s")


# ---------------------------------------------------------------------------------------------
# Tables that a benchmark printed, pasted into benchmarks/RESULTS.md as its output


def markdown_tables(text: str) -> list[tuple[int, list[str], list[list[str]]]]:
    """(offset, header, rows) of every Markdown table of `text` (in code blocks too)."""
    out, lines, offset = [], text.splitlines(keepends=True), 0
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            start, rows = offset, []
            offset += len(lines[i]) + len(lines[i + 1])
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                offset += len(lines[i])
                i += 1
            out.append((start, header, rows))
            continue
        offset += len(lines[i])
        i += 1
    return out


def printed(text: str, after: str, row: str | tuple[str, ...], column: str) -> str:
    """The cell in column `column` of the row whose cells include every one of `row`, in the first
    table of `text` after the first occurrence of `after`."""
    at = text.index(after)
    keys = (row,) if isinstance(row, str) else tuple(row)
    for start, header, rows in markdown_tables(text):
        if start < at:
            continue
        if column not in header:
            raise KeyError(f"table after {after!r}: no column {column!r} (it has {header})")
        found = [r for r in rows if all(k in r for k in keys)]
        if len(found) != 1:
            raise KeyError(f"table after {after!r}: {len(found)} rows with {keys}")
        return found[0][header.index(column)]
    raise KeyError(f"no table after {after!r}")
