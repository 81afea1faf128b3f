"""The answer, from the protocol's cards alone: the runs still to make, and one row per split and family.

Pure Python over the cards ``protocol_runs`` writes (nothing is evaluated here): ``plan`` walks
``protocol.LADDERS`` with the rule of ``protocol`` and lists the next steps; ``answer_table``
combines each chosen operating point's seeds, tested once each, with the fine-tuned reference's
runs of the same seeds (``stats.hierarchical_bootstrap``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .protocol import FAMILIES, LADDERS, SEEDS, SPLIT_FREE, SPLIT_POINTS
from .results import unpack_correct
from .runtime import in_repo
from .stats import ONE_POINT, diff_words, hierarchical_bootstrap, within

ANSWER_COLUMNS = ("split_at", "family", "setting", "status", "seeds", "bpp", "bpp_file", "accuracy", "accuracy_lo",
                  "accuracy_hi", "diff", "diff_lo", "diff_hi", "reference", "within", "val_select_accuracy",
                  "val_select_diff", "val_select_diff_lo", "n_images", "weights", "head_macs", "head_params",
                  "encoder_macs", "encoder_params", "head_ms", "encoder_ms", "latency_machine",
                  "diff_shipped", "diff_shipped_lo", "diff_shipped_hi")
SHIPPED_MODEL = "shipped-model"  # the family of the shipped model's card: the second reference, tested once, trained by no one


def read_cards(folder: str | Path) -> list[dict]:
    """Every run's card (``*.json``) in ``folder``, each with its ``path``; screens are not cards."""
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        card = json.loads(p.read_text())
        if "family" in card:
            out.append(card | dict(path=str(p)))
    return out


def rung_of(card: dict) -> float:
    """A run's place on its family's ladder: the block-sparse rung it was screened for, the bottleneck's
    rate weight, the image codec's quality."""
    s = card["setting"]
    return {"block-sparse": card.get("rung"), "bottleneck": s.get("lmbda"), "webp-finetuned": s.get("quality"),
            "webp": s.get("quality")}.get(card["family"])


def _runs(cards: list[dict], family: str, split_at: str | None) -> list[dict]:
    return [c for c in cards if c["family"] == family and (family in SPLIT_FREE or c.get("split_at") == split_at)]


def same_budget(card: dict, reference: dict) -> None:
    """A ValueError unless a trained run's card records the budget its reference's card records
    (one budget for every trained family: a run made with another is not compared)."""
    if "budget" in card and card.get("budget") != reference.get("budget"):
        raise ValueError(f"cards: {card.get('path', card['family'])} was trained with budget {card['budget']}, "
                         f"its reference with {reference.get('budget')}: one budget for every family")


def val_select_pair(card: dict, reference: dict) -> dict:
    """The paired test of a candidate against the reference (seed 0) on val-select, from the cards."""
    same_budget(card, reference)
    return within(unpack_correct(reference["val_select"]["correct"]), unpack_correct(card["val_select"]["correct"]),
                  ONE_POINT)


def walk(cards: list[dict], family: str, split_at: str | None,
         pair=val_select_pair) -> tuple[dict | None, float | None]:
    """(the operating point's seed-0 card or None, the first rung still to train or None) of one
    family at one split: the ladder walked upward until a rung is within one point on val-select.
    ``pair``: the paired test (``val_select_pair``, or a memo of it a caller shares)."""
    refs = {c["seed"]: c for c in cards if c["family"] == "reference"}
    seed0 = {rung_of(c): c for c in _runs(cards, family, split_at) if c["seed"] == 0}
    for rung in LADDERS[family]:
        if rung not in seed0 or 0 not in refs:
            return None, rung
        if seed0[rung].get("val_select") is None:  # the rung has no configuration (screen found none)
            continue
        if pair(seed0[rung], refs[0])["within"]:
            return seed0[rung], None
    return None, None  # no rung within one point


LADDER_COLUMNS = ("split_at", "family", "rung", "setting", "bpp", "accuracy", "diff", "diff_lo", "diff_hi", "within",
                  "operating_point")


def ladder_table(cards: list[dict]) -> pd.DataFrame:
    """Every rung trained so far (seed 0) on val-select, the evidence each choice was made on: per
    split and family, its rate (payload bytes for image codecs), accuracy and paired difference
    from the reference's seed 0 with its interval, whether it is within one point and whether
    it is the operating point. The families that do not depend on the split appear under every
    split. Empty (with its columns) before the reference's seed 0 is trained."""
    refs = {c["seed"]: c for c in cards if c["family"] == "reference"}
    memo = {}

    def pair(card, reference):  # each rung bootstrapped once, for its row and for the walk
        key = id(card), id(reference)
        if key not in memo:
            memo[key] = val_select_pair(card, reference)
        return memo[key]

    ops = operating_points(cards, pair)
    rows = []
    for split_at in SPLIT_POINTS if 0 in refs else ():
        for family in FAMILIES:
            runs = [c for c in _runs(cards, family, None if family in SPLIT_FREE else split_at)
                    if c["seed"] == 0 and c.get("val_select") is not None]
            for c in sorted(runs, key=lambda c: LADDERS[family].index(rung_of(c)) if rung_of(c) in LADDERS[family] else -1):
                v, p = c["val_select"], pair(c, refs[0])
                op = ops.get((split_at, family))
                rows.append(dict(split_at=split_at, family=family, rung=rung_of(c), setting=setting_words(c["setting"]),
                                 bpp=v.get("bpp_payload", v.get("bpp")), accuracy=v["accuracy"], diff=p["difference"],
                                 diff_lo=p["lo"], diff_hi=p["hi"], within=p["within"],
                                 operating_point=op is not None and op.get("path") == c.get("path")))
    return pd.DataFrame(rows, columns=list(LADDER_COLUMNS))


def shipped(cards: list[dict]) -> set[str]:
    """The cards whose weights ship (their ``path``): the reference's seed 0 and each family's
    operating point at each split (seed 0). Every other run keeps its card, not its weights."""
    refs = {c["path"] for c in cards if c["family"] == "reference" and c["seed"] == 0}
    return refs | {op["path"] for op in operating_points(cards).values()}


def closest(cards: list[dict], family: str, split_at: str | None, reference: dict) -> str:
    """The status of a family whose whole ladder missed: the rung whose val-select difference from
    the reference has the highest lower end, with that difference and its interval in points."""
    scored = [(val_select_pair(c, reference), c) for c in _runs(cards, family, split_at)
              if c["seed"] == 0 and c.get("val_select") is not None]
    if not scored:
        return "no rung within one point"
    pair, card = max(scored, key=lambda t: t[0]["lo"])
    return f"no rung within one point (closest on val-select: rung {rung_of(card):g}, {diff_words(pair)})"


def operating_points(cards: list[dict], pair=val_select_pair) -> dict[tuple[str, str], dict]:
    """(split, family) -> the operating point's seed-0 card, where the rule found one (the families
    that do not depend on the split appear under every split). ``pair`` as in ``walk``."""
    out = {}
    for family in FAMILIES:
        for split_at in SPLIT_POINTS:
            op, _ = walk(cards, family, None if family in SPLIT_FREE else split_at, pair)
            if op is not None:
                out[split_at, family] = op
    return out


def reported(card: dict, cards: list[dict]) -> bool:
    """Whether ``card`` is a model the protocol reports, by ``cards``: a reference, or a seed of an
    operating point (its family, split, rung and setting) the rule has found."""
    if card["family"] in ("reference", SHIPPED_MODEL):
        return True
    if card["family"] not in LADDERS:
        return False
    op, _ = walk(cards, card["family"], None if card["family"] in SPLIT_FREE else card.get("split_at"))
    return op is not None and op.get("split_at") == card.get("split_at") and rung_of(op) == rung_of(card) \
        and op["setting"] == card["setting"]


def plan(cards: list[dict], screened: set[tuple[str, float]] = frozenset()) -> list[dict]:
    """The next steps, in order: the reference's seed 0 first (every rule needs it), then per split
    and family the ladder's next rung (block-sparse: its screen first, unless ``(split, rung)`` is in
    ``screened``), the operating point's other seeds, the one test of each; the reference's other seeds."""
    steps = []
    refs = {c["seed"]: c for c in cards if c["family"] == "reference"}
    if 0 not in refs:
        return [dict(action="train", family="reference", split_at=None, seed=0)]
    found = False
    for family in FAMILIES:
        for split_at in ([None] if family in SPLIT_FREE else SPLIT_POINTS):
            op, rung = walk(cards, family, split_at)
            if rung is not None:
                if family == "block-sparse" and (split_at, rung) not in screened:
                    steps.append(dict(action="screen", family=family, split_at=split_at, rung=rung))
                else:
                    steps.append(dict(action="score" if family == "webp" else "train", family=family,
                                      split_at=split_at, rung=rung, seed=0))
            if op is None:
                continue
            found = True
            runs = {c["seed"]: c for c in _runs(cards, family, split_at) if rung_of(c) == rung_of(op)}
            for seed in ([0] if family == "webp" else SEEDS):
                if seed not in runs:
                    steps.append(dict(action="train", family=family, split_at=split_at, setting=op["setting"],
                                      rung=rung_of(op), seed=seed))
                elif "test" not in runs[seed]:
                    steps.append(dict(action="test", card=runs[seed]["path"]))
    for seed in SEEDS if found else (0,):
        if seed not in refs:
            steps.append(dict(action="train", family="reference", split_at=None, seed=seed))
        elif "test" not in refs[seed]:
            steps.append(dict(action="test", card=refs[seed]["path"]))
    return steps


def answer_table(cards: list[dict], costs: dict | None = None) -> pd.DataFrame:
    """One row per split and family (``ANSWER_COLUMNS``). A row whose operating point and every seed's
    one test are there is ``status="tested"``: its accuracy and its difference from the reference
    (the reference's run of each seed, paired image by image) are hierarchical bootstraps over seeds
    and images; ``within`` is the difference's lower end at or above minus one point. Other rows say
    what is pending. ``costs``: (split, family) -> dict of ``head_macs``, ``encoder_macs``,
    ``encoder_params``."""
    refs = {c["seed"]: c for c in cards if c["family"] == "reference"}
    shipped = _shipped_model(cards)
    rows = []
    for split_at in SPLIT_POINTS:
        for family in FAMILIES:
            key = None if family in SPLIT_FREE else split_at
            op, rung = walk(cards, family, key)
            row = dict.fromkeys(ANSWER_COLUMNS) | dict(split_at=split_at, family=family,
                                                       **(costs or {}).get((split_at, family), {}))
            if op is None:
                row["status"] = closest(cards, family, key, refs.get(0)) if rung is None else f"pending: rung {rung:g}"
                rows.append(row)
                continue
            runs = {c["seed"]: c for c in _runs(cards, family, key) if rung_of(c) == rung_of(op)}
            seeds = [0] if family == "webp" else list(SEEDS)
            pair = val_select_pair(op, refs[0])
            row |= dict(setting=json.dumps(op["setting"], sort_keys=True), val_select_accuracy=op["val_select"]["accuracy"],
                        val_select_diff=pair["difference"], val_select_diff_lo=pair["lo"],
                        weights=op.get("weights") and in_repo(Path(op["path"]).with_name(op["weights"])))
            missing = [s for s in seeds if "test" not in runs.get(s, {})] + [s for s in SEEDS if "test" not in refs.get(s, {})]
            if missing:
                row["status"] = "pending: seeds or tests " + ", ".join(map(str, sorted(set(missing))))
                rows.append(row)
                continue
            for s in seeds:
                same_budget(runs[s], refs[s])
            x = np.stack([unpack_correct(runs[s]["test"]["correct"]) for s in seeds])
            x = np.repeat(x, len(SEEDS), 0) if family == "webp" else x  # one untrained model, paired with every seed
            ref = np.stack([unpack_correct(refs[s]["test"]["correct"]) for s in SEEDS])
            acc, diff = hierarchical_bootstrap(x), hierarchical_bootstrap(x, ref)
            rates = [runs[s]["test"].get("bpp_payload", runs[s]["test"].get("bpp")) for s in seeds]
            files = [runs[s]["test"].get("bpp") for s in seeds]
            row |= dict(status="tested", seeds=len(seeds), bpp=_mean(rates), bpp_file=_mean(files),
                        accuracy=acc["estimate"], accuracy_lo=acc["lo"], accuracy_hi=acc["hi"],
                        diff=diff["estimate"], diff_lo=diff["lo"], diff_hi=diff["hi"], within=diff["within"],
                        reference=f"uncompressed, fine-tuned with the same budget, seeds {', '.join(map(str, SEEDS))}",
                        n_images=acc["n_images"])
            if shipped is not None:  # the second reference: one model, paired with every seed
                d2 = hierarchical_bootstrap(x, np.repeat(shipped[None], len(SEEDS), 0))
                row |= dict(diff_shipped=d2["estimate"], diff_shipped_lo=d2["lo"], diff_shipped_hi=d2["hi"])
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ANSWER_COLUMNS))


SHOWN = ("family", "status", "setting", "seeds", "bpp", "accuracy", "diff", "within", "encoder_macs", "encoder_ms")


WORDS = (("mode", "{}"), ("block_size", "B={}"), ("ratio", "ratio {:g}"), ("bits", "{} bits"),
         ("group_lasso_weight", "group-lasso {:g}"), ("lmbda", "lambda={:g}"), ("latent_channels", "{} channels"),
         ("stride", "stride {}"), ("prior_lr", "prior lr {:g}"), ("quantization", "{} quantization"),
         ("quality", "q={}"))


def setting_words(setting: str | dict | None) -> str:
    """A row's setting (the JSON of ``answer.csv`` or its dict) in the words the tables use:
    ``"global, B=4, ratio 0.05, 2 bits, group-lasso 1e-05"``, ``"lambda=0.05, 8 channels, stride 4"``,
    ``"q=90"``; a weight of 0 is said as ``"no group-lasso"``; a key not in ``WORDS`` as ``key=value``."""
    if setting is None or (isinstance(setting, float) and np.isnan(setting)) or setting == "":
        return ""
    s = json.loads(setting) if isinstance(setting, str) else dict(setting)
    fmt = dict(WORDS)
    words = ["no group-lasso" if k == "group_lasso_weight" and not s[k] else fmt[k].format(s[k])
             for k, _ in WORDS if k in s]
    return ", ".join(words + [f"{k}={v}" for k, v in sorted(s.items()) if k not in fmt])


def _cell(v, scale: float = 1.0, decimals: int = 2) -> str:
    """One table cell as text, the same whether the value comes from the frame or from its CSV:
    missing is empty, a whole number has no decimals, a flag is yes or no."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)) or v in ("True", "False"):
        return "yes" if v in (True, "True") else "no"
    if isinstance(v, (int, float, np.integer, np.floating)):
        v = float(v) * scale
        return str(int(v)) if v.is_integer() and scale == 1.0 else f"{v:.{decimals}f}"
    return str(v)


def _signed(text: str) -> str:
    """``"0.03"`` as ``"+0.03"``; empty and negative text as they are."""
    return text if not text or text.startswith("-") else "+" + text


def _with_interval(r: pd.Series, col: str) -> str:
    """``"93.38 [92.70, 94.02]"``: a column in points with its interval (``<col>_lo``, ``<col>_hi``);
    a difference (``diff``, ``diff_shipped``) signed, ``"-0.23 [-0.48, +0.03]"``."""
    signed = col.startswith("diff")
    cell = lambda v: _signed(_cell(v, 100)) if signed else _cell(v, 100)  # noqa: E731
    v = cell(r[col])
    return v and f"{v} [{cell(r[f'{col}_lo'])}, {cell(r[f'{col}_hi'])}]"


def headline(table: pd.DataFrame) -> str:
    """The answer in a few lines, one per split: its tested rows by rate (within one point or not, with
    accuracy, difference and seeds), how many rows are still pending, or that no family came within.
    Led by ``**The answer**`` once no row is pending, ``**So far**`` before."""
    pending = table["status"].str.startswith("pending")
    lines = ["**The answer** (every row settled), per split, lowest rate first:" if not pending.any()
             else f"**So far** ({int(pending.sum())} of {len(table)} rows pending), per split, lowest rate first:"]
    for split_at, g in table.groupby("split_at", sort=False):
        tested = g[g["status"] == "tested"].sort_values("bpp")
        words = [f"{r['family']}" + (f" at {_cell(r['bpp'], 1.0, 3)} bpp" if _cell(r["bpp"]) else "") + ": "
                 f"{'within one point' if _cell(r['within']) == 'yes' else 'not within one point'} "
                 f"({_with_interval(r, 'accuracy')}%, {_with_interval(r, 'diff')} points, {_cell(r['seeds'])} seeds)"
                 for _, r in tested.iterrows()]
        n = int(pending[g.index].sum())
        words += [f"{n} famil{'ies' if n > 1 else 'y'} pending"] if n else []
        lines.append(f"- after {split_at}: " + ("; ".join(words) if words else "no family within one point on val-select"))
    return "\n".join(lines)


def render_answer(table: pd.DataFrame, tested: int, refs: str = "") -> str:
    """The README's answer block: a caption, then per split a heading with the head's cost and a
    table of ``SHOWN`` (accuracy and diff in points with their 95% intervals, bpp, the encoder's
    MACs in millions per image and its batch-1 latency in ms, on the machine the table names)."""
    done = int((table["status"] == "tested").sum())
    machines = table["latency_machine"].dropna().unique()
    on = f" on {', '.join(map(str, machines))}" if len(machines) else ""
    out = [f"{done} of {len(table)} rows tested under the protocol; {tested} models evaluated on the test set in all, "
           f"earlier exploratory ones included. Accuracy and diff in points with 95% intervals (diff: against the "
           f"fine-tuned reference, paired by seed; within: its lower end >= -1); encoder MACs in millions per image; "
           f"latencies: batch 1, median ms{on}."] + ([refs] if refs else [])
    out.insert(0, headline(table))
    for split_at, g in table.groupby("split_at", sort=False):
        t = pd.DataFrame(dict(
            family=g["family"], status=g["status"], setting=[setting_words(v) for v in g["setting"]],
            seeds=[_cell(v) for v in g["seeds"]], bpp=[_cell(v, 1.0, 3) for v in g["bpp"]],
            accuracy=[_with_interval(r, "accuracy") for _, r in g.iterrows()],
            diff=[_with_interval(r, "diff") for _, r in g.iterrows()], within=[_cell(v) for v in g["within"]],
            encoder_macs=[_cell(v, 1e-6) for v in g["encoder_macs"]], encoder_ms=[_cell(v, 1.0, 3) for v in g["encoder_ms"]]))
        head = g[g["head_macs"].fillna(0) > 0]
        cost = ""
        if len(head):
            h = head.iloc[0]
            cost = (f" (the head before it: {_cell(h['head_macs'], 1e-6)} million MACs, {_cell(h['head_params'], 1e-6)} "
                    f"million parameters" + (f", {_cell(h['head_ms'], 1.0, 3)} ms" if _cell(h["head_ms"]) else "") + ")")
        out.append(f"**After {split_at}**{cost}\n\n{t.to_markdown(index=False, disable_numparse=True)}")
    return "\n\n".join(out)


def _shipped_model(cards: list[dict]) -> np.ndarray | None:
    """The shipped model's per-image test correctness (its ``SHIPPED_MODEL`` card), or None."""
    card = next((c for c in cards if c["family"] == SHIPPED_MODEL and "test" in c), None)
    return None if card is None else unpack_correct(card["test"]["correct"])


def references(cards: list[dict]) -> str:
    """The answer's two references on the test set, from their cards: the fine-tuned reference (its
    seeds by the hierarchical bootstrap), the shipped model, and their paired difference."""
    refs = [c for c in sorted((c for c in cards if c["family"] == "reference"), key=lambda c: c["seed"]) if "test" in c]
    shipped = _shipped_model(cards)
    if not refs and shipped is None:
        return "No reference tested yet."
    words = lambda b: f"{100 * b['estimate']:.2f} [{100 * b['lo']:.2f}, {100 * b['hi']:.2f}]"
    parts = []
    if refs:
        x = np.stack([unpack_correct(c["test"]["correct"]) for c in refs])
        seeds = ", ".join(str(c["seed"]) for c in refs)
        parts.append(f"the fine-tuned reference {words(hierarchical_bootstrap(x))} (seed{'s' * (len(refs) > 1)} {seeds})")
    if shipped is not None:
        parts.append(f"the shipped model {words(hierarchical_bootstrap(shipped[None]))}")
        if refs:
            d = hierarchical_bootstrap(x, np.repeat(shipped[None], len(refs), 0))
            parts.append(f"fine-tuned minus shipped {100 * d['estimate']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] "
                         "points, paired")
    n = x.shape[1] if refs else len(shipped)
    return (f"References on {n:,} test images: " + "; ".join(parts) + "."
            + (" Each row's difference from the shipped model: `diff_shipped` in `answer.csv`." if shipped is not None else ""))


def _mean(values: list) -> float | None:
    """The mean of the seeds' values; None where a seed has none (e.g. no rate recorded)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def tested_models(folders: list[str | Path]) -> int:
    """How many models were evaluated on the test set, over every card in ``folders`` (a card with a
    test result, recorded as ``test``, ``test_accuracy`` or ``test_row``, counts once)."""
    n = 0
    for folder in folders:
        for p in Path(folder).glob("*.json"):
            card = json.loads(p.read_text())
            n += isinstance(card, dict) and any(k in card for k in ("test", "test_accuracy", "test_row"))
    return n
