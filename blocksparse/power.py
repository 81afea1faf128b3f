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
- **the walks** (``protocol``'s v2.4 and v2.5): the probability that a family's whole walk ends on
  an operating point that its confirmation then confirms, when the family's true curve crosses -0.5
  point on its ladder (``power_walk``, with its simulation's standard error). v2.2's walks pick at
  -1 point, v2.5's at -0.3 (v2.4's -0.4 was superseded before any run).

Every probability is a Monte Carlo simulation of the rule itself (``stats.paired_test``,
``stats.hierarchical_bootstrap``) on correctness drawn to match what v1's val-select cards show:
the discordance, how far a seed's discordant images are shared with the other seeds', and how
much the difference moves from seed to seed. Nothing here reads the test set.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .protocol import (CONFIRM_CONFIDENCE, LADDERS_V2, PICK_THRESHOLD, PICK_THRESHOLD_V2_4, PICK_THRESHOLD_V2_5,
                       POWER_CURVE_SIMS, POWER_WALKS, SEEDS, SEEDS_V2)
from .results import unpack_correct
from .stats import ONE_POINT, hierarchical_bootstrap, paired_test
from .walk import ladder, operating_rung, pick, walked

POWER_COLUMNS = ("rule", "n_images", "discordance", "true_diff", "power", "se")  # se: the walks' (v2.5)
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
               sims: int = 2000, seed: int = 0, threshold: float = PICK_THRESHOLD) -> float:
    """v2's pick: seed 0's point estimate on val-select >= -``threshold`` (v2's ``PICK_THRESHOLD``,
    v2.5's ``PICK_THRESHOLD_V2_5``)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        cand, ref = simulate(delta, discordance, n_images, seed_sd=seed_sd, rng=rng)
        hits += cand[0].mean() - ref[0].mean() >= -threshold - 1e-9
    return hits / sims


def confirm_hits(delta: float, discordance: float, shared: float, seed_sd: float, n_images: int = TEST_IMAGES,
                 seeds: int = len(SEEDS_V2), sims: int = 200, seed: int = 0) -> np.ndarray:
    """v2's gate, simulated ``sims`` times at a true difference ``delta``: per simulation, whether the
    hierarchical interval at ``CONFIRM_CONFIDENCE`` over ``seeds`` seeds has its lower end >= -1 point.
    Every ``delta`` draws from the same ``seed`` (common random numbers), so a curve's points are
    correlated; ``power_walk`` reads the simulations themselves to count that."""
    rng = np.random.default_rng(seed)
    hits = np.zeros(sims, bool)
    for i in range(sims):
        cand, ref = simulate(delta, discordance, n_images, seeds, shared, seed_sd, rng)
        hits[i] = hierarchical_bootstrap(cand, ref, CONFIRM_CONFIDENCE, n_boot=1000, seed=int(rng.integers(1 << 31)))["within"]
    return hits


def power_confirm(delta: float, discordance: float, shared: float, seed_sd: float, n_images: int = TEST_IMAGES,
                  seeds: int = len(SEEDS_V2), sims: int = 200, seed: int = 0) -> float:
    """v2's gate: the share of ``confirm_hits``."""
    return float(confirm_hits(delta, discordance, shared, seed_sd, n_images, seeds, sims, seed).mean())


WALKED = ("block-sparse", "bottleneck", "webp-finetuned")  # the families whose walks are simulated
UNIT = {"block-sparse": "doubling", "bottleneck": "halving of lambda", "webp-finetuned": "10 quality"}  # a step of _position
SLOPE_FACTORS = (0.5, 2.0)  # v2.5's walks are also simulated at these multiples of their slope


def _position(family: str, rung: float) -> float:
    """Where a rung sits on its family's ladder, in steps of ``UNIT``: log2 of block-sparse's target
    rate; for the bottleneck, minus log2 of its rate weight (one step is a halving of lambda, which spends
    more bits, but not twice as many); for WebP with a fine-tuned classifier, its quality / 10 (its
    ladder moves in steps of 5 quality, not in factors)."""
    if family == "bottleneck":
        return -math.log2(rung)
    return rung / 10 if family == "webp-finetuned" else math.log2(rung)


def walk_slopes(cards: list[dict], reference: dict, split_at: str = "layer3") -> dict[str, float]:
    """family -> how fast its val-select difference from the reference's seed 0 (seed 0, in accuracy)
    rises per step of ``_position`` (a doubling of block-sparse's target rate, a halving of the bottleneck's
    lambda, 10 of WebP's quality), between the rung of lowest rate that its v2 walk (block-sparse's and
    the bottleneck's at ``split_at``, WebP with a fine-tuned classifier's, which has no split) picked
    (``walk.pick``, its walk's threshold) and the next rung walked above it, once the walk has ended
    (``walk.operating_rung``). Only the rungs the walk walked count (``walk.ladder``; WebP's walk reuses
    some of v1's runs, not all). ``cards``: v2's
    (``protocol_v2.read_cards``; a rung's first card is the one its walk decided on)."""
    out = {}
    for family in WALKED:
        at = None if family == "webp-finetuned" else split_at  # input compression: one walk, no split
        first = {}  # rung -> the card its walk decided on, as ``walk.walked`` reads it
        for c in cards:
            if c["family"] == family and c.get("split_at") == at and c["seed"] == 0:
                first.setdefault(float(c["rung"]), c)
        done = walked(cards, family, at, reference)
        op = operating_rung(family, done)
        if op is None:  # the walk goes on, or picked nothing
            continue
        above = [r for r in ladder(family, done)[0] if _position(family, r) > _position(family, op)
                 and first.get(r, {}).get("val_select")]
        if not above:  # no rung walked above its operating point (or none with a run)
            continue
        nxt = min(above, key=lambda r: _position(family, r))
        diff = {r: pick(first[r], reference)["difference"] for r in (op, nxt)}
        out[family] = (diff[nxt] - diff[op]) / (_position(family, nxt) - _position(family, op))
    return out


def confirm_curve(discordance: float, shared: float, seed_sd: float, deltas=None, sims: int = 100,
                  hits: bool = False):
    """true difference -> the confirmation's power (``power_confirm``), on a grid from the margin up.
    With ``hits``, also the simulations themselves: an array (sims x grid points, in the grid's order)
    of ``confirm_hits``, for ``power_walk``'s standard error."""
    deltas = np.round(np.arange(-0.009, -0.0025, 0.001), 4) if deltas is None else deltas  # 0 below, ~1 above
    h = np.stack([confirm_hits(float(d), discordance, shared, seed_sd, sims=sims) for d in deltas], axis=1)
    curve = {float(d): float(h[:, k].mean()) for k, d in enumerate(deltas)}
    return (curve, h) if hits else curve


def power_walk(family: str, threshold: float, slope: float, discordance: float, curve: dict[float, float],
               seed_sd: float = 0.0, n_images: int = VAL_SELECT_IMAGES, sims: int = 2000, seed: int = 0,
               curve_hits: np.ndarray | None = None) -> dict:
    """The power of a whole walk (``walk.ladder``) that picks a rung when its val-select estimate is
    >= -``threshold``: the mean probability that its operating point is confirmed, when the family's
    true difference is the straight line ``slope`` x (position - x0) - 0.5 point (capped at 0), with
    the rung of -0.5 point, x0, drawn evenly over the coarse ladder's span (``_position``). A rung's
    estimate is its true difference plus normal noise of a paired difference of ``discordance`` on
    ``n_images`` images and a seed's own ``seed_sd``; the confirmation's power at the operating point's
    true difference is ``curve``'s (``confirm_curve``), interpolated, and 0 below its lowest delta.
    Returns ``power``, the median true difference of the operating point (``median_diff``), how many
    steps of ``_position`` (``UNIT``) it sits above the -0.5 crossing (``mean_doublings``), the share of walks
    that pick nothing (``no_pick``) and ``se``, the simulation's standard error of ``power``: the
    walks' own spread over ``sims``, plus, when ``curve_hits`` (the simulations behind ``curve``:
    ``confirm_curve(..., hits=True)``) is given, the error of the curve itself. Every walk shares one
    curve, so that part does not shrink with ``sims``; it is the spread over the curve's simulations of
    their hits weighted as the walks' interpolation weighs the grid's points (which counts the
    correlation between points that share their random numbers)."""
    if family not in WALKED:
        raise ValueError(f"family: the walks simulated are {', '.join(WALKED)}'s, got {family!r}")
    if threshold <= 0 or slope <= 0:
        raise ValueError(f"threshold and slope must be > 0, got {threshold!r}, {slope!r}")
    rng = np.random.default_rng(seed)
    xs = [_position(family, r) for r in LADDERS_V2[family]]
    deltas = sorted(curve)
    values = np.array([curve[k] for k in deltas])
    sd = math.sqrt(discordance / n_images + seed_sd ** 2)
    diffs, doublings, none = [], [], 0
    hits = np.zeros(sims)  # each walk's chance of confirmation
    weights = np.zeros(len(deltas))  # how much each of the curve's points counts in ``power``
    for i in range(sims):
        x0 = rng.uniform(min(xs), max(xs))

        def true(rung):
            return min(0.0, -0.005 + slope * (_position(family, rung) - x0))
        walked = {}
        while (nxt := ladder(family, walked)[1]) is not None:
            walked[nxt] = true(nxt) + rng.normal(0, sd) >= -threshold - 1e-12
        op = operating_rung(family, walked)
        if op is None:
            none += 1
            continue
        d = true(op)
        if d >= deltas[0]:  # linear interpolation between the grid's two points around d (the last, above it)
            w = np.zeros(len(deltas))
            j = min(int(np.searchsorted(deltas, d, side="right")) - 1, len(deltas) - 1)
            t = 0.0 if j == len(deltas) - 1 else (d - deltas[j]) / (deltas[j + 1] - deltas[j])
            w[j] = 1 - t
            w[min(j + 1, len(deltas) - 1)] += t
            hits[i] = w @ values
            weights += w / sims
        diffs.append(d)
        doublings.append(_position(family, op) - x0)
    var = hits.var(ddof=1) / sims if sims > 1 else 0.0
    if curve_hits is not None:
        h = np.asarray(curve_hits, float)
        if h.ndim != 2 or h.shape[1] != len(deltas) or not np.allclose(h.mean(axis=0), values):
            raise ValueError("curve_hits: one column per point of curve, in its order, whose means are curve's values")
        var += float((h @ weights).var(ddof=1)) / len(h)
    return dict(power=float(hits.mean()), se=math.sqrt(var),
                median_diff=float(np.median(diffs)) if diffs else float("nan"),
                mean_doublings=float(np.mean(doublings)) if doublings else float("nan"), no_pick=none / sims)


# The walks whose power ``power.csv`` states: (version, threshold, families). v2.2's pick at -1 point
# governs layer3's walks and WebP's; v2.4's at -0.4 was superseded by v2.5's at -0.3 before any run at
# layer2 or layer1 (its rows stay, as the record of why).
WALK_RULES = (("v2.2", PICK_THRESHOLD, WALKED), ("v2.4", PICK_THRESHOLD_V2_4, ("block-sparse", "bottleneck")),
              ("v2.5", PICK_THRESHOLD_V2_5, ("block-sparse", "bottleneck")))


def walk_rows(slopes: dict[str, float], o: dict, disc: float, curve: tuple | None = None,
              curve_sims: int = POWER_CURVE_SIMS, walks: int = POWER_WALKS) -> list[dict]:
    """``power.csv``'s rows for the walks (``WALK_RULES``) at ``slopes`` (``walk_slopes``), each with its
    simulation's standard error (``se``), at the sizes v2.5 registered; then v2.5's walks at half and
    twice their slope (``SLOPE_FACTORS``: one slope is read from two rungs of one seed, and is itself
    noisy). ``curve``: the confirmation's (``confirm_curve(disc, ..., sims=curve_sims, hits=True)``,
    computed when not given)."""
    if curve is None:
        curve = confirm_curve(disc, o["shared"], o["seed_sd"], sims=curve_sims, hits=True)
    curve, hits = curve
    rows = []
    for version, threshold, families in WALK_RULES:
        for family in families:
            if family not in slopes:
                continue
            for factor in (1.0, *SLOPE_FACTORS) if version == "v2.5" else (1.0,):
                slope = factor * slopes[family]
                w = power_walk(family, threshold, slope, disc, curve, o["seed_sd"], sims=walks, curve_hits=hits)
                at = "" if factor == 1.0 else f" at {factor:g}x its slope"
                rows.append(dict(rule=f"{version} walk{at}, {family} (slope {100 * slope:.2f} points per "
                                      f"{UNIT[family]}): pick at -{100 * threshold:g}, then confirm",
                                 n_images=VAL_SELECT_IMAGES + TEST_IMAGES, discordance=disc, true_diff=-0.005,
                                 power=w["power"], se=w["se"]))
    return rows


def power_table(cards: list[dict], true_diffs=(0.0, -0.005, -0.0075, -0.01), sims: int = 200,
                slopes: dict[str, float] | None = None, curve_for=None) -> pd.DataFrame:
    """``power.csv``: per rule and true difference, the power at the discordance observed on v1's
    cards (``observed``) and at 1.5x it (a noisier family); true differences in accuracy. With
    ``slopes`` (``walk_slopes``), the walks' power too (``walk_rows``; true_diff -0.005: the curve
    crosses -0.5 point on the ladder). ``curve_for(discordance, observed)``: the confirmation's curve
    there and its simulations (default ``confirm_curve`` at ``POWER_CURVE_SIMS`` with ``hits=True``; the
    command line reads them from the cache)."""
    o = observed(cards)
    rows = []
    for disc in (o["discordance"], 1.5 * o["discordance"]):
        for delta in true_diffs:
            v1 = power_v1(delta, disc, sims=2 * sims)
            pick = power_pick(delta, disc, o["seed_sd"], sims=10 * sims)
            pick_v2_5 = power_pick(delta, disc, o["seed_sd"], sims=10 * sims, threshold=PICK_THRESHOLD_V2_5)
            confirm = power_confirm(delta, disc, o["shared"], o["seed_sd"], sims=sims)
            rows += [dict(rule="v1: val-select lower end >= -1", n_images=VAL_SELECT_IMAGES, discordance=disc,
                          true_diff=delta, power=v1),
                     dict(rule="v2 pick: val-select estimate >= -1", n_images=VAL_SELECT_IMAGES, discordance=disc,
                          true_diff=delta, power=pick),
                     dict(rule="v2 confirm: test 5 seeds, lower end >= -1 at 1-0.05/7", n_images=TEST_IMAGES,
                          discordance=disc, true_diff=delta, power=confirm),
                     dict(rule="v2: pick and confirm", n_images=VAL_SELECT_IMAGES + TEST_IMAGES, discordance=disc,
                          true_diff=delta, power=pick * confirm),
                     dict(rule=f"v2.5 pick: val-select estimate >= -{100 * PICK_THRESHOLD_V2_5:g}",
                          n_images=VAL_SELECT_IMAGES, discordance=disc, true_diff=delta, power=pick_v2_5)]
        if slopes:
            curve = curve_for(disc, o) if curve_for else None
            rows += walk_rows(slopes, o, disc, curve=curve)
    return pd.DataFrame(rows, columns=list(POWER_COLUMNS))
