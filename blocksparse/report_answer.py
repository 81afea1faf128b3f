"""The README's answer, rendered from every trained model's results: the headline on all test
images (block-sparse models, learned bottlenecks, image codecs given the same help; paired tests)
and the split point as a lever (sweeps without fine-tuning beside each split's fine-tuned model
picked on validation)."""
from __future__ import annotations

from string import Template

import numpy as np
import pandas as pd

from .analysis import best_under, lowest_within
from .stats import wilson_interval
from .report_format import fmt_bpp, fmt_count, fmt_markdown, fmt_number, fmt_pct, fmt_points, describe
from .report_models import (BN_RECIPE, bottleneck_groups, codec_key, model_groups, model_splits, paired_for,
                            recipe_words, with_columns, with_recipe)
from .results import model_key, model_stem, to_frame


SPLITS = Template("""\
**The split point as a lever** (no fine-tuning; the same $n_images evenly spaced test images and grid at each \
split, amortized streams, bits per *input* pixel; `python blocksparse_utils.py split-sweep --split-at ...`; the \
last column, where present, is the fine-tuned model of that split with the best validation accuracy at or under the \
rate, tested once on the images it names):

$table
$lever
![the split points on one pair of axes](figures/split_points.png)
""")


def _validation(g: pd.DataFrame) -> float:
    """A model's mean validation accuracy over its seeds (test accuracy where a row has none)."""
    return float(g["val_accuracy"].mean() if g["val_accuracy"].notna().all() else g["accuracy"].mean())


def _pick(models: pd.DataFrame, split: str, max_bpp: float) -> tuple[float, float, pd.DataFrame] | None:
    """The fine-tuned model at ``split`` at or under ``max_bpp`` (``models``: ``with_recipe``'s
    frame) with the best mean validation accuracy over its seeds (``_validation``), as (mean
    test accuracy, mean bpp, its seeds' rows), or None."""
    m = models[(models["split_at"] == split).fillna(False).to_numpy(bool)]
    groups = [g for g in model_groups(m) if float(g["bpp"].mean()) <= max_bpp + 1e-9]
    if not groups:
        return None
    g = max(groups, key=_validation)  # the first of equals
    return float(g["accuracy"].mean()), float(g["bpp"].mean()), g


def _pick_words(pick: tuple[float, float, pd.DataFrame] | None, trained: bool, max_bpp: float) -> str:
    """A split's ``_pick``, its test accuracy and rate (means over its seeds) in words; ``trained``:
    whether the split has fine-tuned models at any rate."""
    if pick is None:
        return f"none at <= {fmt_number(max_bpp)} bpp" if trained else "not trained"
    acc, bpp, g = pick
    recipe = recipe_words(g.iloc[0])
    return (f"{fmt_pct(acc, 2)} at {fmt_bpp(bpp)} bpp ({describe(g.iloc[0].drop(labels=['finetuned']))}"
            f"{'; ' + recipe if recipe else ''}; {len(g)} seed(s), {fmt_count(int(g['n_images'].max()))} images)")


SPLIT_LEVER = Template("Fine-tuned, the model picked on validation at or under $max_bpp bpp reaches $acc0 at $bpp0 "
                       "bpp after $first ($seeds0 seed(s)) and $acc1 at $bpp1 bpp after $best ($seeds1 seed(s)), the "
                       "later split with the best validation accuracy: $gain points (means over seeds, on the same "
                       "$n_images test images; no paired test between the two).")


def _split_lever(picks: dict[str, tuple[float, float, pd.DataFrame] | None], max_bpp: float) -> str:
    """One sentence: the ``_pick`` of the first split of ``picks`` (split -> pick, in split order)
    against the later split's pick with the best validation accuracy (empty unless both exist, on
    the same number of test images)."""
    splits = list(picks)
    best = {s: b for s, b in picks.items() if b is not None}
    if not splits or splits[0] not in best or len(best) < 2:
        return ""
    first = splits[0]
    top = max((s for s in best if s != first), key=lambda s: _validation(best[s][2]))
    (a0, b0, g0), (a1, b1, g1) = best[first], best[top]
    n = {int(g0["n_images"].max()), int(g1["n_images"].max())}
    if len(n) != 1:
        return ""
    return SPLIT_LEVER.substitute(max_bpp=fmt_number(max_bpp), first=first, acc0=fmt_pct(a0, 2), bpp0=fmt_bpp(b0),
                                  seeds0=len(g0), best=top, acc1=fmt_pct(a1, 2), bpp1=fmt_bpp(b1), seeds1=len(g1),
                                  gain=f"{100 * (a1 - a0):+.2f}", n_images=fmt_count(n.pop()))


def render_split_points(sweeps: dict[str, pd.DataFrame], tolerance: float = 0.01, max_bpp: float = 1.0,
                        models: pd.DataFrame | None = None) -> str:
    """The README's table on split points: per split (``sweeps``: split -> its sweep rows, the
    uncompressed row included), the features' values per input pixel, the lowest bpp within
    ``tolerance`` of the uncompressed accuracy and its configuration, and the best accuracy at
    or under ``max_bpp``; with ``models`` (the fine-tuned models' rows, any split), also the
    fine-tuned model at or under ``max_bpp`` per split picked on validation, on the images it
    was tested on, and a sentence on how far the split moves it. Fewer than two splits render
    as an empty string."""
    if len(sweeps) < 2:
        return ""
    trained = model_splits(models)
    m = with_recipe(models) if trained else None
    picks = {s: _pick(m, s, max_bpp) if s in trained else None for s in sorted(set(sweeps) | trained)}
    lines, n = [], set()
    for split, df in sorted(sweeps.items()):
        df = to_frame(df)
        ref = df[df["method"] == "uncompressed"]
        if ref.empty:
            raise ValueError(f"sweeps[{split!r}] has no uncompressed row")
        reference = float(ref["accuracy"].iloc[0])
        n.add(int(ref["n_images"].iloc[0]))
        bs = df[df["method"] == "blocksparse"]
        low, best = lowest_within(bs, reference, tolerance), best_under(bs, max_bpp)
        lines.append(dict(split_at=split, uncompressed=round(100 * reference, 2),
                          values_per_pixel=round(float(ref["bpp"].iloc[0]) / 32, 3),
                          lowest_bpp_within=None if low is None else round(float(low["bpp"]), 3),
                          config_within="none" if low is None else describe(low),
                          best_at_max_bpp=None if best is None else round(100 * float(best["accuracy"]), 2),
                          config_at_max_bpp="none" if best is None else describe(best),
                          **({} if models is None else dict(finetuned=_pick_words(picks[split], split in trained,
                                                                                   max_bpp)))))
    if len(n) != 1:
        raise ValueError(f"sweeps are on different numbers of test images {sorted(n)}: compare on the same images")
    table = pd.DataFrame(lines).rename(columns={"lowest_bpp_within": f"lowest bpp within {fmt_points(tolerance)}",
                                                "best_at_max_bpp": f"best accuracy (%) at <= {fmt_number(max_bpp)} bpp",
                                                "finetuned": f"fine-tuned, picked on validation at <= {fmt_number(max_bpp)} bpp"})
    lever = _split_lever(picks, max_bpp)
    return SPLITS.substitute(n_images=fmt_count(n.pop()), table=fmt_markdown(table), lever=f"\n{lever}\n" if lever else "")


FULL_ANSWER = Template("""\
**The answer on all $n_images test images** (the rows it rests on; uncompressed $reference): $sentence

$table

![the rows on all test images](figures/bottleneck_vs_blocksparse.png)
""")
FULL_WITHIN = Template("at or under $max_bpp bpp, $names $verb within $tolerance of the uncompressed model by a "
                       "paired test.")
FULL_NONE = Template("nothing measured at or under $max_bpp bpp is within $tolerance of the uncompressed model by "
                     "a paired test; the most accurate there is $best.")
FULL_LOWEST = Template(" The lowest rate within $tolerance by a paired test: $row.")
FULL_LOWEST_NONE = Template(" No row at any rate is within $tolerance by a paired test.")
FULL_STRETCH = Template(" At or under $bpp bpp the most accurate is $row; $within.")
FULL_PARTIAL = Template(" $row is within $tolerance for $k of its $n seeds by a paired test (a row counts as "
                        "within only when every seed is).")
FULL_STRETCH_NONE = Template(" Nothing measured is at or under $bpp bpp.")
FULL_FAMILY = Template(" Block-sparse alone: $lowest$stretch.")
FULL_REFERENCE = Template(" A second reference, the uncompressed model fine-tuned with no codec ($recipe; $accs), "
                          "is $diff points from the shipped model by a paired test (mean over its seeds, widest "
                          "interval); against it, each block-sparse model paired with the reference run of its own seed "
                          "on the same images (column `vs fine-tuned reference`), $verdict.")


def _vs_reference_words(p: list[dict], seeds: int) -> str:
    """A model's paired tests against the fine-tuned reference (one per seed that has one), in words:
    mean difference, widest interval, how many paired seeds are within, how many seeds are unpaired,
    and the budget settings in which the runs differ."""
    if not p:
        return "n/a"
    differs = sorted({k for q in p for k in q.get("budget_differs", [])})
    return (f"{100 * np.mean([q['difference'] for q in p]):+.2f} [{100 * min(q['lo'] for q in p):+.2f}, "
            f"{100 * max(q['hi'] for q in p):+.2f}], {sum(bool(q['within']) for q in p)}/{len(p)} within"
            + (f", {seeds - len(p)} seed(s) unpaired" if len(p) < seeds else "")
            + (f" ({', '.join(differs)} differ)" if differs else ""))


def _budget_words(b: dict) -> str:
    """A fine-tuning run's budget (``analysis.run_budget``) in words."""
    train = {"all": "the whole network", "tail": "the tail only"}.get(b.get("train"), f"train {b.get('train')}")
    return (f"{train}, distillation weight {fmt_number(b.get('distill_weight'))}, {fmt_count(b.get('steps_run') or 0)} of "
            f"{fmt_count(b.get('steps') or 0)} steps, lr {fmt_number(b.get('lr'))}")


def _reference_sentence(table: pd.DataFrame, max_bpp: float, tolerance: float) -> str:
    """FULL_REFERENCE from the pairs in ``table["_vs_ref"]``: the reference runs they name (each seed
    with its accuracy, interval and images, its own paired test against the shipped model), and
    which block-sparse rows at or under ``max_bpp`` are within ``tolerance`` of it for every seed,
    every seed paired on the same budget."""
    refs = {q["reference"]: q for v in table["_vs_ref"] for q in v}
    if not refs:
        return ""
    runs = sorted(refs.values(), key=lambda q: q["seed"])
    accs = []
    for q in runs:
        n = int(q["n_images"])
        lo, hi = wilson_interval(round(q["reference_accuracy"] * n), n)
        accs.append(f"seed {q['seed']} {fmt_pct(q['reference_accuracy'], 2)} [{100 * lo:.2f}, {100 * hi:.2f}]")
    ns = sorted({int(q["n_images"]) for q in runs})
    recipe = "; ".join(dict.fromkeys(_budget_words(q["reference_budget"]) for q in runs))
    own = [q["reference_paired"] for q in runs if q.get("reference_paired")]
    diff = ("n/a" if len(own) < len(runs) else
            f"{100 * np.mean([p['difference'] for p in own]):+.2f} [{100 * min(p['lo'] for p in own):+.2f}, "
            f"{100 * max(p['hi'] for p in own):+.2f}]")
    ok = [r for _, r in table.iterrows() if r["bpp"] <= max_bpp and len(r["_vs_ref"]) == r["seeds"]
          and all(q["within"] and not q.get("budget_differs") for q in r["_vs_ref"])]
    verdict = (f"{', '.join(f'{r.method} {r.setting} ({fmt_bpp(r.bpp)} bpp)' for r in ok)} "
               f"{'is' if len(ok) == 1 else 'are'} within {fmt_points(tolerance)} of it for every seed on the same "
               f"budget" if ok else
               f"no block-sparse model at or under {fmt_number(max_bpp)} bpp is within {fmt_points(tolerance)} of it for "
               f"every seed on the same budget")
    return FULL_REFERENCE.substitute(recipe=recipe, accs=f"{', '.join(accs)}, on {' / '.join(fmt_count(n) for n in ns)} "
                                     f"test images", diff=diff, verdict=verdict)


def _most_accurate(rows: pd.DataFrame, max_bpp: float) -> pd.Series | None:
    """The row of ``rows`` at or under ``max_bpp`` with the highest accuracy (the first of equals), or None."""
    under = rows[rows["bpp"] <= max_bpp]
    return under.loc[under["accuracy"].idxmax()] if len(under) else None


def _row_words(r: pd.Series) -> str:
    """An answer row in words: method, setting, accuracy with its interval, rate, paired difference."""
    return (f"{r['method']} {r['setting']}, {r['accuracy']:.2f}% {r['interval']} at {fmt_bpp(r['bpp'])} bpp "
            f"(difference {r['vs_uncompressed']} points)")


def _verdict(r: pd.Series, tolerance: float) -> str:
    return f"{'within' if r['within'] else 'not within'} {fmt_points(tolerance)} by a paired test"


def _family_sentence(table: pd.DataFrame, tolerance: float, stretch_bpp: float | None) -> str:
    """FULL_FAMILY: the block-sparse rows' own lowest rate within ``tolerance`` and most accurate row
    at or under ``stretch_bpp`` (``table``: the answer's rows, in order of rate), so that the study's
    codec is answered for when another method leads; empty when the table holds block-sparse rows
    only, or none."""
    bs = table[table["method"].str.startswith("block-sparse")]
    if bs.empty or len(bs) == len(table):
        return ""
    within = bs[bs["within"]]
    lowest = (f"the lowest rate within {fmt_points(tolerance)} by a paired test is {_row_words(within.iloc[0])}"
              if len(within) else f"no block-sparse model is within {fmt_points(tolerance)} by a paired test at any rate")
    stretch = ""
    if stretch_bpp is not None:
        best = _most_accurate(bs, stretch_bpp)
        stretch = (f"; no block-sparse model is at or under {fmt_number(stretch_bpp)} bpp" if best is None else
                   f"; at or under {fmt_number(stretch_bpp)} bpp the most accurate block-sparse model is "
                   f"{_row_words(best)}, {_verdict(best, tolerance)}")
    return FULL_FAMILY.substitute(lowest=lowest, stretch=stretch)


def render_full_answer(models: pd.DataFrame | None, paired: list[dict], bottleneck: pd.DataFrame | None,
                       bottleneck_paired: list[dict], codec_models: pd.DataFrame | None, codec_paired: list[dict],
                       codec_grid: pd.DataFrame | None, tolerance: float = 0.01, max_bpp: float = 1.0,
                       stretch_bpp: float | None = 0.5, vs_reference: list[dict] = ()) -> str:
    """The README's headline paragraph and table, from the rows measured on all test images: the
    shipped block-sparse models (mean over seeds), the learned bottlenecks, WebP with a fine-tuned
    classifier, and WebP with the shipped classifier (its lowest rate within ``tolerance`` and
    its point at or under ``max_bpp``, point estimates: the grid has no paired tests). The text
    names what is within ``tolerance`` at or under ``max_bpp``, the lowest rate within it, and
    the most accurate row at or under ``stretch_bpp``. Empty when no trained model is there.

    With ``vs_reference`` (``analysis.pair_with_reference``: block-sparse models' cards against the
    uncompressed model fine-tuned with no codec, seed for seed), the table gains a column of those
    paired tests and the text a sentence on them."""
    rows, n = [], set()
    vs = {model_stem(q["weights"]): q for q in vs_reference}

    def add(method, setting, g, p, vs_ref=()):
        n.add(int(g["n_images"].max()))
        rows.append(dict(method=method, setting=setting, seeds=len(g), bpp=round(float(g["bpp"].mean()), 3),
                         accuracy=round(100 * float(g["accuracy"].mean()), 2),
                         interval="n/a" if g["accuracy_lo"].isna().any() else
                         f"[{100 * float(g['accuracy_lo'].min()):.2f}, {100 * float(g['accuracy_hi'].max()):.2f}]",
                         vs_uncompressed=(f"{100 * np.mean([q['difference'] for q in p]):+.2f} "
                                          f"[{100 * min(q['lo'] for q in p):+.2f}, {100 * max(q['hi'] for q in p):+.2f}]"
                                          if p else "n/a (no paired test)"),
                         within=bool(p) and all(q["within"] for q in p), _ref=p[0]["reference_accuracy"] if p else None,
                         _n_within=sum(bool(q["within"]) for q in p), _vs_ref=list(vs_ref)))
    if models is not None and len(models):
        m = with_recipe(models)
        for g in model_groups(m):
            recipe = recipe_words(g.iloc[0])
            keys = [model_stem(model_key(w, c)) for w, c in zip(g["weights"], g["codebook"])]
            add(f"block-sparse ({g['split_at'].iloc[0]})",
                describe(g.iloc[0].drop(labels=["finetuned"])) + (f"; {recipe}" if recipe else ""), g,
                paired_for(g, paired), [vs[k] for k in keys if k in vs])
    if bottleneck is not None and len(bottleneck):
        for label, g in bottleneck_groups(with_columns(bottleneck, BN_RECIPE), name_split=False):
            split = g["split_at"].iloc[0]
            add(f"learned bottleneck ({split})" if isinstance(split, str) else "learned bottleneck", label, g,
                paired_for(g, bottleneck_paired))
    if codec_models is not None and len(codec_models):
        c = to_frame(codec_models)
        by = {codec_key(q.get("method"), q.get("quality"), q.get("seed")): q for q in codec_paired}
        for _, r in c.sort_values("bpp").iterrows():
            q = by.get(codec_key(r["method"], r["quality"], r["seed"]))
            add(f"{r['method']} (fine-tuned classifier)", describe(r), r.to_frame().T, [q] if q else [])
    if not rows:
        return ""
    ref = next((r["_ref"] for r in rows if r["_ref"] is not None), None)
    if codec_grid is not None and len(codec_grid):
        g = to_frame(codec_grid)
        g = g[g["n_images"].isin(n)] if n else g
        u = g[g["method"] == "uncompressed"]
        reference = float(u["accuracy"].iloc[0]) if len(u) else ref
        webp = g[g["method"] == "webp"]
        for r in (lowest_within(webp, reference, tolerance) if reference is not None else None,
                  best_under(webp, max_bpp)):
            if r is not None and not any(x["method"] == "webp" and x["setting"] == describe(r) for x in rows):
                add("webp", describe(r), r.to_frame().T, [])
                rows[-1]["vs_uncompressed"] = f"{100 * (float(r['accuracy']) - reference):+.2f} (point estimate)"
        ref = ref if ref is not None else reference
    table = pd.DataFrame(rows).drop(columns="_ref").sort_values("bpp").reset_index(drop=True)
    partial = table[(table["_n_within"] > 0) & ~table["within"]]  # some seeds within, not all
    if vs:
        table.insert(table.columns.get_loc("within") + 1, "vs fine-tuned reference",
                     [_vs_reference_words(v, k) for v, k in zip(table["_vs_ref"], table["seeds"])])
    reference_sentence = _reference_sentence(table, max_bpp, tolerance) if vs else ""
    table = table.drop(columns=["_n_within", "_vs_ref"])
    ok = table[(table["bpp"] <= max_bpp) & table["within"]]
    if len(ok):
        names = ", ".join(f"{r.method} {r.setting} ({fmt_bpp(r.bpp)} bpp)" for r in ok.itertuples())
        sentence = FULL_WITHIN.substitute(max_bpp=fmt_number(max_bpp), names=names, verb="is" if len(ok) == 1 else "are",
                                          tolerance=fmt_points(tolerance))
    else:
        best = _most_accurate(table, max_bpp)
        sentence = FULL_NONE.substitute(max_bpp=fmt_number(max_bpp), tolerance=fmt_points(tolerance),
                                        best="nothing" if best is None else
                                        f"{best['method']} {best['setting']}, {best['accuracy']:.2f}% at {best['bpp']:.2f} bpp")
    within = table[table["within"]]
    sentence += (FULL_LOWEST.substitute(tolerance=fmt_points(tolerance), row=_row_words(within.iloc[0])) if len(within)
                 else FULL_LOWEST_NONE.substitute(tolerance=fmt_points(tolerance)))
    if stretch_bpp is not None:
        best = _most_accurate(table, stretch_bpp)
        sentence += (FULL_STRETCH_NONE.substitute(bpp=fmt_number(stretch_bpp)) if best is None else FULL_STRETCH.substitute(
            bpp=fmt_number(stretch_bpp), row=_row_words(best), within=_verdict(best, tolerance)))
    sentence += _family_sentence(table, tolerance, stretch_bpp)
    for _, r in partial.iterrows():
        sentence += FULL_PARTIAL.substitute(row=f"{r['method']} {r['setting']}", k=r["_n_within"], n=r["seeds"],
                                            tolerance=fmt_points(tolerance))
    return FULL_ANSWER.substitute(n_images=fmt_count(max(n)), reference=fmt_pct(ref, 2), sentence=sentence + reference_sentence,
                                  table=fmt_markdown(table))
