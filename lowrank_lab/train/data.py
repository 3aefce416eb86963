"""Tasks: labelled sentences (or sentence pairs) split into train and dev, with provenance and metrics.

``load_task(spec)`` turns a ``DataSpec`` into a ``Task`` of frozen ``Example``s; tokenisation and
batching belong to training. Sources (``spec.task``):

- ``vader`` (the embedded default) = ``vader-movies``; also ``vader-tweets``, ``vader-amazon``,
  ``vader-nyt``: the VADER sentence-level ground truth (Hutto & Gilbert 2014, MIT), fetched once
  from the ``vaderSentiment==3.3.2`` sdist into ``$LOWRANK_LAB_CACHE/vader`` (default
  ``~/.cache/lowrank-lab/vader``), or read from ``spec.path`` (a folder holding the
  ``*_GroundTruth.txt`` files); checked against pinned sha256s on every load. Binary sentiment:
  mean rating > 0.5 is positive (1), < -0.5 negative (0), the rest is dropped.
- ``glue:<TASK>`` (SST-2, MRPC, RTE, CoLA, STS-B, QNLI, MNLI, QQP): GLUE's own TSVs in
  ``spec.path/<TASK>/{train,dev}.tsv`` (MNLI: ``dev_matched.tsv``), else the Hugging Face hub.
- ``file``: a CSV, TSV or JSONL file, or a folder with ``train.*`` and ``dev.*`` (or
  ``validation.*``, ``test.*``), with the columns named in the spec.

Splits and caps are deterministic and independent of library versions: every row has a key (the
VADER id, else its 1-based row number) and is ranked by sha256(key). A source without a dev set
gives its lowest-ranked 20% to dev; ``max_train`` / ``max_eval`` keep the lowest-ranked N of a
split. Examples stay in source order. ``Task.source`` records files, checksums, counts, caps and
the label → id map of string labels.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd

from lowrank_lab.spec import DataSpec, SpecError

DEV_FRACTION = 0.2


class DataError(ValueError):
    """Data that cannot be read or used; the one-line message names the file, column or row."""


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    # Class id (0 … num_labels-1), or a float target when num_labels == 1 (regression).
    label: int | float


@dataclass(frozen=True)
class Task:
    name: str  # canonical, e.g. "vader", "glue:SST-2", "file"
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    num_labels: int  # 1 means regression
    metrics: tuple[str, ...]  # keys of METRICS, reported on dev
    main_metric: str  # the best evaluation is chosen by this one (always metrics[0])
    source: dict  # provenance, JSON-ready: files and sha256, hub id, split rule, counts, caps, labels


class _Row(NamedTuple):
    where: str  # the file (or hub split) it came from, for error messages
    row: int  # 1-based, header not counted
    key: str  # ranked by sha256 for splits and caps
    text: str
    pair: str | None
    label: str  # raw, as read; encoded once the label scheme of the whole task is known


# ---------------------------------------------------------------------------------------------
# Reading tables: every source becomes a DataFrame of strings, then validated rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_table(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a .csv, .tsv/.txt (tab-separated) or .jsonl file as a table of strings (empty cells: "").

    ``columns`` names the columns of a CSV/TSV without a header line. JSONL has one object per line.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix not in (".csv", ".tsv", ".txt", ".jsonl"):
        raise DataError(f"{path}: unknown format; use .csv, .tsv or .jsonl")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(records[-1], dict):
                raise DataError(f"{path} line {number}: expected a JSON object, got {type(records[-1]).__name__}")
        return pd.DataFrame.from_records(records)
    # GLUE and VADER TSVs contain unbalanced literal quotes, so TSVs are read without quoting;
    # CSVs need quoting for commas inside fields. MRPC's header starts with a BOM: utf-8-sig drops
    # it explicitly (pandas' C parser happens to skip it too).
    sep, quoting = (",", csv.QUOTE_MINIMAL) if path.suffix == ".csv" else ("\t", csv.QUOTE_NONE)
    try:
        return pd.read_csv(path, sep=sep, quoting=quoting, dtype=str, na_filter=False, encoding="utf-8-sig",
                           header=None if columns else "infer", names=columns)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot parse ({str(err).strip()})") from None


def _cell(value: Any) -> str | None:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return None if missing else str(value)


def _rows(frame: pd.DataFrame, where: str, text: str, pair: str | None, label: str,
          keys: list[str] | None = None) -> list[_Row]:
    """Validate a table and pick its columns; every problem is a DataError naming ``where``."""
    if frame.empty:
        raise DataError(f"{where}: no rows")
    wanted = [c for c in (text, pair, label) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: no column {', '.join(map(repr, missing))}; columns present: {list(frame.columns)}")
    rows = []
    for n, values in enumerate(zip(*(frame[c] for c in wanted)), 1):
        cells = dict(zip(wanted, map(_cell, values)))
        for column in (text, pair):
            if column is not None and not (cells[column] or "").strip():
                raise DataError(f"{where} row {n}: empty text in column {column!r}")
        if not (cells[label] or "").strip():
            raise DataError(f"{where} row {n}: missing label in column {label!r}")
        key = str(n) if keys is None else keys[n - 1]
        rows.append(_Row(where, n, key, cells[text], cells[pair] if pair else None, cells[label].strip()))
    return rows


# ---------------------------------------------------------------------------------------------
# Labels, splits and caps: the same for every source


def _label_scheme(raw: list[str], names: tuple[str, ...] | None, regression: bool,
                  where: str) -> tuple[Callable[[str], int | float], dict[str, int] | None, int]:
    """How raw label strings become targets: ``(encode, name → id map or None, num_labels)``.

    ``names`` fixes the classes in id order; otherwise labels are inferred from all rows of the
    task: numbers with a fractional part → regression (float); integers ≥ 0 → class ids as they
    are; anything else (strings, negative integers) → ids in sorted order, recorded in the map.
    """
    if regression:
        return float, None, 1
    if names is None:
        try:
            numbers = [float(v) for v in raw]
        except ValueError:
            numbers = None
        if numbers is not None and all(map(math.isfinite, numbers)):
            if not all(x.is_integer() for x in numbers):
                return float, None, 1
            ids = sorted({int(x) for x in numbers})
            if ids[0] >= 0:
                return (lambda v: int(float(v))), None, max(ids[-1] + 1, 2)
            order = {i: n for n, i in enumerate(ids)}
            return (lambda v: order[int(float(v))]), {str(i): n for i, n in order.items()}, len(ids)
        names = tuple(sorted(set(raw)))
        if len(names) < 2:
            raise DataError(f"{where}: every label is {names[0]!r}; a classification task needs two or more")
    index = {name: i for i, name in enumerate(names)}
    return index.__getitem__, index, len(names)


def _example(r: _Row, encode: Callable[[str], int | float]) -> Example:
    try:
        return Example(r.text, r.pair, encode(r.label))
    except (KeyError, ValueError):
        raise DataError(f"{r.where} row {r.row}: label {r.label!r} is not one of this task's labels") from None


def _lowest_ranked(keys: list[str], n: int | None) -> list[int]:
    """Indices of the ``n`` keys with the smallest sha256 (all when ``n`` is None), in input order."""
    if n is None or n >= len(keys):
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
    return sorted(ranked[:n])


def _assemble(name: str, train: list[_Row], dev: list[_Row] | None, spec: DataSpec, source: dict,
              names: tuple[str, ...] | None = None, regression: bool = False,
              metrics: tuple[str, ...] | None = None) -> Task:
    """The common tail: split off dev if there is none, encode labels, apply caps, record counts."""
    if dev is None:
        if len(train) < 2:
            raise DataError(f"{train[0].where}: one row; need two or more to split off a dev set")
        picked = set(_lowest_ranked([r.key for r in train], max(1, round(DEV_FRACTION * len(train)))))
        train, dev = [r for i, r in enumerate(train) if i not in picked], [train[i] for i in sorted(picked)]
        source["split"] = f"dev = the {DEV_FRACTION:.0%} of rows with the smallest sha256(key), train = the rest"
    else:
        source["split"] = "as given"
    encode, index, num_labels = _label_scheme([r.label for r in train + dev], names, regression, train[0].where)
    splits = {}
    for split, rows, cap in (("train", train, spec.max_train), ("dev", dev, spec.max_eval)):
        examples = [_example(r, encode) for r in rows]  # all rows, so a bad label is found whatever the cap
        splits[split] = tuple(examples[i] for i in _lowest_ranked([r.key for r in rows], cap))
    if metrics is None:
        metrics = ("pearson", "spearman") if num_labels == 1 else ("accuracy",)
    source.update(rows={"train": len(train), "dev": len(dev)}, counts={k: len(v) for k, v in splits.items()},
                  caps={"max_train": spec.max_train, "max_eval": spec.max_eval}, labels=index)
    return Task(name, splits["train"], splits["dev"], num_labels, metrics, metrics[0], source)


# ---------------------------------------------------------------------------------------------
# VADER: fetched once from the vaderSentiment sdist, then read from the cache

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
# Source → (file in the archive, its sha256). Line counts: 10,605 / 4,200 / 3,708 / 5,190 = 23,703.
VADER_FILES = {
    "movies": ("movieReviewSnippets_GroundTruth.txt",
               "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
    "tweets": ("tweets_GroundTruth.txt", "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt",
               "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
}
VADER_TASKS = {"vader": "movies", **{f"vader-{source}": source for source in VADER_FILES}}
# --no-binary for this package only: build tools may then come as wheels (5 s instead of 12 s).
_PIP_DOWNLOAD = ["-m", "pip", "download", "--no-deps", "--no-binary", "vaderSentiment", "vaderSentiment==3.3.2"]


def vader_cache_dir() -> Path:
    """``$LOWRANK_LAB_CACHE/vader``, by default ``~/.cache/lowrank-lab/vader``."""
    root = os.environ.get("LOWRANK_LAB_CACHE") or Path.home() / ".cache" / "lowrank-lab"
    return Path(root) / "vader"


def _write_atomic(path: Path, data: bytes) -> None:
    # A crash mid-write must not leave a truncated file that a later load takes for the real one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these are public data
    os.replace(tmp, path)


def _fetch_vader(cache: Path) -> None:
    """Get the sdist (pip, unless someone put it in ``cache`` by hand), verify it, extract the ground truth."""
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / VADER_SDIST
    if not sdist.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            try:
                done = subprocess.run([sys.executable, *_PIP_DOWNLOAD, "-d", tmp], capture_output=True,
                                      text=True, timeout=600)
                error = done.stderr.strip().splitlines()[-1:] if done.returncode else None
            except subprocess.TimeoutExpired:
                error = ["timed out"]
            if error is not None:
                raise DataError(f"cannot download the VADER data with pip ({''.join(error)}); on a machine online run "
                                f"`python {' '.join(_PIP_DOWNLOAD)} -d .` and copy {VADER_SDIST} into {cache}")
            os.replace(Path(tmp) / VADER_SDIST, sdist)
    digest = _sha256(sdist)
    if digest != VADER_SDIST_SHA256:
        raise DataError(f"{sdist}: sha256 {digest} is not the pinned {VADER_SDIST_SHA256}; delete it and load again")
    checksums = {}
    with tarfile.open(sdist) as outer, tarfile.open(fileobj=outer.extractfile(_VADER_ARCHIVE)) as inner:
        for name, _ in VADER_FILES.values():
            data = inner.extractfile(f"hutto_ICWSM_2014/{name}").read()
            _write_atomic(cache / name, data)
            checksums[name] = hashlib.sha256(data).hexdigest()
    # Written last: its presence means every file above is complete. Loads check the pinned sha256s.
    manifest = {"sdist": VADER_SDIST, "sdist_sha256": VADER_SDIST_SHA256, "sha256": checksums}
    _write_atomic(cache / "checksums.json", json.dumps(manifest, indent=1).encode())


def _load_vader(name: str, spec: DataSpec) -> Task:
    """Read from ``spec.path`` (a folder holding the ground-truth files), else from the cache, fetching once."""
    folder = Path(spec.path) if spec.path else vader_cache_dir()
    if spec.path is None and not (folder / "checksums.json").exists():
        _fetch_vader(folder)
    filename, expected = VADER_FILES[VADER_TASKS[name]]
    path = folder / filename
    digest = _sha256(path) if path.is_file() else "missing"
    if digest != expected:
        remedy = f"delete {folder / 'checksums.json'} and load again to re-extract it"
        if spec.path:
            remedy = "use the file from the vaderSentiment 3.3.2 sdist"
        raise DataError(f"{path}: sha256 {digest} is not the pinned {expected}; {remedy}")
    # Columns: id, mean of the human ratings on -4 … +4, sentence (CRLF line ends, no header).
    frame = _read_table(path, columns=("id", "mean", "text"))
    rows, dropped = [], 0
    for r in _rows(frame, str(path), "text", None, "mean", keys=list(frame["id"])):
        try:
            mean = float(r.label)
        except ValueError:
            raise DataError(f"{path} row {r.row}: mean rating {r.label!r} is not a number") from None
        if abs(mean) > 0.5:
            rows.append(r._replace(label="positive" if mean > 0 else "negative"))
        else:
            dropped += 1
    source = {"task": name, "files": {"train": {"path": str(path), "sha256": digest}},
              "sdist": {"name": VADER_SDIST, "sha256": VADER_SDIST_SHA256},
              "dropped": {"neutral (|mean| <= 0.5)": dropped}}
    return _assemble(name, rows, None, spec, source, names=("negative", "positive"))


# ---------------------------------------------------------------------------------------------
# GLUE: local TSVs in GLUE's own format, else the Hugging Face hub


@dataclass(frozen=True)
class _Glue:
    text: str  # TSV column names
    pair: str | None
    label: str
    names: tuple[str, ...] | None  # label strings in the hub's class-id order; None: regression
    metrics: tuple[str, ...]  # the first is the main one
    hub: tuple[str, str, str | None]  # nyu-mll/glue config, its text and pair columns
    columns: tuple[str, ...] | None = None  # for TSVs without a header
    dev: tuple[str, str] = ("dev.tsv", "validation")  # local file, hub split


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
GLUE_TASKS = {
    "SST-2": _Glue("sentence", None, "label", _BINARY, ("accuracy",), ("sst2", "sentence", None)),
    "MRPC": _Glue("#1 String", "#2 String", "Quality", _BINARY, ("accuracy", "f1"),
                  ("mrpc", "sentence1", "sentence2")),
    "RTE": _Glue("sentence1", "sentence2", "label", _NLI, ("accuracy",), ("rte", "sentence1", "sentence2")),
    "CoLA": _Glue("sentence", None, "label", _BINARY, ("matthews",), ("cola", "sentence", None),
                  columns=("source", "label", "original_label", "sentence")),
    "STS-B": _Glue("sentence1", "sentence2", "score", None, ("pearson", "spearman"),
                   ("stsb", "sentence1", "sentence2")),
    "QNLI": _Glue("question", "sentence", "label", _NLI, ("accuracy",), ("qnli", "question", "sentence")),
    "MNLI": _Glue("sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"), ("accuracy",),
                  ("mnli", "premise", "hypothesis"), dev=("dev_matched.tsv", "validation_matched")),
    "QQP": _Glue("question1", "question2", "is_duplicate", _BINARY, ("accuracy", "f1"),
                 ("qqp", "question1", "question2")),
}


def _hub_frame(task: str, fmt: _Glue, split: str) -> pd.DataFrame:
    """One split of nyu-mll/glue as a frame shaped like the local TSV (same columns, raw label strings)."""
    config, text, pair = fmt.hub
    try:
        import datasets  # optional; imported here so that nothing else needs it

        table = datasets.load_dataset("nyu-mll/glue", config, split=split).to_pandas()
    except Exception as err:  # missing package, offline, hub error: all have the same remedy
        raise DataError(f"glue:{task}: cannot load nyu-mll/glue/{config} from the hub ({type(err).__name__}); "
                        f"pass data.path pointing to a local GLUE folder holding {task}/train.tsv") from None
    frame = pd.DataFrame({fmt.text: table[text], fmt.label: table["label"]})
    if pair:
        frame[fmt.pair] = table[pair]
    frame[fmt.label] = [fmt.names[int(v)] if fmt.names else str(v) for v in frame[fmt.label]]
    return frame


def _load_glue(task: str, spec: DataSpec) -> Task:
    fmt = GLUE_TASKS[task]
    rows, source = {}, {"task": f"glue:{task}"}
    for split, (filename, hub_split) in (("train", ("train.tsv", "train")), ("dev", fmt.dev)):
        if spec.path is None:
            where = f"nyu-mll/glue/{fmt.hub[0]}:{hub_split}"
            frame = _hub_frame(task, fmt, hub_split)
            source.setdefault("hub", {})[split] = where
        else:
            path = Path(spec.path) / task / filename
            frame, where = _read_table(path, columns=fmt.columns), str(path)
            source.setdefault("files", {})[split] = {"path": where, "sha256": _sha256(path)}
        rows[split] = _rows(frame, where, fmt.text, fmt.pair, fmt.label)
    return _assemble(f"glue:{task}", rows["train"], rows["dev"], spec, source,
                     names=fmt.names, regression=fmt.names is None, metrics=fmt.metrics)


# ---------------------------------------------------------------------------------------------
# Files: CSV, TSV or JSONL


def _load_file(spec: DataSpec) -> Task:
    if spec.path is None:
        raise SpecError("data.task='file' needs data.path (a CSV/TSV/JSONL file or a folder with train.*)")
    path = Path(spec.path)
    files = {"train": path}
    if path.is_dir():
        def first(*stems: str) -> Path | None:
            found = (path / f"{s}{x}" for s in stems for x in (".csv", ".tsv", ".jsonl"))
            return next((f for f in found if f.is_file()), None)

        # A folder without a dev file is split like a single file.
        files = {"train": first("train"), "dev": first("dev", "validation", "test")}
        if files["train"] is None:
            raise DataError(f"{path}: no train.csv, train.tsv or train.jsonl in this folder")
    rows, source = {}, {"task": "file", "files": {}}
    for split, file in files.items():
        if file is not None:
            rows[split] = _rows(_read_table(file), str(file), spec.text_column, spec.text_pair_column,
                                spec.label_column)
            source["files"][split] = {"path": str(file), "sha256": _sha256(file)}
    return _assemble("file", rows["train"], rows.get("dev"), spec, source)


def load_task(spec: DataSpec) -> Task:
    """The task ``spec.task`` with its train and dev examples, capped as the spec says."""
    task = spec.task
    if task in VADER_TASKS:
        return _load_vader(task, spec)
    if task.startswith("glue:"):
        # Accept "glue:sst2" as well as "glue:SST-2".
        canonical = {k.lower().replace("-", ""): k for k in GLUE_TASKS}.get(task[5:].lower().replace("-", ""))
        if canonical is None:
            raise SpecError(f"data.task={task!r}: GLUE tasks are {', '.join(GLUE_TASKS)}")
        return _load_glue(canonical, spec)
    if task == "file":
        return _load_file(spec)
    raise SpecError(f"data.task={task!r}: use vader, vader-<{'|'.join(VADER_FILES)}>, glue:<TASK> or file")
