"""A table's fingerprint, exact to the bit: column names, dtypes and every value's bytes.

tests/fixtures/golden_tables.json holds the fingerprints of the fixture sweep's analysis tables as
computed before the analysis corridor was rebuilt around LowRankUpdate (commit f4a00d6); the tables
computed today must fingerprint the same."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def column_bytes(series: pd.Series) -> bytes:
    """Floats as their float64 bits, integers as int64, everything else as text; NA marked."""
    na = series.isna().to_numpy()
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan).tobytes()
    elif pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
        values = series.fillna(0).to_numpy(dtype=np.int64).tobytes()
    else:
        values = "\x00".join("" if m else str(v) for v, m in zip(series, na, strict=True)).encode()
    return na.tobytes() + values


def digest(table: pd.DataFrame, sort_by: list[str] | None = None) -> str:
    """sha256 over the table's columns (name, kind, values) in order; rows sorted by `sort_by`."""
    if sort_by:
        table = table.sort_values(sort_by, kind="stable").reset_index(drop=True)
    h = hashlib.sha256()
    for name in table.columns:
        kind = "f" if pd.api.types.is_float_dtype(table[name]) else (
            "i" if pd.api.types.is_integer_dtype(table[name]) else "o")
        h.update(f"{name}:{kind}:".encode())
        h.update(column_bytes(table[name]))
    return h.hexdigest()
