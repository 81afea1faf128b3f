"""The README's paragraphs on the original script's accounting: its estimate beside the real
streams of the same configurations, and what each of its choices does to its number."""
from __future__ import annotations

from string import Template

import numpy as np
import pandas as pd

from .original import METHOD as ORIGINAL_METHOD
from .original import CHOICE_NAMES, TABLE_ENTRY_BITS
from .report_format import blocksparse_rows, fmt_bpp, fmt_count, fmt_markdown, fmt_missing, fmt_number, fmt_pct
from .results import to_frame

ORIGINAL = Template("The original's accounting ($mode, B=$block_size) against the real ${bits}-bit streams: "
                    "$comparisons.")
ORIGINAL_AT = Template("at ratio $ratio it reports $bpp bpp ($bpp_direction than the $real_bpp bpp measured) "
                       "and $accuracy ($accuracy_direction the real stream's $real_accuracy)")
ORIGINAL_MISSING = Template("at ratio $ratio it reports $bpp bpp and $accuracy (the sweep has no real stream there)")
ORIGINAL_COUNT = Template("Over the $n configurations of all modes that the sweep also measured, the estimate "
                          "is below the real rate in $below and its accuracy above the real one in $above.")
CHOICES_INTRO = Template(
    "What each of the original's choices does to its bpp, one turned the other way at a time ($block_size, "
    "$bits bits, the first batch of $batch images; all batches: $n images; code tables estimated at "
    "$entry_bits bits per distinct symbol; `original.original_choices`). Positive: the choice raises the "
    "original's number above what the changed accounting gives. $sentences\n\n$table\n")
CHOICE_EFFECT = Template("$name $effect")


def original_vs_real(results: pd.DataFrame) -> pd.DataFrame:
    """The original's accounting beside the real streams at the same mode, block size, ratio and bits.

    Returns
    -------
    DataFrame
        One row per ``original-accounting`` row: ``mode``, ``block_size``, ``ratio``, ``bits``,
        ``original_bpp``, ``original_accuracy``, ``real_bpp``, ``real_accuracy`` (the first
        non-fine-tuned block-sparse row of that configuration; ``<NA>`` where there is none).
    """
    results = to_frame(results)
    orig = results[(results["method"] == ORIGINAL_METHOD).fillna(False).to_numpy(bool)]
    raw = blocksparse_rows(results, finetuned=False)
    rows = []
    for _, o in orig.iterrows():
        same = raw[((raw["mode"] == o["mode"]) & (raw["block_size"] == o["block_size"])
                    & (raw["bits"] == o["bits"])).fillna(False).to_numpy(bool)
                   & np.isclose(raw["ratio"].to_numpy(float, na_value=np.nan), float(o["ratio"]))]
        real = same.iloc[0] if len(same) else None
        rows.append(dict(mode=o["mode"], block_size=o["block_size"], ratio=o["ratio"], bits=o["bits"],
                         original_bpp=o["bpp"], original_accuracy=o["accuracy"],
                         real_bpp=real["bpp"] if real is not None else pd.NA,
                         real_accuracy=real["accuracy"] if real is not None else pd.NA))
    cols = ["mode", "block_size", "ratio", "bits", "original_bpp", "original_accuracy", "real_bpp", "real_accuracy"]
    return pd.DataFrame(rows, columns=cols).astype(
        dict(mode="string", block_size="Int64", ratio="Float64", bits="Int64", original_bpp="Float64",
             original_accuracy="Float64", real_bpp="Float64", real_accuracy="Float64"))


def _direction(a: float, b: float, more: str, less: str, same: str) -> str:
    return more if a > b else less if a < b else same


def original_sentences(results: pd.DataFrame, original_mode: str | None) -> list[str]:
    cmp = original_vs_real(results)
    if cmp.empty:
        return []
    mode = original_mode if original_mode in set(cmp["mode"]) else cmp["mode"].iloc[0]
    d = cmp[(cmp["mode"] == mode).to_numpy(bool)].sort_values("ratio", ascending=False)
    parts = []
    for _, r in d.iterrows():
        if fmt_missing(r["real_bpp"]):
            parts.append(ORIGINAL_MISSING.substitute(ratio=fmt_number(r["ratio"]), bpp=fmt_bpp(r["original_bpp"]),
                                                     accuracy=fmt_pct(r["original_accuracy"])))
            continue
        gap = 100 * (float(r["original_accuracy"]) - float(r["real_accuracy"]))
        acc_dir = _direction(gap, 0, f"{abs(gap):.1f} points above", f"{abs(gap):.1f} points below", "equal to")
        parts.append(ORIGINAL_AT.substitute(
            ratio=fmt_number(r["ratio"]), bpp=fmt_bpp(r["original_bpp"]), real_bpp=fmt_bpp(r["real_bpp"]),
            bpp_direction=_direction(float(r["original_bpp"]), float(r["real_bpp"]), "higher", "lower", "no different"),
            accuracy=fmt_pct(r["original_accuracy"]), real_accuracy=fmt_pct(r["real_accuracy"]), accuracy_direction=acc_dir))
    out = [ORIGINAL.substitute(mode=mode, block_size=fmt_number(d["block_size"].iloc[0]),
                               bits=fmt_number(d["bits"].iloc[0]), comparisons="; ".join(parts))]
    both = cmp.dropna(subset=["real_bpp"])
    if len(both):
        out.append(ORIGINAL_COUNT.substitute(
            n=len(both), below=int((both["original_bpp"] < both["real_bpp"]).sum()),
            above=int((both["original_accuracy"] > both["real_accuracy"]).sum())))
    return out


def render_original_choices(choices: pd.DataFrame | None) -> str:
    """Markdown: the original's bpp with each of its choices turned the other way, and in words which
    way each choice moves its number (from the rows of ``original.original_choices``).

    ``choices`` has one row per (``mode``, ``block_size``, ``ratio``, ``bits``, ``choice``) with ``bpp``
    and ``n_rate``; None or empty gives "".
    """
    if choices is None or len(choices) == 0:
        return ""
    need = {"mode", "block_size", "ratio", "bits", "choice", "bpp", "n_rate"}
    if missing := need - set(choices.columns):
        raise ValueError(f"choices lacks columns {sorted(missing)}")
    keys = ["mode", "block_size", "ratio", "bits"]
    wide = choices.pivot_table(index=keys, columns="choice", values="bpp", sort=False)
    if "as computed" not in wide.columns:
        raise ValueError("choices must have an 'as computed' row per configuration")
    others = [c for c in wide.columns if c != "as computed"]
    effect = {c: 100 * (wide["as computed"] / wide[c] - 1) for c in others}  # % the original's choice adds
    table = wide.reset_index()[keys].copy()
    table["as computed"] = [fmt_bpp(v) for v in wide["as computed"]]
    for c in others:
        table[c] = [f"{fmt_bpp(v)} ({e:+.1f}%)" for v, e in zip(wide[c], effect[c])]
    sentences = []
    for c in others:
        e = effect[c].to_numpy(float)
        up, down = int((e > 0.05).sum()), int((e < -0.05).sum())
        name = CHOICE_NAMES.get(c, c)
        if up == down == 0:
            words = f"changes it by less than 0.05% in all {len(e)} configurations"
        else:
            parts = []
            if up:
                parts.append(f"raises it in {up} of {len(e)} configurations (by up to {e.max():.1f}%)")
            if down:
                parts.append(f"lowers it in {down} of {len(e)} (by up to {-e.min():.1f}%)")
            words = ", ".join(parts)
        sentences.append(CHOICE_EFFECT.substitute(name=name[0].upper() + name[1:], effect=words) + ".")
    n_first = int(choices.loc[choices["choice"] == "as computed", "n_rate"].max())
    n_all = int(choices["n_rate"].max())
    b = choices["block_size"].unique()
    bits = choices["bits"].unique()
    return CHOICES_INTRO.substitute(
        block_size="B=" + "/".join(fmt_number(v) for v in b), bits="/".join(fmt_number(v) for v in bits),
        batch=fmt_count(n_first), n=fmt_count(n_all), entry_bits=TABLE_ENTRY_BITS, sentences=" ".join(sentences),
        table=fmt_markdown(table.rename(columns={"as computed": "as computed (bpp)"}), {"ratio": fmt_number}))
