"""The README's results section, rendered from the results tables.

Every number in the text comes from a results frame (``results.SCHEMA``) or the configuration
stored beside it; the words that depend on the numbers ("gets" / "does not get", "raises" /
"lowers", "lower" / "higher", "above" / "below") are chosen here from those numbers, so the
prose cannot drift from the tables. The layout is the module constant ``SUMMARY_TEMPLATE``; the
sentences are the constants below it. ``splice_readme`` puts the rendered text between the
README's markers::

    python -m blocksparse.report README.md     # splices <results_dir>/summary.md into README.md
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from .analysis import best_under, bd_rate, frontier_table, levers_table, lowest_within, pareto
from .baselines import IMAGE_FORMATS
from .original import METHOD as ORIGINAL_METHOD
from .original import ORIGINAL_BITS
from .report_format import (NAMES, blocksparse_rows, fmt_bpp, fmt_count, fmt_interval, fmt_list, fmt_markdown, fmt_missing, fmt_number,
                            fmt_pct, fmt_points, describe)
from .report_original import original_sentences, original_vs_real, render_original_choices
from .report_answer import render_full_answer, render_split_points
from .report_models import (render_ablation, render_bottleneck, render_codec_models, render_models, render_screenings,
                            render_test_stopping)
from .results import to_frame
from .runtime import results_dir

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# Slack for "accuracy >= reference - tolerance": as in analysis, rounding must not decide.
_EPS = 1e-9

SUMMARY_TEMPLATE = Template("""\
$setup

![accuracy vs bpp]($figure)

$full_answer
$answer

$models
$screening
$bottleneck
$codec_models
$ablation
$test_stopping
$splits
BD-rate of each selection mode's Pareto front (no fine-tuning) against ${anchor}'s, at equal accuracy \
over the accuracy range both curves cover (log-rate interpolated by a monotone piecewise cubic, `analysis.bd_rate`; \
positive: the mode needs more bits than $anchor):

$bd_table
$bd_bottleneck
$frontier

Fine-tuned configurations (picked on validation accuracy; the test set evaluated once per model):

$finetuned_table

The original's accounting (method `$original_method`: float features to the tail, a ${original_bits}-bit \
Huffman estimate from the first batch, without header or code tables) beside the real ${original_bits}-bit \
streams of the sweep at the same configuration:

$original_table
$original_choices
Baselines on the same test images and classifier:

$baselines_table

Levers: the best block-sparse accuracy (%) at or under each rate with one lever held at each value.

$levers
""")

SETUP = Template(
    "Run by `make study`: $dataset, the shipped ResNet-18 (sha256 `$sha256`, $checkpoint_accuracy on the full "
    "test set), split after `$split_at`$features; accuracy on $n_images evenly spaced test images, rates from "
    "the real amortized per-image streams of $n_rate evenly spaced of them (code tables fitted on training "
    "features; self-contained streams beside them); modes $modes, block sizes $block_sizes, bits $bits, "
    "ratios $ratio_max down to $ratio_min; fine-tuning $train for $steps steps of $batch_size images "
    "($train_subset training images, early stopping on $val_subset validation images; seeds $seeds). "
    "Every number here is rendered by `blocksparse.report.render_summary` from `data/results/`.")
FEATURES = Template(" ($shape features, $per_pixel values per input pixel)")
QUICK_LEAD = Template("*This run's own sweep and quick fine-tuning, on $n_images test images (what `make study` "
                      "recomputes; the answer above rests on all test images):* ")
HEADLINE = Template("**On this split the block-sparse codec $gets within $tolerance of the uncompressed model "
                    "($reference) at $max_bpp bpp**")
HEADLINE_BEST = Template(": the best configuration at or under $max_bpp bpp reaches $accuracy$interval "
                         "on $n_images test images ($config, $bpp bpp).")
HEADLINE_NONE = Template(": no configuration gets to $max_bpp bpp.")
LOWEST_RAW = Template("Without fine-tuning, the lowest rate within $tolerance is $bpp bpp ($config; $accuracy).")
LOWEST_RAW_NONE = Template("Without fine-tuning no configuration stays within $tolerance "
                           "(the best reaches $accuracy at $bpp bpp).")
FINETUNE = Template("Fine-tuning $config ($bpp bpp$seed) $moves accuracy from $before to $after$interval.")
TRAIN_WORDS = {"tail": "the layers after the split", "all": "the whole network"}
FLOOR = Template("Channel-wise selection goes no lower than $bpp bpp (it keeps at least one block per channel).")
CODECS = Template("Coding the input image instead stays within $tolerance with $within.")
CODECS_NEVER = Template(" $names never $verb at any quality tried.")
CODECS_NONE = Template("Coding the input image instead never stays within $tolerance ($names, at any quality "
                       "tried).")
BOTTLENECK_METHOD = "learned-bottleneck"
BD_BOTTLENECK = Template(
    "\nBD-rate of each selection mode's Pareto front (no fine-tuning) against the learned bottleneck's (the "
    "shipped bottlenecks re-measured on the same $n_images test images, notebook 06), at equal accuracy over the "
    "range both cover (positive: the mode needs more bits than the bottleneck):\n\n$table\n")
FRONTIER = Template("uncompressed: $reference on $n_images test images\n\n$table")
POSITIONS = Template("On the Pareto front ($n configurations), positions take $share of the stream on average; "
                     "delta coding was chosen for $delta of those streams (bitmap for the rest).")


# ---------------------------------------------------------------------------
# the tables the summary is made of
# ---------------------------------------------------------------------------
def bd_rate_table(results: pd.DataFrame, anchor: str = "webp") -> pd.DataFrame:
    """BD-rate (%) of each mode's Pareto front (block-sparse, no fine-tuning) against ``anchor``'s front.

    Parameters
    ----------
    results : DataFrame
        A results table (``results.SCHEMA`` columns).
    anchor : str
        The method of the reference curve (an image codec, e.g. ``"webp"``).

    Returns
    -------
    DataFrame
        Columns ``mode``, ``points`` (on the mode's front), ``anchor_points``, ``overlap`` (the
        accuracy range both fronts cover, e.g. ``"86.6%-94.9%"``), ``bd_rate`` (%, positive: the
        mode needs more bits; NaN where it cannot be computed) and ``note`` (why it is NaN).
    """
    results = to_frame(results)
    ref = pareto(results[(results["method"] == anchor).fillna(False).to_numpy(bool)])
    rows = []
    for mode, g in blocksparse_rows(results, finetuned=False).groupby("mode", sort=True):
        front = pareto(g)
        row = dict(mode=mode, points=len(front), anchor_points=len(ref), overlap=pd.NA, bd_rate=np.nan, note="")
        if len(ref) == 0:
            row["note"] = f"no {anchor} rows"
        else:
            lo = max(front["accuracy"].min(), ref["accuracy"].min())
            hi = min(front["accuracy"].max(), ref["accuracy"].max())
            if hi > lo:
                row["overlap"] = f"{fmt_pct(lo)}-{fmt_pct(hi)}"
            try:
                row["bd_rate"] = bd_rate(ref["bpp"].to_numpy(float), ref["accuracy"].to_numpy(float),
                                         front["bpp"].to_numpy(float), front["accuracy"].to_numpy(float))
            except ValueError as e:  # too few points, or the accuracy ranges do not overlap
                row["note"] = str(e).replace("_a", f" ({anchor})").replace("_b", f" ({mode})")
        rows.append(row)
    out = pd.DataFrame(rows, columns=["mode", "points", "anchor_points", "overlap", "bd_rate", "note"])
    return out.astype(dict(mode="string", points="Int64", anchor_points="Int64", overlap="string",
                           bd_rate="Float64", note="string"))


def positions_share(results: pd.DataFrame) -> dict:
    """On the block-sparse Pareto front: the mean share of the stream that positions take
    (``positions_bits / (8 * stream_bytes)``) and the mean share of delta-coded streams.

    Returns
    -------
    dict
        ``n`` (front rows with a stream breakdown), ``positions_share`` and ``delta_share``
        (fractions; NaN when ``n`` is 0).
    """
    front = pareto(blocksparse_rows(to_frame(results))).dropna(subset=["positions_bits", "stream_bytes"])
    if len(front) == 0:
        return dict(n=0, positions_share=math.nan, delta_share=math.nan)
    share = front["positions_bits"].to_numpy(float) / (8 * front["stream_bytes"].to_numpy(float))
    return dict(n=len(front), positions_share=float(share.mean()),
                delta_share=float(front["delta_share"].astype("Float64").mean(skipna=True)))


def render_frontier(results: pd.DataFrame, reference: float, tolerance: float = 0.01,
                    max_bpp: float = 1.0) -> str:
    """``analysis.frontier_table`` as markdown, under the reference's accuracy (frontier.md).

    Parameters
    ----------
    results : DataFrame
        A results table (``results.SCHEMA``).
    reference : float
        The uncompressed accuracy (fraction).
    tolerance, max_bpp : float
        As in ``analysis.frontier_table``.

    Returns
    -------
    str
        Markdown. The original's accounting is left out: its bpp is an estimate, not a rate (it
        has its own table in the summary).
    """
    results = to_frame(results)
    table = frontier_table(results, reference, tolerance, max_bpp, exclude=("uncompressed", ORIGINAL_METHOD))
    table = table.rename(columns=dict(lowest_bpp_within=f"lowest bpp within {fmt_points(tolerance)}",
                                      config="config there",
                                      accuracy_at_max_bpp=f"accuracy (%) at <= {fmt_number(max_bpp)} bpp"))
    ref = results[(results["method"] == "uncompressed").fillna(False).to_numpy(bool)]
    return FRONTIER.substitute(reference=fmt_pct(reference, 2),
                               n_images=fmt_count(ref["n_images"].iloc[0]) if len(ref) else "n/a",
                               table=fmt_markdown(table, {table.columns[1]: lambda v: "n/a" if fmt_missing(v)
                                                       else f"{float(v):.3f}",
                                                       table.columns[3]: lambda v: "n/a" if fmt_missing(v)
                                                       else f"{float(v):.1f}"}))


def render_levers(results: pd.DataFrame, rates=(1.0, 2.0, 4.0, 8.0)) -> str:
    """``analysis.levers_table`` as markdown plus the positions and delta-coding shares (levers.md).

    Parameters
    ----------
    results : DataFrame
        A results table (``results.SCHEMA``).
    rates : sequence of float
        The rates (bpp) of the table's columns.

    Returns
    -------
    str
        Markdown: the table, then a sentence with ``positions_share`` (left out when the front
        has no stream breakdown).
    """
    results = to_frame(results)
    table = levers_table(results, tuple(float(r) for r in rates))
    text = fmt_markdown(table, {c: (lambda v: "n/a" if fmt_missing(v) else f"{float(v):.1f}") for c in table.columns[2:]})
    s = positions_share(results)
    if s["n"]:
        text += "\n\n" + POSITIONS.substitute(n=s["n"], share=fmt_pct(s["positions_share"]),
                                              delta=fmt_pct(s["delta_share"], 0))
    return text


# ---------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------
def _config(configs: dict, name: str, key: str):
    try:
        return configs[name][key]
    except (KeyError, TypeError):
        raise ValueError(f"configs[{name!r}] must hold {key!r} (the config saved beside {name}.csv)") from None


def _setup(results: pd.DataFrame, configs: dict, card: dict) -> str:
    raw = blocksparse_rows(results, finetuned=False)
    src = raw if len(raw) else results
    sw, extra = "sweep", configs.get("results", {}) or {}
    features = ""
    if extra.get("feature_shape") and extra.get("input_hw"):
        shape, hw = extra["feature_shape"], extra["input_hw"]
        features = FEATURES.substitute(shape="x".join(fmt_number(s) for s in shape),
                                       per_pixel=fmt_number(float(np.prod(shape)) / float(np.prod(hw))))
    ratios = _config(configs, sw, "ratios")
    sha = card.get("sha256") or "unknown"
    return SETUP.substitute(
        dataset=src["dataset"].dropna().iloc[0] if src["dataset"].notna().any() else "n/a",
        sha256=sha[:12], checkpoint_accuracy=fmt_pct(card.get("test_accuracy"), 2),
        split_at=src["split_at"].dropna().iloc[0] if src["split_at"].notna().any() else "n/a",
        features=features, n_images=fmt_count(src["n_images"].max()),
        n_rate=fmt_count(raw["n_rate"].max()) if len(raw) else "n/a",
        modes=", ".join(_config(configs, sw, "modes")), block_sizes=fmt_list(_config(configs, sw, "block_sizes")),
        bits=fmt_list(_config(configs, sw, "bits")), ratio_max=fmt_number(max(ratios)), ratio_min=fmt_number(min(ratios)),
        train=TRAIN_WORDS.get(_config(configs, "finetune", "train"), _config(configs, "finetune", "train")),
        seeds=fmt_list(configs["finetune"].get("seeds", [])), steps=fmt_count(_config(configs, "finetune", "steps")),
        batch_size=fmt_count(_config(configs, "finetune", "batch_size")),
        train_subset=fmt_count(_config(configs, "finetune", "train_subset")),
        val_subset=fmt_count(_config(configs, "finetune", "val_subset")))


def _within(d: pd.DataFrame, reference: float, tolerance: float):
    return lowest_within(d, reference, tolerance) if len(d) else None


def _answer(results: pd.DataFrame, reference: float, tolerance: float, max_bpp: float,
            original_mode: str | None) -> str:
    tol = fmt_points(tolerance)
    bs, raw = blocksparse_rows(results), blocksparse_rows(results, finetuned=False)
    best = best_under(bs, max_bpp) if len(bs) else None
    reached = best is not None and float(best["accuracy"]) >= reference - tolerance - _EPS
    out = [HEADLINE.substitute(gets="gets" if reached else "does not get", tolerance=tol,
                               reference=fmt_pct(reference), max_bpp=fmt_number(max_bpp))
           + (HEADLINE_BEST.substitute(max_bpp=fmt_number(max_bpp), accuracy=fmt_pct(best["accuracy"]),
                                       interval=fmt_interval(best),
                                       n_images=fmt_count(best["n_images"]), config=describe(best),
                                       bpp=fmt_bpp(best["bpp"]))
              if best is not None else HEADLINE_NONE.substitute(max_bpp=fmt_number(max_bpp)))]
    if len(raw):
        r = _within(raw, reference, tolerance)
        if r is not None:
            out.append(LOWEST_RAW.substitute(tolerance=tol, bpp=fmt_bpp(r["bpp"]), config=describe(r),
                                             accuracy=fmt_pct(r["accuracy"])))
        else:
            top = raw.sort_values(["accuracy", "bpp"], ascending=[False, True]).iloc[0]
            out.append(LOWEST_RAW_NONE.substitute(tolerance=tol, accuracy=fmt_pct(top["accuracy"]),
                                                  bpp=fmt_bpp(top["bpp"])))
    many_seeds = blocksparse_rows(results, finetuned=True)["seed"].nunique() > 1
    for _, after in _finetune_pairs(results):
        before = after["before"]
        moves = ("raises" if after["accuracy"] > before else "lowers" if after["accuracy"] < before else "leaves")
        seed = "" if not many_seeds or fmt_missing(after["seed"]) else f", seed {fmt_number(after['seed'])}"
        out.append(FINETUNE.substitute(config=describe(after.drop(labels="finetuned")), bpp=fmt_bpp(after["bpp"]),
                                       seed=seed,
                                       moves=moves, before=fmt_pct(before), after=fmt_pct(after["accuracy"]),
                                       interval=fmt_interval(after)))
    cw = bs[(bs["mode"] == "channel-wise").fillna(False).to_numpy(bool)]
    if len(cw):
        out.append(FLOOR.substitute(bpp=fmt_bpp(cw["bpp"].min())))
    within, never = [], []
    for fmt in IMAGE_FORMATS:
        g = results[(results["method"] == fmt).fillna(False).to_numpy(bool)]
        if len(g):
            r = _within(g, reference, tolerance)
            (within.append(f"{NAMES[fmt]} at {fmt_bpp(r['bpp'])} bpp ({describe(r)})") if r is not None
             else never.append(NAMES[fmt]))
    if within:
        out.append(CODECS.substitute(tolerance=tol, within=", ".join(within))
                   + (CODECS_NEVER.substitute(names=" and ".join(never), verb="does" if len(never) == 1 else "do")
                      if never else ""))
    elif never:
        out.append(CODECS_NONE.substitute(tolerance=tol, names=", ".join(never)))
    out += original_sentences(results, original_mode)
    return " ".join(out)


def _finetune_pairs(results: pd.DataFrame):
    """(index, fine-tuned row with its 'before' accuracy) for each fine-tuned row that has a
    non-fine-tuned row of the same configuration."""
    raw, ft = blocksparse_rows(results, finetuned=False), blocksparse_rows(results, finetuned=True)
    keys = ["mode", "block_size", "bits"]
    for i, a in ft.iterrows():
        same = raw[(raw[keys] == a[keys]).all(axis=1).fillna(False).to_numpy(bool)
                   & np.isclose(raw["ratio"].to_numpy(float, na_value=np.nan), float(a["ratio"]))]
        if len(same):
            yield i, pd.concat([a, pd.Series({"before": same.iloc[0]["accuracy"]})])


def _bd_markdown(results: pd.DataFrame, anchor: str, name: str, points_label: str,
                 note_name: str | None = None) -> str:
    """``bd_rate_table(results, anchor)`` as a pipe table, the anchor called ``name`` in its header
    (and ``note_name`` in its notes, when given)."""
    bd = bd_rate_table(results, anchor)
    col = f"BD-rate vs {name} (%)"
    rename_note = (lambda v: v.replace(f" ({anchor})", f" ({note_name})")) if note_name else (lambda v: v)
    return fmt_markdown(bd.rename(columns=dict(points="points on the front", anchor_points=points_label, bd_rate=col,
                                            overlap="accuracy overlap")),
                     {col: lambda v: "n/a" if fmt_missing(v) else f"{float(v):+.1f}",
                      "accuracy overlap": lambda v: "none" if fmt_missing(v) else str(v),
                      "note": lambda v: "" if fmt_missing(v) else rename_note(str(v))})


def _tables(results: pd.DataFrame, anchor: str) -> dict[str, str]:
    pct = lambda v: "n/a" if fmt_missing(v) else f"{100 * float(v):.1f}"  # noqa: E731
    interval = lambda lo, hi: "n/a" if fmt_missing(lo) or fmt_missing(hi) else f"[{pct(lo)}, {pct(hi)}]"  # noqa: E731
    bpp3 = lambda v: "n/a" if fmt_missing(v) else f"{float(v):.3f}"  # noqa: E731

    name = NAMES.get(anchor, anchor)
    bd_md = _bd_markdown(results, anchor, name, f"{name} points")

    ft_rows = [dict(mode=a["mode"], block_size=a["block_size"], ratio=a["ratio"], bits=a["bits"], seed=a["seed"],
                    bpp=a["bpp"], before=a["before"], after=a["accuracy"],
                    interval=interval(a["accuracy_lo"], a["accuracy_hi"]),
                    val_accuracy=a["val_accuracy"], n_images=a["n_images"])
               for _, a in _finetune_pairs(results)]
    ft = pd.DataFrame(ft_rows, columns=["mode", "block_size", "ratio", "bits", "seed", "bpp", "before", "after",
                                        "interval", "val_accuracy", "n_images"])
    ft_md = fmt_markdown(ft.rename(columns={"before": "accuracy before (%)", "after": "after (%)",
                                         "interval": "95% interval", "val_accuracy": "val accuracy (%)"}),
                      {"bpp": bpp3, "accuracy before (%)": pct, "after (%)": pct, "val accuracy (%)": pct,
                       "95% interval": str, "n_images": fmt_count})

    orig = original_vs_real(results)
    orig_md = fmt_markdown(orig.rename(columns=dict(original_bpp="original bpp (estimate)", real_bpp="real bpp",
                                                 original_accuracy="original accuracy (%)",
                                                 real_accuracy="real accuracy (%)")),
                        {"original bpp (estimate)": fmt_bpp, "real bpp": fmt_bpp, "original accuracy (%)": pct,
                         "real accuracy (%)": pct})

    base = results[results["method"].isin([*IMAGE_FORMATS, "dense"]).fillna(False).to_numpy(bool)]
    base = base.assign(method=base["method"].map(lambda m: NAMES.get(m, m)),
                       interval=[interval(lo, hi) for lo, hi in zip(base["accuracy_lo"], base["accuracy_hi"])])
    base_md = fmt_markdown(base[["method", "quality", "bits", "accuracy", "interval", "bpp", "n_images"]]
                        .rename(columns={"accuracy": "accuracy (%)", "interval": "95% interval"}),
                        {"accuracy (%)": pct, "bpp": fmt_bpp, "95% interval": str, "n_images": fmt_count,
                         "quality": lambda v: "" if fmt_missing(v) else fmt_number(v),
                         "bits": lambda v: "" if fmt_missing(v) else fmt_number(v)})
    bn_md = ""
    if (results["method"] == BOTTLENECK_METHOD).fillna(False).any():
        n = int(results.loc[(results["method"] == BOTTLENECK_METHOD).fillna(False).to_numpy(bool), "n_images"].max())
        bn_md = BD_BOTTLENECK.substitute(n_images=fmt_count(n), table=_bd_markdown(
            results, BOTTLENECK_METHOD, "the bottleneck", "bottleneck models", note_name="bottleneck"))
    return dict(bd_table=bd_md, finetuned_table=ft_md, original_table=orig_md, baselines_table=base_md,
                bd_bottleneck=bn_md)


def render_summary(results: pd.DataFrame, configs: dict, card: dict, reference: float, *,
                   tolerance: float = 0.01, max_bpp: float = 1.0, lever_bpp=(1.0, 2.0, 4.0, 8.0),
                   original_mode: str | None = "channel-wise", anchor: str = "webp",
                   figure: str = "figures/accuracy_vs_compression.png", models: pd.DataFrame | None = None,
                   paired: list[dict] | None = None,
                   screenings: list[tuple[pd.DataFrame, dict]] | None = None, bottleneck: pd.DataFrame | None = None,
                   bottleneck_paired: list[dict] | None = None, codec_models: pd.DataFrame | None = None,
                   codec_paired: list[dict] | None = None, codec_grid: pd.DataFrame | None = None,
                   ablation: pd.DataFrame | None = None, test_stopping: dict | None = None,
                   splits: dict | None = None, original_choices: pd.DataFrame | None = None,
                   vs_reference: list[dict] | None = None) -> str:
    """The README's results section, every number read from ``results`` and ``configs``.

    Parameters
    ----------
    results : DataFrame
        The study's results table (``results.SCHEMA``): block-sparse rows (with and without
        fine-tuning), the uncompressed reference, image codecs, dense, the original's accounting.
    configs : dict
        The configs saved beside the tables: ``"sweep"`` (``modes``, ``block_sizes``, ``bits``,
        ``ratios``) and ``"finetune"`` (``train``, ``steps``, ``batch_size``, ``train_subset``,
        ``val_subset``) are required; ``"results"`` may hold ``feature_shape`` and ``input_hw``.
    card : dict
        The checkpoint's model card (``sha256``, ``test_accuracy``).
    reference : float
        The uncompressed accuracy on the same test images (fraction).
    tolerance : float
        "Within a point": accuracy >= reference - tolerance.
    max_bpp : float
        The rate of the headline question.
    lever_bpp : sequence of float
        The rates of the levers table.
    original_mode : str, optional
        The mode whose original-accounting rows the text compares ratio by ratio (the table has all).
    anchor : str
        The image codec the BD-rates are measured against.
    figure : str
        The figure's path relative to the README.
    models, paired : DataFrame and list of dict, optional
        The shipped fine-tuned models re-measured on the test set and their paired tests
        (``render_models``).
    screenings : list of (DataFrame, dict), optional
        The selections after fine-tuning behind those models, each with its config (``render_screenings``).
    bottleneck, bottleneck_paired, codec_models, codec_paired, codec_grid, ablation, test_stopping, splits : optional
        The learned bottlenecks, the image codecs with a fine-tuned classifier, the image codecs
        on the same test images, the ablation frame, the monitored card and the sweeps per split point (``report_models``;
        ``report_models.load_trained_models`` reads them all).
    original_choices : DataFrame, optional
        The original's bpp with each of its choices turned the other way (``render_original_choices``).
    vs_reference : list of dict, optional
        The models paired with the uncompressed model fine-tuned with no codec (``render_full_answer``).

    Returns
    -------
    str
        Markdown, ending in a newline.
    """
    if not (isinstance(reference, (int, float)) and math.isfinite(reference) and 0 <= reference <= 1):
        raise ValueError(f"reference must be an accuracy in [0, 1], got {reference!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if not max_bpp > 0:
        raise ValueError(f"max_bpp must be > 0, got {max_bpp!r}")
    results = to_frame(results)
    full_answer = render_full_answer(models, paired or [], bottleneck, bottleneck_paired or [], codec_models,
                                     codec_paired or [], codec_grid, tolerance, max_bpp,
                                     vs_reference=vs_reference or [])
    answer = _answer(results, reference, tolerance, max_bpp, original_mode)
    if full_answer:  # then this run's own sweep is the quick look, not a second answer
        answer = QUICK_LEAD.substitute(n_images=fmt_count(results["n_images"].max())) + answer
    text = SUMMARY_TEMPLATE.substitute(
        setup=_setup(results, configs, card), figure=figure, answer=answer, anchor=NAMES.get(anchor, anchor),
        frontier=render_frontier(results, reference, tolerance, max_bpp), original_method=ORIGINAL_METHOD,
        original_bits=ORIGINAL_BITS, levers=render_levers(results, lever_bpp), **_tables(results, anchor),
        full_answer=full_answer,
        models=render_models(models, paired or [], tolerance) if models is not None else "",
        screening=render_screenings(screenings or []),
        bottleneck=render_bottleneck(bottleneck, bottleneck_paired or [], codec_grid, tolerance, anchor)
        if bottleneck is not None else "",
        codec_models=render_codec_models(codec_models, codec_paired or [], codec_grid)
        if codec_models is not None else "",
        ablation=render_ablation(ablation) if ablation is not None else "",
        test_stopping=render_test_stopping(test_stopping) if test_stopping is not None else "",
        splits=render_split_points(splits, tolerance, max_bpp, models) if splits else "",
        original_choices=render_original_choices(original_choices))
    return text


def write_summary(text: str, path: str | Path | None = None) -> Path:
    """Write ``text`` to ``<results_dir>/summary.md`` (or ``path``); returns the path."""
    path = Path(path) if path is not None else results_dir() / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def splice_readme(readme_path: str | Path, summary_text: str, name: str = "results") -> Path:
    """Replace the text between ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->`` with ``summary_text``.

    Everything outside the markers, the markers included, is kept byte for byte.

    Raises
    ------
    ValueError
        When a marker is missing, appears twice, or the end comes before the begin.
    """
    readme_path = Path(readme_path)
    text = readme_path.read_text()
    begin, end = (BEGIN, END) if name == "results" else (f"<!-- {name}:begin -->", f"<!-- {name}:end -->")
    for marker in (begin, end):
        if text.count(marker) != 1:
            raise ValueError(f"readme_path {readme_path} must contain {marker!r} exactly once, "
                             f"found {text.count(marker)}")
    a, b = text.index(begin) + len(begin), text.index(end)
    if b < a:
        raise ValueError(f"readme_path {readme_path}: {end!r} comes before {begin!r}")
    readme_path.write_text(text[:a] + "\n" + summary_text.strip("\n") + "\n" + text[b:])
    return readme_path


def main(argv: list[str] | None = None) -> None:
    """``python -m blocksparse.report README.md [summary.md]``: splice the summary into the README."""
    ap = argparse.ArgumentParser(prog="python -m blocksparse.report", description=main.__doc__)
    ap.add_argument("readme", type=Path)
    ap.add_argument("summary", type=Path, nargs="?", default=None,
                    help="default: <results_dir>/summary.md (BSU_RESULTS_DIR or data/results)")
    args = ap.parse_args(argv)
    summary = args.summary or results_dir() / "summary.md"
    if not summary.exists():
        ap.error(f"{summary} does not exist: run notebook 07 (make study) first")
    splice_readme(args.readme, summary.read_text())
    print(f"{args.readme}: results section replaced with {summary}")


if __name__ == "__main__":
    main()
