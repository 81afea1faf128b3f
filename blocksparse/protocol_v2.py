"""Protocol v2's walk (``protocol.PROTOCOL_V2``): the next step of each family's walk, the
confirmation's tests and the budget sensitivity, for both trained families and WebP with a
fine-tuned classifier (tables and reports: ``report_v2``).

A walk screens a rung (``protocol_v2_screens``), trains its pick (``protocol_v2_runs``), reads it on
val-select, and moves up its ladder (``walk``); once it ends, its operating point's seeds are
trained and tested once each. Every screen scores its arms on val-stop (``protocol.SCREEN_V2``),
every pick reads val-select, and the test set is read only by the confirmation of an operating
point's seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .data import load_dataset
from .evaluation import evaluate
from .model import load_pretrained
from .protocol import BUDGET, CONFIRM_CONFIDENCE, SENSITIVITY_FACTOR, SEEDS_V2, SPLIT_POINTS, VAL_SELECT, Budget, selection_data
from .protocol_runs import scored
from .protocol_runs import load_run as load_run_v1
from .protocol_runs import train_run as train_run_v1
from .protocol_v2_runs import (PROTOCOL, V1_DIR, V2_DIR, VERSIONS, block_sparse_name, files_there, load_run, measure,
                               promote, run_there, train_run, v2_card)
from .protocol_v2_screens import screen_block_sparse, screen_bottleneck, screen_path
from .walk import ladder, operating_rung, pick, walked
from .results import pack_correct, unpack_correct
from .stats import hierarchical_bootstrap, paired_test

# Every walk v2 makes: the two trained families at each split, and WebP with a fine-tuned classifier
# once (input compression: no split), which reuses v1's runs of the same recipe (v2, v2.2).
WALKS = tuple((split, family) for split in SPLIT_POINTS for family in ("block-sparse", "bottleneck")) + (
    (None, "webp-finetuned"),)


def read_cards(folder: str | Path = V2_DIR, reuse_dir: str | Path | None = V1_DIR) -> list[dict]:
    """Every v2 run's card (screens are not cards), each with its ``path``: v1's runs of WebP with a
    fine-tuned classifier in ``reuse_dir`` (reused: the same recipe), then ``folder``'s, then the
    seed-0 runs trained again for a test (``folder/retrained``: see ``confirmation_steps``). The
    walk reads the first card of a rung; a confirmation, the last of each seed."""
    out = []
    if reuse_dir is not None:
        for p in sorted(Path(reuse_dir).glob("webp-finetuned_*.json")):
            out.append(json.loads(p.read_text()) | dict(path=str(p)))
    for p in sorted(Path(folder).glob("*.json")) + sorted((Path(folder) / "retrained").glob("*.json")):
        card = json.loads(p.read_text())
        if card.get("protocol") in VERSIONS and "family" in card:
            out.append(card | dict(path=str(p)))
    return out


def reference(v1_dir: str | Path = V1_DIR, seed: int = 0) -> dict:
    """The reference's card of ``seed`` (v1's: the same recipe, reused by v2)."""
    p = Path(v1_dir) / f"reference_seed{seed}.json"
    if not p.exists():
        raise ValueError(f"v1_dir: no reference card {p} (v2 reuses v1's reference)")
    return json.loads(p.read_text())


def next_step(split_at: str, family: str = "bottleneck", out_dir: str | Path = V2_DIR,
              v1_dir: str | Path = V1_DIR) -> dict | None:
    """The next step of the v2 walk of ``family`` at ``split_at``: a screen of the next rung, the
    training of its pick (seed 0; under v2.3 the promotion of its final-round run, or, where that run's
    files are gone, its training again), or the confirmation's next step once the walk has ended (None:
    nothing left)."""
    if (split_at, family) not in WALKS:
        raise ValueError(f"family, split_at: v2 walks {', '.join(f'{f} at {s}' for s, f in WALKS[-3:])} (and the "
                         f"trained families at every split), got {family!r} at {split_at!r}")
    cards, ref = read_cards(out_dir, v1_dir), reference(v1_dir)
    _, rung = ladder(family, walked(cards, family, split_at, ref))
    if rung is None:  # the walk has ended: the confirmation's steps of this family and split, then the reference's
        steps = [s for s in confirmation_steps(cards, reference_cards(out_dir, v1_dir), ref)
                 if s["family"] == "reference" or (s["family"], s["split_at"]) == (family, split_at)]
        return steps[0] if steps else None
    if family == "webp-finetuned":  # quality is its one knob: no screen
        return dict(action="train", family=family, split_at=None, rung=rung, seed=0, setting=dict(quality=int(rung)))
    sp = screen_path(out_dir, split_at, rung, family)
    if not sp.exists():
        return dict(action="screen", family=family, split_at=split_at, rung=rung)
    sc = json.loads(sp.read_text())
    step = dict(action="train", family=family, split_at=split_at, rung=rung, seed=0, setting=sc["pick"])
    final = Path(out_dir) / sc["final_run"] if sc.get("final_run") else None
    if final is not None and run_there(final):
        step["final_run"] = str(final)  # v2.3: the pick's run exists already (the final round's): it is promoted
    # else its weights did not outlive the session that trained it (they ship only once promoted): the
    # pick the screen chose is trained again as the rung's run, as a rung without a final round is
    return step


def reference_cards(out_dir: str | Path = V2_DIR, v1_dir: str | Path = V1_DIR) -> dict[int, dict]:
    """seed -> the reference's card: v1's seeds 0-2 (reused), v2's 3 and 4; each with its ``path``."""
    out = {c["seed"]: c for c in read_cards(out_dir) if c["family"] == "reference"}
    for seed in (0, 1, 2):
        p = Path(v1_dir) / f"reference_seed{seed}.json"
        if p.exists():
            out[seed] = json.loads(p.read_text()) | dict(path=str(p))
    return out


def run_next(split_at: str, family: str = "bottleneck", out_dir: str | Path = V2_DIR,
             state_dir: str | Path | None = None, log=print) -> Path | None:
    """Carry out ``next_step``; returns the file it wrote (None: nothing left to walk)."""
    step = next_step(split_at, family, out_dir)
    log(f"v2 step: {step}")
    if step is None:
        return None
    if step["action"] == "screen":
        screen = screen_bottleneck if family == "bottleneck" else screen_block_sparse
        return screen(split_at, step["rung"], out_dir=out_dir, log=log, state_dir=state_dir)
    if step.get("final_run"):
        return promote(step["final_run"], out_dir)
    if step["action"] == "test":
        test_run(step["card"], read_cards(out_dir), reference())
        return Path(step["card"])
    seed = step.get("seed", 0)
    walk_dir = out_dir
    if step.get("retrain"):  # the walk's seed 0 of an operating point, its files gone: trained again beside it
        out_dir = Path(out_dir) / "retrained"
    if step.get("replace"):  # a confirmation's run, untested, its files gone: trained again in its place
        Path(step["replace"]).unlink()
    if step["family"] == "reference":  # seeds 3 and 4: v1's recipe, in v2's folder
        card = v2_card(train_run_v1("reference", {}, seed, None, out_dir=out_dir, state_dir=state_dir))
    elif step["family"] == "bottleneck":
        card = train_run(split_at, step["setting"], seed, out_dir=out_dir, state_dir=state_dir, rung=step["rung"],
                         progress=True)
    elif step["family"] == "webp-finetuned":  # v1's recipe (a classifier of decoded images), in v2's folder
        card = v2_card(train_run_v1("webp-finetuned", step["setting"], seed, None, out_dir=out_dir,
                                     state_dir=state_dir, rung=step["rung"]))
    elif step["setting"] is None:  # no configuration under the rung: a card that says so, missed
        p = Path(out_dir) / f"block-sparse_{split_at}_rung{step['rung']:g}_none.json"
        p.write_text(json.dumps(dict(protocol=PROTOCOL, family=family, split_at=split_at, seed=0, rung=step["rung"],
                                     setting={}, val_select=None), indent=1))
        return p
    else:
        card = v2_card(train_run_v1("block-sparse", step["setting"], seed, split_at, out_dir=out_dir,
                                     state_dir=state_dir, rung=step["rung"],  # v1's run: the same budget
                                     name=block_sparse_name(split_at, step["rung"], step["setting"], seed)))
    if step.get("confirmation"):  # a confirmation's seed (the operating point's, or the reference's 3-4), chosen
        # already: tested at once, so that no weights but seed 0's (which ship) need outlive the session
        test_run(card, read_cards(walk_dir), reference())
    return card


# The commit that pre-registered v2's rules (``protocol.py``'s v2 section), before any v2 run, and
# the one that amended them (v2.1) before any v2 run finished.
RULES_COMMIT = "90cf9d2"
AMENDMENT_COMMIT = "4577835"
AMENDMENT_V2_2_COMMIT = "1a3470a"  # v2.2: the walk of WebP with a fine-tuned classifier below quality 50
AMENDMENT_V2_3_COMMIT = "dfc7444"  # v2.3: every screen ends with a final round at the full budget
AMENDMENT_V2_4_COMMIT = "798c99b"  # v2.4: the walks at layer2 and layer1 pick at -0.4 point; the walk's power
AMENDMENT_V2_5_COMMIT = "363aa64"  # v2.5: they pick at -0.3 point; the walk's power with its simulation's error


# ---------------------------------------------------------------------------
# step 3: the operating point's seeds, tested once each, confirm it or not
# ---------------------------------------------------------------------------
def operating_point(cards: list[dict], family: str, split_at: str, ref: dict) -> dict | None:
    """The seed-0 card of ``family``'s operating point at ``split_at`` once its walk has ended: the
    picked rung of lowest rate in walking order (None: the walk goes on, or no rung was picked)."""
    best = operating_rung(family, walked(cards, family, split_at, ref))
    if best is None:
        return None
    return next(c for c in cards if c["family"] == family and c["split_at"] == split_at and c["seed"] == 0
                and float(c["rung"]) == best)


def _seed_step(run: dict | None, seed: int) -> dict | None:
    """What one seed of a confirmation still needs (None: tested). A run whose files are there is
    tested; without them (they did not outlive a session; v1 kept only its cards), the walk's own
    seed-0 card stays as the walk decided and seed 0 is trained again into ``retrained/``; any other
    untested run is trained again in its place."""
    if run is None:
        return dict(action="train", seed=seed, confirmation=True)
    if "test" in run:
        return None
    if files_there(run) and run.get("protocol") in VERSIONS:
        return dict(action="test", card=run["path"])
    if seed == 0 and Path(run["path"]).parent.name != "retrained":
        return dict(action="train", seed=0, confirmation=True, retrain=True)
    return dict(action="train", seed=seed, confirmation=True, replace=run["path"])


def seed_runs(cards: list[dict], op: dict) -> dict[int, dict]:
    """seed -> the card of each seed of the operating point ``op`` (its family, split, rung and setting)."""
    return {c["seed"]: c for c in cards if c["family"] == op["family"] and c["split_at"] == op["split_at"]
            and float(c["rung"]) == float(op["rung"]) and c["setting"] == op["setting"]}


def confirmation_steps(cards: list[dict], ref_cards: dict[int, dict], ref: dict) -> list[dict]:
    """What the confirmations still need, in order: per operating point found (``WALKS``), seed 0's
    test and its seeds 1-4 (each trained and tested in one step); the reference's seeds 3 and 4
    (v1's recipe, in v2's folder), likewise. A seed 0 whose weights are not there (a walk's run
    whose weights did not outlive its session; v1's reused WebP runs kept only their cards) is
    trained again with the same recipe and seed into ``retrained/`` and tested: the walk keeps the
    pick it made on the first card. ``ref_cards``: seed -> the reference's card (v1's 0-2, v2's 3-4)."""
    steps, any_op = [], False
    for split, family in WALKS:
        op = operating_point(cards, family, split, ref)
        if op is None:
            continue
        any_op = True
        runs = seed_runs(cards, op)
        for seed in SEEDS_V2:
            step = _seed_step(runs.get(seed), seed)
            if step is not None:
                steps.append(step | dict(family=family, split_at=split, rung=op["rung"], setting=op["setting"])
                             if step["action"] == "train" else step | dict(family=family, split_at=split))
    for seed in SEEDS_V2 if any_op else ():
        step = _seed_step(ref_cards.get(seed), seed)
        if step is not None:
            steps.append(step | dict(family="reference", split_at=None))
    return steps


def confirm(cards: list[dict], ref_cards: dict[int, dict], family: str, split_at: str, ref: dict) -> dict | None:
    """The confirmation of ``family``'s operating point at ``split_at`` on test: the hierarchical
    bootstrap of its seeds' difference from the reference's same seeds at ``CONFIRM_CONFIDENCE``;
    ``within`` is the verdict. None until every seed of both is tested."""
    op = operating_point(cards, family, split_at, ref)
    if op is None:
        return None
    runs = seed_runs(cards, op)
    if any(s not in runs or "test" not in runs[s] or s not in ref_cards or "test" not in ref_cards[s] for s in SEEDS_V2):
        return None
    x = np.stack([unpack_correct(runs[s]["test"]["correct"]) for s in SEEDS_V2])
    r = np.stack([unpack_correct(ref_cards[s]["test"]["correct"]) for s in SEEDS_V2])
    hb = hierarchical_bootstrap(x, r, CONFIRM_CONFIDENCE, n_boot=20000)
    return hb | dict(family=family, split_at=split_at, rung=op["rung"], setting=op["setting"],
                     bpp=float(np.mean([runs[s]["test"]["bpp"] for s in SEEDS_V2])), confidence=CONFIRM_CONFIDENCE)


def test_run(card_path: str | Path, cards: list[dict], ref: dict, n_test: int | None = None) -> dict:
    """The one test evaluation of a v2 run that a confirmation needs (a seed of an operating point, or
    the reference's seed 3 or 4); refused for any other card, and for a card tested already."""
    p = Path(card_path)
    card = json.loads(p.read_text())
    if "test" in card:
        raise ValueError(f"card_path: {p} was tested already (test is touched once per model)")
    if card.get("protocol") not in VERSIONS:
        raise ValueError(f"card_path: {p} is not a v2 card: v2 writes no test into v1's archive")
    if card["family"] == "reference" and card["seed"] not in set(SEEDS_V2) - {0, 1, 2}:
        raise ValueError(f"card_path: {p} is a reference seed v1 tested; v2 trains and tests only seeds 3 and 4")
    if card["family"] != "reference":
        op = operating_point(cards, card["family"], card["split_at"], ref)
        if op is None or float(op["rung"]) != float(card["rung"]) or op["setting"] != card["setting"]:
            raise ValueError(f"card_path: {p} is not a seed of an operating point v2's walk has found: not tested")
    test = load_dataset(card["dataset"], "test", subset=n_test)
    if card["family"] == "bottleneck":
        model, bn, _ = load_run(p)
        m = measure(model, bn, test)
        card["test"] = dict(accuracy=m["accuracy"], n_images=m["n_images"], bpp=m["bpp"], correct=pack_correct(m["correct"]))
    else:  # v1's recipe in v2's folder: block-sparse, WebP with a fine-tuned classifier, the reference's seeds 3-4
        model, _, cb = load_run_v1(p)
        card["test"] = scored(model, test, card["family"], card["setting"], cb, card["dataset"])
    p.write_text(json.dumps(card, indent=1, default=float))
    return card


# ---------------------------------------------------------------------------
# budget sensitivity (``protocol.SENSITIVITY_FACTOR``): after layer3, seed 0, val-select only
# ---------------------------------------------------------------------------
SENSITIVITY_DIR = V2_DIR / "sensitivity"


def sensitivity_budget(budget: Budget = BUDGET) -> Budget:
    """The budget with ``SENSITIVITY_FACTOR`` times the steps, evaluated as many times (every
    ``SENSITIVITY_FACTOR`` x ``eval_every`` steps)."""
    return budget.replace(steps=budget.steps * SENSITIVITY_FACTOR, eval_every=budget.eval_every * SENSITIVITY_FACTOR)


def sensitivity_subjects(v1_cards: list[dict], v2_cards: list[dict], split_at: str = "layer3") -> list[dict]:
    """What the sensitivity trains with 4x the budget: the reference, and per trained family its v2
    operating point at ``split_at`` (else its closest seed-0 rung on val-select, v2's before v1's)."""
    ref = next(c for c in v1_cards if c["family"] == "reference" and c["seed"] == 0)
    out = [dict(family="reference", split_at=None, setting={}, base=ref)]
    for family in ("block-sparse", "bottleneck"):
        op = operating_point(v2_cards, family, split_at, ref)
        if op is None:
            runs = [c for cards in (v2_cards, v1_cards) for c in cards if c["family"] == family
                    and c.get("split_at") == split_at and c["seed"] == 0 and c.get("val_select")]
            if not runs:
                continue
            best = max(runs, key=lambda c: pick(c, ref)["difference"])  # of equals the first: v2's
            op = best
        out.append(dict(family=family, split_at=split_at, setting=op["setting"], base=op))
    return out


def sensitivity_run(subject: dict, out_dir: str | Path = SENSITIVITY_DIR, state_dir: str | Path | None = None,
                    dataset: str = "fashion-mnist") -> Path:
    """Train one subject of ``sensitivity_subjects`` with ``sensitivity_budget()``; its card (val-select only)."""
    budget = sensitivity_budget()
    family, setting = subject["family"], subject["setting"]
    if family == "bottleneck" and "recipe" in setting:
        card = train_run(subject["split_at"], setting, 0, dataset, out_dir, state_dir, budget, rung=subject["base"].get("rung"))
    else:  # the reference, block-sparse and v1's joint bottleneck: v1's run, the budget 4x
        card = train_run_v1(family, setting, 0, subject["split_at"], dataset, out_dir, state_dir, budget=budget,
                            rung=subject["base"].get("rung"))
    card.write_text(json.dumps(json.loads(card.read_text()) | dict(protocol=PROTOCOL, sensitivity=True), indent=1,
                               default=float))
    return card


GAP_COLUMNS = ("classifier", "images", "n_images", "accuracy", "diff", "diff_lo", "diff_hi")


def classifier_gap(ref: dict, dataset: str = "fashion-mnist", model=None) -> pd.DataFrame:
    """WebP as is classifies decoded images with the shipped model, which is not fine-tuned: its gap to
    the reference on *uncompressed* val-select images (paired with the reference's seed 0) is a bound
    no WebP quality can beat. One row (``classifier_gap.csv``)."""
    data = selection_data(dataset)
    ev = evaluate(model if model is not None else load_pretrained(dataset), None, data)
    p = paired_test(unpack_correct(ref["val_select"]["correct"]), ev["correct"].numpy())
    return pd.DataFrame([dict(classifier="shipped model (WebP as is)", images=VAL_SELECT, n_images=ev["n_images"],
                              accuracy=ev["accuracy"], diff=p["difference"], diff_lo=p["lo"], diff_hi=p["hi"])],
                        columns=list(GAP_COLUMNS))
