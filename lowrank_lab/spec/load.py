"""Specs from TOML files, ``--set`` overrides and saved dicts; the resolved spec as plain data."""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from lowrank_lab.spec.cells import CellSpec
from lowrank_lab.spec.sections import SECTIONS, ExperimentSpec, SpecError, swept_fields, swept_message


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Check `value` against a field's annotation (as written in ``spec.sections``) and convert it."""
    ann = annotation.replace(" ", "")
    optional = ann.endswith("|None")
    base = ann.removesuffix("|None")
    if value is None:
        if optional:
            return None
        raise SpecError(f"{where}: may not be null")
    if base.startswith("tuple["):
        item = base[len("tuple["):-1].split(",")[0]
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where}={value!r}: expected a list")
        return tuple(_coerce(v, item, f"{where}[{n}]") for n, v in enumerate(value))
    types = {"int": int, "float": (int, float), "str": str, "bool": bool}
    expected = types[base]
    if isinstance(value, bool) and base != "bool" or not isinstance(value, expected):
        raise SpecError(f"{where}={value!r}: expected {base}")
    return float(value) if base == "float" else value


def _did_you_mean(word: str, candidates: dict[str, str]) -> str:
    """"; did you mean X?" for the candidate closest to `word` (difflib), or ""; values are what to suggest."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {candidates[close[0]]}?" if close else ""


def _build_section(name: str, table: Any, cell: bool) -> Any:
    """One section from {key: value}; swept keys are refused unless the section belongs to a cell."""
    if not isinstance(table, dict):
        raise SpecError(f"[{name}] must be a table of key = value")
    known = {f.name: f for f in fields(SECTIONS[name])}
    for key in table:
        if key not in known:  # a swept key suggests its sweep axis
            keys = {f"{n}.{f.name}": f.metadata.get("swept", f"{n}.{f.name}") for n, c in SECTIONS.items()
                    for f in fields(c)}
            raise SpecError(f"unknown key {name}.{key}{_did_you_mean(f'{name}.{key}', keys)}")
        if not cell and "swept" in known[key].metadata:
            raise SpecError(swept_message(name, key, known[key].metadata["swept"]))
    return SECTIONS[name](**{k: _coerce(v, known[k].type, f"{name}.{k}") for k, v in table.items()})


def _build(values: Any, names: tuple[str, ...], cell: bool) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise SpecError("a spec must be a table of [section]s")
    for name in values:
        if name not in names:
            hint = _did_you_mean(name, {n: f"[{n}]" for n in names})
            raise SpecError(f"unknown section [{name}] (known: {', '.join(names)}){hint}")
    return {name: _build_section(name, values.get(name, {}), cell) for name in names}


def build_spec(values: dict[str, Any], source: str | None = None) -> ExperimentSpec:
    """Build a validated spec from nested {section: {key: value}}; unknown and swept keys are errors.

    ``source`` (a file name, a ``--set``) starts every error message when given."""
    try:
        return ExperimentSpec(**_build(values, tuple(SECTIONS), cell=False))
    except SpecError as err:
        raise SpecError(f"{source}: {err}" if source else str(err)) from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is TOML (``8``, ``[1, 2]``, ``"q,v"``) or a bare string."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise SpecError(f"--set {text!r}: expected section.key=value, e.g. sweep.r=[8,64]")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if raw.strip()[:1] in ("[", "{", '"', "'"):
            # `--set sweep.r=[1, 8]` unquoted reaches us as "sweep.r=[1," and a stray "8]".
            raise SpecError(f"--set {text!r}: {raw.strip()!r} is not a complete value; if the shell split it at a "
                            f"space, quote the whole value (--set '{key.strip()}=[1, 8]') or drop the spaces") from None
        value = raw.strip()  # a bare word such as q,v or cuda
    return parts[0], parts[1], value


def spec_to_dict(spec: ExperimentSpec | CellSpec) -> dict[str, Any]:
    """The fully resolved spec as plain JSON-ready data (tuples become lists).

    An ExperimentSpec leaves out the swept fields: its cells set them from the sweep axes."""
    values = json.loads(json.dumps(dataclasses.asdict(spec)))
    if isinstance(spec, ExperimentSpec):
        for section, key, _ in swept_fields():
            del values[section][key]
    return values


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys (``train.lr``) whose values differ between two nested dicts, sorted.

    A key present in only one of them has changed; dicts are compared key by key, anything else
    (lists included) as a whole."""
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, where = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, f"{where}.")
        elif key not in old or key not in new or a != b:
            changed.append(where)
    return changed


def _read_spec_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise SpecError(f"{path}: no such spec file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec file ({err.strerror})") from None


def load_spec(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> ExperimentSpec:
    """Read a TOML spec file (or none: all defaults), apply ``--set`` overrides, validate.

    An error names the file, or the first ``--set`` whose addition makes the spec invalid."""
    parsed = [(text, *parse_override(text)) for text in overrides]  # syntax first: before any file is read
    values = {} if path is None else _read_spec_file(Path(path))
    source = None if path is None else str(path)
    steps = [(source, values)]
    for text, section, key, value in parsed:
        if not isinstance(values.get(section, {}), dict):
            raise SpecError(f"--set {text!r}: [{section}] is not a table")
        values = {**values, section: {**values.get(section, {}), key: value}}
        steps.append((f"--set {text!r}", values))
    try:
        return build_spec(values)
    except SpecError:
        for where, partial in steps:
            build_spec(partial, where)  # raises at the first step that is invalid
        raise


def cell_from_dict(values: dict[str, Any], source: str = "cell spec") -> CellSpec:
    """Rebuild a CellSpec from the dict ``spec_to_dict`` made of it; ``source`` names it in errors."""
    try:
        named = values.get("named", [])
        if not isinstance(named, list) or any(axis not in ("lr", "alpha") for axis in named):
            raise SpecError(f"named={named!r}: a list of the axes 'lr', 'alpha'")
        sections = _build({k: v for k, v in values.items() if k in ("model", "data", "lora", "train")},
                          ("model", "data", "lora", "train"), cell=True)
        return CellSpec(**sections, named=tuple(named))
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
