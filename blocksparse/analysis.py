"""Analysis of results tables: the frontier, levers, BD-rate, pairing cards (intervals and tests: ``stats``).

Pure numpy/pandas. Accuracies are fractions in [0, 1]; rates are bits per input pixel.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .baselines import IMAGE_FORMATS
from .results import SCHEMA, to_frame
from .stats import ONE_POINT, EPS, mcnemar_p, paired_test, wilson_interval, within  # noqa: F401 (re-exported)




# ---------------------------------------------------------------------------
# the frontier of a results table
# ---------------------------------------------------------------------------
def _finite(df: pd.DataFrame, *cols: str, names=("x", "y")) -> pd.DataFrame:
    for c, name in zip(cols, names):
        if c not in df:
            raise ValueError(f"{name}={c!r} is not a column of df")
    return df.dropna(subset=list(cols))


def pareto(df: pd.DataFrame, x: str = "bpp", y: str = "accuracy") -> pd.DataFrame:
    """The Pareto front: rows that no other row matches or beats on both axes, sorted by ``x``.

    A row is dropped when another row has ``x`` lower or equal and ``y`` higher or equal (and
    differs in one of them); of rows equal in both, the first in ``df``'s order is kept. Rows
    with a missing ``x`` or ``y`` are dropped.
    """
    d = _finite(df, x, y).sort_values([x, y], ascending=[True, False])  # multi-key sort is stable
    return d[(d[y] > d[y].cummax().shift(fill_value=-np.inf)).to_numpy(bool)]


def lowest_within(df: pd.DataFrame, reference: float, tolerance: float = 0.01, x: str = "bpp",
                  y: str = "accuracy") -> pd.Series | None:
    """The cheapest row (lowest ``x``) with ``y >= reference - tolerance``, or None.

    Ties in ``x``: the most accurate, then the first in ``df``'s order.
    """
    if not math.isfinite(reference):
        raise ValueError(f"reference must be finite, got {reference!r}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    d = _finite(df, x, y)
    d = d[(d[y] >= reference - tolerance - EPS).to_numpy(bool)]
    return d.sort_values([x, y], ascending=[True, False]).iloc[0] if len(d) else None




def best_under(df: pd.DataFrame, max_x: float, x: str = "bpp", y: str = "accuracy") -> pd.Series | None:
    """The most accurate row with ``x <= max_x``, or None.

    Ties in ``y``: the cheapest (lowest ``x``), then the first in ``df``'s order.
    """
    if not max_x == max_x:
        raise ValueError(f"max_x must be a number, got {max_x!r}")
    d = _finite(df, x, y)
    d = d[(d[x] <= max_x).to_numpy(bool)]
    return d.sort_values([y, x], ascending=[False, True]).iloc[0] if len(d) else None


def _plain(col: str, v):
    """A value for display: numpy scalars as Python, the schema's integer columns as int (a
    frame read without ``to_frame`` holds them as floats)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return pd.NA
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and SCHEMA.get(col, ("",))[0] == "Int64":
        return int(v)
    return v


def _percent(row: pd.Series | None, y: str = "accuracy"):
    return round(100 * float(row[y]), 2) if row is not None else pd.NA


def levers_table(df: pd.DataFrame, rates: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0),
                 levers: tuple[str, ...] = ("bits", "block_size", "mode", "finetuned")) -> pd.DataFrame:
    """Best block-sparse accuracy (%) at or under each rate, one lever held at each value.

    Returns
    -------
    DataFrame
        Columns ``lever``, ``value`` and ``"<= {t} bpp"`` per rate ``t``; one row per lever
        and value (values sorted, missing ones skipped); ``<NA>`` where no row is that cheap.
    """
    missing = [c for c in ("method", "bpp", "accuracy", *levers) if c not in df]
    if missing:
        raise ValueError(f"df lacks columns {missing} (levers={tuple(levers)!r})")
    bs = df[(df["method"] == "blocksparse").to_numpy(bool)]
    rows = []
    for lever in levers:
        for value, g in bs.groupby(lever, sort=True):
            rows.append({"lever": lever, "value": _plain(lever, value),
                         **{f"<= {t} bpp": _percent(best_under(g, t)) for t in rates}})
    out = pd.DataFrame(rows, columns=["lever", "value", *(f"<= {t} bpp" for t in rates)])
    return out.astype({c: "Float64" for c in out.columns[2:]}).astype({"lever": "string", "value": "object"})


def method_key(row: pd.Series) -> str:
    """A row's method for tables: block-sparse split by mode, ``" (fine-tuned)"`` when fine-tuned."""
    key = str(row["method"])
    if key == "blocksparse" and pd.notna(row.get("mode", pd.NA)):
        key += f" {row['mode']}"
    return key + (" (fine-tuned)" if pd.notna(row.get("finetuned", pd.NA)) and bool(row["finetuned"]) else "")


def describe(row: pd.Series) -> str:
    """A row's settings in words, the one description every table uses: ``"global, B=4, ratio
    0.005, 2 bits"`` (block-sparse and dense; ``", fine-tuned"`` when it is), ``"q=50"`` or
    ``"lossless"`` (image codecs), ``"lambda=0.8"`` (learned bottleneck)."""
    method = str(row.get("method", ""))
    if method in IMAGE_FORMATS:
        q = _plain("quality", row.get("quality", pd.NA))
        return "lossless" if q is pd.NA else f"q={q:g}" if isinstance(q, float) else f"q={q}"
    parts = [] if _plain("mode", row.get("mode", pd.NA)) is pd.NA else [str(row["mode"])]
    for col, fmt in (("block_size", "B={}"), ("ratio", "ratio {:g}"), ("bits", "{} bits"), ("rate_weight", "lambda={:g}")):
        v = _plain(col, row.get(col, pd.NA))
        if v is not pd.NA:
            parts.append(fmt.format(v))
    if _plain("finetuned", row.get("finetuned", pd.NA)) is not pd.NA and bool(row["finetuned"]):
        parts.append("fine-tuned")
    return ", ".join(parts)


# the rows of fine-tuned models grouped into models (a configuration and a recipe, its seeds' rows)
CONFIG = ["split_at", "mode", "block_size", "ratio", "bits"]
RECIPE = ["distill_weight", "group_lasso_weight", "steps", "lr"]


def with_columns(models: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """``models`` in the results schema, keeping the ``extra`` columns where present."""
    keep = [c for c in extra if c in models.columns]
    out = to_frame(models.drop(columns=keep)).reset_index(drop=True)
    for c in keep:
        out[c] = models[c].to_numpy()
    return out


def with_recipe(models: pd.DataFrame) -> pd.DataFrame:
    """``models`` in the results schema, keeping the recipe columns (``RECIPE``) where present."""
    return with_columns(models, RECIPE)


def model_groups(models: pd.DataFrame) -> list[pd.DataFrame]:
    """``models``' rows grouped into models: one group per configuration and recipe (its seeds'
    rows), in order of first appearance; a missing recipe value is a value, never a dropped row."""
    keys = CONFIG + [c for c in RECIPE if c in models.columns]
    return [g for _, g in models.groupby(keys, sort=False, dropna=False)]


def model_splits(models: pd.DataFrame | None) -> set[str]:
    """The splits ``models`` (fine-tuned models' rows; None or empty: none) has models at."""
    return set() if models is None or len(models) == 0 else set(models["split_at"].dropna().astype(str))


def frontier_table(df: pd.DataFrame, reference: float, tolerance: float = 0.01, max_bpp: float = 1.0,
                   exclude: tuple[str, ...] = ("uncompressed",)) -> pd.DataFrame:
    """Per method (``method_key``): the lowest bpp within ``tolerance`` of ``reference``, its
    settings, and the best accuracy (%) at or under ``max_bpp``.

    Returns
    -------
    DataFrame
        Columns ``method``, ``lowest_bpp_within`` (3 decimals), ``config`` (``describe``
        of that row; ``<NA>`` when none is within), ``accuracy_at_max_bpp`` (%, 2 decimals).
        Methods in ``exclude`` (the reference itself) are left out.
    """
    if "method" not in df:
        raise ValueError("df has no 'method' column")
    d = df[~df["method"].isin(exclude).to_numpy(bool)]
    rows = []
    for name, g in d.groupby(d.apply(method_key, axis=1) if len(d) else pd.Series(dtype=str), sort=True):
        best, cheap = lowest_within(g, reference, tolerance), best_under(g, max_bpp)
        rows.append(dict(method=name, lowest_bpp_within=round(float(best["bpp"]), 3) if best is not None else pd.NA,
                         config=describe(best.drop(labels="finetuned", errors="ignore")) if best is not None else pd.NA,
                         accuracy_at_max_bpp=_percent(cheap)))
    out = pd.DataFrame(rows, columns=["method", "lowest_bpp_within", "config", "accuracy_at_max_bpp"])
    return out.astype(dict(method="string", lowest_bpp_within="Float64", config="string",
                           accuracy_at_max_bpp="Float64"))


# ---------------------------------------------------------------------------
# Bjøntegaard deltas between two rate-accuracy curves
# ---------------------------------------------------------------------------
def _curve(rate: ArrayLike, acc: ArrayLike, which: str) -> tuple[np.ndarray, np.ndarray]:
    r, a = np.asarray(rate, dtype=float), np.asarray(acc, dtype=float)
    if r.ndim != 1 or r.shape != a.shape:
        raise ValueError(f"rate_{which} and acc_{which} must be 1-D of equal length, got {r.shape}, {a.shape}")
    if r.size < 2:
        raise ValueError(f"rate_{which} needs at least 2 points, got {r.size}")
    if not (np.isfinite(r).all() and (r > 0).all()):
        raise ValueError(f"rate_{which} must be finite and > 0")
    if not np.isfinite(a).all():
        raise ValueError(f"acc_{which} must be finite")
    return np.log(r), a


BD_METHODS = ("pchip", "cubic")
_GRID = 20001  # points of the trapezoid rule over the overlap (piecewise cubic: error ~1e-9)


def pchip(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Monotone piecewise cubic Hermite interpolation (Fritsch-Carlson, with the three-point
    end slopes of Fritsch and Butland), evaluated at ``at`` inside [x.min(), x.max()].

    ``x`` need not be sorted; repeated x are merged into their mean y. Between two points the
    curve never leaves the range of their values, so a few uneven points cannot make it
    overshoot as a cubic polynomial through them can.
    """
    xs, inv = np.unique(x, return_inverse=True)
    ys = np.bincount(inv, y) / np.bincount(inv)
    h, delta = np.diff(xs), np.diff(ys) / np.diff(xs)
    d = np.zeros_like(ys)
    if len(xs) == 2:
        d[:] = delta[0]
    else:
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        same = delta[:-1] * delta[1:] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            d[1:-1] = np.where(same, (w1 + w2) / (w1 / np.where(same, delta[:-1], 1) + w2 / np.where(same, delta[1:], 1)), 0.0)
        for i, (h0, h1, d0, d1) in ((0, (h[0], h[1], delta[0], delta[1])), (-1, (h[-1], h[-2], delta[-1], delta[-2]))):
            e = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
            if np.sign(e) != np.sign(d0):
                e = 0.0
            elif np.sign(d0) != np.sign(d1) and abs(e) > abs(3 * d0):
                e = 3 * d0
            d[i] = e
    k = np.clip(np.searchsorted(xs, at, side="right") - 1, 0, len(xs) - 2)
    t = (at - xs[k]) / h[k]
    return ((2 * t ** 3 - 3 * t ** 2 + 1) * ys[k] + (t ** 3 - 2 * t ** 2 + t) * h[k] * d[k]
            + (-2 * t ** 3 + 3 * t ** 2) * ys[k + 1] + (t ** 3 - t ** 2) * h[k] * d[k + 1])


def _mean_gap(xa, ya, xb, yb, which: str, method: str = "pchip") -> float:
    """Mean of fit_b - fit_a over the overlap of the x ranges. ``method`` "pchip": monotone
    piecewise cubic through the points (``pchip``); "cubic": Bjøntegaard's original least-squares
    polynomial of degree min(3, distinct x - 1)."""
    if method not in BD_METHODS:
        raise ValueError(f"method must be one of {BD_METHODS}, got {method!r}")
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    if not hi > lo:
        raise ValueError(f"the two curves' {which} ranges do not overlap")
    if method == "pchip":
        grid = np.linspace(lo, hi, _GRID)
        gap = pchip(xb, yb, grid) - pchip(xa, ya, grid)
        return float(np.sum((gap[1:] + gap[:-1]) / 2) * (grid[1] - grid[0]) / (hi - lo))
    integrals = []
    for x, y in ((xa, ya), (xb, yb)):
        order = np.argsort(x, kind="stable")
        poly = np.polyint(np.polyfit(x[order], y[order], min(3, len(np.unique(x)) - 1)))
        integrals.append(np.polyval(poly, hi) - np.polyval(poly, lo))
    return (integrals[1] - integrals[0]) / (hi - lo)


def bd_rate(rate_a: ArrayLike, acc_a: ArrayLike, rate_b: ArrayLike, acc_b: ArrayLike,
            method: str = "pchip") -> float:
    """Bjøntegaard delta rate: mean rate change (%) of curve B against A at equal accuracy.

    Log-rate is interpolated as a function of accuracy per curve, both curves are averaged over
    the overlapping accuracy range, and the mean log-rate difference ``d`` is returned as
    ``100 * (exp(d) - 1)``. Negative: B needs fewer bits. ``method``: "pchip" (default) a
    monotone piecewise cubic through the points (``pchip``; repeated accuracies merged), which
    cannot overshoot between few, uneven points; "cubic" Bjøntegaard's original least-squares
    polynomial of degree ``min(3, n - 1)`` (``n`` distinct accuracies), which can (four points
    with one far from the others gave +19,823% where the curves differ by less than 2x).
    """
    la, aa = _curve(rate_a, acc_a, "a")
    lb, ab = _curve(rate_b, acc_b, "b")
    for a, which in ((aa, "acc_a"), (ab, "acc_b")):
        if len(np.unique(a)) < 2:
            raise ValueError(f"{which} needs at least 2 distinct values")
    return float(100 * np.expm1(_mean_gap(aa, la, ab, lb, "accuracy", method)))


def bd_accuracy(rate_a: ArrayLike, acc_a: ArrayLike, rate_b: ArrayLike, acc_b: ArrayLike,
                method: str = "pchip") -> float:
    """Bjøntegaard delta accuracy: mean accuracy change of B against A at equal rate.

    Accuracy is interpolated as a function of log-rate (as in ``bd_rate``, roles swapped) and the
    fits are averaged over the overlapping log-rate range. In the accuracies' own units
    (fractions in, fractions out); positive: B is more accurate.
    """
    la, aa = _curve(rate_a, acc_a, "a")
    lb, ab = _curve(rate_b, acc_b, "b")
    for r, which in ((la, "rate_a"), (lb, "rate_b")):
        if len(np.unique(r)) < 2:
            raise ValueError(f"{which} needs at least 2 distinct values")
    return float(_mean_gap(la, aa, lb, ab, "rate", method))


# ---------------------------------------------------------------------------
# a sweep's block-sparse fronts against a codec's
# ---------------------------------------------------------------------------
def blocksparse_rows(results: pd.DataFrame, finetuned: bool | None = None) -> pd.DataFrame:
    """The block-sparse rows of a results frame, all or only those (not) fine-tuned."""
    d = results[(results["method"] == "blocksparse").fillna(False).to_numpy(bool)]
    return d if finetuned is None else d[d["finetuned"].fillna(False).astype(bool).to_numpy() == finetuned]


def bd_rate_table(results: pd.DataFrame, anchor: str = "webp") -> pd.DataFrame:
    """BD-rate (%) of each mode's Pareto front (block-sparse, no fine-tuning) against ``anchor``'s
    front: columns ``mode``, ``points``, ``anchor_points``, ``overlap`` (the accuracy range both
    cover), ``bd_rate`` (positive: the mode needs more bits; NaN where it cannot be computed) and
    ``note`` (why)."""
    results = to_frame(results)
    ref = pareto(results[(results["method"] == anchor).fillna(False).to_numpy(bool)])
    rows = []
    for mode, g in blocksparse_rows(results, finetuned=False).groupby("mode", sort=True):
        front = pareto(g)
        row = dict(mode=mode, points=len(front), anchor_points=len(ref), overlap=pd.NA, bd_rate=np.nan, note="")
        if len(ref) == 0:
            row["note"] = f"no {anchor} rows"
        else:
            lo = max(front["accuracy"].min(), ref["accuracy"].min())
            hi = min(front["accuracy"].max(), ref["accuracy"].max())
            if hi > lo:
                row["overlap"] = f"{100 * lo:.1f}%-{100 * hi:.1f}%"
            try:
                row["bd_rate"] = bd_rate(ref["bpp"].to_numpy(float), ref["accuracy"].to_numpy(float),
                                         front["bpp"].to_numpy(float), front["accuracy"].to_numpy(float))
            except ValueError as e:  # too few points, or the accuracy ranges do not overlap
                row["note"] = str(e).replace("_a", f" ({anchor})").replace("_b", f" ({mode})")
        rows.append(row)
    out = pd.DataFrame(rows, columns=["mode", "points", "anchor_points", "overlap", "bd_rate", "note"])
    return out.astype(dict(mode="string", points="Int64", anchor_points="Int64", overlap="string",
                           bd_rate="Float64", note="string"))


def positions_share(results: pd.DataFrame) -> dict:
    """On the block-sparse Pareto front: ``n`` rows with a stream breakdown, the mean share of the
    stream that positions take (``positions_share``) and of delta-coded streams (``delta_share``)."""
    front = pareto(blocksparse_rows(to_frame(results))).dropna(subset=["positions_bits", "stream_bytes"])
    if len(front) == 0:
        return dict(n=0, positions_share=math.nan, delta_share=math.nan)
    share = front["positions_bits"].to_numpy(float) / (8 * front["stream_bytes"].to_numpy(float))
    return dict(n=len(front), positions_share=float(share.mean()),
                delta_share=float(front["delta_share"].astype("Float64").mean(skipna=True)))
