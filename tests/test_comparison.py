"""comparison: the rate at a target difference by hand, and the ratio's bootstrap on curves whose
answer is known."""
import math

import numpy as np
import pandas as pd
import pytest

from blocksparse import comparison as C


def test_rate_at_interpolates_in_log_rate_by_hand():
    # -1.0 point at 1 bpp, 0 at 4 bpp: -0.5 is half way in log2 rate, at 2 bpp
    assert C.rate_at(np.array([4.0, 1.0]), np.array([0.0, -0.01]), -0.005) == pytest.approx(2.0)
    assert C.rate_at(np.array([1.0, 2.0]), np.array([-0.004, 0.0]), -0.005) == -math.inf  # at the target already
    assert C.rate_at(np.array([1.0, 2.0]), np.array([-0.02, -0.011]), -0.005) == math.inf  # never reaches it
    with pytest.raises(ValueError, match="rates"):
        C.rate_at(np.array([0.0, 1.0]), np.array([0.0, 0.0]))


def _curve(rng, n, diffs):
    ref = rng.random(n) < 0.9
    rows = []
    for d in diffs:
        x = ref.copy()
        k = int(round(-d * n))
        x[np.nonzero(ref)[0][:k]] = False  # k images the reference gets right, the rung wrong
        rows.append(x)
    return ref, np.stack(rows)


def test_a_family_at_half_the_rates_of_the_same_curve_costs_half():
    rng = np.random.default_rng(0)
    ref, corr = _curve(rng, 4000, [-0.02, -0.008, -0.003, 0.0])
    rates = np.array([0.1, 0.2, 0.4, 0.8])
    c = C.compare(rates / 2, corr, rates, corr, ref, n_boot=300)
    assert c["value"] == pytest.approx(0.5)
    assert c["lo"] == pytest.approx(0.5) and c["hi"] == pytest.approx(0.5)  # the same images move both alike


def test_two_independent_noisy_curves_near_each_other_cannot_be_told_apart():
    rng = np.random.default_rng(1)
    n = 2500
    ref = rng.random(n) < 0.93
    def noisy(diff):
        x = ref.copy()
        flip = rng.random(n) < 0.02
        x[flip] = ~x[flip]
        return x
    ca = np.stack([noisy(0) for _ in range(3)])
    cb = np.stack([noisy(0) for _ in range(3)])
    t = C.comparison_table({("layer3", "a"): ([0.1, 0.2, 0.4], ca), ("layer3", "b"): ([0.1, 0.2, 0.4], cb)}, ref,
                           targets=(-0.005,), n_boot=200)
    assert list(t.columns) == list(C.COMPARISON_COLUMNS) and len(t) == 1
    r = t.iloc[0]
    assert r["lo"] <= 1 <= r["hi"]
    assert "cannot tell" in C.words(r)


def test_words_names_the_cheaper_family():
    r = pd.Series(dict(family_a="bottleneck", family_b="block-sparse", measure="rate ratio at -0.5 points",
                       value=0.2, lo=0.1, hi=0.4))
    assert C.words(r).startswith("bottleneck needs fewer bits than block-sparse at -0.5 points")
    r2 = r.copy()
    r2[["value", "lo", "hi"]] = [3.0, 2.0, math.inf]
    assert C.words(r2).startswith("block-sparse needs fewer bits than bottleneck")


@pytest.mark.parametrize("value, lo, hi, text", [
    (1.7777, 0.0, math.inf, "1.78 [0, inf]"),  # 0 and inf: the ladders' bounds, written as such
    (math.nan, 0.0, math.inf, "- [0, inf]"),  # both curves bounded alike: no ratio to know
    (0.0, 0.0, 1.3449, "0 [0, 1.34]"),
    (2.0, 1.005, 3.0, "2.00 [1.00, 3.00]"),  # 1.005 is 1.00499999... in binary: rounds down
])
def test_ratio_words_writes_bounds_and_the_unknowable_as_such(value, lo, hi, text):
    assert C.ratio_words(value, lo, hi) == text
    r = pd.Series(dict(family_a="a", family_b="b", measure="rate ratio at -0.5 points", value=value, lo=lo, hi=hi))
    assert text in C.words(r)
