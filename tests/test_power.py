"""power: simulated correctness has the asked discordance and difference; the pick's power matches
the normal approximation; v1's gate has the size it claims; the committed power.csv meets v2's bar."""
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from blocksparse import power
from blocksparse.results import pack_correct

ROOT = Path(__file__).resolve().parents[1]


def test_simulated_correctness_has_the_discordance_and_difference_asked_for():
    cand, ref = power.simulate(-0.004, 0.03, 200_000, seeds=3, shared=0.2, rng=np.random.default_rng(1))
    for s in range(3):
        assert abs((cand[s] != ref[s]).mean() - 0.03) < 0.002
        assert abs(cand[s].mean() - ref[s].mean() + 0.004) < 0.0015
    # a share of the discordant images is the same for every seed: counted directly
    every = ((cand != ref).all(0)).mean()
    assert abs(every - 0.2 * 0.03) < 0.0015


def test_pick_power_matches_the_normal_approximation():
    d, delta, n = 0.03, -0.005, 2500
    se = math.sqrt((d - delta ** 2) / n)
    expected = 1 - NormalDist().cdf((-0.01 - delta) / se)
    assert abs(power.power_pick(delta, d, sims=3000) - expected) < 0.03


def test_v1_gate_is_sure_far_inside_and_rarely_passes_at_the_margin():
    assert power.power_v1(0.0, 0.01, sims=60) > 0.95
    assert power.power_v1(-0.01, 0.03, sims=200) < 0.1  # one-sided 2.5% test at the margin


def test_observed_reads_discordance_near_the_margin_and_three_seed_families():
    rng = np.random.default_rng(0)
    n = 2000
    ref = [rng.random(n) < 0.9] * 3  # the same reference run each seed, so a flipped image moves every seed alike
    cards = [dict(family="reference", seed=s, val_select=dict(correct=pack_correct(ref[s]))) for s in range(3)]
    flip = np.zeros(n, bool)
    flip[:20] = True  # 1% discordant against the reference's seed 0
    for s in range(3):
        x = ref[s] ^ flip
        cards.append(dict(family="bottleneck", split_at="layer3", rung=0.8, setting={}, seed=s,
                          val_select=dict(correct=pack_correct(x))))
    o = power.observed(cards)
    assert o["discordance"] == pytest.approx(0.01)
    assert o["n_families"] == 1 and o["shared"] == pytest.approx(1.0)  # the same images for every seed
    with pytest.raises(ValueError, match="reference"):
        power.observed(cards[1:])


def test_committed_power_table_meets_v2s_bar_and_shows_v1_had_none():
    t = pd.read_csv(ROOT / "data" / "results" / "power.csv")
    assert list(t.columns) == list(power.POWER_COLUMNS)
    observed_d = t["discordance"].min()
    at = t[(t["discordance"] == observed_d) & np.isclose(t["true_diff"], -0.005)].set_index("rule")["power"]
    assert at["v2: pick and confirm"] >= 0.8
    assert at["v1: val-select lower end >= -1"] < 0.5
    margin = t[(t["discordance"] == observed_d) & np.isclose(t["true_diff"], -0.01)].set_index("rule")["power"]
    assert margin["v2: pick and confirm"] < 0.05  # a rung at the margin is not confirmed
