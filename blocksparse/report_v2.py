"""Protocol v2's tables and reports, read from its cards: the walk so far (``status_table``), the
answer (``answer_table``), the families compared (``family_comparison``), the budget sensitivity
(``sensitivity_table``), and the README's and ``docs/protocol_v2.md``'s generated blocks. Nothing
here trains or reads an image; the runs are ``protocol_v2``'s (its walk), ``protocol_v2_screens``'
(screens) and ``protocol_v2_runs``' (trainings and what ships).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .answer import LADDER_COLUMNS, rung_of
from .comparison import COMPARISON_COLUMNS, comparison_table, curves_from_cards, ratio_words, words
from .protocol import PICK_THRESHOLD_V2_4, PICK_THRESHOLD_V2_5, PROTOCOL_V2, SEEDS_V2
from .protocol_v2 import (BUDGET, AMENDMENT_COMMIT, AMENDMENT_V2_2_COMMIT, AMENDMENT_V2_3_COMMIT,
                          AMENDMENT_V2_4_COMMIT, AMENDMENT_V2_5_COMMIT, RULES_COMMIT, V1_DIR, V2_DIR, VERSIONS,
                          WALKS, confirm, operating_point, read_cards, reference, reference_cards, seed_runs, walked)
from .protocol_v2_runs import files_there
from .results import unpack_correct
from .runtime import ROOT
from .walk import ladder, pick, walk_version


STATUS_COLUMNS = ("split_at", "family", "rung", "setting", "bpp", "accuracy", "diff", "diff_lo", "diff_hi", "picked",
                  "reused_from_v1")


def setting_words(setting: dict) -> str:
    """A v2 run's setting in a few words: the recipe and width, or the codec configuration."""
    if "recipe" in setting:
        return f"{setting['recipe']}, {setting['latent_channels']} channels"
    if not setting:
        return "no configuration under the rung"
    if "quality" in setting:
        return f"WebP quality {setting['quality']}"
    return (f"{setting['mode']}, B={setting['block_size']}, ratio {setting['ratio']:g}, {setting['bits']} bits, "
            f"group-lasso {setting.get('group_lasso_weight', 0):g}")


def status_table(cards: list[dict], v1_dir: str | Path = V1_DIR) -> pd.DataFrame:
    """Every v2 seed-0 rung so far on val-select, in walking order per split: its rate, accuracy,
    paired difference from the reference's seed 0 (with the interval, for the record) and the pick."""
    ref = reference(v1_dir)
    rows = []
    for split, family in WALKS:
        runs = _walk_runs(cards, family, split)
        order, _ = ladder(family, walked(cards, family, split, ref))
        for r in order:
            if r not in runs:
                continue
            c = runs[r]
            v = c.get("val_select") or {}
            p = pick(c, ref) if v else dict(difference=None, lo=None, hi=None, picked=False)
            rows.append(dict(split_at=split, family=family, rung=r, setting=setting_words(c["setting"]),
                             bpp=v.get("bpp"), accuracy=v.get("accuracy"), diff=p["difference"], diff_lo=p["lo"],
                             diff_hi=p["hi"], picked=p["picked"], reused_from_v1=c.get("protocol") not in VERSIONS))
    return pd.DataFrame(rows, columns=list(STATUS_COLUMNS))


def walk_ladders(status: pd.DataFrame, cards: list[dict], v1_dir: str | Path = V1_DIR,
                 splits: tuple[str, ...] = ("layer1", "layer2", "layer3")) -> pd.DataFrame:
    """v2's walks in ``answer.ladder_table``'s columns, for ``plots.plot_ladders``: each ``status_table``
    row, ``within`` its pick (point estimate >= -1) and ``operating_point`` the walk's once it has
    ended. WebP with a fine-tuned classifier codes the input: its walk is drawn under every split."""
    ref = reference(v1_dir)
    ops = {(s, f): operating_point(cards, f, s, ref) for s, f in WALKS}
    rows = []
    for split in splits:
        for r in status[(status["split_at"] == split) | status["split_at"].isna()].itertuples(index=False):
            op = ops.get((None if pd.isna(r.split_at) else r.split_at, r.family))
            rows.append(dict(split_at=split, family=r.family, rung=r.rung, setting=r.setting, bpp=r.bpp,
                             accuracy=r.accuracy, diff=r.diff, diff_lo=r.diff_lo, diff_hi=r.diff_hi, within=r.picked,
                             operating_point=op is not None and float(op["rung"]) == float(r.rung)))
    return pd.DataFrame(rows, columns=list(LADDER_COLUMNS))


TRANSFER_COLUMNS = ("split_at", "family", "rung", "v2_setting", "v2_accuracy", "v2_bpp", "v2_diff", "v1_setting",
                    "v1_accuracy", "v1_bpp", "v1_diff", "n_images")


def screen_transfer(status: pd.DataFrame, v1_cards: list[dict], v1_dir: str | Path = V1_DIR) -> pd.DataFrame:
    """Does a screen's pick hold at the full budget? Each v2 walk's run (a ``status_table`` row) beside v1's
    run of the same family, split and rung (seed 0, val-select): v1 trained one configuration per rung
    (the bottleneck's joint anchor), v2 the pick of a screen of short runs. Both are paired with the
    reference's seed 0. A record for the reader: no rule reads it."""
    ref = reference(v1_dir)
    rows = []
    for r in status[status["split_at"].notna() & status["accuracy"].notna()].itertuples(index=False):
        old = next((o for o in v1_cards if o["family"] == r.family and o.get("split_at") == r.split_at
                    and o.get("seed") == 0 and o.get("val_select") and rung_of(o) is not None
                    and abs(float(rung_of(o)) - r.rung) <= 1e-3 * r.rung), None)
        if old is None:
            continue
        p = pick(old, ref)
        rows.append(dict(split_at=r.split_at, family=r.family, rung=r.rung, v2_setting=r.setting, v2_accuracy=r.accuracy,
                         v2_bpp=r.bpp, v2_diff=r.diff, v1_setting=_v1_setting_words(r.family, old["setting"]),
                         v1_accuracy=old["val_select"]["accuracy"], v1_bpp=old["val_select"]["bpp"],
                         v1_diff=p["difference"], n_images=p["n_images"]))
    return pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))


def _v1_setting_words(family: str, setting: dict) -> str:
    """v1's setting in v2's words (v1's bottleneck was the joint recipe)."""
    return setting_words(setting | dict(recipe="joint")) if family == "bottleneck" else setting_words(setting)


def _shipped(card: dict | None) -> str | None:
    """Where seed 0's weights are, from the repository's root (``retrained/``: seed 0 trained again for its
    test, its files lost; the walk decided on its first card); None where they are not in the tree."""
    if not card or not files_there(card):
        return None
    p = Path(card["path"]).resolve().parent / card["weights"]
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _walk_runs(cards: list[dict], family: str, split_at: str | None) -> dict[float, dict]:
    """rung -> the seed-0 card the walk decided on (a rung's first: not a seed 0 trained again for its test)."""
    out = {}
    for c in cards:
        if c["family"] == family and c["split_at"] == split_at and c["seed"] == 0:
            out.setdefault(float(c["rung"]), c)
    return out


def family_comparison(v1_cards: list[dict], v2_cards: list[dict], n_boot: int = 2000) -> pd.DataFrame:
    """``family_comparison.csv``: each protocol's curves on val-select compared pair by pair per split
    (``comparison.comparison_table``), v1's from its cards and v2's from the walks' seed-0 cards
    (``protocol_v2.read_cards``: WebP with a fine-tuned classifier's from v1 where v2 reuses them);
    the rows say which protocol."""
    ref = next((c for c in v1_cards if c["family"] == "reference" and c["seed"] == 0), None)
    if ref is None:
        raise ValueError("v1_cards: no reference seed 0 (every comparison is paired with it)")
    walks = []
    for split, family in WALKS:  # the rungs each walk took (v1's other WebP runs are not on v2's ladder)
        runs = _walk_runs(v2_cards, family, split)
        walks += [runs[r] for r in ladder(family, walked(v2_cards, family, split, ref))[0] if r in runs]
    tables = []
    for name, cards in (("v1", v1_cards), (PROTOCOL_V2, walks)):  # v2: its walks, amendments and all
        curves = curves_from_cards(cards, ref)
        if len({f for _, f in curves}) < 2:
            continue
        t = comparison_table(curves, unpack_correct(ref["val_select"]["correct"]), n_boot=n_boot)
        tables.append(t.assign(protocol=name))
    cols = ["protocol", *COMPARISON_COLUMNS]
    return pd.concat(tables)[cols] if tables else pd.DataFrame(columns=cols)


def _rung_words(family: str, rung: float) -> str:
    return {"bottleneck": f"lambda {rung:.3g}", "webp-finetuned": f"q{rung:g}"}.get(family, f"{rung:.3g} bpp budget")


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:+.2f}"


def _power_at(power: pd.DataFrame, rule: str, delta: float) -> float:
    d = power["discordance"].min()
    row = power[(power["rule"] == rule) & np.isclose(power["true_diff"], delta) & (power["discordance"] == d)]
    if row.empty:
        raise ValueError(f"power: no row for rule {rule!r} at true_diff {delta}")
    return float(row["power"].iloc[0])


def _walk_power(power: pd.DataFrame, version: str, at: str = "") -> dict[str, float]:
    """family -> the power of ``version``'s walk (``power.walk_rows``) at the observed discordance;
    ``at``: the rows of another slope (e.g. " at 0.5x its slope")."""
    d = power["discordance"].min()
    prefix = f"{version} walk{at}, "
    rows = power[power["rule"].str.startswith(prefix) & (power["discordance"] == d)]
    if rows.empty:
        raise ValueError(f"power: no row for {version}'s walks{at}")
    return {r["rule"][len(prefix):].split(" ")[0]: float(r["power"]) for _, r in rows.iterrows()}


def _and(parts: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _where(family: str, split_at) -> str:
    """"bottleneck after layer3"; WebP with a fine-tuned classifier has no split: "... on the input"."""
    return f"{family} after {split_at}" if isinstance(split_at, str) and split_at else f"{family} on the input"


def tested_words(answer: pd.DataFrame) -> list[str]:
    """The README's lines for v2's rows tested on test so far (``answer_table``): each with its rate,
    its difference from the reference with the confirmation's interval, and its verdict."""
    done = answer[answer["status"].isin(("confirmed within one point", "not confirmed"))]
    if done.empty:
        return []
    n, conf = int(done["n_images"].iloc[0]), float(done["confidence"].iloc[0])
    lines = [f"v2's operating points tested so far (test set, touched once per model: {int(done['seeds_tested'].iloc[0])} "
             f"seeds x {n:,} images, paired with the reference's same seed; hierarchical interval at {conf:.4f}, "
             "confirmed when its lower end is at or above -1 point):"]
    for _, r in done.iterrows():
        lines.append(f"- {_where(r['family'], r['split_at'])}: {r['bpp']:.3f} bpp, {100 * r['accuracy']:.2f}% against the reference's "
                     f"{100 * r['reference_accuracy']:.2f}%, {_pct(r['diff'])} [{_pct(r['diff_lo'])}, "
                     f"{_pct(r['diff_hi'])}] points: **{r['status']}**")
    return lines + [""]


def render_readme(power: pd.DataFrame, comparison: pd.DataFrame, status: pd.DataFrame, figures: str = "figures",
                  answer: pd.DataFrame | None = None) -> str:
    """The README's v2 block: the rule in one line with its power, the operating points tested so far
    (``tested_words``, from ``answer``: ``answer_table``), each split's comparison of the trained
    families in words, the walk so far and its figure; every number from ``power.csv``,
    ``family_comparison.csv`` and the cards (``status_table``). ``figures``: the figures' folder
    from where the text is read (notebooks: ``../figures``)."""
    v1 = _power_at(power, "v1: val-select lower end >= -1", -0.005)
    v2 = _power_at(power, "v2: pick and confirm", -0.005)
    v2_4_pick, v2_5_pick = (f"-{100 * t:g}" for t in (PICK_THRESHOLD_V2_4, PICK_THRESHOLD_V2_5))
    walks = {v: _and([f"{100 * p:.0f} ({f})" for f, p in _walk_power(power, v).items()]) for v in ("v2.2", "v2.5")}
    half = _and([f"{100 * p:.0f}" for p in _walk_power(power, "v2.5", " at 0.5x its slope").values()])
    lines = [f"**Protocol v2** (pre-registered in commit `{RULES_COMMIT}` before any v2 run; amended as v2.1 in "
             f"`{AMENDMENT_COMMIT}` before any finished,",
             f"as v2.2 in `{AMENDMENT_V2_2_COMMIT}` before any run of WebP with a fine-tuned classifier, "
             f"as v2.3 in `{AMENDMENT_V2_3_COMMIT}` before any screen at layer2 or layer1,",
             f"and as v2.4 in `{AMENDMENT_V2_4_COMMIT}` and v2.5 in `{AMENDMENT_V2_5_COMMIT}` before any run there "
             f"(after layer3's test numbers, which they leave as they were; v2.5 moved v2.4's pick from {v2_4_pick} "
             "once its power's simulation error was counted); "
             "[rules and power](docs/protocol_v2.md)): screens on val-stop, "
             "picks on val-select by point estimate "
             f"(>= -1 point; v2.5, at layer2 and layer1: >= {v2_5_pick}),",
             "confirms on test with 5 seeds at a Bonferroni level for 7 confirmations. "
             f"A rung 0.5 points below the reference passes v1's gate {100 * v1:.0f} times in 100, v2's {100 * v2:.0f}.",
             f"Simulated, a whole walk whose curve crosses -0.5 ends on a confirmed rung {walks['v2.2']} times in 100 "
             f"with v2's pick at -1 (layer3's and WebP's walks), {walks['v2.5']} with v2.5's at {v2_5_pick} "
             f"(0.8 is the target; a slope is read from two rungs of one seed, and at half of it: {half}).",
             ""]
    if answer is not None:
        lines += tested_words(answer)
        near = answer[(answer["protocol"] == "v2.2") & (answer["status"] == "not confirmed")]
        if not near.empty:
            rows = _and([_where(f, s) for f, s in zip(near["family"], near["split_at"])])
            lines += [f"Rows walked under v2's pick at -1 ({rows}) aimed at rungs near -1 point, where the confirmation "
                      f"has little power (whole walks: {walks['v2.2']} in 100): their \"not confirmed\" says that the "
                      "operating point sits near the margin, not that the family cannot come within one point at a "
                      "higher rate.", ""]
    for version, curves in (("v1", "v1's val-select curves"), (PROTOCOL_V2, "v2's walks so far")):
        at = comparison[(comparison["protocol"] == version) & (comparison["family_a"] == "block-sparse")
                        & (comparison["family_b"] == "bottleneck")]
        if at.empty:
            continue
        lines.append(f"Block-sparse against the learned bottleneck on {curves}: rate of block-sparse over "
                     "the bottleneck's at equal accuracy, 95% bootstrap over 2,500 images (0: block-sparse gets there "
                     "at its lowest rung, or the bottleneck never does, so the ratio is below what the ladders can "
                     "bound; inf: the reverse; -: both curves bounded alike, unknowable):")
        for split, g in at.groupby("split_at", sort=True):
            told = [words(r) for _, r in g.iterrows() if "cannot tell" not in words(r)]
            ratios = "; ".join(f"{r['measure'].split(' at ')[1]}: {ratio_words(r['value'], r['lo'], r['hi'])}" for _, r in g.iterrows())
            lines.append(f"- after {split}: {told[0] if told else 'the data cannot tell'} ({ratios})")
        lines.append("")
    done = status.dropna(subset=["accuracy"])
    if done.empty:
        lines.append("v2's runs so far: none finished (after layer3 first; `protocol v2-status`).")
    else:
        lines.append("v2's walks so far (val-select, seed 0, points from the reference's seed 0; "
                     "[the walk in full](docs/protocol_v2.md)):")
        for (family, split), g in done.groupby(["family", done["split_at"].fillna("")], sort=False):
            v1 = [isinstance(v, (bool, np.bool_)) and v for v in g.get("reused_from_v1", [False] * len(g))]
            rungs = "; ".join(f"{_rung_words(family, r['rung'])}: {r['bpp']:.3f} bpp, {_pct(r['diff'])}, "
                              f"{'picked' if r['picked'] else 'missed'}" for _, r in g.iterrows())
            lines.append(f"- {_where(family, split)}: {rungs}"
                         + (" (v1's runs, reused)" if all(v1) else " (some v1's runs, reused)" if any(v1) else ""))
        lines += ["", "![v2's walks so far: each rung's val-select difference from the reference against its rate, "
                      f"per split]({figures}/ladders_v2.png)",
                  "", f"[`figures/ladders_v2.png`]({figures}/ladders_v2.png) (notebook 07, `protocol v2-report`): the "
                      "walks above, with 95% paired intervals; v2 picks on the point estimate (at or above the dashed line; "
                      "v2.5, after layer2 and layer1: the dotted one)."]
    return "\n".join(lines)


def render_doc(power: pd.DataFrame, comparison: pd.DataFrame, status: pd.DataFrame, screens: list[dict],
               gap: pd.DataFrame | None = None, answer: pd.DataFrame | None = None,
               transfer: pd.DataFrame | None = None) -> str:
    """``docs/protocol_v2.md``'s generated part: v2's answer so far (``answer_table``, the columns
    that hold a value), the power table, the comparison table, WebP as is's bound
    (``classifier_gap.csv``), the walk, its runs beside v1's of the same rung (``screen_transfer``)
    and every screen's rows."""
    def md(df, **kw):
        return df.to_markdown(index=False, **kw) if not df.empty else "(none yet)"
    bound = []
    if answer is not None and not answer.empty:
        shown = answer.dropna(axis=1, how="all")
        bound = ["### v2's answer so far (`data/results/answer_v2.csv`)", "",
                 md(shown.assign(**{c: shown[c].map(_pct) for c in ("diff", "diff_lo", "diff_hi", "val_select_diff")
                                    if c in shown}), floatfmt=".4g"), ""]
    if gap is not None and not gap.empty:
        g = gap.iloc[0]
        bound += ["### WebP as is: a bound", "",
                 f"Its classifier, the {g['classifier'].split(' (')[0]}, on uncompressed {g['images']} images "
                 f"({int(g['n_images']):,}): {100 * g['accuracy']:.2f}%, {_pct(g['diff'])} [{_pct(g['diff_lo'])}, "
                 f"{_pct(g['diff_hi'])}] points from the reference's seed 0 (`data/results/classifier_gap.csv`). "
                 "No WebP quality can do better than its classifier does on the images themselves: WebP as is "
                 "is reported as this bound, and WebP with a fine-tuned classifier is the input-compression "
                 "baseline, listed once (it does not depend on the split).", ""]
    parts = bound + ["### Power of each rule (`data/results/power.csv`)", "",
             md(power.assign(discordance=power["discordance"].round(4), true_diff=100 * power["true_diff"])
                .rename(columns={"true_diff": "true_diff (points)"}), floatfmt=".3g"), "",
             "### Families compared (`data/results/family_comparison.csv`)", "", md(comparison, floatfmt=".3g"), "",
             "### v2's walk so far (val-select, seed 0)", "",
             md(status.assign(**{c: status[c].map(_pct) for c in ("diff", "diff_lo", "diff_hi")}), floatfmt=".4g"), ""]
    if transfer is not None:
        parts += ["### Does a screen's pick hold at the full budget? (v2's run beside v1's of the same rung)", "",
                  f"Seed 0, {BUDGET.steps:,} steps each, val-select, points from the reference's seed 0. v1 trained one "
                  "configuration per rung (the bottleneck: the joint recipe, 8 channels); v2 trains the pick of its "
                  "screen, whose arms run 150 and 300 steps (from v2.3 on, its two finalists then run the full budget). "
                  "A record for the reader: no rule reads it.", "",
                  md(transfer.assign(**{c: transfer[c].map(_pct) for c in ("v2_diff", "v1_diff")}), floatfmt=".4g"), ""]
    for sc in screens:
        rows = pd.DataFrame(sc["rows"])
        parts += [f"### Screen: {sc['family']} after {sc['split_at']}, rung {sc.get('rung', sc.get('lmbda')):g} "
                  f"(val-stop, {sc['images']['n']} images); pick: {setting_words(sc['pick']) if sc['pick'] else 'none'}",
                  "", md(rows, floatfmt=".4g"), ""]
    return "\n".join(parts).strip("\n")


def blocks(results: str | Path, v1_cards: list[dict], figures: str = "figures") -> dict:
    """What ``protocol v2-report`` writes, from the results files (``power.csv``, ``family_comparison.csv``,
    ``classifier_gap.csv``) and the cards: ``v2`` (the README's block; ``figures`` as in ``render_readme``),
    ``v2-tables`` (``docs/protocol_v2.md``'s), ``answer_v2`` (the table) and ``walks`` (``walk_ladders``, for
    ``plots.plot_v2_walks``). One composition for the command, its test and notebook 07."""
    results = Path(results)
    power, comparison = pd.read_csv(results / "power.csv"), pd.read_csv(results / "family_comparison.csv")
    cards = read_cards()
    status = status_table(cards)
    answer = answer_table(cards, reference_cards(), reference())
    doc = render_doc(power, comparison, status, screens(), pd.read_csv(results / "classifier_gap.csv"), answer,
                     screen_transfer(status, v1_cards))
    return {"v2": render_readme(power, comparison, status, figures, answer), "v2-tables": doc, "answer_v2": answer,
            "walks": walk_ladders(status, cards)}


def screens(out_dir: str | Path = V2_DIR) -> list[dict]:
    """Every finished v2 screen in ``out_dir``."""
    return [json.loads(p.read_text()) for p in sorted((Path(out_dir) / "screens").glob("*.json"))
            if not p.name.endswith(".partial.json")]


ANSWER_V2_COLUMNS = ("protocol", "split_at", "family", "status", "rung", "setting", "seeds_tested", "bpp", "accuracy",
                     "reference_accuracy", "diff", "diff_lo", "diff_hi", "confidence", "within", "n_images",
                     "val_select_bpp", "val_select_diff", "weights")


def answer_table(cards: list[dict], ref_cards: dict[int, dict], ref: dict) -> pd.DataFrame:
    """v2's answer (``answer.csv`` once v2 has its rows), one row per split and trained family.

    ``status`` is where the family stands: "not started", "walk under way" (a rung is still to screen or train),
    "no rung picked" (the walk ended with every rung below the pick threshold), "confirmation under
    way" (the operating point found; ``seeds_tested`` of its 5 seeds tested), "confirmed within one
    point" or "not confirmed" (the hierarchical interval's lower end at ``CONFIRM_CONFIDENCE``:
    ``diff_lo`` against -1 point). Test numbers (``bpp``, ``accuracy``, ``diff*``: means over the
    seeds, each seed paired with the reference's same seed) appear only once every seed of both is
    tested; before that a row shows the operating point's seed-0 val-select numbers."""
    rows = []
    for split, family in WALKS:
        row = dict.fromkeys(ANSWER_V2_COLUMNS) | dict(protocol=walk_version(split, family), split_at=split,
                                                      family=family)
        w = walked(cards, family, split, ref)
        _, nxt = ladder(family, w)
        op = operating_point(cards, family, split, ref)
        if not w:
            row["status"] = "not started"
        elif nxt is not None:
            row["status"] = "walk under way"
        elif op is None:
            row["status"] = "no rung picked"
        else:
            runs = seed_runs(cards, op)
            p = pick(op, ref)
            row |= dict(rung=float(op["rung"]), setting=setting_words(op["setting"]),
                        seeds_tested=sum("test" in runs.get(s, {}) for s in SEEDS_V2),
                        val_select_bpp=op["val_select"]["bpp"], val_select_diff=p["difference"],
                        weights=_shipped(runs.get(0)))
            c = confirm(cards, ref_cards, family, split, ref)
            if c is None:
                row["status"] = "confirmation under way"
            else:
                row |= dict(status="confirmed within one point" if c["within"] else "not confirmed",
                            bpp=c["bpp"], accuracy=float(np.mean([runs[s]["test"]["accuracy"] for s in SEEDS_V2])),
                            reference_accuracy=float(np.mean([ref_cards[s]["test"]["accuracy"] for s in SEEDS_V2])),
                            diff=c["estimate"], diff_lo=c["lo"], diff_hi=c["hi"], confidence=c["confidence"],
                            within=c["within"], n_images=c["n_images"])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(ANSWER_V2_COLUMNS))


SENSITIVITY_COLUMNS = ("split_at", "family", "setting", "steps", "accuracy", "diff", "diff_lo", "diff_hi",
                       "diff_at_budget", "n_images")


def sensitivity_table(subjects: list[dict], long_cards: list[dict]) -> pd.DataFrame:
    """``budget_sensitivity.csv``: per subject trained with 4x the budget, its val-select accuracy and its
    paired difference from the reference trained with 4x the budget, beside the same difference at the
    common budget (``diff_at_budget``): a plateau that belongs to the budget closes at 4x."""
    long_ref = next((c for c in long_cards if c["family"] == "reference"), None)
    ref = next(s["base"] for s in subjects if s["family"] == "reference")
    rows = []
    for s in subjects:
        long = next((c for c in long_cards if c["family"] == s["family"] and c["setting"] == s["setting"]), None)
        if long is None:
            continue
        p = pick(long, long_ref) if long_ref is not None and s["family"] != "reference" else None
        rows.append(dict(split_at=s["split_at"], family=s["family"], setting=setting_words(s["setting"]) if s["setting"] else "",
                         steps=long["budget"]["steps"], accuracy=long["val_select"]["accuracy"],
                         diff=p["difference"] if p else None, diff_lo=p["lo"] if p else None, diff_hi=p["hi"] if p else None,
                         diff_at_budget=pick(s["base"], ref)["difference"] if s["family"] != "reference" else None,
                         n_images=long["val_select"]["n_images"]))
    return pd.DataFrame(rows, columns=list(SENSITIVITY_COLUMNS))
