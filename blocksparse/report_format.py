"""Formatting shared by the README's rendered sections: numbers as short as they are exact,
integers as integers, missing values as n/a, pipe tables, a row's settings in words."""
from __future__ import annotations

import math
from string import Template

import numpy as np
import pandas as pd

from .baselines import IMAGE_FORMATS

NAMES = {"png": "PNG", "webp-lossless": "WebP lossless", "jpeg": "JPEG", "webp": "WebP", "avif": "AVIF",
         "dense": "dense (border zeroed)"}
INTERVAL = Template(" [$lo, $hi]")


# ---------------------------------------------------------------------------
# formatting: integers as integers, missing as n/a
# ---------------------------------------------------------------------------
def fmt_missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def fmt_pct(v, decimals: int = 1) -> str:
    return "n/a" if fmt_missing(v) else f"{100 * float(v):.{decimals}f}%"


def fmt_bpp(v) -> str:
    return "n/a" if fmt_missing(v) else f"{float(v):.2f}"


def fmt_count(v) -> str:
    """An integer count with thousands separators; None means 'all' (e.g. train_subset=None)."""
    if fmt_missing(v):
        return "all"
    if float(v) != int(v):
        raise ValueError(f"expected an integer count, got {v!r}")
    return f"{int(v):,}"


def fmt_number(v) -> str:
    """A number as short as it is exact: 4 not 4.0, 0.005 as is."""
    if fmt_missing(v):
        return "n/a"
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def fmt_list(values) -> str:
    return "[" + ", ".join(fmt_number(v) for v in values) + "]"


def fmt_points(tolerance: float) -> str:
    p = 100 * tolerance
    return "one point" if math.isclose(p, 1) else f"{fmt_number(round(p, 6))} points"


def fmt_markdown(df: pd.DataFrame, formats: dict | None = None) -> str:
    """A pipe table; ``formats`` maps columns to a formatter (default ``fmt_number``); numbers right-aligned."""
    if df.empty:
        return "(none)"
    formats = formats or {}
    cells = {c: [formats.get(c, fmt_number)(v) for v in df[c].tolist()] for c in df.columns}
    right = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "|".join("---:" if c in right else ":---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(cells[c][i] for c in df.columns) + " |" for i in range(len(df))]
    return "\n".join(lines)


def fmt_interval(row: pd.Series) -> str:
    """`` [lo%, hi%]`` of a row's accuracy interval, or nothing where the row has none."""
    lo, hi = row.get("accuracy_lo"), row.get("accuracy_hi")
    return "" if fmt_missing(lo) or fmt_missing(hi) else INTERVAL.substitute(lo=fmt_pct(lo), hi=fmt_pct(hi))


def describe(row: pd.Series) -> str:
    """A row's settings in words, e.g. ``"global, B=4, ratio 0.005, 2 bits, fine-tuned"`` or ``"q=50"``."""
    method = str(row["method"])
    if method in IMAGE_FORMATS:
        return "lossless" if fmt_missing(row.get("quality")) else f"q={fmt_number(row['quality'])}"
    parts = [] if fmt_missing(row.get("mode")) else [str(row["mode"])]
    for col, fmt in (("block_size", "B={}"), ("ratio", "ratio {}"), ("bits", "{} bits")):
        if not fmt_missing(row.get(col)):
            parts.append(fmt.format(fmt_number(row[col])))
    if not fmt_missing(row.get("finetuned")) and bool(row["finetuned"]):
        parts.append("fine-tuned")
    return ", ".join(parts)


def _flag(df: pd.DataFrame, col: str) -> np.ndarray:
    return df[col].fillna(False).astype(bool).to_numpy()


def blocksparse_rows(results: pd.DataFrame, finetuned: bool | None = None) -> pd.DataFrame:
    d = results[(results["method"] == "blocksparse").fillna(False).to_numpy(bool)]
    if finetuned is None:
        return d
    return d[_flag(d, "finetuned") == finetuned]
