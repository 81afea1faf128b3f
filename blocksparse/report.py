"""The record rendered as markdown, from the results files through tested code (results as data: a
title, a one-line caption and a table per section; no generated prose beyond one-line captions):

* the answer at a glance (``answer.csv`` and the reference's cards): the README's first paragraph
  (``headline``), its table of tested rows with one line per untested method (``render_glance``),
  notebook 07's takeaway;
* this run's sweep without fine-tuning (``results.csv``: block-sparse against the image codecs, dense
  features and the original's accounting on the same test images, the shipped model as its
  reference): ``docs/results.md``.

``splice`` puts a rendered block between a file's markers::

    python -m blocksparse.report README.md docs/results.md   # from <results_dir>/results_doc.md and answer.csv
"""
from __future__ import annotations

import argparse
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from .answer import read_cards, setting_words
from .analysis import bd_rate_table, blocksparse_rows, describe, frontier_table, levers_table, positions_share
from .original import METHOD as ORIGINAL_METHOD
from .original import original_choices_table, original_vs_real
from .protocol import SPLIT_FREE
from .training import Budget
from .baselines import IMAGE_FORMATS
from .results import to_frame, unpack_correct
from .runtime import DATA_DIR, results_dir
from .stats import hierarchical_bootstrap

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
DOC = "docs/results.md"
BOTTLENECK_METHOD = "learned-bottleneck"


def markdown(table: pd.DataFrame) -> str:
    """A frame as a pipe table (``DataFrame.to_markdown``), missing values as ``n/a``, no index."""
    if table is None or table.empty:
        return "(none)"
    return table.astype(object).where(table.notna(), "n/a").to_markdown(index=False)


def pct(v, decimals: int = 2):
    """An accuracy (fraction) in percent, rounded; missing stays missing."""
    return pd.NA if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else round(100 * float(v), decimals)


def interval(lo, hi) -> str:
    """A 95% interval in percent, ``"[lo, hi]"``; ``"n/a"`` where either end is missing."""
    return "n/a" if pd.isna(lo) or pd.isna(hi) else f"[{100 * float(lo):.2f}, {100 * float(hi):.2f}]"


def finetune_table(results: pd.DataFrame) -> pd.DataFrame:
    """Each fine-tuned block-sparse row beside the same configuration without fine-tuning."""
    results = to_frame(results)
    raw, ft = blocksparse_rows(results, finetuned=False), blocksparse_rows(results, finetuned=True)
    keys, rows = ["mode", "block_size", "bits"], []
    for _, a in ft.iterrows():
        same = raw[(raw[keys] == a[keys]).all(axis=1).fillna(False).to_numpy(bool)
                   & np.isclose(raw["ratio"].to_numpy(float, na_value=np.nan), float(a["ratio"]))]
        if len(same):
            rows.append(dict(config=describe(a.drop(labels="finetuned")), seed=a["seed"], bpp=round(float(a["bpp"]), 3),
                             before=pct(same.iloc[0]["accuracy"]), after=pct(a["accuracy"]),
                             interval=interval(a["accuracy_lo"], a["accuracy_hi"]),
                             val_accuracy=pct(a["val_accuracy"]), n_images=a["n_images"]))
    return pd.DataFrame(rows)


def baselines_table(results: pd.DataFrame) -> pd.DataFrame:
    """Image codecs and dense features on the sweep's test images and classifier."""
    results = to_frame(results)
    b = results[results["method"].isin([*IMAGE_FORMATS, "dense"]).fillna(False).to_numpy(bool)]
    return pd.DataFrame(dict(method=b["method"], setting=[describe(r) for _, r in b.iterrows()],
                             accuracy=[pct(v) for v in b["accuracy"]],
                             interval=[interval(a, c) for a, c in zip(b["accuracy_lo"], b["accuracy_hi"])],
                             bpp=b["bpp"].astype(float).round(3), n_images=b["n_images"])).reset_index(drop=True)


def sections(results: pd.DataFrame | None = None, *, reference: float | None = None, tolerance: float = 0.01,
             max_bpp: float = 1.0, lever_bpp=(1.0, 2.0, 4.0, 8.0), anchor: str = "webp",
             original_choices: pd.DataFrame | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """This run's sweep as (title, caption, table), in reading order; a section whose data is absent
    is left out.

    Parameters
    ----------
    results : DataFrame, optional
        One run's sweep with its baselines (notebook 07's ``results``: block-sparse without fine-tuning
        and the demo's fine-tuned rows, image codecs, dense, the original's accounting, the uncompressed row).
    reference : float, optional
        The shipped model's accuracy on ``results``' images (fraction; default its uncompressed row).
    tolerance, max_bpp, lever_bpp, anchor
        "Within" is accuracy >= reference - tolerance; the rate of the frontier's second column;
        the rates of the levers table; the image codec of the BD-rates.
    original_choices : DataFrame, optional
        Rows of ``original.original_choices``.
    """
    pts = f"{100 * tolerance:g} point{'s' if tolerance != 0.01 else ''}"
    out = []

    def add(title, caption, table):
        if table is not None and len(table):
            out.append((title, caption, table))
    if results is not None and len(results):
        results = to_frame(results)
        if reference is None:
            u = results[results["method"] == "uncompressed"]
            reference = float(u["accuracy"].iloc[0]) if len(u) else None
        n = int(results["n_images"].max())
        if reference is not None:
            add("This run's sweep: the frontier", f"On {n:,} evenly spaced test images, against the shipped model, not "
                f"fine-tuned ({100 * reference:.2f}%): per method the lowest bpp within {pts} and the best accuracy at "
                f"or under {max_bpp:g} bpp.", frontier_table(results, reference, tolerance, max_bpp,
                                                             exclude=("uncompressed", ORIGINAL_METHOD)))
        add(f"BD-rate against {anchor}", "Each mode's Pareto front without fine-tuning at equal accuracy over the "
            "range both cover (positive: the mode needs more bits).", bd_rate_table(results, anchor))
        if (results["method"] == BOTTLENECK_METHOD).fillna(False).any():
            add("BD-rate against the learned bottleneck", "The learned bottlenecks measured on the same images.",
                bd_rate_table(results, BOTTLENECK_METHOD))
        add("Fine-tuning, before and after", "Each fine-tuned configuration of notebook 05's demo beside the same "
            "configuration untuned.", finetune_table(results))
        add("Baselines on the same images", "Image codecs at each quality (the whole file) and dense features.",
            baselines_table(results))
        share = positions_share(results)
        add("Levers", f"The best block-sparse accuracy (%) at or under each rate with one lever held at each value; "
            f"positions take {100 * share['positions_share']:.0f}% of the front's streams."
            if share["n"] else "The best block-sparse accuracy (%) at or under each rate with one lever held.",
            levers_table(results, tuple(float(r) for r in lever_bpp)))
        orig = original_vs_real(results)
        for c in ("original_accuracy", "real_accuracy"):
            orig[c] = (100 * orig[c]).round(2)
        add("The original's accounting", "As the original computed it (float features to the tail, a Huffman "
            "estimate from the first batch, no header or code tables) beside the real streams.", orig)
    add("The original's choices", "Its estimate with one choice turned the other way at a time (`+%`: what its own "
        "choice adds).", original_choices_table(original_choices))
    return out


def record(folder: str | Path | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """This run's sweep's sections from the files alone: ``results.csv`` with the settings saved beside
    it (tolerance, max_bpp, lever_bpp, anchor) and ``original_choices.csv``. What ``make study``
    renders into ``docs/results.md``. ``folder``: the results folder (default ``runtime.results_dir()``)."""
    from .results import load_results
    d = Path(folder) if folder is not None else results_dir()
    results = load_results("results", d) if (d / "results.csv").exists() else None
    config = json.loads((d / "results.json").read_text())["config"] if results is not None else {}
    choices = pd.read_csv(d / "original_choices.csv") if (d / "original_choices.csv").exists() else None
    return sections(results, original_choices=choices,
                    **{k: config[k] for k in ("tolerance", "max_bpp", "lever_bpp", "anchor") if k in config})


def render(parts: list[tuple[str, str, pd.DataFrame]], level: int = 2) -> str:
    """Sections as markdown: a heading, the caption, the table."""
    return "\n".join(f"{'#' * level} {title}\n\n{caption}\n\n{markdown(table)}\n" for title, caption, table in parts)


def render_doc(parts: list[tuple[str, str, pd.DataFrame]]) -> str:
    """``docs/results.md``: this run's sweep, every section."""
    return ("# Results: this run's sweep without fine-tuning\n\nThe block-sparse codec without fine-tuning beside "
            "the image codecs, dense features and the original's accounting on the same test images, the shipped "
            "model (not fine-tuned) as the reference; nothing here chooses anything in the answer (the README's, "
            "under the protocol). The models trained before the protocol: `docs/exploratory.md`. Generated by "
            "`make study` (notebook 07) from `data/results/`; do not edit.\n\n" + render(parts))


def render_timing(timing: pd.DataFrame) -> str:
    """The README's line on ``make study``'s run time, from the ``study_timing.csv`` its last run wrote."""
    t = timing.iloc[0]
    each = ", ".join(f"{n[:2]} {s / 60:.1f}" for n, s in zip(timing["notebook"], timing["seconds"]))
    cache = "recomputing every step (`make study-full`)" if bool(t["recompute"]) else "reading the committed cache"
    return (f"The last `make study` ran its notebooks in **{timing['seconds'].sum() / 60:.1f} min** ({each} min), "
            f"{cache}, on {t['date']}, {t['machine']}.")


# ---------------------------------------------------------------------------
# the answer at a glance: the README's first paragraph, its table and notebook 07's first screen,
# rendered from answer.csv (the protocol's rows) and the reference's cards; numbers rounded for reading
# ---------------------------------------------------------------------------
FAMILY_WORDS = {"block-sparse": "block-sparse coding of the feature map", "bottleneck": "a learned bottleneck",
                "webp-finetuned": "WebP on the input image with a fine-tuned classifier",
                "webp": "WebP on the input image with the shipped classifier"}
FAMILY_SHORT = {"block-sparse": "block-sparse", "bottleneck": "learned bottleneck",
                "webp-finetuned": "WebP, fine-tuned classifier", "webp": "WebP, shipped classifier"}
INTRO = ("A ResNet-18 classifying Fashion-MNIST (28x28 grayscale images of clothing, 10 classes) is split in two: "
         "its first stages (the head, on the device) compute a feature map, a codec turns the map into bytes, and "
         "the rest of the network (the tail) classifies what the decoder returns.")


def answer_reference(cards: list[dict]) -> dict | None:
    """The fine-tuned reference on the test set, from its cards: the uncompressed ResNet-18 fine-tuned
    with the protocol's budget, its seeds combined by ``stats.hierarchical_bootstrap`` (``estimate``,
    ``lo``, ``hi`` as fractions, ``seeds``, ``n_images``); None before a seed is tested."""
    refs = sorted((c for c in cards if c["family"] == "reference" and "test" in c), key=lambda c: c["seed"])
    if not refs:
        return None
    b = hierarchical_bootstrap(np.stack([unpack_correct(c["test"]["correct"]) for c in refs]))
    return b | dict(seeds=[int(c["seed"]) for c in refs])


def _bpp(v: float) -> str:
    """A rate for reading: two significant digits (0.752 -> 0.75, 3.705 -> 3.7)."""
    return f"{float(v):.2g}"


def _splits(splits: list[str]) -> str:
    return splits[0] if len(splits) == 1 else ", ".join(splits[:-1]) + " and " + splits[-1]


def _tested(table: pd.DataFrame) -> pd.DataFrame:
    t = table[table["status"] == "tested"].copy()
    t["within"] = t["within"].astype(str).eq("True")
    return t


def answer_sentence(table: pd.DataFrame, reference: dict | None = None) -> str:
    """The answer in one sentence with its numbers, from ``answer.csv``'s rows: the lowest rate within
    one point of the reference over every split, then per other split its lowest rate within (or
    that none is); ``So far`` while rows are pending."""
    tested = _tested(table)
    within = tested[tested["within"]].sort_values(["bpp", "split_at"])
    pending = int(table["status"].astype(str).str.startswith("pending").sum())
    lead = f"So far ({pending} of {len(table)} rows still pending), " if pending else ""
    if within.empty:
        return lead + "no method tested keeps accuracy within one point of the uncompressed model."
    best = within.iloc[0]
    ref = f" against {100 * reference['estimate']:.1f}%" if reference else ""
    seeds = f"{int(best['seeds'])} seeds, " if not pd.isna(best["seeds"]) else ""
    out = (f"{lead}the fewest bits that keep accuracy within one point of the uncompressed model (fine-tuned with the "
           f"same budget) are **{_bpp(best['bpp'])} bits per input pixel** (bpp), by {FAMILY_WORDS[best['family']]} "
           f"after {best['split_at']} ({100 * best['accuracy']:.1f}%{ref}, {seeds}"
           f"{int(best['n_images']):,} test images)")
    groups: dict[tuple, list[str]] = {}
    for split_at in dict.fromkeys(table["split_at"]):
        if split_at == best["split_at"]:
            continue
        w = within[within["split_at"] == split_at]
        key = (w.iloc[0]["family"], _bpp(w.iloc[0]["bpp"]), len(w) == 1) if len(w) else None
        groups.setdefault(key, []).append(split_at)
    rest = []
    for key, splits in groups.items():
        if key is None:
            rest.append(f"after {_splits(splits)} no tested method stays within")
        else:
            family, bpp, only = key
            rest.append(f"after {_splits(splits)} {'only ' if only else 'the cheapest within is '}"
                        f"{FAMILY_WORDS[family]}{' stays within' if only else ''}, at {bpp} bpp")
    return out + ("; " + "; ".join(rest) if rest else "") + "."


V2_NOTE = ("That is protocol v1's answer; protocol v2, whose rule has the power to tell the methods apart, is "
           "under way ([below](#the-answer-in-full-and-protocol-v2)).")


def headline(table: pd.DataFrame, reference: dict | None = None) -> str:
    """The README's first paragraph: the model, the data set and the answer in one sentence (wrapped
    at 110 characters, never inside a word), then which protocol gave it."""
    return textwrap.fill(f"{INTRO} **The answer:** {answer_sentence(table, reference)} {V2_NOTE}", 110,
                         break_long_words=False, break_on_hyphens=False)


def _points(v, lo, hi, signed: bool = False) -> str:
    f = (lambda x: f"{100 * x:+.1f}") if signed else (lambda x: f"{100 * x:.1f}")  # noqa: E731
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


def glance_table(table: pd.DataFrame) -> pd.DataFrame:
    """The tested rows of ``answer.csv`` for reading: split, method, setting, bpp, test accuracy and
    its difference from the reference in points with 95% intervals (rounded to 0.1), within one
    point; a column that holds no value in any row is left out."""
    t = _once(_tested(table)).sort_values(["bpp", "split_at"])
    out = pd.DataFrame({
        "after": [ANY_SPLIT if f in SPLIT_FREE else s for f, s in zip(t["family"], t["split_at"])], "method": [FAMILY_SHORT.get(f, f) for f in t["family"]],
        "setting": [setting_words(s) for s in t["setting"]], "bpp": [f"{float(v):.3g}" for v in t["bpp"]],
        "seeds": [str(int(v)) if not pd.isna(v) else "" for v in t["seeds"]],
        "test accuracy (%)": [_points(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]) for _, r in t.iterrows()],
        "minus reference (points)": [_points(r["diff"], r["diff_lo"], r["diff_hi"], True) for _, r in t.iterrows()],
        "within one point": ["yes" if w else "no" for w in t["within"]]})
    return out.loc[:, [c for c in out.columns if out[c].astype(str).str.len().gt(0).any()]].reset_index(drop=True)


ANY_SPLIT = "any split (codes the image)"


def _once(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with a family that does not depend on the split (an image codec) kept once, at its first split."""
    return rows[~(rows["family"].isin(SPLIT_FREE) & rows.duplicated("family"))]


CLOSEST = re.compile(r"closest on val-select: rung [^,]+, ([-+0-9.]+) \[")


def untested_lines(table: pd.DataFrame) -> list[str]:
    """One short line per family with rows that were not tested: where no rate of its ladder came
    within one point on the validation images (with the closest difference per split), or what is
    still pending."""
    rows = _once(table[table["status"] != "tested"])
    lines = []
    for family, g in rows.groupby("family", sort=False):
        missed = g[g["status"].str.startswith("no rung")]
        if len(missed):
            closest = [m.group(1) for m in map(CLOSEST.search, missed["status"]) if m]
            near = f" (closest: {', '.join(closest)} points)" if len(closest) == len(missed) else ""
            where = "" if family in SPLIT_FREE else f" after {_splits(list(missed['split_at']))}"
            lines.append(f"- {FAMILY_SHORT.get(family, family)}{where}: no rate "
                         f"setting came within one point on the validation images, so none was tested{near}.")
        for _, r in g[~g.index.isin(missed.index)].iterrows():
            lines.append(f"- {FAMILY_SHORT.get(family, family)} after {r['split_at']}: {r['status']}.")
    return lines


def render_glance(table: pd.DataFrame) -> str:
    """The README's answer-at-a-glance block: the tested rows as a table, then one line per untested family."""
    return (glance_table(table).to_markdown(index=False, disable_numparse=True) + "\n\n"
            + "\n".join(untested_lines(table)))


def budget_markdown(budget: Budget) -> str:
    """The README's one sentence on the training budget, rendered from the ``Budget`` every card records."""
    learns = {"all": "the whole network learns", "tail": "the layers after the split learn",
              "frozen": "only the bottleneck learns"}[budget.train]
    optimizer = "Adam" if budget.optimizer == "adam" else "SGD with Nesterov momentum"
    ce = 1 - budget.distill_weight
    return (f"**The budget** (`training.Budget`, one object from notebook 05's demo to every card): "
            f"{budget.steps:,} steps of {budget.batch_size} training images; {optimizer} at {budget.lr:g}, "
            f"cosine-annealed; {learns}; the loss is {ce:g} x cross-entropy + {budget.distill_weight:g} x "
            f"distillation from the shipped model (temperature {budget.temperature:g}); validation on val-stop "
            f"every {budget.eval_every} steps chooses the weights kept, and no run is cut short.")


def splice(path: str | Path, text: str, name: str = "results") -> Path:
    """Replace the text between ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->`` in ``path``
    with ``text``; everything outside the markers, the markers included, is kept byte for byte.
    A missing or repeated marker, or the end before the begin, is a ValueError."""
    path = Path(path)
    s = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    for marker in (begin, end):
        if s.count(marker) != 1:
            raise ValueError(f"path {path} must contain {marker!r} exactly once, found {s.count(marker)}")
    a, b = s.index(begin) + len(begin), s.index(end)
    if b < a:
        raise ValueError(f"path {path}: {end!r} comes before {begin!r}")
    path.write_text(s[:a] + "\n" + text.strip("\n") + "\n" + s[b:])
    return path



def takeaway(table: pd.DataFrame, reference: dict | None = None) -> str:
    """Notebook 07's takeaway, what the answer means, rounded for reading: the answer's sentence; per
    split where two methods are within one point, how many times fewer bits the cheaper needs; and the
    methods that were never tested (one line each). What the answer does not say is the notebook's
    own hand-written text beside it."""
    lines = [f"- **The answer:** {answer_sentence(table, reference)}"]
    tested = _tested(table)
    for split_at, g in tested[tested["within"]].groupby("split_at", sort=False):
        g = g.sort_values("bpp")
        if len(g) >= 2 and g["family"].iloc[0] != g["family"].iloc[1]:
            a, b = g.iloc[0], g.iloc[1]
            lines.append(f"- After {split_at}, {FAMILY_WORDS[a['family']]} needs {float(b['bpp']) / float(a['bpp']):.1f} "
                         f"times fewer bits than {FAMILY_WORDS[b['family']]} ({_bpp(a['bpp'])} against "
                         f"{_bpp(b['bpp'])} bpp), both within one point.")
    lines += [f"- Not tested: {line[2:]}" for line in untested_lines(table)]
    return "\n".join(lines)


def splice_glance(readme: str | Path, table: pd.DataFrame, cards: list[dict]) -> Path:
    """Put the answer at a glance into ``readme``: its first paragraph (``headline``, between the
    ``headline`` markers) and the tested rows with one line per untested family (``render_glance``,
    between the ``glance`` markers), from ``answer.csv``'s ``table`` and the protocol's ``cards``."""
    splice(readme, headline(table, answer_reference(cards)), "headline")
    return splice(readme, render_glance(table), "glance")


def write(parts: list[tuple[str, str, pd.DataFrame]], folder: str | Path | None = None) -> dict[str, Path]:
    """Write ``results_doc.md`` to ``folder`` (default the results folder), for ``make study`` to copy
    into ``docs/results.md``."""
    folder = Path(folder) if folder is not None else results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = dict(doc=folder / "results_doc.md")
    out["doc"].write_text(render_doc(parts))
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m blocksparse.report README.md docs/results.md``: put the answer at a glance
    (``answer.csv`` and the protocol's cards) and the last study's run time into the README, and
    notebook 07's rendered record of this run's sweep into the results document."""
    ap = argparse.ArgumentParser(prog="python -m blocksparse.report", description=main.__doc__)
    ap.add_argument("readme", type=Path)
    ap.add_argument("doc", type=Path)
    args = ap.parse_args(argv)
    d = results_dir()
    for f in ("results_doc.md", "answer.csv"):
        if not (d / f).exists():
            ap.error(f"{d / f} does not exist: run notebook 07 (make study) and `protocol answer` first")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text((d / "results_doc.md").read_text())
    splice_glance(args.readme, pd.read_csv(d / "answer.csv"), read_cards(DATA_DIR / "answer"))
    if (d / "study_timing.csv").exists():
        splice(args.readme, render_timing(pd.read_csv(d / "study_timing.csv")), "study-time")
    print(f"{args.readme}: the answer at a glance and the study's time replaced; {args.doc} written")


if __name__ == "__main__":
    main()
