"""Tests of blocksparse.analysis against published values, hand computations and brute force."""
import math

import numpy as np
import pandas as pd
import pytest

from blocksparse.analysis import (bd_accuracy, bd_rate, best_under, describe, frontier_table,
                                  levers_table, lowest_within, mcnemar_p, method_key, paired_test, pareto,
                                  wilson_interval, within)
from blocksparse.results import to_frame


# ---------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("correct, n, lo, hi", [
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score, 95%)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718), (29, 29, 0.8830, 1.0),
    # by hand: 0 of n -> (0, z^2 / (n + z^2)) = 3.8415 / 13.8415; 50 of 100 -> 0.5 -+ 0.0962
    (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (50, 100, 0.4038, 0.5962),
])
def test_wilson_published(correct, n, lo, hi):
    got = wilson_interval(correct, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_ends_exact_and_confidence():
    for n in range(1, 300):  # unclamped, floating point leaves most of these ends a hair off 0 and 1
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    # z = 2.5758 at 99%: 0 of 10 -> z^2 / (10 + z^2)
    z2 = 2.5758293035489004 ** 2
    assert wilson_interval(0, 10, 0.99)[1] == pytest.approx(z2 / (10 + z2), rel=1e-12)
    lo90, hi90 = wilson_interval(30, 100, 0.90)
    lo95, hi95 = wilson_interval(30, 100)
    assert lo95 < lo90 < 0.3 < hi90 < hi95


@pytest.mark.parametrize("kwargs, name", [
    (dict(correct=11, n=10), "correct"), (dict(correct=-1, n=10), "correct"), (dict(correct=0, n=0), "n"),
    (dict(correct=1.5, n=10), "correct"), (dict(correct=1, n=10.0), "n"),
    (dict(correct=1, n=10, confidence=1.0), "confidence"), (dict(correct=1, n=10, confidence=0), "confidence"),
])
def test_wilson_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        wilson_interval(**kwargs)


# ---------------------------------------------------------------------------
# paired tests
# ---------------------------------------------------------------------------
def _pairs(both, b_only, a_only, neither):
    """Correctness arrays with the given concordant / discordant counts (shuffled)."""
    a = np.array([1] * both + [0] * b_only + [1] * a_only + [0] * neither, bool)
    b = np.array([1] * both + [1] * b_only + [0] * a_only + [0] * neither, bool)
    p = np.random.default_rng(1).permutation(a.size)
    return a[p], b[p]


def test_mcnemar_hand_values():
    assert mcnemar_p(0, 10) == 2 * 0.5 ** 10
    assert mcnemar_p(10, 0) == 2 * 0.5 ** 10
    assert mcnemar_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024, rel=1e-15)
    assert mcnemar_p(2, 3) == 1.0 and mcnemar_p(4, 4) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 1) == 1.0


@pytest.mark.parametrize("b, c", [(3000, 3400), (10, 400), (0, 2000), (4990, 5010)])
def test_mcnemar_large_against_log_space(b, c):
    m, k = b + c, min(b, c)
    logs = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2) for i in range(k + 1)]
    top = max(logs)
    ref = min(1.0, 2 * math.exp(top) * sum(math.exp(v - top) for v in logs))
    assert mcnemar_p(b, c) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_paired_identical():
    a, _ = _pairs(70, 0, 0, 30)
    t = paired_test(a, a.copy())
    assert t == dict(difference=0.0, lo=0.0, hi=0.0, p_value=1.0, n_images=100, b_only=0, a_only=0)


def test_paired_counts_and_p():
    a, b = _pairs(80, 0, 10, 10)
    t = paired_test(a, b)
    assert (t["b_only"], t["a_only"], t["n_images"]) == (0, 10, 100)
    assert t["difference"] == pytest.approx(-0.1)
    assert t["p_value"] == 2 * 0.5 ** 10
    assert t["lo"] <= -0.1 <= t["hi"] and t["hi"] < 0
    t = paired_test(b.astype(int), a.astype(int))  # 0/1 ints are accepted; swapping flips the sign
    assert (t["b_only"], t["a_only"], t["difference"]) == (10, 0, pytest.approx(0.1))


def test_paired_bootstrap_matches_index_resampling():
    """The interval agrees with a plain bootstrap over resampled image indices and the normal
    approximation of a paired difference."""
    a, b = _pairs(600, 90, 60, 250)
    t = paired_test(a, b, n_boot=20000, seed=3)
    rng = np.random.default_rng(12345)
    d = b.astype(float) - a.astype(float)
    boots = np.array([d[rng.integers(0, d.size, d.size)].mean() for _ in range(4000)])
    ref_lo, ref_hi = np.quantile(boots, [0.025, 0.975])
    assert t["lo"] == pytest.approx(ref_lo, abs=0.004) and t["hi"] == pytest.approx(ref_hi, abs=0.004)
    se = math.sqrt((0.09 + 0.06 - 0.03 ** 2) / 1000)
    assert t["lo"] == pytest.approx(0.03 - 1.959964 * se, abs=0.003)
    assert t["hi"] == pytest.approx(0.03 + 1.959964 * se, abs=0.003)
    assert paired_test(a, b, n_boot=20000, seed=3) == t  # seeded
    narrow = paired_test(a, b, confidence=0.5, n_boot=20000, seed=3)
    assert t["lo"] < narrow["lo"] < narrow["hi"] < t["hi"]


@pytest.mark.parametrize("args, name", [
    ((np.ones(3, bool), np.ones(4, bool)), "correct_b"), ((np.ones((2, 2), bool), np.ones(4, bool)), "correct_a"),
    ((np.array([], bool), np.array([], bool)), "correct_a"), ((np.array([0, 2]), np.array([0, 1])), "correct_a"),
])
def test_paired_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        paired_test(*args)
    with pytest.raises(ValueError, match="n_boot"):
        paired_test(np.ones(3, bool), np.ones(3, bool), n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_test(np.ones(3, bool), np.ones(3, bool), confidence=1.5)


def test_within_rule():
    ref, same = _pairs(900, 0, 0, 100)
    assert within(ref, same)["within"]
    # 30 fewer correct of 2000 (-1.5 points): outside one point
    ref, x = _pairs(1700, 0, 30, 270)
    r = within(ref, x)
    assert not r["within"] and r["difference"] == pytest.approx(-0.015) and r["tolerance"] == 0.01
    assert within(ref, x, tolerance=0.03)["within"]
    # a point estimate inside the tolerance is not enough when the interval reaches past it:
    # -0.5 points on 400 images, 2 + 4 discordant -> lo well below -1 point
    ref, x = _pairs(300, 2, 4, 94)
    r = within(ref, x)
    assert r["difference"] == pytest.approx(-0.005) and r["lo"] < -0.01 and not r["within"]
    # better than the reference: within at any tolerance
    ref, x = _pairs(1700, 30, 0, 270)
    assert within(ref, x, tolerance=0.0)["within"]
    with pytest.raises(ValueError, match="tolerance"):
        within(ref, x, tolerance=-0.01)


# ---------------------------------------------------------------------------
# frontier
# ---------------------------------------------------------------------------
def _legacy_pareto(df, x="bpp", y="accuracy"):
    d = df.sort_values([x, y], ascending=[True, False])
    return d[d[y] > d[y].cummax().shift(fill_value=-np.inf)]


def _brute_pareto(df, x="bpp", y="accuracy"):
    """Indices of rows no other row matches-or-beats on both axes (first of exact duplicates)."""
    keep = []
    rows = list(df[[x, y]].itertuples())
    for i, (ii, xi, yi) in enumerate(rows):
        if xi != xi or yi != yi:
            continue
        beaten = any((xj <= xi and yj >= yi and (xj, yj) != (xi, yi)) or ((xj, yj) == (xi, yi) and j < i)
                     for j, (_, xj, yj) in enumerate(rows) if j != i and xj == xj and yj == yj)
        if not beaten:
            keep.append(ii)
    return sorted(keep, key=lambda k: df.loc[k, x])


@pytest.mark.parametrize("trial", range(30))
def test_pareto_brute_force(trial):
    rng = np.random.default_rng(trial)
    n = int(rng.integers(1, 40))
    # small integer grids force ties in x, in y and exact duplicates
    df = pd.DataFrame({"bpp": rng.integers(0, 6, n) * 0.5, "accuracy": rng.integers(0, 8, n) / 8,
                       "tag": np.arange(n)}, index=rng.permutation(n) + 100)
    got = pareto(df)
    assert list(got.index) == _brute_pareto(df)
    assert list(got.index) == list(_legacy_pareto(df).index)
    assert got["bpp"].is_monotonic_increasing and got["accuracy"].is_monotonic_increasing


def test_pareto_missing_and_nullable():
    bs = dict(method="blocksparse")
    df = to_frame([dict(bs, bpp=1.0, accuracy=0.5), dict(bs, bpp=None, accuracy=0.9), dict(bs, bpp=0.5, accuracy=None),
                   dict(method="png", bpp=2.0, accuracy=0.8), dict(method="jpeg", bpp=3.0, accuracy=0.7)])
    assert list(pareto(df).index) == [0, 3]
    assert list(pareto(df, x="accuracy", y="bpp").index) == [0, 4]  # any pair of columns
    with pytest.raises(ValueError, match="x='rate'"):
        pareto(df, x="rate")
    with pytest.raises(ValueError, match="y='acc'"):
        pareto(df, y="acc")


def _grid(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    return pd.DataFrame({"bpp": rng.integers(1, 6, n) * 0.25, "accuracy": rng.integers(80, 95, n) / 100})


@pytest.mark.parametrize("seed", range(20))
def test_lowest_within_and_best_under_brute_force(seed):
    df = _grid(seed)
    ref, tol, cap = 0.93, 0.05, 0.75
    ok = [i for i in df.index if df.loc[i, "accuracy"] >= 0.88 - 1e-12]
    got = lowest_within(df, ref, tol)
    if not ok:
        assert got is None
    else:
        want = min(ok, key=lambda i: (df.loc[i, "bpp"], -df.loc[i, "accuracy"], i))
        assert got.name == want
    under = [i for i in df.index if df.loc[i, "bpp"] <= cap]
    got = best_under(df, cap)
    if not under:
        assert got is None
    else:
        assert got.name == min(under, key=lambda i: (-df.loc[i, "accuracy"], df.loc[i, "bpp"], i))


def test_tie_rules():
    df = pd.DataFrame({"bpp": [2.0, 1.0, 1.0, 0.5, 3.0], "accuracy": [0.9, 0.9, 0.92, 0.7, 0.92]})
    assert lowest_within(df, 0.92, 0.02).name == 2        # bpp tie at 1.0: the more accurate
    assert best_under(df, 3.0).name == 2                   # accuracy tie at 0.92: the cheaper
    assert best_under(df, 0.9).name == 3 and best_under(df, 0.4) is None
    assert lowest_within(df, 0.95, 0.01) is None
    # 0.07 - 0.01 is 0.06000000000000001 in floating point: 6 of 100 still counts as within
    assert lowest_within(pd.DataFrame({"bpp": [1.0], "accuracy": [6 / 100]}), 0.07, 0.01) is not None
    dup = pd.DataFrame({"bpp": [1.0, 1.0], "accuracy": [0.9, 0.9]}, index=["first", "second"])
    assert lowest_within(dup, 0.9).name == "first" and best_under(dup, 1.0).name == "first"
    with pytest.raises(ValueError, match="tolerance"):
        lowest_within(df, 0.9, -0.1)
    with pytest.raises(ValueError, match="reference"):
        lowest_within(df, float("nan"))
    with pytest.raises(ValueError, match="max_x"):
        best_under(df, float("nan"))


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------
def _results():
    bs = dict(method="blocksparse", mode="global", ratio=0.1)
    return to_frame([
        dict(bs, block_size=2, bits=2, finetuned=False, accuracy=0.80, bpp=0.9),
        dict(bs, block_size=4, bits=2, finetuned=False, accuracy=0.90, bpp=1.8),
        dict(bs, block_size=4, bits=4, finetuned=False, accuracy=0.925, bpp=3.5),
        dict(bs, block_size=4, ratio=0.005, bits=2, finetuned=True, accuracy=0.922, bpp=0.4567),
        dict(bs, mode="channel-wise", block_size=2, bits=4, finetuned=False, accuracy=0.70, bpp=5.0),
        dict(bs, mode="channel-wise", block_size=2, bits=4, finetuned=False, accuracy=None, bpp=0.1),
        dict(method="jpeg", quality=50, accuracy=0.926, bpp=1.25),
        dict(method="jpeg", quality=10, accuracy=0.85, bpp=0.6),
        dict(method="png", accuracy=0.93, bpp=4.0),
        dict(method="dense", bits=8, accuracy=0.931, bpp=None),
        dict(method="uncompressed", accuracy=0.93, bpp=64.0),
    ])


def test_levers_table():
    t = levers_table(_results(), rates=(1.0, 2.0, 4.0))
    assert list(t.columns) == ["lever", "value", "<= 1.0 bpp", "<= 2.0 bpp", "<= 4.0 bpp"]
    want = [("bits", 2, 92.2, 92.2, 92.2), ("bits", 4, None, None, 92.5),
            ("block_size", 2, 80.0, 80.0, 80.0), ("block_size", 4, 92.2, 92.2, 92.5),
            ("mode", "channel-wise", None, None, None), ("mode", "global", 92.2, 92.2, 92.5),
            ("finetuned", False, 80.0, 90.0, 92.5), ("finetuned", True, 92.2, 92.2, 92.2)]
    got = [tuple(None if v is pd.NA else v for v in r) for r in t.itertuples(index=False)]
    assert got == want
    assert type(t.loc[2, "value"]) is int and type(t.loc[6, "value"]) is bool
    md = t.to_string()
    assert "2.0 " not in md.replace("<= 2.0", "") and "4.0 " not in md.replace("<= 4.0", "")
    # a frame read without the schema (block_size as float) prints the same
    plain = levers_table(_results().astype({"block_size": float, "bits": float}), rates=(1.0,))
    assert list(plain["value"][:4]) == [2, 4, 2, 4] and type(plain.loc[2, "value"]) is int
    with pytest.raises(ValueError, match="coder"):
        levers_table(_results().drop(columns="coder"), levers=("coder",))


def test_frontier_table():
    t = frontier_table(_results(), reference=0.93)
    assert list(t.columns) == ["method", "lowest_bpp_within", "config", "accuracy_at_max_bpp"]
    got = {r.method: tuple(None if v is pd.NA else v for v in r[1:]) for r in t.itertuples(index=False)}
    assert got == {
        "blocksparse channel-wise": (None, None, None),
        "blocksparse global": (3.5, "global, B=4, ratio 0.1, 4 bits", 80.0),
        "blocksparse global (fine-tuned)": (0.457, "global, B=4, ratio 0.005, 2 bits", 92.2),
        "dense": (None, None, None),              # its only row has no rate
        "jpeg": (1.25, "q=50", 85.0),
        "png": (4.0, "lossless", None),
    }
    assert str(t["lowest_bpp_within"].dtype) == "Float64"
    assert frontier_table(_results(), reference=0.93, exclude=())["method"].str.contains("uncompressed").any()
    assert frontier_table(_results().iloc[:0], reference=0.9).empty


def test_keys_and_configs():
    row = pd.Series(dict(method="blocksparse", mode="region-wise", block_size=8.0, ratio=0.02, bits=2.0,
                         quality=np.nan, finetuned=np.True_))
    assert method_key(row) == "blocksparse region-wise (fine-tuned)"
    assert describe(row) == "region-wise, B=8, ratio 0.02, 2 bits, fine-tuned"  # a float column read as such
    assert describe(row.drop(labels="finetuned")) == "region-wise, B=8, ratio 0.02, 2 bits"
    assert describe(pd.Series(dict(method="webp", quality=75.0))) == "q=75"
    assert describe(pd.Series(dict(method="png", quality=np.nan))) == "lossless"
    assert describe(pd.Series(dict(method="learned-bottleneck", rate_weight=0.8, mode=pd.NA))) == "lambda=0.8"
    assert method_key(pd.Series(dict(method="webp", finetuned=pd.NA))) == "webp"


# ---------------------------------------------------------------------------
# Bjøntegaard deltas
# ---------------------------------------------------------------------------
RATE_A = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
ACC_A = np.array([0.60, 0.78, 0.86, 0.90, 0.92])


def test_bd_known_answers():
    assert bd_rate(RATE_A, ACC_A, RATE_A / 2, ACC_A) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATE_A, ACC_A, RATE_A * 2, ACC_A) == pytest.approx(100.0, abs=1e-6)
    assert bd_rate(RATE_A, ACC_A, RATE_A, ACC_A) == pytest.approx(0.0, abs=1e-9)
    assert bd_accuracy(RATE_A, ACC_A, RATE_A, ACC_A + 0.01) == pytest.approx(0.01, abs=1e-9)
    assert bd_accuracy(RATE_A, 100 * ACC_A, RATE_A, 100 * ACC_A + 1) == pytest.approx(1.0, abs=1e-9)
    assert bd_accuracy(RATE_A, ACC_A, RATE_A, ACC_A) == pytest.approx(0.0, abs=1e-12)
    # B cheaper -> negative bd_rate, positive bd_accuracy
    assert bd_accuracy(RATE_A, ACC_A, RATE_A / 2, ACC_A) > 0
    assert bd_rate(RATE_A, ACC_A, RATE_A, ACC_A - 0.02) > 0


def test_bd_rate_hand_integral():
    # a: ln r = s^3 on s in [0, 1]; b: ln r = s^3 + s on [0.5, 1.5]; over the overlap [0.5, 1]
    # the mean gap is mean(s) = 0.75 -> 100 (e^0.75 - 1); six points per curve, exact cubics
    sa, sb = np.linspace(0, 1, 6), np.linspace(0.5, 1.5, 6)
    got = bd_rate(np.exp(sa ** 3), sa, np.exp(sb ** 3 + sb), sb, method="cubic")
    assert got == pytest.approx(100 * (math.exp(0.75) - 1), abs=1e-6)
    # a straight line and a 2-point curve: ln r = s vs ln r = 2 s on [0, 1] -> mean gap 1/2
    for method in ("cubic", "pchip"):
        assert bd_rate([1, math.e], [0, 1], [1, math.e ** 2], [0, 1], method) == pytest.approx(100 * (math.exp(0.5) - 1))


def test_pchip_reproduces_lines_stays_between_points_and_does_not_overshoot():
    from blocksparse.analysis import pchip
    x = np.array([0.0, 0.1, 0.15, 0.7, 1.0])  # uneven
    at = np.linspace(0, 1, 101)
    assert np.allclose(pchip(x, 3 * x - 1, at), 3 * at - 1)  # lines are reproduced exactly
    assert np.allclose(pchip(x, x ** 2, x), x ** 2)  # through the points
    y = np.array([0.0, 0.1, 0.9, 1.0, 1.0])
    v = pchip(x, y, at)
    assert (np.diff(v) >= -1e-12).all() and v.min() >= 0 and v.max() <= 1 + 1e-12  # monotone, no overshoot
    # uneven ln-rate vs accuracy with one point far from the rest (the learned bottleneck's shape):
    # the cubic polynomial swings wildly, the monotone curve stays between the two curves' rates
    rate_b, acc_b = [0.889, 0.919, 0.97, 1.182], [0.7534, 0.9045, 0.9173, 0.9208]
    rate_a, acc_a = [0.995, 1.422, 1.576, 1.793, 1.976, 2.325, 2.652], [0.78, 0.8647, 0.8797, 0.896, 0.9074, 0.9153, 0.9241]
    got = bd_rate(rate_a, acc_a, rate_b, acc_b)
    assert -60 < got < -20  # B needs 0.9-1.2 bpp where A needs 1-2.3
    assert abs(bd_rate(rate_a, acc_a, rate_b, acc_b, method="cubic")) > 1000
    assert bd_rate(rate_a, acc_a, rate_a, acc_a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="method"):
        bd_rate(rate_a, acc_a, rate_b, acc_b, method="spline")


def test_bd_accuracy_hand_integral():
    # a: acc = 0.5 + 0.1 L, b: acc = 0.6 + 0.05 L, L = ln r; overlap L in [0, 2]: mean(0.1 - 0.05 L) = 0.05
    la, lb = np.linspace(-1, 2, 5), np.linspace(0, 3, 4)
    got = bd_accuracy(np.exp(la), 0.5 + 0.1 * la, np.exp(lb), 0.6 + 0.05 * lb)
    assert got == pytest.approx(0.05, abs=1e-9)


@pytest.mark.filterwarnings("error")  # a polynomial of too high a degree warns (RankWarning)
def test_bd_unsorted_duplicate_and_nonmonotone():
    p = np.array([3, 0, 4, 1, 2])
    assert bd_rate(RATE_A[p], ACC_A[p], RATE_A, ACC_A + 0.005) == pytest.approx(
        bd_rate(RATE_A, ACC_A, RATE_A, ACC_A + 0.005), abs=1e-9)
    # a repeated point adds no information: ln r linear in acc, fitted with degree 2 either way
    acc = np.array([0.7, 0.8, 0.9])
    r = np.exp(5 * acc)
    dup_r, dup_acc = np.append(r, r[1]), np.append(acc, acc[1])
    assert bd_rate(r, acc, r / 2, acc) == pytest.approx(-50.0)
    assert bd_rate(dup_r, dup_acc, dup_r / 2, dup_acc) == pytest.approx(-50.0)
    # two rates with the same accuracy (a plateau) and a dip: least squares, still finite
    nm_rate, nm_acc = [0.5, 1.0, 2.0, 4.0, 8.0], [0.80, 0.88, 0.86, 0.90, 0.90]
    v = bd_rate(RATE_A, ACC_A, nm_rate, nm_acc)
    assert math.isfinite(v) and math.isfinite(bd_accuracy(RATE_A, ACC_A, nm_rate, nm_acc))


@pytest.mark.parametrize("args, name", [
    (([1.0], [0.5], [1.0, 2.0], [0.5, 0.6]), "rate_a"),
    (([1.0, 2.0], [0.5, 0.6], [1.0, 2.0, 3.0], [0.5, 0.6]), "rate_b"),
    (([0.0, 2.0], [0.5, 0.6], [1.0, 2.0], [0.5, 0.6]), "rate_a"),
    (([1.0, 2.0], [0.5, 0.6], [-1.0, 2.0], [0.5, 0.6]), "rate_b"),
    (([1.0, 2.0], [0.5, np.nan], [1.0, 2.0], [0.5, 0.6]), "acc_a"),
    (([1.0, 2.0], [0.5, 0.6], [1.0, 2.0], [0.7, 0.8]), "overlap"),
])
def test_bd_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        bd_rate(*args)
    with pytest.raises(ValueError, match="overlap"):
        bd_accuracy([1.0, 2.0], [0.5, 0.6], [4.0, 8.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="acc_b"):
        bd_rate([1.0, 2.0], [0.5, 0.6], [1.0, 2.0], [0.55, 0.55])
    with pytest.raises(ValueError, match="rate_a"):
        bd_accuracy([2.0, 2.0], [0.5, 0.6], [1.0, 2.0], [0.5, 0.6])


def test_model_groups_keep_rows_with_a_missing_recipe_value():
    from blocksparse.analysis import model_groups, model_splits
    base = dict(split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2, distill_weight=0.5,
                group_lasso_weight=0.0, steps=1200)
    models = pd.DataFrame([base | dict(seed=0, lr=1e-3), base | dict(seed=1, lr=1e-3), base | dict(seed=0, lr=None),
                           base | dict(seed=0, lr=3e-4, bits=4)])
    groups = model_groups(models)
    assert [list(g["seed"]) for g in groups] == [[0, 1], [0], [0]]  # the card without an lr is its own model
    assert sum(len(g) for g in groups) == len(models)
    assert model_splits(models) == {"layer1"} and model_splits(None) == set()
