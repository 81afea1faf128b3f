"""The README's paragraphs on trained models, rendered from their results files: the shipped
fine-tuned block-sparse models and the selection behind them, the learned bottleneck, the image
codecs given the same help, the fine-tuning ablation and early stopping on the test set."""
from __future__ import annotations

import json
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from .stats import ONE_POINT
from .codec import SELECTION_GRID
from .report_format import fmt_bpp, fmt_count, fmt_markdown, fmt_missing, fmt_number, fmt_pct, fmt_points, describe
from .results import model_key, to_frame

MODELS = Template("""\
**Fine-tuned block-sparse models, on all $n_images test images** (`data/frontier/`: every model's card, \
its weights where the table names a file; each picked on validation after fine-tuning, trained once per seed, \
tested once; `make study` re-measures the shipped weights): $summary

$table
""")
MODELS_LINE = Template("$config at $bpp bpp (amortized $coder streams; $bpp_sc bpp self-contained): "
                       "$accuracy over $n_seeds seed(s) (range $lo_seed to $hi_seed), against $reference "
                       "uncompressed on the same images; $within.")
WITHIN = Template("within $tolerance by a paired test for $n_within of $n_seeds seed(s) (difference $diff, "
                  "95% interval [$lo, $hi])")


def render_models(models: pd.DataFrame, paired: list[dict], tolerance: float = 0.01) -> str:
    """The README's paragraph and table on the shipped fine-tuned models.

    ``models``: rows of ``frontier_models.csv`` (one per configuration and seed, all test
    images); ``paired``: ``frontier_models_paired.json`` (``analysis.within`` against the
    uncompressed model per weights file). Empty ``models`` renders as an empty string.
    """
    models = with_recipe(models)
    if models.empty:
        return ""
    paired_for(models, paired)  # every model has its paired test
    lines = []
    for g in model_groups(models):
        p = paired_for(g, paired)
        diffs = [q["difference"] for q in p]
        recipe = recipe_words(g.iloc[0])
        lines.append(MODELS_LINE.substitute(
            config=f"after {g['split_at'].iloc[0]}: " + describe(g.iloc[0]) + (f" ({recipe})" if recipe else ""),
            bpp=fmt_bpp(g["bpp"].mean()), coder=g["coder"].iloc[0],
            bpp_sc=fmt_bpp(g["bpp_self_contained"].mean()), accuracy=fmt_pct(g["accuracy"].mean(), 2),
            n_seeds=len(g), lo_seed=fmt_pct(g["accuracy"].min(), 2), hi_seed=fmt_pct(g["accuracy"].max(), 2),
            reference=fmt_pct(p[0]["reference_accuracy"], 2),
            within=WITHIN.substitute(tolerance=fmt_points(tolerance), n_within=sum(bool(q["within"]) for q in p),
                                     n_seeds=len(p), diff=f"{100 * np.mean(diffs):+.2f} points",
                                     lo=f"{100 * min(q['lo'] for q in p):+.2f}", hi=f"{100 * max(q['hi'] for q in p):+.2f}")))
    cols = ["split_at", "mode", "block_size", "ratio", "bits", *[c for c in RECIPE if c in models.columns], "seed", "accuracy",
            "accuracy_lo", "accuracy_hi", "val_accuracy", "bpp", "bpp_self_contained", "weights"]
    table = models[cols].copy()
    table["weights"] = table["weights"].fillna("not shipped (recorded in its card)")
    for c in ("accuracy", "accuracy_lo", "accuracy_hi", "val_accuracy"):
        table[c] = (100 * table[c].astype(float)).round(2)
    return MODELS.substitute(n_images=fmt_count(int(models["n_images"].max())), summary=" ".join(lines),
                             table=fmt_markdown(table))


SCREENING = Template("""**Selection after fine-tuning after $split, at most $target bpp$target_note** (validation only$target_test; `$command`): every configuration whose $rate rate on $n_rate validation streams is at or under $target bpp was fine-tuned (whole network, $recipe) for $steps0 steps$lrs, the better half again for $steps1, and the pick is the best on validation accuracy after that fine-tuning:

$table
""")
_RATE_WORDS = {"self-contained": "self-contained", "amortized": "amortized (ANS codebooks fitted on training images)"}


def render_screening(screening: pd.DataFrame, config: dict) -> str:
    """The README's paragraph and table on one selection after fine-tuning (a ``screening_*.csv``
    with the ``config`` stored beside it by ``blocksparse_utils.py select``)."""
    need = {"round", "steps", "val_accuracy", "mode", "block_size", "ratio", "bits", "val_bpp"}
    if not need <= set(screening.columns):
        raise ValueError(f"screening lacks columns {sorted(need - set(screening.columns))}")
    rate = config.get("rate", "self-contained")  # selections before --rate existed were self-contained
    if rate not in _RATE_WORDS:
        raise ValueError(f"config's rate must be one of {sorted(_RATE_WORDS)}, got {rate!r}")
    steps = screening.groupby("round")["steps"].first()
    table = screening.sort_values(["round", "val_accuracy"], ascending=[True, False]).assign(
        val_accuracy=lambda d: (100 * d["val_accuracy"]).round(1), val_bpp=lambda d: d["val_bpp"].round(3))
    columns = ["round", "steps", "mode", "block_size", "ratio", "bits", "val_bpp", "val_accuracy"]
    lrs = config.get("lrs")
    if lrs:
        columns.insert(6, "lr")
    split = config.get("split_at", "layer1")
    source = config.get("target_from")  # a target named by an image codec (its rate within one point)
    target = source["method"] if source else f"{config['target_bpp']:g}"
    command = (f"python blocksparse_utils.py select --split-at {split} --target-bpp {target} "
               f"--screen-steps {config['screen_steps']} --rounds {config['rounds']}")
    for key, default in SELECTION_GRID.items():  # the grid, where it was not the command's default
        if list(config.get(key, default)) != list(default):
            command += f" --{key.replace('_', '-')} " + " ".join(f"{v:g}" if isinstance(v, float) else str(v)
                                                                 for v in config[key])
    if source and source["tolerance"] != ONE_POINT:
        command += f" --tolerance {source['tolerance']:g}"
    if rate != "self-contained":
        command += f" --rate {rate} --fit-images {config['fit_images']}"
    if lrs:
        command += " --lrs " + " ".join(f"{v:g}" for v in lrs)
    if config.get("group_lasso_weight"):
        command += f" --group-lasso-weight {config['group_lasso_weight']:g}"
    recipe = "distillation" + (f", group-lasso {config['group_lasso_weight']:g}"
                               if config.get("group_lasso_weight") else "")
    return SCREENING.substitute(
        split=split, rate=_RATE_WORDS[rate], command=command,
        target_test="" if not source else ", but the target rate is the codec's on the test images",
        target_note="" if not source else (f", the lowest rate at which {source['method']} is within "
                                           f"{fmt_points(source['tolerance'])} of the uncompressed model ({source['method']} "
                                           f"q={source['quality']}, {fmt_count(source['n_images'])} test images, point "
                                           f"estimate)"),
        n_rate=fmt_count(config["val_rate_sample"]), target=fmt_number(round(float(config["target_bpp"]), 3)), recipe=recipe,
        lrs=f" at each learning rate of {', '.join(f'{v:g}' for v in lrs)}" if lrs else "",
        steps0=fmt_count(steps.iloc[0]), steps1=fmt_count(steps.iloc[-1]) if len(steps) > 1 else "none",
        table=fmt_markdown(table[columns]))


def render_screenings(screenings: list[tuple[pd.DataFrame, dict]]) -> str:
    """Every selection after fine-tuning (``load_trained_models``' ``screenings``), one paragraph each."""
    return "\n".join(render_screening(df, config) for df, config in screenings)


RECIPE = ["distill_weight", "group_lasso_weight", "steps", "lr"]  # from the cards (``ablation_frame``)
DEFAULT_LR = 1e-3  # fine-tuning's; a recipe names its learning rate only when it is another
CONFIG = ["split_at", "mode", "block_size", "ratio", "bits"]


def with_recipe(models: pd.DataFrame) -> pd.DataFrame:
    """``models`` in the results schema, keeping the recipe columns ``ablation_frame`` adds."""
    return with_columns(models, RECIPE)


def model_groups(models: pd.DataFrame) -> list[pd.DataFrame]:
    """``models``' rows grouped into models: one group per configuration and recipe (its seeds'
    rows), in order of first appearance; a missing recipe value is a value, never a dropped row."""
    keys = CONFIG + [c for c in RECIPE if c in models.columns]
    return [g for _, g in models.groupby(keys, sort=False, dropna=False)]


def model_splits(models: pd.DataFrame | None) -> set[str]:
    """The splits ``models`` (fine-tuned models' rows; None or empty: none) has models at."""
    return set() if models is None or len(models) == 0 else set(models["split_at"].dropna().astype(str))


def recipe_words(row: pd.Series) -> str:
    """A model's training recipe in words (``"distillation 0.5, group-lasso 1e-05, 1,800 steps"``);
    empty without the recipe columns."""
    if any(c not in row.index for c in RECIPE):
        return ""
    kd, gl, lr = float(row["distill_weight"]), float(row["group_lasso_weight"]), float(row["lr"])
    return ", ".join([f"distillation {kd:g}" if kd > 0 else "no distillation",
                      *([f"group-lasso {gl:g}"] if gl > 0 else []), f"{int(row['steps']):,} steps",
                      *([f"lr {lr:g}"] if lr != DEFAULT_LR else [])])


def paired_for(rows: pd.DataFrame, paired: list[dict]) -> list[dict]:
    """The paired test of each row (matched on ``weights``, or the card where the weights are not
    shipped); a row without one is a ValueError."""
    by = {p["weights"]: p for p in paired}
    ids = [model_key(w, c) for w, c in zip(rows["weights"], rows["codebook"])]
    missing = sorted(set(ids) - set(by))
    if missing:
        raise ValueError(f"paired: no paired test for {missing}")
    return [by[i] for i in ids]


def _intervals(lo: pd.Series, hi: pd.Series) -> list[str]:
    """Each row's 95% accuracy interval in percent, ``[lo, hi]``."""
    return [f"[{100 * a:.2f}, {100 * b:.2f}]" for a, b in zip(lo, hi)]


def codec_key(method, quality, seed) -> tuple:
    """How a fine-tuned image-codec model is matched with its paired test."""
    return (method, None if quality is None else int(quality), None if seed is None else int(seed))


def _diff(p: dict) -> str:
    return f"{100 * p['difference']:+.2f} [{100 * p['lo']:+.2f}, {100 * p['hi']:+.2f}]"


def _join_schedules(rows: pd.DataFrame, cards: dict[str, dict], column: str, suffix: str, fields) -> pd.DataFrame:
    """``rows`` (results schema) with columns from their cards: a row's card is the one whose file
    stem is the file name in ``column`` without ``suffix``; ``fields(card)`` gives the columns to
    add. A row without its card is a ValueError."""
    rows = to_frame(rows).reset_index(drop=True)
    out = []
    for _, r in rows.iterrows():
        stem = str(r[column]).rsplit("/", 1)[-1].removesuffix(suffix)
        if stem not in cards:
            raise ValueError(f"cards: no card for the run {stem!r}")
        out.append(fields(cards[stem]))
    return pd.concat([rows, pd.DataFrame(out, index=rows.index)], axis=1)


def bottleneck_frame(rows: pd.DataFrame, cards: dict[str, dict]) -> pd.DataFrame:
    """Learned bottlenecks with their recipe from the cards (``cards``: card file stem -> card; a
    row's stem is its weights'): adds ``prior_lr`` (NaN: the entropy model trained at the main
    learning rate), ``steps`` and the encoder's ``stride``."""
    return _join_schedules(rows, cards, "weights", ".pt", lambda card: dict(
        prior_lr=np.nan if card["schedule"].get("prior_lr") is None else float(card["schedule"]["prior_lr"]),
        steps=int(card["schedule"]["steps"]),
        stride=card.get("architecture", {}).get("stride", np.nan)))


BN_RECIPE = ["prior_lr", "steps", "stride"]


def bottleneck_groups(models: pd.DataFrame, name_split: bool = True) -> list[tuple[str, pd.DataFrame]]:
    """One group per split, rate weight and recipe (its seeds), with a label, in order of rate. The
    label names the split (unless ``name_split`` is false: a caller that names it elsewhere) and the
    stride only where the frame holds more than one of them."""
    keys = ["split_at", "rate_weight", *[c for c in BN_RECIPE if c in models.columns]]
    several = {c: models[c].nunique(dropna=False) > 1 for c in ("split_at", "stride") if c in models.columns}
    groups = []
    for _, g in models.groupby(keys, sort=False, dropna=False):
        r = g.iloc[0]
        label = f"{r['split_at']}, " if several.get("split_at") and name_split else ""
        label += f"lambda={fmt_number(r['rate_weight'])}"
        if several.get("stride"):
            label += f", stride {int(r['stride'])}"
        if "prior_lr" in g.columns and not fmt_missing(r["prior_lr"]):
            label += f", prior lr {fmt_number(float(r['prior_lr']))}"
        groups.append((label, g))
    return sorted(groups, key=lambda lg: float(lg[1]["bpp"].mean()))


def with_columns(models: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """``models`` in the results schema, keeping the ``extra`` columns where present."""
    keep = [c for c in extra if c in models.columns]
    out = to_frame(models.drop(columns=keep)).reset_index(drop=True)
    for c in keep:
        out[c] = models[c].to_numpy()
    return out


BOTTLENECK = Template("""\
**The learned bottleneck (the field's anchor), on all $n_images test images** (`data/frontier/bottleneck_*`, \
`python blocksparse_utils.py bottleneck`): $where, an encoder to a few latent channels$stride, a \
factorized logistic entropy model and a decoder back to the tail's input, trained with the ResNet frozen \
(distillation + rate) once per rate weight, the weights chosen on validation by the rate-accuracy objective, \
each model tested once; bpp from real per-image ANS streams. $summary

$table
""")
BOTTLENECK_WITHIN = Template("The lowest rate within $tolerance by a paired test (every seed) is $bpp bpp "
                             "($weight, $accuracy against $reference uncompressed).")
BOTTLENECK_NONE = Template("None of them is within $tolerance by a paired test; the most accurate reaches "
                           "$accuracy at $bpp bpp ($weight) against $reference uncompressed.")
BOTTLENECK_BD = Template(" BD-rate of the bottleneck's curve$after ($points models on its Pareto front, mean over seeds) "
                         "against WebP on the same images (untuned classifier, qualities $qualities): "
                         "$bd (negative: the bottleneck needs fewer bits for the same accuracy).")


def _splits_words(models: pd.DataFrame) -> tuple[str, str]:
    """Where the bottlenecks sit and at which stride, in words (the stride only where the frame has it)."""
    splits = sorted(models["split_at"].dropna().unique())
    where = (f"after {splits[0]}, where block-sparse's features are coded too" if len(splits) == 1 else
             "at the same split" if not splits else
             f"after {', '.join(splits[:-1])} and {splits[-1]} (a model per split and rate weight)")
    if "stride" not in models.columns or models["stride"].isna().any():
        return where, " at a lower resolution"
    by = {sp: sorted({int(v) for v in models.loc[models["split_at"] == sp, "stride"]}) for sp in splits}
    if len({tuple(v) for v in by.values()}) <= 1:
        return where, f" at stride {'/'.join(map(str, next(iter(by.values()), [])))}"
    return where, " at stride " + ", ".join(f"{'/'.join(map(str, v))} after {sp}" for sp, v in by.items())


def render_bottleneck(models: pd.DataFrame, paired: list[dict], codec_grid: pd.DataFrame | None = None,
                      tolerance: float = 0.01, anchor: str = "webp") -> str:
    """The README's paragraph and table on the learned bottlenecks (``bottleneck_models.csv``,
    its ``_paired.json``; ``codec_grid``: the image codecs on the same test images for a
    BD-rate, one per split). A rate weight trained with several seeds (and the same recipe,
    ``bottleneck_frame``) at one split is one model: its mean accuracy and rate, "within" only
    if every seed is. Empty ``models`` renders as an empty string."""
    from .analysis import bd_rate, pareto
    models = with_columns(models, BN_RECIPE)
    if models.empty:
        return ""
    groups = []
    for label, g in bottleneck_groups(models):
        p = paired_for(g, paired)
        groups.append(dict(label=label, g=g, p=p, accuracy=float(g["accuracy"].mean()), bpp=float(g["bpp"].mean()),
                           within=all(q["within"] for q in p), split="" if fmt_missing(g["split_at"].iloc[0]) else str(g["split_at"].iloc[0])))
    ref = fmt_pct(groups[0]["p"][0]["reference_accuracy"], 2)
    ok = [x for x in groups if x["within"]]
    if ok:
        x = ok[0]
        summary = BOTTLENECK_WITHIN.substitute(tolerance=fmt_points(tolerance), bpp=fmt_bpp(x["bpp"]), weight=x["label"],
                                               accuracy=fmt_pct(x["accuracy"], 2), reference=ref)
    else:
        x = max(groups, key=lambda y: y["accuracy"])
        summary = BOTTLENECK_NONE.substitute(tolerance=fmt_points(tolerance), accuracy=fmt_pct(x["accuracy"], 2),
                                             bpp=fmt_bpp(x["bpp"]), weight=x["label"], reference=ref)
    g = to_frame(codec_grid) if codec_grid is not None else None
    g = g[(g["method"] == anchor) & (g["n_images"] == models["n_images"].iloc[0])] if g is not None else None
    splits = list(dict.fromkeys(x["split"] for x in groups))
    for split in splits:  # one curve per split: a front across splits would mix two levers
        mine = [x for x in groups if x["split"] == split]
        curve = pareto(pd.DataFrame(dict(bpp=[x["bpp"] for x in mine], accuracy=[x["accuracy"] for x in mine])))
        if g is None or len(g) < 2 or len(curve) < 2:
            continue
        try:
            bd = f"{bd_rate(g['bpp'], g['accuracy'], curve['bpp'], curve['accuracy']):+.0f}%"
        except ValueError as e:  # e.g. the accuracy ranges do not overlap
            bd = f"n/a ({e})"
        summary += BOTTLENECK_BD.substitute(qualities=", ".join(fmt_number(q) for q in g["quality"]), bd=bd,
                                            points=len(curve), after=f" after {split}" if len(splits) > 1 else "")
    rows = []
    for x in groups:
        for (_, r), q in zip(x["g"].iterrows(), x["p"]):
            rows.append(dict(model=x["label"], seed=r["seed"], val_accuracy=round(100 * float(r["val_accuracy"]), 2),
                             accuracy=round(100 * float(r["accuracy"]), 2),
                             interval=_intervals([r["accuracy_lo"]], [r["accuracy_hi"]])[0],
                             bpp=round(float(r["bpp"]), 3), bytes=round(float(r["stream_bytes"]), 1),
                             vs_uncompressed=_diff(q), within=bool(q["within"])))
    where, stride = _splits_words(models)
    return BOTTLENECK.substitute(n_images=fmt_count(int(models["n_images"].max())), summary=summary, where=where,
                                 stride=stride, table=fmt_markdown(pd.DataFrame(rows)))


CODEC_MODELS = Template("""\
**Image codecs with the same help, on all $n_images test images** (`python blocksparse_utils.py codec-finetune`): \
the whole classifier fine-tuned on the codec's decoded training images with the budget of the block-sparse \
frontier models (same steps, learning rate, distillation from the uncompressed model on the original images, \
early stopping on decoded validation images), tested once. $summary

$table
""")
CODEC_LINE = Template("$name $setting ($bpp bpp): $before untuned, $after fine-tuned.")


def render_codec_models(models: pd.DataFrame, paired: list[dict], codec_grid: pd.DataFrame | None = None) -> str:
    """The README's paragraph and table on image codecs with a fine-tuned classifier
    (``codec_models.csv`` and its ``_paired.json``, keyed by the card path), beside the untuned
    classifier on the same images from ``codec_grid`` where it has the same quality."""
    from .report_format import NAMES
    models = to_frame(models)
    if models.empty:
        return ""
    models = models.sort_values(["method", "bpp"]).reset_index(drop=True)
    by = {codec_key(p.get("method"), p.get("quality"), p.get("seed")): p for p in paired}
    p = [by.get(codec_key(r["method"], r["quality"], r["seed"])) for _, r in models.iterrows()]
    if any(q is None for q in p):
        raise ValueError("paired: each fine-tuned codec model needs its paired test (method, quality, seed)")
    before = []
    g = to_frame(codec_grid) if codec_grid is not None else None
    for _, r in models.iterrows():
        m = None if g is None else g[(g["method"] == r["method"]) & (g["quality"] == r["quality"])
                                     & (g["n_images"] == r["n_images"]) & ~g["finetuned"].fillna(False)]
        before.append(float(m["accuracy"].iloc[0]) if m is not None and len(m) else float("nan"))
    lines = [CODEC_LINE.substitute(name=NAMES.get(r["method"], r["method"]), setting=describe(r), bpp=fmt_bpp(r["bpp"]),
                                   before=fmt_pct(b, 2), after=fmt_pct(r["accuracy"], 2))
             for (_, r), b in zip(models.iterrows(), before)]
    table = pd.DataFrame(dict(
        method=models["method"], quality=models["quality"], bpp=models["bpp"].astype(float).round(3),
        untuned=[round(100 * b, 2) for b in before], accuracy=(100 * models["accuracy"].astype(float)).round(2),
        interval=_intervals(models["accuracy_lo"], models["accuracy_hi"]),
        vs_uncompressed=[_diff(q) for q in p]))
    return CODEC_MODELS.substitute(n_images=fmt_count(int(models["n_images"].max())), summary=" ".join(lines),
                                   table=fmt_markdown(table))


def ablation_frame(rows: pd.DataFrame, cards: dict[str, dict]) -> pd.DataFrame:
    """Fine-tuning runs of one configuration with their loss settings, one row per run: the results
    rows joined with their cards (``cards``: card file stem -> card; a row's stem is its code
    table's). Adds ``distill_weight``, ``group_lasso_weight``, ``steps``, ``lr`` from the cards."""
    return _join_schedules(rows, cards, "codebook", ".codebook", lambda card: dict(
        distill_weight=float(card["schedule"].get("distill_weight", 0.5)),
        group_lasso_weight=float(card["schedule"].get("group_lasso_weight", 0.0)), steps=int(card["schedule"]["steps"]),
        lr=float(card["schedule"].get("lr", DEFAULT_LR))))


ABLATION = Template("""\
**What fine-tuning needs (ablation at $config, seed $seed, all $n_images test images):** each run has the same \
budget ($steps Adam steps of 64, early stopping on validation) and changes one thing; each is tested once. \
$summary

$table
""")
ABLATION_LINE = Template("Training only the tail reaches $tail; the whole network $all; with distillation "
                         "$kd; adding the group-lasso penalty $gl.")
ABLATION_LARGEST = Template(" The largest step is $name ($gain points of test accuracy).")
ABLATION_LADDER = [("tail", False, False), ("all", False, False), ("all", True, False), ("all", True, True)]
ABLATION_STEPS = ["training the whole network instead of the tail", "adding distillation",
                  "adding the group-lasso penalty"]  # the steps between consecutive runs of the ladder


def render_ablation(frame: pd.DataFrame) -> str:
    """The README's paragraph and table on the ablation (``ablation_frame``)."""
    if frame.empty:
        return ""
    f = frame.sort_values(["train", "distill_weight", "group_lasso_weight"], ascending=[False, True, True])
    f = f.reset_index(drop=True)

    def run(train, kd, gl):
        m = f[(f["train"] == train) & ((f["distill_weight"] > 0) == kd) & ((f["group_lasso_weight"] > 0) == gl)]
        return None if m.empty else m.iloc[0]
    ladder = [run(*key) for key in ABLATION_LADDER]  # tail, whole network, + distillation, + group-lasso
    tail, whole, kd, gl = ("n/a" if r is None else f"{fmt_pct(r['accuracy'], 2)} at {fmt_bpp(r['bpp'])} bpp" for r in ladder)
    summary = ABLATION_LINE.substitute(tail=tail, all=whole, kd=kd, gl=gl)
    moves = [(100 * (float(b["accuracy"]) - float(a["accuracy"])), name)
             for a, b, name in zip(ladder, ladder[1:], ABLATION_STEPS) if a is not None and b is not None]
    if moves:
        gain, name = max(moves)
        summary += ABLATION_LARGEST.substitute(name=name, gain=f"{gain:+.2f}")
    table = pd.DataFrame(dict(
        train=f["train"], distill_weight=f["distill_weight"], group_lasso_weight=f["group_lasso_weight"],
        val_accuracy=(100 * f["val_accuracy"].astype(float)).round(2),
        accuracy=(100 * f["accuracy"].astype(float)).round(2),
        interval=_intervals(f["accuracy_lo"], f["accuracy_hi"]),
        bpp=f["bpp"].astype(float).round(3)))
    r = f.iloc[0]
    return ABLATION.substitute(config=describe(r.drop(labels=["finetuned"])), seed=fmt_number(r["seed"]),
                               n_images=fmt_count(int(f["n_images"].max())), steps=fmt_count(int(f["steps"].max())),
                               summary=summary, table=fmt_markdown(table))


TEST_STOPPING = Template("""\
**Early stopping on the test set (the original's choice), measured:** one fine-tuning run ($config, whole \
network, seed $seed) with the accuracy on all $n_images test images recorded at each of its $n_evals evaluations \
(a demonstration; it never steered training). Stopping on validation (step $val_step) gives $val_test on the test \
images; stopping where the test accuracy is highest (step $test_step), as the original did, would report \
$test_best: $optimism.
""")


def render_test_stopping(card: dict) -> str:
    """The README's paragraph on early stopping on the test set, from a fine-tuning card whose
    history holds ``test_accuracy`` (``frontier --monitor-test``)."""
    h = card.get("history", [])
    if not h or "test_accuracy" not in h[0]:
        raise ValueError("card: its history has no test_accuracy (train with --monitor-test)")
    best_val = max(range(len(h)), key=lambda i: (h[i]["val_accuracy"], -i))  # the first best, as track_best
    best_test = max(range(len(h)), key=lambda i: (h[i]["test_accuracy"], -i))
    gap = 100 * (h[best_test]["test_accuracy"] - h[best_val]["test_accuracy"])
    optimism = ("the same number" if gap == 0 else f"{gap:+.2f} points of optimism")
    return TEST_STOPPING.substitute(
        config=f"{card['mode']}, B={card['block_size']}, ratio {fmt_number(card['ratio'])}, {card['bits']} bits",
        seed=card["seed"], n_images=fmt_count(card.get("monitor_images", card.get("test_images"))), n_evals=len(h),
        val_step=h[best_val]["step"], val_test=fmt_pct(h[best_val]["test_accuracy"], 2), test_step=h[best_test]["step"],
        test_best=fmt_pct(h[best_test]["test_accuracy"], 2), optimism=optimism)


def load_trained_models(results: str | Path | None = None, data: str | Path | None = None,
                        split_at: str = "layer1") -> dict:
    """Everything the README says about trained models, read from the files that exist (a missing
    file leaves its section out): keyword arguments for ``report.render_summary``.

    ``results``: the results folder (default ``runtime.results_dir()``); ``data``: the folder
    holding ``frontier/`` and ``ablation/`` cards (default ``runtime.ROOT / "data"``).
    """
    from .analysis import pair_with_reference
    from .results import REFERENCE_NAME, load_results, read_cards
    from .runtime import ROOT, results_dir
    d = Path(results) if results is not None else results_dir()
    data = Path(data) if data is not None else ROOT / "data"

    def table(name):
        return load_results(name, d) if (d / f"{name}.csv").exists() else None

    def paired(name):
        p = d / f"{name}_paired.json"
        return json.loads(p.read_text()) if p.exists() else []
    out = dict(models=table("frontier_models"), paired=paired("frontier_models"),
               bottleneck=table("bottleneck_models"), bottleneck_paired=paired("bottleneck_models"),
               codec_models=table("codec_models"), codec_paired=paired("codec_models"),
               codec_grid=table("codec_grid"))
    # the models against the fine-tuned reference, paired from their cards here (nothing to go stale)
    out["vs_reference"] = pair_with_reference(read_cards((data / "frontier").glob("layer*.json")),
                                              read_cards((data / "reference").glob(f"{REFERENCE_NAME}*.json")))
    out["screenings"] = [(pd.read_csv(f), json.loads(f.with_suffix(".json").read_text())["config"])
                         for f in sorted(d.glob("screening_layer*bpp*.csv"))]  # every split's and target's
    ablation = table("ablation")
    cards = {p.stem: json.loads(p.read_text()) for f in ("frontier", "ablation") for p in (data / f).glob("*.json")}
    if out["models"] is not None and len(out["models"]):
        out["models"] = ablation_frame(out["models"], cards)  # each model's recipe from its card
    if out["bottleneck"] is not None and len(out["bottleneck"]):
        out["bottleneck"] = bottleneck_frame(out["bottleneck"], cards)
    if ablation is not None and len(ablation):
        base = ablation_frame(ablation, cards)
        shipped = out["models"]
        if shipped is not None:  # the shipped model of the same configuration, seed and budget, distilled, no
            b = base.iloc[0]     # penalty, is the ablation's "+ distillation" run
            same = np.ones(len(shipped), bool)
            for c in [*CONFIG, "seed", "steps"]:
                same &= (shipped[c] == b[c]).fillna(False).to_numpy(bool)
            same &= (shipped["distill_weight"] > 0).to_numpy(bool) & (shipped["group_lasso_weight"] == 0).to_numpy(bool)
            base = pd.concat([base, shipped[same]], ignore_index=True)
        out["ablation"] = base
    splits = {}
    for name in ["sweep", *(f"sweep_{s}" for s in ("layer1", "layer2", "layer3"))]:
        df = table(name)
        if df is not None and len(df):
            splits.setdefault(str(df["split_at"].dropna().iloc[0]), df)
    out["splits"] = splits if len(splits) > 1 else None
    monitored = [c for c in cards.values() if c.get("history") and "test_accuracy" in c["history"][0]]
    out["test_stopping"] = monitored[0] if monitored else None
    return out
