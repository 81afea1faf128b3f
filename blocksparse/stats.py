"""Statistics of classifiers scored image by image: intervals, paired tests, the one-point rule.

The lowest layer of the study's analysis (numpy only): evaluation, baselines and the protocol
import it; ``analysis`` (frontier, BD-rate, pairing cards) builds on it.
"""
from __future__ import annotations

import math
import operator
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

ONE_POINT = 0.01  # the study's tolerance: "within one point" of the uncompressed accuracy

# Slack for comparing an accuracy (a multiple of 1/n_images, n <= 1e6) with an arithmetic
# threshold such as reference - tolerance: rounding in the subtraction must not decide.
EPS = 1e-9


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


# ---------------------------------------------------------------------------
# one accuracy, two classifiers on the same images
# ---------------------------------------------------------------------------
def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``correct / n``.

    Parameters
    ----------
    correct : int
        Successes (correctly classified images), ``0 <= correct <= n``.
    n : int
        Trials (images), ``n >= 1``.
    confidence : float
        Two-sided coverage, in (0, 1).

    Returns
    -------
    tuple of float
        ``(lo, hi)``; exactly 0 when ``correct == 0`` and exactly 1 when ``correct == n``.
    """
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"n must be an integer, got {n!r}") from None
    try:
        correct = operator.index(correct)
    except TypeError:
        raise ValueError(f"correct must be an integer, got {correct!r}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct}")
    z2, p = _z(confidence) ** 2, correct / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) * math.sqrt(z2) / (1 + z2 / n)
    # the ends are exactly 0 and 1 there; floating point would leave them a hair off
    return (0.0 if correct == 0 else max(0.0, centre - half), 1.0 if correct == n else min(1.0, centre + half))


def _correctness(name: str, v) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if a.dtype != bool and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or 0/1) per-image correctness")
    return a.astype(bool)


def mcnemar_p(b_only: int, a_only: int) -> float:
    """Exact two-sided McNemar p-value: binomial(b_only + a_only, 1/2), both tails, capped at 1.

    Parameters
    ----------
    b_only, a_only : int
        Discordant images: only B right, only A right.

    Returns
    -------
    float
        1 when there are no discordant images. Summed in exact integers (no overflow or
        underflow before the one final division).
    """
    if b_only < 0 or a_only < 0:
        raise ValueError(f"b_only and a_only must be >= 0, got {b_only}, {a_only}")
    m, k = b_only + a_only, min(b_only, a_only)
    term, tail = 1, 1  # C(m, 0)
    for i in range(k):
        term = term * (m - i) // (i + 1)
        tail += term
    return min(1.0, tail / 2 ** (m - 1)) if m else 1.0


def paired_test(correct_a: ArrayLike, correct_b: ArrayLike, confidence: float = 0.95, n_boot: int = 10000,
                seed: int = 0) -> dict:
    """Compare two classifiers scored on the same images.

    Parameters
    ----------
    correct_a, correct_b : array_like of bool
        Per-image correctness of A and B, same images in the same order.
    confidence : float
        Coverage of the bootstrap interval.
    n_boot : int
        Bootstrap resamples.
    seed : int
        RNG seed of the bootstrap.

    Returns
    -------
    dict
        ``difference`` (acc_b - acc_a), ``lo``/``hi`` (paired percentile bootstrap interval of
        the difference), ``p_value`` (exact two-sided McNemar), ``n_images``, ``b_only`` (B
        right, A wrong), ``a_only`` (A right, B wrong).

    Notes
    -----
    Resampling images with replacement only matters through how many discordant images of
    each kind are drawn, so the resamples are drawn as multinomial counts of (B only, A only,
    concordant): the same distribution as resampling indices, in O(n_boot) memory.
    """
    a, b = _correctness("correct_a", correct_a), _correctness("correct_b", correct_b)
    if a.shape != b.shape:
        raise ValueError(f"correct_b must have the shape of correct_a {a.shape}, got {b.shape}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    _z(confidence)  # validates confidence
    alpha = 1 - confidence
    n, b_only, a_only = a.size, int((b & ~a).sum()), int((a & ~b).sum())
    counts = np.random.default_rng(seed).multinomial(n, [b_only / n, a_only / n, (n - b_only - a_only) / n],
                                                     size=int(n_boot))
    diffs = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return dict(difference=(b_only - a_only) / n, lo=float(lo), hi=float(hi), p_value=mcnemar_p(b_only, a_only),
                n_images=n, b_only=b_only, a_only=a_only)


def diff_words(p: dict) -> str:
    """A paired test's (``within``) difference and interval in points, ``"-0.46 [-0.80, -0.11]"``."""
    return f"{100 * p['difference']:+.2f} [{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}]"


def within(correct_ref: ArrayLike, correct_x: ArrayLike, tolerance: float = 0.01, confidence: float = 0.95,
           n_boot: int = 10000, seed: int = 0) -> dict:
    """Is X within ``tolerance`` of the reference (non-inferiority on the same images)?

    The rule: ``within`` holds when the lower end of the paired bootstrap interval of
    ``acc_x - acc_ref`` (``paired_test(correct_ref, correct_x, confidence)``) is
    ``>= -tolerance``. With the default two-sided 95% interval this is a one-sided test at
    the 2.5% level; a point estimate inside the tolerance is not enough.

    Returns
    -------
    dict
        ``paired_test``'s keys plus ``tolerance`` and ``within`` (bool).
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    t = paired_test(correct_ref, correct_x, confidence, n_boot, seed)
    return dict(t, tolerance=tolerance, within=bool(t["lo"] >= -tolerance - EPS))


def _seed_matrix(name: str, v) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must be per-image correctness of shape [seeds, images], got shape {a.shape}")
    if a.dtype != bool and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or 0/1) per-image correctness")
    return a.astype(np.float64)


def hierarchical_bootstrap(correct_x: ArrayLike, correct_ref: ArrayLike | None = None, confidence: float = 0.95,
                           n_boot: int = 2000, seed: int = 0, tolerance: float = ONE_POINT) -> dict:
    """The mean over seeds of an accuracy, or of a paired accuracy difference, with one interval
    that accounts for both the seeds and the images.

    Each resample draws the seeds with replacement, then the images with replacement (one draw
    of images shared by every seed: the seeds were all scored on the same images); the statistic
    is the mean over the drawn seeds of the accuracy on the drawn images (with ``correct_ref``:
    of ``acc_x - acc_ref``, each seed of X paired with the reference's run of the same seed).

    Parameters
    ----------
    correct_x : array_like of bool, shape [seeds, images]
    correct_ref : array_like of bool, same shape, optional
    confidence, n_boot, seed : float, int, int
        Percentile interval coverage, resamples, RNG seed.
    tolerance : float
        With ``correct_ref``: ``within`` holds when the interval's lower end is ``>= -tolerance``.

    Returns
    -------
    dict
        ``estimate`` (the mean over seeds on all images), ``lo``, ``hi``, ``seeds``, ``n_images``;
        with ``correct_ref`` also ``within`` and ``tolerance``.
    """
    x = _seed_matrix("correct_x", correct_x)
    d = x
    if correct_ref is not None:
        ref = _seed_matrix("correct_ref", correct_ref)
        if ref.shape != x.shape:
            raise ValueError(f"correct_ref must have the shape of correct_x {x.shape} (a reference run per seed, "
                             f"the same images), got {ref.shape}")
        d = x - ref
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    _z(confidence)
    s, n = d.shape
    rng = np.random.default_rng(seed)
    per_seed = np.empty((int(n_boot), s))
    for k in range(0, int(n_boot), 250):  # image weights in chunks: [chunk, images] stays small
        b = min(250, int(n_boot) - k)
        w = rng.multinomial(n, np.full(n, 1 / n), size=b)  # how often each image is drawn
        per_seed[k:k + b] = (w @ d.T) / n
    drawn = rng.integers(0, s, size=(int(n_boot), s))
    stat = np.take_along_axis(per_seed, drawn, axis=1).mean(1)
    alpha = 1 - confidence
    lo, hi = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    out = dict(estimate=float(d.mean()), lo=float(lo), hi=float(hi), seeds=s, n_images=n)
    if correct_ref is not None:
        out |= dict(tolerance=tolerance, within=bool(lo >= -tolerance - EPS))
    return out
