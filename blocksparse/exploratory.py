"""The exploratory record as tables: every model, sweep and baseline measured before the protocol
(``protocol.py``) existed, read from the results files and cards. These rows were partly chosen
after seeing test numbers, so they are labelled exploratory wherever they are shown.

Each ``*_table`` function returns a DataFrame (accuracies in percent, 2 decimals; intervals as
``"[lo, hi]"``); ``report`` renders them to markdown, notebooks show them as they are. No
sentence is generated here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import best_under, blocksparse_rows, describe, lowest_within, pair_with_reference
from .baselines import IMAGE_FORMATS
from .results import model_key, model_stem, to_frame
from .stats import diff_words

RECIPE = ["distill_weight", "group_lasso_weight", "steps", "lr"]  # from the cards (``ablation_frame``)
DEFAULT_LR = 1e-3  # fine-tuning's; a recipe names its learning rate only when it is another
CONFIG = ["split_at", "mode", "block_size", "ratio", "bits"]
BN_RECIPE = ["prior_lr", "steps", "stride"]
BOTTLENECK_METHOD = "learned-bottleneck"


# ---------------------------------------------------------------------------
# rows, groups and recipes
# ---------------------------------------------------------------------------
def pct(v, decimals: int = 2):
    """An accuracy (fraction) in percent, rounded; missing stays missing."""
    return pd.NA if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else round(100 * float(v), decimals)


def interval(lo, hi) -> str:
    """A 95% interval in percent, ``"[lo, hi]"``; ``"n/a"`` where either end is missing."""
    return "n/a" if pd.isna(lo) or pd.isna(hi) else f"[{100 * float(lo):.2f}, {100 * float(hi):.2f}]"


def seeds_diff_words(p: list[dict]) -> str:
    """Several seeds' paired tests in points: the mean difference and the widest span of their
    intervals, ``"-1.47 [-2.10, -0.80]"``."""
    return (f"{100 * np.mean([q['difference'] for q in p]):+.2f} [{100 * min(q['lo'] for q in p):+.2f}, "
            f"{100 * max(q['hi'] for q in p):+.2f}]")


def with_columns(models: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """``models`` in the results schema, keeping the ``extra`` columns where present."""
    keep = [c for c in extra if c in models.columns]
    out = to_frame(models.drop(columns=keep)).reset_index(drop=True)
    for c in keep:
        out[c] = models[c].to_numpy()
    return out


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
    """A model's training recipe, ``"distillation 0.5, group-lasso 1e-05, 1,800 steps"``; empty
    without the recipe columns."""
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


def codec_key(method, quality, seed) -> tuple:
    """How a fine-tuned image-codec model is matched with its paired test."""
    return (method, None if quality is None else int(quality), None if seed is None else int(seed))


def _join_cards(rows: pd.DataFrame, cards: dict[str, dict], column: str, suffix: str, fields) -> pd.DataFrame:
    """``rows`` with columns from their cards: a row's card is the one whose file stem is the file
    name in ``column`` without ``suffix``; ``fields(card)`` gives the columns. A row without its
    card is a ValueError."""
    rows = to_frame(rows).reset_index(drop=True)
    out = []
    for _, r in rows.iterrows():
        stem = str(r[column]).rsplit("/", 1)[-1].removesuffix(suffix)
        if stem not in cards:
            raise ValueError(f"cards: no card for the run {stem!r}")
        out.append(fields(cards[stem]))
    return pd.concat([rows, pd.DataFrame(out, index=rows.index)], axis=1)


def bottleneck_frame(rows: pd.DataFrame, cards: dict[str, dict]) -> pd.DataFrame:
    """Learned bottlenecks with their recipe from the cards (card file stem -> card; a row's stem
    is its weights'): adds ``prior_lr`` (NaN: the main learning rate), ``steps`` and ``stride``."""
    return _join_cards(rows, cards, "weights", ".pt", lambda card: dict(
        prior_lr=np.nan if card["schedule"].get("prior_lr") is None else float(card["schedule"]["prior_lr"]),
        steps=int(card["schedule"]["steps"]), stride=card.get("architecture", {}).get("stride", np.nan)))


def ablation_frame(rows: pd.DataFrame, cards: dict[str, dict]) -> pd.DataFrame:
    """Fine-tuning runs with their loss settings from their cards (a row's stem is its code
    table's): adds ``distill_weight``, ``group_lasso_weight``, ``steps``, ``lr``."""
    return _join_cards(rows, cards, "codebook", ".codebook", lambda card: dict(
        distill_weight=float(card["schedule"].get("distill_weight", 0.5)),
        group_lasso_weight=float(card["schedule"].get("group_lasso_weight", 0.0)), steps=int(card["schedule"]["steps"]),
        lr=float(card["schedule"].get("lr", DEFAULT_LR))))


def bottleneck_groups(models: pd.DataFrame, name_split: bool = True) -> list[tuple[str, pd.DataFrame]]:
    """One group per split, rate weight and recipe (its seeds), labelled, in order of rate. The
    label names the split (unless ``name_split`` is false) and the stride only where the frame
    holds more than one of them."""
    keys = ["split_at", "rate_weight", *[c for c in BN_RECIPE if c in models.columns]]
    several = {c: models[c].nunique(dropna=False) > 1 for c in ("split_at", "stride") if c in models.columns}
    groups = []
    for _, g in models.groupby(keys, sort=False, dropna=False):
        r = g.iloc[0]
        label = f"{r['split_at']}, " if several.get("split_at") and name_split else ""
        label += f"lambda={float(r['rate_weight']):g}"
        if several.get("stride"):
            label += f", stride {int(r['stride'])}"
        if "prior_lr" in g.columns and pd.notna(r["prior_lr"]):
            label += f", prior lr {float(r['prior_lr']):g}"
        groups.append((label, g))
    return sorted(groups, key=lambda lg: float(lg[1]["bpp"].mean()))


# ---------------------------------------------------------------------------
# the trained models on all test images
# ---------------------------------------------------------------------------
def trained_table(models: pd.DataFrame | None = None, paired: list[dict] = (), bottleneck: pd.DataFrame | None = None,
                  bottleneck_paired: list[dict] = (), codec_models: pd.DataFrame | None = None,
                  codec_paired: list[dict] = (), codec_grid: pd.DataFrame | None = None, tolerance: float = 0.01,
                  max_bpp: float = 1.0, vs_reference: list[dict] = ()) -> pd.DataFrame:
    """One row per trained model (mean over its seeds), in order of rate: fine-tuned block-sparse
    models, learned bottlenecks, WebP with a fine-tuned classifier, and WebP as is (its lowest
    rate within ``tolerance`` and its most accurate point at or under ``max_bpp``, point
    estimates against the uncompressed model: the grid has no paired tests).

    ``within`` holds only when every seed's paired test is within. The interval column is each
    seed's interval's widest span (``[min lo, max hi]``, not an interval of the mean: the
    protocol's answer uses a hierarchical bootstrap instead). With ``vs_reference``
    (``analysis.pair_with_reference``) a column gives each model against the uncompressed model
    fine-tuned with no codec, paired seed for seed."""
    rows = []
    vs = {model_stem(q["weights"]): q for q in vs_reference}

    def add(method, setting, g, p, vs_ref=()):
        lo, hi = g["accuracy_lo"].astype("Float64"), g["accuracy_hi"].astype("Float64")
        row = dict(method=method, setting=setting, seeds=len(g), bpp=round(float(g["bpp"].mean()), 3),
                   accuracy=pct(g["accuracy"].astype(float).mean()), interval=interval(lo.min(), hi.max()),
                   vs_uncompressed=seeds_diff_words(p) if p else "n/a",
                   within=bool(p) and all(q["within"] for q in p), n_images=int(g["n_images"].max()))
        if vs:
            row["vs_finetuned_reference"] = _vs_reference_words(list(vs_ref), len(g))
        rows.append(row)
    if models is not None and len(models):
        for g in model_groups(with_recipe(models)):
            recipe = recipe_words(g.iloc[0])
            keys = [model_stem(model_key(w, c)) for w, c in zip(g["weights"], g["codebook"])]
            add(f"block-sparse ({g['split_at'].iloc[0]})",
                describe(g.iloc[0].drop(labels=["finetuned"])) + (f"; {recipe}" if recipe else ""), g,
                paired_for(g, paired), [vs[k] for k in keys if k in vs])
    if bottleneck is not None and len(bottleneck):
        for label, g in bottleneck_groups(with_columns(bottleneck, BN_RECIPE), name_split=False):
            split = g["split_at"].iloc[0]
            # every exploratory bottleneck kept the ResNet frozen: the protocol's train the whole network
            add(f"learned bottleneck, ResNet frozen ({split})" if isinstance(split, str)
                else "learned bottleneck, ResNet frozen", label, g,
                paired_for(g, bottleneck_paired))
    if codec_models is not None and len(codec_models):
        by = {codec_key(q.get("method"), q.get("quality"), q.get("seed")): q for q in codec_paired}
        for _, r in to_frame(codec_models).sort_values("bpp").iterrows():
            q = by.get(codec_key(r["method"], r["quality"], r["seed"]))
            add(f"{r['method']} (fine-tuned classifier)", describe(r), r.to_frame().T, [q] if q else [])
    if not rows:
        return pd.DataFrame()
    if codec_grid is not None and len(codec_grid):
        g = to_frame(codec_grid)
        g = g[g["n_images"].isin({r["n_images"] for r in rows})]
        u = g[g["method"] == "uncompressed"]
        webp = g[g["method"] == "webp"]
        if len(u):
            reference = float(u["accuracy"].iloc[0])
            for r in (lowest_within(webp, reference, tolerance), best_under(webp, max_bpp)):
                if r is not None and not any(x["method"] == "webp" and x["setting"] == describe(r) for x in rows):
                    add("webp", describe(r), r.to_frame().T, [])
                    rows[-1]["vs_uncompressed"] = f"{100 * (float(r['accuracy']) - reference):+.2f} (point estimate)"
    return pd.DataFrame(rows).sort_values("bpp", kind="stable").reset_index(drop=True)


def _vs_reference_words(p: list[dict], seeds: int) -> str:
    """A model's paired tests against the fine-tuned reference: mean difference, widest interval,
    how many seeds are within, unpaired seeds, and the budget settings in which the runs differ."""
    if not p:
        return "n/a"
    differs = sorted({k for q in p for k in q.get("budget_differs", [])})
    return (f"{seeds_diff_words(p)}, {sum(bool(q['within']) for q in p)}/{len(p)} within"
            + (f", {seeds - len(p)} unpaired" if len(p) < seeds else "")
            + (f" ({', '.join(differs)} differ)" if differs else ""))


def models_table(models: pd.DataFrame, paired: list[dict]) -> pd.DataFrame:
    """The fine-tuned block-sparse models, one row per seed, with the paired test against the
    uncompressed model and where the weights are (or that only the card is)."""
    models = with_recipe(models)
    if models.empty:
        return pd.DataFrame()
    p = paired_for(models, paired)
    out = models[[c for c in [*CONFIG, *RECIPE, "seed"] if c in models.columns]].copy()
    out["val_accuracy"] = [pct(v) for v in models["val_accuracy"]]
    out["accuracy"] = [pct(v) for v in models["accuracy"]]
    out["interval"] = [interval(a, b) for a, b in zip(models["accuracy_lo"], models["accuracy_hi"])]
    out["vs_uncompressed"] = [diff_words(q) for q in p]
    out["bpp"] = models["bpp"].astype(float).round(3)
    out["bpp_self_contained"] = models["bpp_self_contained"].astype(float).round(3)
    out["weights"] = models["weights"].fillna("card only")
    return out.reset_index(drop=True)


def bottleneck_table(models: pd.DataFrame, paired: list[dict]) -> pd.DataFrame:
    """The learned bottlenecks, one row per seed, in order of rate, with the paired test."""
    models = with_columns(models, BN_RECIPE)
    rows = []
    for label, g in bottleneck_groups(models):
        for (_, r), q in zip(g.iterrows(), paired_for(g, paired)):
            rows.append(dict(split_at=r["split_at"], model=label, seed=r["seed"], val_accuracy=pct(r["val_accuracy"]),
                             accuracy=pct(r["accuracy"]), interval=interval(r["accuracy_lo"], r["accuracy_hi"]),
                             bpp=round(float(r["bpp"]), 3), vs_uncompressed=diff_words(q), within=bool(q["within"])))
    return pd.DataFrame(rows)


def codec_models_table(models: pd.DataFrame, paired: list[dict], codec_grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """Image codecs with a fine-tuned classifier, beside the untuned classifier at the same quality
    on the same images (``codec_grid``), with the paired test against the uncompressed model."""
    models = to_frame(models).sort_values(["method", "bpp"]).reset_index(drop=True)
    if models.empty:
        return pd.DataFrame()
    by = {codec_key(p.get("method"), p.get("quality"), p.get("seed")): p for p in paired}
    p = [by.get(codec_key(r["method"], r["quality"], r["seed"])) for _, r in models.iterrows()]
    if any(q is None for q in p):
        raise ValueError("paired: each fine-tuned codec model needs its paired test (method, quality, seed)")
    g = to_frame(codec_grid) if codec_grid is not None else None
    before = []
    for _, r in models.iterrows():
        m = None if g is None else g[(g["method"] == r["method"]) & (g["quality"] == r["quality"])
                                     & (g["n_images"] == r["n_images"]) & ~g["finetuned"].fillna(False)]
        before.append(pct(m["accuracy"].iloc[0]) if m is not None and len(m) else pd.NA)
    return pd.DataFrame(dict(method=models["method"], quality=models["quality"], bpp=models["bpp"].astype(float).round(3),
                             untuned=before, accuracy=[pct(v) for v in models["accuracy"]],
                             interval=[interval(a, b) for a, b in zip(models["accuracy_lo"], models["accuracy_hi"])],
                             vs_uncompressed=[diff_words(q) for q in p]))


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuning ablation (``ablation_frame``): one run per row, tail before whole network,
    then by distillation and group-lasso weight."""
    if frame.empty:
        return pd.DataFrame()
    f = frame.sort_values(["train", "distill_weight", "group_lasso_weight"], ascending=[False, True, True])
    return pd.DataFrame(dict(
        config=[describe(r.drop(labels=["finetuned"])) for _, r in f.iterrows()], seed=f["seed"], train=f["train"],
        distill_weight=f["distill_weight"], group_lasso_weight=f["group_lasso_weight"], steps=f["steps"],
        val_accuracy=[pct(v) for v in f["val_accuracy"]], accuracy=[pct(v) for v in f["accuracy"]],
        interval=[interval(a, b) for a, b in zip(f["accuracy_lo"], f["accuracy_hi"])],
        bpp=f["bpp"].astype(float).round(3))).reset_index(drop=True)


def test_stopping_table(card: dict) -> pd.DataFrame:
    """Early stopping on validation against early stopping on the test set (the original's choice),
    from a fine-tuning card whose history records the test accuracy at every evaluation (a
    demonstration that never steered training): the step each rule picks and the test accuracy
    there, and the optimism of the second."""
    h = card.get("history", [])
    if not h or "test_accuracy" not in h[0]:
        raise ValueError("card: its history has no test_accuracy (train with --monitor-test)")
    by_val = max(range(len(h)), key=lambda i: (h[i]["val_accuracy"], -i))  # the first best, as track_best
    by_test = max(range(len(h)), key=lambda i: (h[i]["test_accuracy"], -i))
    n = card.get("monitor_images", card.get("test_images"))
    return pd.DataFrame([dict(stopped_on="validation", step=h[by_val]["step"], test_accuracy=pct(h[by_val]["test_accuracy"]),
                              optimism=0.0, evaluations=len(h), n_images=n),
                         dict(stopped_on="test (the original)", step=h[by_test]["step"],
                              test_accuracy=pct(h[by_test]["test_accuracy"]),
                              optimism=round(100 * (h[by_test]["test_accuracy"] - h[by_val]["test_accuracy"]), 2),
                              evaluations=len(h), n_images=n)])


def split_table(sweeps: dict[str, pd.DataFrame], tolerance: float = 0.01, max_bpp: float = 1.0,
                models: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per split (``sweeps``: split -> its sweep rows, the uncompressed row included): values per
    input pixel, the lowest bpp within ``tolerance`` and its configuration, the best accuracy at
    or under ``max_bpp``; with ``models``, the fine-tuned model at or under ``max_bpp`` with the
    best mean validation accuracy (its mean test accuracy, rate and seeds). Sweeps on different
    numbers of images are a ValueError (they cannot be compared)."""
    if len(sweeps) < 2:
        return pd.DataFrame()
    m = with_recipe(models) if model_splits(models) else None
    rows, n = [], set()
    for split, df in sorted(sweeps.items()):
        df = to_frame(df)
        ref = df[df["method"] == "uncompressed"]
        if ref.empty:
            raise ValueError(f"sweeps[{split!r}] has no uncompressed row")
        reference = float(ref["accuracy"].iloc[0])
        n.add(int(ref["n_images"].iloc[0]))
        bs = df[df["method"] == "blocksparse"]
        low, best = lowest_within(bs, reference, tolerance), best_under(bs, max_bpp)
        row = dict(split_at=split, uncompressed=pct(reference), values_per_pixel=round(float(ref["bpp"].iloc[0]) / 32, 3),
                   lowest_bpp_within=pd.NA if low is None else round(float(low["bpp"]), 3),
                   config_within="none" if low is None else describe(low),
                   best_at_max_bpp=pd.NA if best is None else pct(best["accuracy"]),
                   config_at_max_bpp="none" if best is None else describe(best))
        if models is not None:
            groups = [] if m is None else [g for g in model_groups(m[(m["split_at"] == split).fillna(False).to_numpy(bool)])
                                           if float(g["bpp"].mean()) <= max_bpp + 1e-9]
            g = max(groups, key=lambda g: float(g["val_accuracy"].mean() if g["val_accuracy"].notna().all()
                                                else g["accuracy"].mean())) if groups else None
            row |= dict(finetuned_accuracy=pd.NA if g is None else pct(g["accuracy"].mean()),
                        finetuned_bpp=pd.NA if g is None else round(float(g["bpp"].mean()), 3),
                        finetuned_seeds=0 if g is None else len(g))
        rows.append(row)
    if len(n) != 1:
        raise ValueError(f"sweeps are on different numbers of test images {sorted(n)}: compare on the same images")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# one run's sweep against its baselines
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# reading it all
# ---------------------------------------------------------------------------
def load_trained_models(results: str | Path | None = None, data: str | Path | None = None) -> dict:
    """Every trained model's exploratory record, read from the files that exist (a missing file
    gives None or []): ``models``, ``paired``, ``bottleneck``, ``bottleneck_paired``,
    ``codec_models``, ``codec_paired``, ``codec_grid``, ``vs_reference``, ``screenings`` (list of
    (frame, config)), ``ablation``, ``splits`` (split -> sweep, two or more), ``test_stopping``
    (a card) and ``weights_removed`` (the weight files that left the tree: their cards say so in
    ``weights_removed`` and keep the row measured from them). ``results``: the results folder
    (default ``runtime.results_dir()``); ``data``: the folder holding ``frontier/``, ``ablation/``
    and ``reference/`` cards (default ``data/``)."""
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
    card_files = [p for f in ("frontier", "ablation") for p in (data / f).glob("*.json")]
    cards = {p.stem: json.loads(p.read_text()) for p in card_files}
    out["weights_removed"] = sorted(f"data/{p.parent.name}/{p.stem}.pt" for p in card_files
                                    if cards[p.stem].get("weights_removed"))
    if out["models"] is not None and len(out["models"]):
        out["models"] = ablation_frame(out["models"], cards)  # each model's recipe from its card
    if out["bottleneck"] is not None and len(out["bottleneck"]):
        out["bottleneck"] = bottleneck_frame(out["bottleneck"], cards)
    out["ablation"] = None
    if ablation is not None and len(ablation):
        base = ablation_frame(ablation, cards)
        shipped = out["models"]
        if shipped is not None:  # the shipped model of the same configuration, seed and budget, distilled,
            b = base.iloc[0]     # no penalty, is the ablation's "+ distillation" run
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
