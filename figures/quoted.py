"""Quoted numbers: every number a document's prose quotes is written as a reference that names
where it comes from, and is rendered from that data:

    LoRA reaches <!--=t2("SST-2 accuracy", "LoRA q,v r=8")-->85.1 ± 0.3<!--/--> on SST-2

renders (on GitHub, which hides the comments) as "LoRA reaches 85.1 ± 0.3 on SST-2". The text
between ``<!--=`` and ``-->`` is an expression over the functions its document is checked with
(figures/check_results.py: the committed tables, sidecars, specs, timing files and the paper's
quoted numbers); the text up to ``<!--/-->`` is its rendered value. ``render`` puts every value
in; ``stale`` names the references whose written value differs from the data; ``typed_numbers``
finds the numbers written by hand, outside references, code and the kinds of token that are
names rather than quantities (``NOT_NUMBERS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

REFERENCE = re.compile(r"<!--=(?P<expr>.*?)-->(?P<value>.*?)<!--/-->", re.S)
SAFE_BUILTINS = {"abs": abs, "float": float, "int": int, "len": len, "max": max, "min": min, "round": round,
                 "sorted": sorted, "sum": sum, "str": str, "range": range, "zip": zip, "all": all, "any": any}


@dataclass(frozen=True)
class Stale:
    line: int
    expr: str
    written: str
    computed: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.expr} is {self.computed!r}, the text says {self.written!r}"


def evaluate(expr: str, namespace: Mapping[str, Callable]) -> str:
    """The rendered value of one reference: its expression, evaluated over `namespace` only."""
    # one dict of globals, so that comprehensions inside the expression see the functions too
    value = eval(expr, {**namespace, "__builtins__": SAFE_BUILTINS})  # noqa: S307 (our own documents)
    if not isinstance(value, str):
        raise TypeError(f"{expr}: gives {type(value).__name__}, not the text to print (format it)")
    return value


def references(text: str) -> Iterator[tuple[int, re.Match]]:
    for match in REFERENCE.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match


def render(text: str, namespace: Mapping[str, Callable]) -> str:
    """`text` with every reference's value computed afresh."""
    def one(match: re.Match) -> str:
        try:
            value = evaluate(match["expr"], namespace)
        except Exception as err:  # one line naming the reference, not a traceback
            line = text.count("\n", 0, match.start()) + 1
            raise ValueError(f"line {line}: <!--={match['expr']}-->: {type(err).__name__}: {err}") from None
        return f"<!--={match['expr']}-->{value}<!--/-->"
    return REFERENCE.sub(one, text)


def stale(text: str, namespace: Mapping[str, Callable]) -> list[Stale]:
    """The references whose written value is not what their expression gives."""
    out = []
    for line, match in references(text):
        try:
            computed = evaluate(match["expr"], namespace)
        except Exception as err:
            computed = f"<{type(err).__name__}: {err}>"
        if computed != match["value"]:
            out.append(Stale(line, match["expr"], match["value"], computed))
    return out


# Tokens with digits that name something rather than quantify it. Anything else with a digit in a
# document's prose must be a reference.
NOT_NUMBERS = [
    r"arXiv:\d+\.\d+",                                         # an arXiv id
    r"\b\d{4}-\d\d-\d\d\b",                                    # a date
    r"\b(?:19|20)\d\d\b",                                      # a year
    # a table, figure, section, equation or issue of the paper or of this project
    r"(?:Tables?|Figs?\.|Figures?|§|Sections?|Secs?\.|App\.|Appendix|Eq\.|issue|footnote)\s*"
    r"[A-H]?\d+(?:\.\d+)*(?:(?:,\s*|\s+and\s+|\s*[–/]\s*)[A-H]?\d+(?:\.\d+)*)*",
    r"[^\W\d][\w]*(?:[-.][\w]+)*",                            # a word that holds digits: SST-2, L6-v2, Q4_1, fp16
    r"[ⁱʲ⁰¹²³⁴⁵⁶⁷⁸⁹]+",                                         # exponents of a space's dimension (ℝ³⁸⁴)
]
_NOT_NUMBER = re.compile("|".join(f"(?:{p})" for p in NOT_NUMBERS))
_DIGIT = re.compile(r"\d")
_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
_INDENTED = re.compile(r"(?:(?<=\n\n)|^)(?:(?: {4}|\t)[^\n]*\n?)+", re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)")


def prose(text: str, skip: tuple[tuple[str, str], ...] = ()) -> str:
    """`text` with code (fenced, indented, inline), references, comments, link targets and the
    regions between each (begin, end) marker pair of `skip` blanked, keeping line numbers."""
    def blank(match: re.Match) -> str:
        return re.sub(r"[^\n]", " ", match.group(0))
    for begin, end in skip:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), blank, text, flags=re.S)
    for pattern in (_FENCE, REFERENCE, _COMMENT, _CODE_SPAN, _LINK_TARGET):
        text = pattern.sub(blank, text)
    return _INDENTED.sub(blank, text)


_LABEL = re.compile(r"(?<![\w])(?P<symbol>[^\W\d]\w*)\s*(?:=|≤|≥|<|>)\s*(?P<value>\d+(?:\.\d+)?)(?![\d.,]*\d)")


def typed_numbers(text: str, skip: tuple[tuple[str, str], ...] = (),
                  labels: Mapping[str, set[str]] | None = None) -> list[tuple[int, str]]:
    """(line, the line's text) of every line of prose that holds a number written by hand. A
    label of a grid point ("r = 8", "ε = 0.5") is a name, not a quantity, when `labels` holds its
    value for that symbol (the values the committed grids have); any other is a typed number."""
    labels = labels or {}

    def label(match: re.Match) -> str:
        return " " if match["value"] in labels.get(match["symbol"], ()) else match.group(0)
    out = []
    for number, line in enumerate(prose(text, skip).splitlines(), 1):
        rest = _NOT_NUMBER.sub(" ", _LABEL.sub(label, line))
        if _DIGIT.search(rest):
            out.append((number, line.strip()))
    return out
