"""Protocol v2's walk (``protocol``'s rules, pure logic, no torch): which rules a walk runs under, the
pick of one rung, and the order in which a family's rungs are walked. ``protocol_v2`` trains what
the walk asks for; ``power`` simulates the walk itself with the same code.
"""
from __future__ import annotations

import itertools

from .protocol import (COARSE_FACTOR, FINAL_KINDS, FINAL_ROUND_SPLITS, LADDERS_V2, PICK_THRESHOLD, PICK_THRESHOLD_V2_5,
                       PICK_V2_4_SPLITS, PROTOCOL_V2_2, PROTOCOL_V2_5, REFINE, WEBP_BELOW, WEBP_STEP)
from .results import unpack_correct
from .stats import paired_test


def walk_version(split_at: str | None, family: str) -> str:
    """The rules a walk runs under: v2.5 (v2.3's final round and v2.5's pick) for block-sparse and the
    bottleneck at ``FINAL_ROUND_SPLITS``; every other walk (layer3's, ended; WebP's, under way) runs under
    v2.2, which v2.3 to v2.5 leave as it was."""
    return PROTOCOL_V2_5 if has_final_round(split_at, family) else PROTOCOL_V2_2


def has_final_round(split_at: str | None, family: str) -> bool:
    """Whether a walk's screens end with v2.3's final round (``protocol.FINAL_ROUND``)."""
    return family in FINAL_KINDS and split_at in FINAL_ROUND_SPLITS


def pick_threshold(split_at: str | None, family: str) -> float:
    """How far below the reference a rung's val-select point estimate may lie and still be picked:
    0.3 point under v2.5 (at v2.4's ``PICK_V2_4_SPLITS``), one point (v2's) for every other walk."""
    return PICK_THRESHOLD_V2_5 if family in FINAL_KINDS and split_at in PICK_V2_4_SPLITS else PICK_THRESHOLD


def pick(card: dict, reference: dict) -> dict:
    """The pick of one rung: its seed 0's paired difference from the reference's seed 0 on val-select
    (a point estimate, with the interval for the record) and whether it is >= -``pick_threshold`` of
    the card's walk."""
    t = paired_test(unpack_correct(reference["val_select"]["correct"]), unpack_correct(card["val_select"]["correct"]))
    threshold = pick_threshold(card.get("split_at"), card.get("family"))
    return t | dict(picked=bool(t["difference"] >= -threshold - 1e-9), threshold=threshold)


def walked(cards: list[dict], family: str, split_at: str, ref: dict) -> dict[float, bool]:
    """rung -> picked, for the seed-0 runs of ``family`` at ``split_at`` (a rung's first card: the one
    the walk decided on; a rung whose screen found no run has no val-select and counts as missed).
    WebP with a fine-tuned classifier's cards have ``split_at`` None."""
    out = {}
    for c in cards:
        if c["family"] == family and c["split_at"] == split_at and c["seed"] == 0:
            out.setdefault(float(c["rung"]), bool(c.get("val_select")) and pick(c, ref)["picked"])  # none: missed
    return out


def ladder(family: str, walked: dict[float, bool]) -> tuple[list[float], float | None]:
    """The v2 walk of one family at one split over the rungs ``walked`` so far (rung -> picked).

    Returns (the rungs in walking order so far, the next rung to train or None when the walk has
    ended). Rungs are ordered from the lowest rate up: block-sparse's target rates ascending, the
    bottleneck's rate weights descending. See ``protocol``: coarse ladder first; below a first
    rung that is picked, the coarse factor again until one misses; then the rungs a factor
    ``REFINE`` apart between the last miss and the coarse pick, lowest rate first.
    """
    if family == "webp-finetuned":
        return _webp_ladder(walked)
    up = family != "bottleneck"  # block-sparse rungs grow with rate, the bottleneck's rate weights shrink
    factor = COARSE_FACTOR[family]
    below = (lambda r: r / factor) if up else (lambda r: r * factor)
    above = (lambda r: r * REFINE) if up else (lambda r: r / REFINE)
    return _walk(LADDERS_V2[family], below, above, walked)


def _webp_ladder(walked: dict[float, bool]) -> tuple[list[float], float | None]:
    """``ladder`` for WebP with a fine-tuned classifier (v2.2): qualities 50 to 100; below a picked
    first rung, ``WEBP_BELOW`` until one misses; then ``WEBP_STEP`` apart above the last miss."""
    below = dict(zip((LADDERS_V2["webp-finetuned"][0], *WEBP_BELOW), WEBP_BELOW))
    return _walk(LADDERS_V2["webp-finetuned"], below.get, lambda q: q + WEBP_STEP, walked)


def _walk(coarse, below, above, walked: dict[float, bool]) -> tuple[list[float], float | None]:
    """The walk every family shares (``ladder``): the rungs ``coarse`` until one is picked; if that
    is the first, ``below(rung)`` (None: no lower rung) until one misses; then ``above(rung)`` from
    the last miss, lowest rate first, until one is picked or the next would reach the pick. Returns
    (the rungs in walking order so far, the next rung to train or None when the walk has ended)."""
    order = []

    def until(rungs, stop_at: bool):
        """Walk ``rungs`` on: (the first not walked yet, None) or (None, the first whose pick is ``stop_at``)."""
        for r in rungs:
            order.append(r)
            if r not in walked:
                return r, None
            if walked[r] == stop_at:
                return None, r
        return None, None

    def chain(r, step):  # each rung from the previous one as written (6 significant digits)
        while (r := step(r)) is not None:
            r = float(f"{r:.6g}")
            yield r

    # 1. the coarse ladder, until a rung is picked
    nxt, pick_ = until(coarse, True)
    if nxt is not None or pick_ is None:
        return order, nxt  # the next coarse rung, or none picked: no operating point at this split
    # 2. below a first rung that is picked, until one misses
    miss = order[-2] if len(order) > 1 else None
    if miss is None:
        nxt, miss = until(chain(pick_, below), False)
        if nxt is not None or miss is None:
            return order, nxt  # the next rung below, or picked down to the lowest there is
        pick_ = order[-2]
    # 3. between the miss and the pick, lowest rate first, until one is picked (rungs are rounded: 0.1%)
    up = pick_ > miss
    nxt, _ = until(itertools.takewhile(lambda r: r < pick_ * 0.999 if up else r > pick_ * 1.001, chain(miss, above)),
                   True)
    return order, nxt


def operating_rung(family: str, walked: dict[float, bool]) -> float | None:
    """The operating point's rung once the walk over ``walked`` (rung -> picked) has ended: the picked
    rung of lowest rate (the highest rate weight, the lowest target rate or quality). None while the
    walk goes on, or when no rung was picked."""
    order, nxt = ladder(family, walked)
    picked = [r for r in order if walked.get(r)]
    if nxt is not None or not picked:
        return None
    return max(picked) if family == "bottleneck" else min(picked)
