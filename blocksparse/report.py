"""The exploratory record rendered as markdown: ``docs/results.md`` in full, the README's short
block, both from the tables of ``exploratory`` and ``analysis`` (results as data: a title, a
one-line caption and a table per section; no generated prose).

``splice`` puts a rendered block between a file's markers::

    python -m blocksparse.report README.md docs/results.md   # from <results_dir>/results_doc.md
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
from .analysis import bd_rate_table, frontier_table, levers_table, positions_share
from .exploratory import (BOTTLENECK_METHOD, ablation_table, baselines_table, bottleneck_table, codec_models_table,
                          finetune_table, load_trained_models, models_table, split_table, test_stopping_table,
                          trained_table)
from .original import METHOD as ORIGINAL_METHOD
from .original import original_choices_table, original_vs_real
from .protocol import SPLIT_FREE
from .results import to_frame, unpack_correct
from .runtime import DATA_DIR, results_dir
from .stats import hierarchical_bootstrap

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
DOC = "docs/results.md"
EXPLORATORY = ("**Exploratory**: made before the protocol; splits, recipes and operating points were partly chosen "
               "after seeing test numbers.")


def markdown(table: pd.DataFrame) -> str:
    """A frame as a pipe table (``DataFrame.to_markdown``), missing values as ``n/a``, no index."""
    if table is None or table.empty:
        return "(none)"
    return table.astype(object).where(table.notna(), "n/a").to_markdown(index=False)


def sections(results: pd.DataFrame | None = None, trained: dict | None = None, *, reference: float | None = None,
             tolerance: float = 0.01, max_bpp: float = 1.0, lever_bpp=(1.0, 2.0, 4.0, 8.0), anchor: str = "webp",
             original_choices: pd.DataFrame | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """The exploratory record as (title, caption, table), in reading order; a section whose data
    is absent is left out.

    Parameters
    ----------
    results : DataFrame, optional
        One run's sweep with its baselines (notebook 07's ``results``: block-sparse with and
        without fine-tuning, image codecs, dense, the original's accounting, the uncompressed row).
    trained : dict, optional
        ``exploratory.load_trained_models()``: the trained models on all test images.
    reference : float, optional
        The uncompressed accuracy on ``results``' images (fraction; default its uncompressed row).
    tolerance, max_bpp, lever_bpp, anchor
        "Within" is accuracy >= reference - tolerance; the rate of the frontier's second column;
        the rates of the levers table; the image codec of the BD-rates.
    original_choices : DataFrame, optional
        Rows of ``original.original_choices``.
    """
    t = trained or {}
    pts = f"{100 * tolerance:g} point{'s' if tolerance != 0.01 else ''}"
    out = []

    def add(title, caption, table):
        if table is not None and len(table):
            out.append((title, caption, table))
    removed = t.get("weights_removed", [])
    gone = (f" Weights that left the tree for git history (their cards keep the rows measured from them): "
            f"{', '.join(f'`{w}`' for w in removed)}." if removed else "")
    left = f", and the {len(removed)} weight files that left the tree" if removed else ""
    if t.get("models") is not None or t.get("bottleneck") is not None or t.get("codec_models") is not None:
        table = trained_table(t.get("models"), t.get("paired", []), t.get("bottleneck"), t.get("bottleneck_paired", []),
                              t.get("codec_models"), t.get("codec_paired", []), t.get("codec_grid"), tolerance,
                              max_bpp, vs_reference=t.get("vs_reference", []))
        add("Trained models on all test images",
            f"Mean over seeds; `vs_uncompressed`: paired test against the shipped model on the same images (points, "
            f"widest seed interval); `within`: every seed within {pts}; WebP by point estimate. Block-sparse rates: "
            f"codec version 2 for seeds whose weights ship{' or shipped' if removed else ''}, version-1 code tables "
            f"for the others (a mean can mix both; per seed{left}: `docs/results.md`).", table)
    if t.get("models") is not None and len(t["models"]):
        add("Fine-tuned block-sparse models, per seed", "Weights in `data/frontier/` where shipped; every card "
            f"records its per-image test results.{gone}", models_table(t["models"], t.get("paired", [])))
    if t.get("bottleneck") is not None and len(t["bottleneck"]):
        add("Learned bottleneck, per seed", "Encoder, factorized entropy model and decoder trained with the ResNet "
            "frozen; bpp of real per-image ANS streams.", bottleneck_table(t["bottleneck"], t.get("bottleneck_paired", [])))
    if t.get("codec_models") is not None and len(t["codec_models"]):
        add("Image codecs with a fine-tuned classifier", "The classifier fine-tuned on decoded training images; "
            "`untuned`: the shipped classifier at the same quality.",
            codec_models_table(t["codec_models"], t.get("codec_paired", []), t.get("codec_grid")))
    if t.get("splits"):
        add("The split point", f"Each split's sweep without fine-tuning on the same images (bits per input pixel); "
            f"`finetuned_*`: the fine-tuned model at or under {max_bpp:g} bpp best on validation.",
            split_table(t["splits"], tolerance, max_bpp, t.get("models")))
    for df, config in t.get("screenings") or []:
        add(f"Selection after {config.get('split_at', 'layer1')} at or under {config.get('target_bpp')} bpp",
            f"Validation only: each configuration under the rate fine-tuned {config.get('screen_steps')} steps, the "
            f"better half again; the pick is the best validation accuracy.", df)
    if t.get("ablation") is not None and len(t["ablation"]):
        add("What fine-tuning needs (ablation)", "One configuration and seed, one change per run, the same budget; "
            "each run tested once.", ablation_table(t["ablation"]))
    if t.get("test_stopping"):
        add("Early stopping on the test set, measured", "One run whose test accuracy was recorded at every "
            "evaluation (it never steered training): what stopping on test, as the original did, would report.",
            test_stopping_table(t["test_stopping"]))
    if results is not None and len(results):
        results = to_frame(results)
        if reference is None:
            u = results[results["method"] == "uncompressed"]
            reference = float(u["accuracy"].iloc[0]) if len(u) else None
        n = int(results["n_images"].max())
        if reference is not None:
            add("This run's sweep: the frontier", f"On {n:,} evenly spaced test images, uncompressed "
                f"{100 * reference:.2f}%: per method the lowest bpp within {pts} and the best accuracy at or under "
                f"{max_bpp:g} bpp.", frontier_table(results, reference, tolerance, max_bpp,
                                                    exclude=("uncompressed", ORIGINAL_METHOD)))
        add(f"BD-rate against {anchor}", "Each mode's Pareto front without fine-tuning at equal accuracy over the "
            "range both cover (positive: the mode needs more bits).", bd_rate_table(results, anchor))
        if (results["method"] == BOTTLENECK_METHOD).fillna(False).any():
            add("BD-rate against the learned bottleneck", "The shipped bottlenecks re-measured on the same images.",
                bd_rate_table(results, BOTTLENECK_METHOD))
        add("Fine-tuning, before and after", "Each fine-tuned configuration beside the same configuration untuned.",
            finetune_table(results))
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


def record(folder: str | Path | None = None, data: str | Path | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """The exploratory record's sections from the files alone: ``results.csv`` with the settings
    saved beside it (tolerance, max_bpp, lever_bpp, anchor), ``original_choices.csv`` and the
    trained models (``load_trained_models``). What ``make study`` renders and the README test
    regenerates. ``folder``: the results folder (default ``runtime.results_dir()``); ``data``:
    the folder of the cards (default ``data/``)."""
    from .results import load_results
    d = Path(folder) if folder is not None else results_dir()
    results = load_results("results", d) if (d / "results.csv").exists() else None
    config = json.loads((d / "results.json").read_text())["config"] if results is not None else {}
    choices = pd.read_csv(d / "original_choices.csv") if (d / "original_choices.csv").exists() else None
    return sections(results, load_trained_models(d, data), original_choices=choices,
                    **{k: config[k] for k in ("tolerance", "max_bpp", "lever_bpp", "anchor") if k in config})


def render(parts: list[tuple[str, str, pd.DataFrame]], level: int = 2) -> str:
    """Sections as markdown: a heading, the caption, the table."""
    return "\n".join(f"{'#' * level} {title}\n\n{caption}\n\n{markdown(table)}\n" for title, caption, table in parts)


def render_doc(parts: list[tuple[str, str, pd.DataFrame]]) -> str:
    """``docs/results.md``: the exploratory record, every section."""
    return (f"# Results: the exploratory record\n\n{EXPLORATORY} The confirmatory answer is the README's protocol "
            f"table. Generated by `make study` (notebook 07) from `data/results/` and the cards; do not edit.\n\n"
            + render(parts))


def render_readme(parts: list[tuple[str, str, pd.DataFrame]]) -> str:
    """The README's results block: the trained models' table only, with a link to the full record."""
    head = [p for p in parts if p[0] == "Trained models on all test images"]
    body = render(head, level=3) if head else "(no trained models yet)\n"
    return f"{EXPLORATORY}\n\n{body}\nEvery other table (per seed, split points, screening, ablation, sweeps, " \
           f"baselines, the original's accounting): [`{DOC}`]({DOC}).\n"


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


def headline(table: pd.DataFrame, reference: dict | None = None) -> str:
    """The README's first paragraph: the model, the data set and the answer in one sentence (wrapped
    at 110 characters, never inside a word)."""
    return textwrap.fill(f"{INTRO} **The answer:** {answer_sentence(table, reference)}", 110,
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



def splice_glance(readme: str | Path, table: pd.DataFrame, cards: list[dict]) -> Path:
    """Put the answer at a glance into ``readme``: its first paragraph (``headline``, between the
    ``headline`` markers) and the tested rows with one line per untested family (``render_glance``,
    between the ``glance`` markers), from ``answer.csv``'s ``table`` and the protocol's ``cards``."""
    splice(readme, headline(table, answer_reference(cards)), "headline")
    return splice(readme, render_glance(table), "glance")


def write(parts: list[tuple[str, str, pd.DataFrame]], folder: str | Path | None = None) -> dict[str, Path]:
    """Write ``results_doc.md`` and ``results_readme.md`` to ``folder`` (default the results folder),
    for ``make study`` to copy into ``docs/results.md`` and the README."""
    folder = Path(folder) if folder is not None else results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = dict(doc=folder / "results_doc.md", readme=folder / "results_readme.md")
    out["doc"].write_text(render_doc(parts))
    out["readme"].write_text(render_readme(parts))
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
