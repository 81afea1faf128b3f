"""The power of the protocol's decision rules, from the discordance its cards show.

A rule declares a rung "within one point" of the reference. Its power at a true difference
``delta`` (in accuracy, e.g. -0.005) is the probability that it does so. Both rules pair the
candidate with the reference image by image, so what sets their noise is the share of images on
which the two disagree (the discordance), not the accuracy itself.

- **v1** (``protocol.LADDERS``): the lower end of the 95% paired bootstrap interval on val-select
  (2,500 images, seed 0) is >= -1 point.
- **v2** (``protocol.PICK_THRESHOLD``, ``CONFIRM_CONFIDENCE``): picked on val-select when the
  point estimate is >= -1 point, then confirmed on test (5 seeds x 10,000 images) when the lower
  end of the hierarchical interval at 1 - 0.05 / 7 is >= -1 point. Its power is the product of the
  two (the pick and the test are independent images).

Every probability is a Monte Carlo simulation of the rule itself (``stats.paired_test``,
``stats.hierarchical_bootstrap``) on correctness drawn to match what v1's val-select cards show:
the discordance, how far a seed's discordant images are shared with the other seeds', and how
much the difference moves from seed to seed. Nothing here reads the test set.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .protocol import CONFIRM_CONFIDENCE, PICK_THRESHOLD, SEEDS, SEEDS_V2
from .results import unpack_correct
from .stats import ONE_POINT, hierarchical_bootstrap, paired_test

POWER_COLUMNS = ("rule", "n_images", "discordance", "true_diff", "power")
VAL_SELECT_IMAGES, TEST_IMAGES = 2500, 10000
NEAR = 0.015  # rungs whose val-select difference is within 1.5 points show the discordance near the margin


def observed(cards: list[dict]) -> dict:
    """What v1's val-select cards show about the noise of a paired difference.

    Returns ``discordance`` (median share of images on which a seed-0 rung and the reference's
    seed 0 disagree, over the rungs within ``NEAR`` of it), ``n_rungs``, and, from the families
    with three seeds on val-select, ``shared`` (the share of a seed's discordance that the other
    seeds repeat on the same images) and ``seed_sd`` (the spread of a seed's difference beyond
    what its images explain).
    """
    refs = {c["seed"]: unpack_correct(c["val_select"]["correct"]) for c in cards
            if c["family"] == "reference" and c.get("val_select")}
    if set(SEEDS) - set(refs):
        raise ValueError(f"cards: power needs the reference's seeds {SEEDS} on val-select")
    near, groups = [], {}
    for c in cards:
        if c["family"] in ("reference", "shipped-model") or not c.get("val_select") or c["seed"] not in refs:
            continue
        x = unpack_correct(c["val_select"]["correct"])
        if c["seed"] == 0 and abs(x.mean() - refs[0].mean()) <= NEAR:
            near.append(float((x != refs[0]).mean()))
        groups.setdefault((c["family"], c.get("split_at"), c.get("rung"), str(c["setting"])), {})[c["seed"]] = x
    if not near:
        raise ValueError(f"cards: no seed-0 rung within {NEAR:.1%} of the reference on val-select")
    shared, excess = [], []
    for runs in groups.values():
        if set(runs) != set(SEEDS):
            continue
        d = np.stack([runs[s].astype(float) - refs[s] for s in SEEDS])
        disc = float((d != 0).mean())
        # the seed-mean of a per-image difference has a second moment of disc / 3 if the seeds disagree
        # on different images and disc if on the same ones, the same way: solve for the shared share
        shared.append(float(np.clip(((d.mean(0) ** 2).mean() / disc - 1 / 3) * 1.5, 0, 1)))
        excess.append(max(0.0, float(d.mean(1).var(ddof=1)) - disc / d.shape[1]))
    if not shared:
        raise ValueError("cards: power needs one family with all three seeds on val-select")
    return dict(discordance=float(np.median(near)), n_rungs=len(near), shared=max(shared),
                seed_sd=float(np.sqrt(max(excess))), n_families=len(shared))


def simulate(delta: float, discordance: float, n_images: int, seeds: int = 1, shared: float = 0.0,
             seed_sd: float = 0.0, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness (candidate, reference), each [seeds, n_images], with the given true
    difference ``delta`` and ``discordance``: each seed's difference is ``delta`` plus a normal
    shift of sd ``seed_sd``; a share ``shared`` of the discordant images is the same for every seed."""
    if not 0 < discordance < 1 or abs(delta) > discordance:
        raise ValueError(f"discordance must be in (0, 1) and >= |delta|, got {discordance!r}, {delta!r}")
    rng = rng or np.random.default_rng(0)
    ref = np.ones((seeds, n_images), bool)
    cand = np.ones((seeds, n_images), bool)
    common = rng.random(n_images) < shared * discordance  # discordant for every seed
    common_dir = rng.random(n_images)
    for s in range(seeds):
        d_s = float(np.clip(delta + rng.normal(0, seed_sd) if seed_sd else delta, -discordance, discordance))
        own = ~common & (rng.random(n_images) < (1 - shared) * discordance / (1 - shared * discordance))
        direction = np.where(common, common_dir, rng.random(n_images))
        up = direction < 0.5 + d_s / (2 * discordance)  # candidate right, reference wrong
        disc = common | own
        ref[s, disc & up] = False
        cand[s, disc & ~up] = False
    return cand, ref


def power_v1(delta: float, discordance: float, n_images: int = VAL_SELECT_IMAGES, sims: int = 400,
             seed: int = 0) -> float:
    """v1's gate: the 95% paired interval's lower end >= -1 point on one seed's images."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        cand, ref = simulate(delta, discordance, n_images, rng=rng)
        hits += paired_test(ref[0], cand[0], n_boot=2000, seed=int(rng.integers(1 << 31)))["lo"] >= -ONE_POINT - 1e-9
    return hits / sims


def power_pick(delta: float, discordance: float, seed_sd: float = 0.0, n_images: int = VAL_SELECT_IMAGES,
               sims: int = 2000, seed: int = 0) -> float:
    """v2's pick: seed 0's point estimate on val-select >= -``PICK_THRESHOLD``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        cand, ref = simulate(delta, discordance, n_images, seed_sd=seed_sd, rng=rng)
        hits += cand[0].mean() - ref[0].mean() >= -PICK_THRESHOLD - 1e-9
    return hits / sims


def power_confirm(delta: float, discordance: float, shared: float, seed_sd: float, n_images: int = TEST_IMAGES,
                  seeds: int = len(SEEDS_V2), sims: int = 200, seed: int = 0) -> float:
    """v2's gate: the hierarchical interval at ``CONFIRM_CONFIDENCE`` over ``seeds`` seeds has its lower
    end >= -1 point."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        cand, ref = simulate(delta, discordance, n_images, seeds, shared, seed_sd, rng)
        hb = hierarchical_bootstrap(cand, ref, CONFIRM_CONFIDENCE, n_boot=1000, seed=int(rng.integers(1 << 31)))
        hits += hb["within"]
    return hits / sims


def power_table(cards: list[dict], true_diffs=(0.0, -0.005, -0.0075, -0.01), sims: int = 200) -> pd.DataFrame:
    """``power.csv``: per rule and true difference, the power at the discordance observed on v1's
    cards (``observed``) and at 1.5x it (a noisier family); true differences in accuracy."""
    o = observed(cards)
    rows = []
    for disc in (o["discordance"], 1.5 * o["discordance"]):
        for delta in true_diffs:
            v1 = power_v1(delta, disc, sims=2 * sims)
            pick = power_pick(delta, disc, o["seed_sd"], sims=10 * sims)
            confirm = power_confirm(delta, disc, o["shared"], o["seed_sd"], sims=sims)
            rows += [dict(rule="v1: val-select lower end >= -1", n_images=VAL_SELECT_IMAGES, discordance=disc,
                          true_diff=delta, power=v1),
                     dict(rule="v2 pick: val-select estimate >= -1", n_images=VAL_SELECT_IMAGES, discordance=disc,
                          true_diff=delta, power=pick),
                     dict(rule="v2 confirm: test 5 seeds, lower end >= -1 at 1-0.05/7", n_images=TEST_IMAGES,
                          discordance=disc, true_diff=delta, power=confirm),
                     dict(rule="v2: pick and confirm", n_images=VAL_SELECT_IMAGES + TEST_IMAGES, discordance=disc,
                          true_diff=delta, power=pick * confirm)]
    return pd.DataFrame(rows, columns=list(POWER_COLUMNS))
