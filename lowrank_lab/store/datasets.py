"""Data files: CSV/TSV/JSONL tables, GLUE's and E2E's file names, and the VADER ground truth fetched, cached
and checked.

Everything here reads (or, for the VADER cache, writes) files and returns plain tables of strings;
what the rows mean (labels, splits, caps) is decided in ``train.data``.

VADER: the sentence-level ground truth (Hutto & Gilbert 2014, MIT) is fetched once from the
``vaderSentiment==3.3.2`` sdist into ``$LOWRANK_LAB_CACHE/vader`` (default ``~/.cache/lowrank-lab/vader``),
or read from a folder holding the ``*_GroundTruth.txt`` files, and checked against pinned sha256s on
every load.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """Data that cannot be read or used; the one-line message names the file, column or row."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _not_utf8(path: Path, err: UnicodeDecodeError) -> DataError:
    return DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8")


def read_table(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read a .csv, .tsv/.txt (tab-separated) or .jsonl file as a table of strings (empty cells: "").

    ``columns`` names the columns of a CSV/TSV without a header line. JSONL has one object per line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix not in (".csv", ".tsv", ".txt", ".jsonl"):
        raise DataError(f"{path}: unknown format; use .csv, .tsv or .jsonl")
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    # GLUE and VADER TSVs contain unbalanced literal quotes, so TSVs are read without quoting;
    # CSVs need quoting for commas inside fields. MRPC's header starts with a BOM: utf-8-sig drops
    # it explicitly (pandas' C parser happens to skip it too).
    sep, quoting = (",", csv.QUOTE_MINIMAL) if path.suffix == ".csv" else ("\t", csv.QUOTE_NONE)
    try:
        return pd.read_csv(path, sep=sep, quoting=quoting, dtype=str, na_filter=False, encoding="utf-8-sig",
                           header=None if columns else "infer", names=columns)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse ({str(err).strip()})") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(records[-1], dict):
            raise DataError(f"{path} line {number}: expected a JSON object, got {type(records[-1]).__name__}")
    return pd.DataFrame.from_records(records)


def data_files(path: str) -> dict[str, Path | None]:
    """The files of task="file": ``path`` itself (train only), or a folder's ``train.*`` and
    ``dev.*`` (else ``validation.*``, ``test.*``; None when there is none: split like a single file)."""
    path = Path(path)
    if not path.is_dir():
        return {"train": path}

    def first(*stems: str) -> Path | None:
        found = (path / f"{s}{x}" for s in stems for x in (".csv", ".tsv", ".jsonl"))
        return next((f for f in found if f.is_file()), None)

    files = {"train": first("train"), "dev": first("dev", "validation", "test")}
    if files["train"] is None:
        raise DataError(f"{path}: no train.csv, train.tsv or train.jsonl in this folder")
    return files


def glue_files(folder: str, task: str) -> dict[str, Path]:
    """A local GLUE folder's TSVs of ``task``, in GLUE's own layout (MNLI's dev set: the matched one)."""
    dev = "dev_matched.tsv" if task == "MNLI" else "dev.tsv"
    return {"train": Path(folder) / task / "train.tsv", "dev": Path(folder) / task / dev}


# ---------------------------------------------------------------------------------------------
# E2E NLG in microsoft/LoRA's format (examples/NLG/data/e2e): one "MR||reference" line per reference

E2E_SPLITS = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


def e2e_files(folder: str) -> dict[str, Path]:
    """The E2E files present in ``folder`` (keys among train, valid, test); fewer than two is an error."""
    found = {split: Path(folder) / name for split, name in E2E_SPLITS.items() if (Path(folder) / name).is_file()}
    if len(found) < 2:
        raise DataError(f"{folder}: need two of {', '.join(E2E_SPLITS.values())} (microsoft/LoRA's E2E format); "
                        f"found {', '.join(p.name for p in found.values()) or 'none'}")
    return found


def read_e2e(path: Path) -> list[tuple[int, str, str]]:
    """(line number, meaning representation, reference) of every line, both parts stripped.

    A line is ``name : Alimentum | area : city centre||<tokenised reference> ``; blank lines are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        mr, sep, reference = line.partition("||")
        if not sep:
            raise DataError(f"{path} line {number}: no '||' between meaning representation and reference")
        if not mr.strip() or not reference.strip():
            part = "meaning representation" if not mr.strip() else "reference"
            raise DataError(f"{path} line {number}: empty {part}")
        rows.append((number, mr.strip(), reference.strip()))
    if not rows:
        raise DataError(f"{path}: no lines")
    return rows


# ---------------------------------------------------------------------------------------------
# VADER: fetched once from the vaderSentiment sdist, then read from the cache

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_CHECKSUMS = "checksums.json"
# Source → (file in the archive, its sha256). Line counts: 10,605 / 4,200 / 3,708 / 5,190 = 23,703.
VADER_FILES = {
    "movies": ("movieReviewSnippets_GroundTruth.txt",
               "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
    "tweets": ("tweets_GroundTruth.txt", "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt",
               "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
}
# --no-binary for this package only: build tools may then come as wheels (5 s instead of 12 s).
_PIP_DOWNLOAD = ["-m", "pip", "download", "--no-deps", "--no-binary", "vaderSentiment", "vaderSentiment==3.3.2"]


def vader_cache_dir() -> Path:
    """``$LOWRANK_LAB_CACHE/vader``, by default ``~/.cache/lowrank-lab/vader``."""
    root = os.environ.get("LOWRANK_LAB_CACHE") or Path.home() / ".cache" / "lowrank-lab"
    return Path(root) / "vader"


def _write_atomic(path: Path, data: bytes) -> None:
    # A crash mid-write must not leave a truncated file that a later load takes for the real one.
    # (store.files has the same for results, but imports torch: data loading should not.)
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
    digest = sha256_file(sdist)
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
    _write_atomic(cache / _CHECKSUMS, json.dumps(manifest, indent=1).encode())


def read_vader(source: str, folder: str | None) -> tuple[pd.DataFrame, Path, str]:
    """One VADER source as a table of (id, mean rating on -4 … +4, text), its file and sha256.

    Read from ``folder`` (holding the ground-truth files), else from the cache, fetching once."""
    cache = Path(folder) if folder else vader_cache_dir()
    if folder is None and not (cache / _CHECKSUMS).exists():
        _fetch_vader(cache)
    filename, expected = VADER_FILES[source]
    path = cache / filename
    digest = sha256_file(path) if path.is_file() else "missing"
    if digest != expected:
        remedy = f"delete {cache / _CHECKSUMS} and load again to re-extract it"
        if folder:
            remedy = "use the file from the vaderSentiment 3.3.2 sdist"
        raise DataError(f"{path}: sha256 {digest} is not the pinned {expected}; {remedy}")
    # No header; CRLF line ends (the CR is not part of the text).
    return read_table(path, columns=("id", "mean", "text")), path, digest
