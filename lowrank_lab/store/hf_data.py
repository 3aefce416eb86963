"""Datasets through Hugging Face ``datasets``: a hub id, a local dataset folder, or one data file.

``read_split(path, split, config)`` returns the rows of one split as plain Python values (a chat
turn list stays a list of dicts) with its provenance. ``path`` is, in this order:

- a file ending in .parquet, .jsonl, .json or .csv: ``datasets``' own builder for that format, its
  one split named "train";
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``load_from_disk``);
- any other folder: ``load_dataset(folder)``, which finds the splits from the file names
  (train.parquet, test.jsonl, data/validation-*.parquet, ...);
- anything else: a hub id, ``load_dataset(path, config)``. Offline (``HF_DATASETS_OFFLINE=1``, or no
  network) that fails with one line naming ``data.path``.

Every failure is a ``DataError`` of one line naming the path, the split or the configuration.
"""

from __future__ import annotations

from pathlib import Path

from lowrank_lab.store.datasets import DataError, sha256_file

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("data.task='chat'/'instruction' read data through Hugging Face datasets: "
                        "pip install datasets") from None
    datasets.disable_progress_bars()  # the sweep has its own progress; one bar per split is noise
    return datasets


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _load_all(path: str, config: str | None) -> tuple[object, dict]:
    """Every split of `path` (a DatasetDict) and where it came from."""
    ds = _datasets()
    local = Path(path)
    try:
        if local.is_file():
            builder = BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise DataError(f"{local}: unknown format; use .parquet, .jsonl, .json or .csv (or a dataset folder)")
            splits = ds.load_dataset(builder, data_files={"train": str(local)})
            return splits, {"file": str(local), "sha256": sha256_file(local), "format": builder}
        if local.is_dir():
            saved = (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
            splits = ds.load_from_disk(str(local)) if saved else ds.load_dataset(str(local))
            if isinstance(splits, ds.Dataset):
                splits = ds.DatasetDict({"train": splits})
            files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
            return splits, {"folder": str(local), "files": {str(p.relative_to(local)): sha256_file(p) for p in files}}
    except DataError:
        raise
    except Exception as err:  # a malformed file: datasets' own message, shortened to its first line
        raise DataError(f"{local}: cannot be read by datasets ({_first_line(err)})") from None
    if local.is_absolute() or path.startswith(".") or path.count("/") > 1:
        raise DataError(f"data.path={path!r}: no such file or folder")
    try:
        splits = ds.load_dataset(path, config)
    except Exception as err:  # offline, unknown id, missing config: the same remedy for all
        offline = " (HF_DATASETS_OFFLINE is set)" if ds.config.HF_DATASETS_OFFLINE else ""
        raise DataError(f"data.path={path!r}: not a local file or folder, and the hub dataset cannot be loaded"
                        f"{offline} ({_first_line(err)}); download it where the hub is reachable and pass the "
                        "folder, or a .parquet/.jsonl/.csv file") from None
    return splits, {"hub": path, "config": config, "fingerprint": {k: v._fingerprint for k, v in splits.items()}}


def read_splits(path: str, wanted: dict[str, str], config: str | None = None) -> tuple[dict[str, list[dict]], dict]:
    """The rows (dicts) of each split in ``wanted`` ({spec key: split name}, e.g. {"data.split": "train"}),
    keyed by split name, and the provenance; a split that does not exist is an error naming its key."""
    splits, source = _load_all(path, config)
    for key, split in wanted.items():
        if split not in splits:
            raise DataError(f"{path}: no split {split!r} ({key}); its splits: {', '.join(splits) or 'none'}")
    rows = {split: splits[split].to_list() for split in wanted.values()}
    columns = {split: list(splits[split].column_names) for split in wanted.values()}
    return rows, {**source, "splits": {s: len(r) for s, r in rows.items()}, "columns": columns}
