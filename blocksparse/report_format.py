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
def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _pct(v, decimals: int = 1) -> str:
    return "n/a" if _missing(v) else f"{100 * float(v):.{decimals}f}%"


def _bpp(v) -> str:
    return "n/a" if _missing(v) else f"{float(v):.2f}"


def _count(v) -> str:
    """An integer count with thousands separators; None means 'all' (e.g. train_subset=None)."""
    if _missing(v):
        return "all"
    if float(v) != int(v):
        raise ValueError(f"expected an integer count, got {v!r}")
    return f"{int(v):,}"


def _number(v) -> str:
    """A number as short as it is exact: 4 not 4.0, 0.005 as is."""
    if _missing(v):
        return "n/a"
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _list(values) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _points(tolerance: float) -> str:
    p = 100 * tolerance
    return "one point" if math.isclose(p, 1) else f"{_number(round(p, 6))} points"


def _markdown(df: pd.DataFrame, formats: dict | None = None) -> str:
    """A pipe table; ``formats`` maps columns to a formatter (default ``_number``); numbers right-aligned."""
    if df.empty:
        return "(none)"
    formats = formats or {}
    cells = {c: [formats.get(c, _number)(v) for v in df[c].tolist()] for c in df.columns}
    right = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "|".join("---:" if c in right else ":---" for c in df.columns) + "|"]
    lines += ["| " + " | ".join(cells[c][i] for c in df.columns) + " |" for i in range(len(df))]
    return "\n".join(lines)


def _interval(row: pd.Series) -> str:
    """`` [lo%, hi%]`` of a row's accuracy interval, or nothing where the row has none."""
    lo, hi = row.get("accuracy_lo"), row.get("accuracy_hi")
    return "" if _missing(lo) or _missing(hi) else INTERVAL.substitute(lo=_pct(lo), hi=_pct(hi))


def describe(row: pd.Series) -> str:
    """A row's settings in words, e.g. ``"global, B=4, ratio 0.005, 2 bits, fine-tuned"`` or ``"q=50"``."""
    method = str(row["method"])
    if method in IMAGE_FORMATS:
        return "lossless" if _missing(row.get("quality")) else f"q={_number(row['quality'])}"
    parts = [] if _missing(row.get("mode")) else [str(row["mode"])]
    for col, fmt in (("block_size", "B={}"), ("ratio", "ratio {}"), ("bits", "{} bits")):
        if not _missing(row.get(col)):
            parts.append(fmt.format(_number(row[col])))
    if not _missing(row.get("finetuned")) and bool(row["finetuned"]):
        parts.append("fine-tuned")
    return ", ".join(parts)


def _flag(df: pd.DataFrame, col: str) -> np.ndarray:
    return df[col].fillna(False).astype(bool).to_numpy()


def _blocksparse(results: pd.DataFrame, finetuned: bool | None = None) -> pd.DataFrame:
    d = results[(results["method"] == "blocksparse").fillna(False).to_numpy(bool)]
    if finetuned is None:
        return d
    return d[_flag(d, "finetuned") == finetuned]
