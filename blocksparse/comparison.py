"""Families against each other: the rate each needs for the same accuracy, with an interval.

For one split, each trained family's ladder on val-select is a curve of (rate, paired difference
from the reference). ``rate_at`` reads off the rate at which a curve first reaches a target
difference (-0.5 points by default), interpolating linearly in log-rate between the two rungs
around the crossing. ``compare`` gives the ratio of two families' rates at the target with a
percentile bootstrap over images: each resample draws the val-select images once, with
replacement, and every rung of both families and the reference is scored on the same draw. Rates
are the rungs' measured means and are not resampled (their image-to-image spread moves the mean
rate far less than a rung's accuracy).

A curve that is already at the target at its lowest rate gives only an upper bound on the rate
(and one that never reaches it, a lower bound): such resamples are counted, and an end of the
interval they make unknowable is reported as infinite: "the data cannot tell".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .results import unpack_correct

COMPARISON_COLUMNS = ("split_at", "family_a", "family_b", "measure", "value", "lo", "hi", "n_images")
TARGET = -0.005  # half a point below the reference
TARGETS = (-0.005, -0.01)  # and the one-point margin itself


def rate_at(rates: np.ndarray, diffs: np.ndarray, target: float = TARGET) -> float:
    """The rate at which a curve first reaches ``target`` walking up in rate: log-linear between
    the last rung below it and the first at or above it. ``-inf`` when the lowest rung is already
    at the target (the crossing is at or below it), ``inf`` when no rung reaches it."""
    order = np.argsort(rates)
    r, d = np.asarray(rates, float)[order], np.asarray(diffs, float)[order]
    if len(r) == 0:
        raise ValueError("rates: a curve needs at least one rung")
    if np.any(r <= 0):
        raise ValueError("rates must be > 0")
    hit = np.nonzero(d >= target - 1e-12)[0]
    if len(hit) == 0:
        return float("inf")
    i = hit[0]
    if i == 0:
        return float("-inf")
    f = (target - d[i - 1]) / (d[i] - d[i - 1])
    return float(np.exp2(np.log2(r[i - 1]) + f * (np.log2(r[i]) - np.log2(r[i - 1]))))


def _diffs(correct: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per rung (rows of ``correct``), the weighted accuracy difference from ``reference``."""
    n = weights.sum(-1, keepdims=True)
    return ((correct.astype(float) - reference.astype(float)) @ weights.T).T / n


def compare(rates_a, correct_a, rates_b, correct_b, reference, target: float = TARGET, n_boot: int = 2000,
            seed: int = 0, confidence: float = 0.95) -> dict:
    """Rate of family A over rate of family B at ``target`` (below 1: A needs fewer bits), with a
    bootstrap interval over images. ``correct_*``: [rungs, images] per-image correctness on the
    same images as ``reference`` [images]. Returns ``value``, ``lo``, ``hi`` (0 or inf where the
    resamples cannot bound them), ``rate_a``, ``rate_b``, ``n_images`` and ``undecided`` (the share
    of resamples in which a ratio is unknowable)."""
    ca, cb, ref = (np.atleast_2d(np.asarray(v, bool)) for v in (correct_a, correct_b, reference))
    ref = ref[0]
    if ca.shape[1] != ref.size or cb.shape[1] != ref.size:
        raise ValueError("correct_a, correct_b: every rung must be scored on the reference's images")
    if len(rates_a) != len(ca) or len(rates_b) != len(cb):
        raise ValueError("rates_a, rates_b: one rate per rung")
    ones = np.ones((1, ref.size))
    ra = rate_at(np.asarray(rates_a, float), _diffs(ca, ref, ones)[0], target)
    rb = rate_at(np.asarray(rates_b, float), _diffs(cb, ref, ones)[0], target)
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_boot)
    for k in range(0, n_boot, 250):
        m = min(250, n_boot - k)
        w = rng.multinomial(ref.size, np.full(ref.size, 1 / ref.size), size=m).astype(float)
        da, db = _diffs(ca, ref, w), _diffs(cb, ref, w)
        for j in range(m):
            a, b = rate_at(rates_a, da[j], target), rate_at(rates_b, db[j], target)
            ratios[k + j] = _ratio(a, b)
    alpha = 1 - confidence
    # an unknowable ratio (both curves bounded the same way) counts against both ends of the interval
    lo = np.quantile(np.where(np.isnan(ratios), 0.0, ratios), alpha / 2, method="lower")
    hi = np.quantile(np.where(np.isnan(ratios), np.inf, ratios), 1 - alpha / 2, method="higher")
    return dict(value=_ratio(ra, rb), lo=_bound(lo, 0.0), hi=_bound(hi, float("inf")), rate_a=ra, rate_b=rb,
                n_images=int(ref.size), undecided=float(np.mean(~np.isfinite(ratios) | (ratios == 0))))


def _ratio(a: float, b: float) -> float:
    """a / b, where a bound at either end makes the ratio a bound too (0 or inf), or unknowable (nan)."""
    if np.isfinite(a) and np.isfinite(b):
        return a / b
    if (a == -np.inf and b == np.inf) or (np.isfinite(a) and b == np.inf) or (a == -np.inf and np.isfinite(b)):
        return 0.0  # A reaches the target where B has not: A needs fewer bits, by an unknown factor
    if (a == np.inf and b == -np.inf) or (a == np.inf and np.isfinite(b)) or (np.isfinite(a) and b == -np.inf):
        return float("inf")
    return float("nan")


def _bound(v: float, unknown: float) -> float:
    return unknown if not np.isfinite(v) else float(v)


def comparison_table(curves: dict[tuple[str, str], tuple[list[float], np.ndarray]], reference: np.ndarray,
                     targets: tuple[float, ...] = TARGETS, n_boot: int = 2000) -> pd.DataFrame:
    """``family_comparison.csv``: per split, each pair of families with a curve there. ``curves``:
    (split, family) -> (rates, correctness [rungs, images]) on the reference's val-select images."""
    rows = []
    for split in sorted({s for s, _ in curves}):
        fams = sorted(f for s, f in curves if s == split)
        for i, fa in enumerate(fams):
            for fb in fams[i + 1:]:
                (ra, ca), (rb, cb) = curves[split, fa], curves[split, fb]
                for target in targets:
                    c = compare(ra, ca, rb, cb, reference, target, n_boot)
                    rows.append(dict(split_at=split, family_a=fa, family_b=fb,
                                     measure=f"rate ratio at {100 * target:+.1f} points", value=c["value"], lo=c["lo"],
                                     hi=c["hi"], n_images=c["n_images"]))
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def words(row: pd.Series) -> str:
    """One comparison in words: which family is cheaper at equal accuracy, by how much, or that the
    data cannot tell (the interval holds 1)."""
    a, b, v, lo, hi = row["family_a"], row["family_b"], row["value"], row["lo"], row["hi"]
    if lo <= 1 <= hi or np.isnan(v):
        return f"{a} vs {b}: the data cannot tell (rate ratio {ratio_words(v, lo, hi)})"
    cheaper, other = (a, b) if hi < 1 else (b, a)
    return (f"{cheaper} needs fewer bits than {other} at {row['measure'].split(' at ')[1]} "
            f"(rate ratio {a}/{b} {ratio_words(v, lo, hi)})")


def ratio_words(value: float, lo: float, hi: float) -> str:
    """A rate ratio and its interval, "1.78 [0, inf]": 0 and inf are the bounds ``_ratio`` gives where a
    curve never or always reaches the accuracy (not ratios), and "-" is a ratio no one can know (NaN)."""
    def num(v: float) -> str:
        return "-" if pd.isna(v) else "inf" if v == np.inf else "0" if v == 0 else f"{v:.2f}"
    return f"{num(value)} [{num(lo)}, {num(hi)}]"


def curves_from_cards(cards: list[dict], reference: dict, families=("block-sparse", "bottleneck", "webp-finetuned"),
                      splits=("layer1", "layer2", "layer3")) -> dict[tuple[str, str], tuple[list[float], np.ndarray]]:
    """(split, family) -> (rates, correctness [rungs, images]) of the seed-0 rungs on val-select:
    the payload rate for image codecs (the same curve under every split: input compression), the
    amortized streams' rate otherwise. A family with fewer than two rungs at a split has no curve."""
    ref = unpack_correct(reference["val_select"]["correct"])
    out = {}
    for split in splits:
        for fam in families:
            runs = [c for c in cards if c["family"] == fam and c.get("seed") == 0 and c.get("val_select")
                    and (fam.startswith("webp") or c.get("split_at") == split)]
            rated = [(c["val_select"].get("bpp_payload", c["val_select"].get("bpp")), c) for c in runs]
            rated = [(r, c) for r, c in rated if r is not None and r > 0]  # quality 0 is the uncompressed input
            if len(rated) < 2:
                continue
            corr = np.stack([unpack_correct(c["val_select"]["correct"]) for _, c in rated])
            if corr.shape[1] != ref.size:
                raise ValueError(f"cards: {fam} at {split} was scored on {corr.shape[1]} images, the reference on {ref.size}")
            out[split, fam] = ([r for r, _ in rated], corr)
    return out
