"""Plots: each takes data (and an optional ``ax``) and returns the figure; ``save_figure`` writes it."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns
from torch import Tensor

from .runtime import figures_dir
from .analysis import pareto
from .entropy import huffman_lengths


def save_figure(fig, name: str, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``figures/<name>.<fmt>`` for each format (``name`` may hold a subfolder); returns the paths."""
    paths = [figures_dir() / f"{name}.{f}" for f in formats]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for p in paths:
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
    return paths


def _axes(ax):
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
        return fig, ax
    return ax.figure, ax


def _log_rate_axis(ax) -> None:
    """A log x axis labelled in plain numbers at 1, 2 and 5 per decade (matplotlib's default
    labels every minor tick as 3x10^-1, 4x10^-1, ..., which overlap under one decade)."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(plain)


def _true(v) -> bool:
    """A flag of a results row: True only where it is set and true (missing is not true)."""
    return v is not None and not pd.isna(v) and bool(v)


FAMILY_NAMES = {"blocksparse": "block-sparse", "learned-bottleneck": "learned bottleneck (ResNet frozen)", "webp": "WebP",
                "jpeg": "JPEG", "avif": "AVIF", "png": "PNG", "webp-lossless": "WebP lossless",
                "dense": "dense (border zeroed)", "original-accounting": "original's estimate"}
MARKERS = "osD^vP*Xph"


def _family(row: pd.Series) -> str:
    """A results row's family, the colour of its curve: the method, fine-tuned or not (a learned
    bottleneck is always trained, so it never says so)."""
    name = FAMILY_NAMES.get(row["method"], str(row["method"]))
    tuned = _true(row.get("finetuned")) and row["method"] != "learned-bottleneck"
    return name + (", fine-tuned" if tuned and row["method"] == "blocksparse" else
                   ", fine-tuned classifier" if tuned else "")


def plot_accuracy_vs_bpp(df: pd.DataFrame, reference: float | None = None, ax=None, logx: bool = True,
                         rate: str = "bpp"):
    """Accuracy against rate: one colour per family (``_family``), one marker per split where the
    rows hold several (else per block-sparse mode; an image codec's marker says "input image").

    Each curve is the Pareto front of one family, split and mode; accuracies carry their 95%
    interval as error bars where the rows have one; the band within one point of ``reference``
    is shaded. ``rate`` names the column on the x axis (``bpp``: amortized real streams,
    ``bpp_self_contained``: tables in every stream). The legend sits outside the axes, a family
    and a marker an entry. Returns the figure.
    """
    fig, ax = _axes(ax)
    d = df[df["method"] != "uncompressed"].dropna(subset=[rate, "accuracy"]).copy()
    several = "split_at" in d and d["split_at"].dropna().nunique() > 1
    d["family"] = [_family(r) for _, r in d.iterrows()]
    split = d["split_at"] if "split_at" in d else pd.Series(pd.NA, index=d.index)
    mode = d["mode"] if "mode" in d else pd.Series(pd.NA, index=d.index)
    d["marker"] = [("input image" if pd.isna(sp) else f"after {sp}") if several else
                   (str(m) if isinstance(m, str) else "input image") for sp, m in zip(split, mode)]
    d["curve"] = d["family"] + "|" + d["marker"] + "|" + mode.astype("string").fillna("")
    families, markers = list(dict.fromkeys(sorted(d["family"]))), list(dict.fromkeys(sorted(d["marker"])))
    colour = dict(zip(families, sns.color_palette("tab10" if len(families) <= 10 else "husl", len(families))))
    shape = dict(zip(markers, itertools.cycle(MARKERS)))
    for _, g in d.groupby("curve", sort=True):
        f = pareto(g, x=rate).sort_values(rate)
        acc = 100 * f["accuracy"].astype(float)
        fam, mk = f["family"].iloc[0], f["marker"].iloc[0]
        ax.plot(f[rate].astype(float), acc, color=colour[fam], marker=shape[mk], markersize=4, lw=1.2)
        e = f.dropna(subset=["accuracy_lo", "accuracy_hi"]) if "accuracy_lo" in f else f.iloc[:0]
        if len(e):
            ea = 100 * e["accuracy"].astype(float)
            ax.errorbar(e[rate].astype(float), ea, fmt="none", ecolor="0.6", elinewidth=0.6,
                        yerr=[ea - 100 * e["accuracy_lo"].astype(float), 100 * e["accuracy_hi"].astype(float) - ea])
    handles = [Line2D([], [], color=colour[f], lw=2, label=f) for f in families]
    handles += [Line2D([], [], color="0.4", marker=shape[m], ls="", label=m) for m in markers]
    if reference is not None:
        ax.axhline(100 * reference, color="k", lw=0.8)
        ax.axhspan(100 * reference - 1, 100 * reference, color="0.85", zorder=0)
        handles += [Line2D([], [], color="k", lw=0.8, label=f"uncompressed ({100 * reference:.2f}%)"),
                    Patch(color="0.85", label="within one point")]
    if logx:
        _log_rate_axis(ax)
    what = {"bpp": "real per-image streams", "bpp_self_contained": "self-contained streams"}.get(rate, rate)
    ax.set(xlabel=f"bits per input pixel ({what})", ylabel="top-1 accuracy (%)")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return fig


def plot_split_points(sweeps: dict[str, pd.DataFrame], models: pd.DataFrame | None = None,
                      models_reference: float | None = None, ax=None):
    """The split point as a lever, on one pair of axes (bits per *input* pixel): per split (one
    colour each), the Pareto front of its block-sparse sweep without fine-tuning (``sweeps``:
    split -> sweep rows, the uncompressed row included) and, from ``models`` (the fine-tuned
    models' rows, any split), one star per configuration and recipe at the mean of its seeds,
    its error bar spanning the seeds' 95% intervals. The legend names each curve's test images;
    the uncompressed accuracy is drawn per distinct number of images (``models_reference``: the
    uncompressed model's on the fine-tuned models' test images). Returns the figure."""
    from .exploratory import model_groups, model_splits, with_recipe
    fig, ax = _axes(ax)
    splits = sorted(set(sweeps) | model_splits(models))
    colours = dict(zip(splits, sns.color_palette(n_colors=max(len(splits), 1))))
    references = {}
    for split in sorted(sweeps):
        df = sweeps[split]
        u = df[df["method"] == "uncompressed"]
        if len(u):
            references[int(u["n_images"].iloc[0])] = float(u["accuracy"].iloc[0])
        front = pareto(df[df["method"] == "blocksparse"])
        if front.empty:
            continue
        n = int(front["n_images"].max())
        ax.plot(front["bpp"].astype(float), 100 * front["accuracy"].astype(float), "-o", ms=3, lw=1,
                color=colours[split], label=f"after {split}, no fine-tuning ({n:,} images)")
    if models is not None and len(models):
        m = with_recipe(models)
        for split, ms in m.groupby("split_at", sort=True):
            pts = [(float(g["bpp"].mean()), 100 * float(g["accuracy"].mean()), 100 * float(g["accuracy_lo"].min()),
                    100 * float(g["accuracy_hi"].max())) for g in model_groups(ms)]
            x, y, lo, hi = (list(v) for v in zip(*pts))
            ax.errorbar(x, y, yerr=[[a - b for a, b in zip(y, lo)], [b - a for a, b in zip(y, hi)]], fmt="*", ms=11,
                        color=colours[split], ecolor="0.3", elinewidth=0.8,
                        label=f"after {split}, fine-tuned ({int(ms['n_images'].max()):,} images)")
        if models_reference is not None:
            references.setdefault(int(m["n_images"].max()), float(models_reference))
    for (n, acc), ls in zip(sorted(references.items()), itertools.cycle(["-", "--", "-.", ":"])):
        ax.axhline(100 * acc, color="k", lw=0.8, ls=ls, label=f"uncompressed ({n:,} images)")
    _log_rate_axis(ax)
    ax.set(xlabel="bits per input pixel (real per-image streams)", ylabel="top-1 accuracy (%)")
    ax.legend(fontsize=7)
    return fig


def plot_accuracy_vs_ratio(df: "pd.DataFrame", ax=None):
    """Accuracy against kept ratio, one line per mode and block size (best bits). Returns the figure."""
    fig, ax = _axes(ax)
    d = df[(df["method"] == "blocksparse") & (~df["finetuned"].astype(bool))]
    for (mode, bs), g in d.groupby(["mode", "block_size"]):
        g = g.groupby("ratio")["accuracy"].max()
        ax.plot(g.index, 100 * g.values, "-o", ms=3, label=f"{mode}, B={bs}")
    ax.set(xscale="log", xlabel="ratio (fraction of blocks kept)", ylabel="top-1 accuracy (%)")
    ax.legend(fontsize=6, ncol=2)
    return fig


def plot_block_partition(image: Tensor, blocks: Tensor, energy: Tensor, hw: tuple[int, int], channel: int = 0):
    """One channel cut into blocks: the input ``image`` [1, H, W], the channel's blocks ``blocks``
    [Hb, Wb, B, B] (``partition(...)[i, channel]``) with the grid drawn and the original ``hw``
    framed in red (outside it: padding), and the blocks' ``energy`` [Hb, Wb]. Returns the figure."""
    nh, nw, b = blocks.shape[0], blocks.shape[1], blocks.shape[-1]
    fig, axs = plt.subplots(1, 3, figsize=(10.5, 3.3))
    axs[0].imshow(image[0], cmap="gray")
    axs[0].set_title("input", fontsize=9)
    axs[1].imshow(blocks.permute(0, 2, 1, 3).reshape(nh * b, nw * b), cmap="viridis")
    for k in range(nh + 1):
        axs[1].axhline(k * b - 0.5, color="w", lw=0.5)
    for k in range(nw + 1):
        axs[1].axvline(k * b - 0.5, color="w", lw=0.5)
    axs[1].add_patch(plt.Rectangle((-0.5, -0.5), hw[1], hw[0], fill=False, ec="r", lw=1))
    axs[1].set_title(f"channel {channel}, B={b} (border zeroed, padded)", fontsize=9)
    im = axs[2].imshow(energy, cmap="magma")
    fig.colorbar(im, ax=axs[2], fraction=0.046, label="block energy (sum of squares)")
    axs[2].set_title(f"block energy, {nh}x{nw} blocks", fontsize=9)
    for a in axs:
        a.set_xticks([]), a.set_yticks([])
    return fig


def plot_energy_cutoffs(energy: Tensor, cutoffs: dict[float, float], ratio: float, title: str = "", ax=None):
    """The distribution of block energies (non-zero blocks, log axes) with the cut-off of each
    ratio (``cutoffs``: ratio -> energy of the weakest kept block), each line labelled with its
    ratio; ``ratio``'s in red. A cut-off of zero (the ratio keeps blocks with no energy) is
    off the log axis and named in the legend. Returns the figure."""
    fig, ax = _axes(ax)
    e = np.asarray(energy, dtype=float).ravel()
    e = e[e > 0]
    if len(e):
        ax.hist(e, bins=np.logspace(np.log10(e.min()), np.log10(e.max()), 100), log=True, color="0.35")
    ax.set_xscale("log")
    on_axis = {r: c for r, c in cutoffs.items() if c > 0}
    label_at = ax.get_xaxis_transform()  # x in data, y in axes fraction
    # one label per line, a step lower each (cut-offs of small ratios crowd the right tail)
    for i, (r, c) in enumerate(sorted(on_axis.items(), key=lambda rc: rc[1])):
        chosen = r == ratio
        colour = "r" if chosen else "tab:blue"
        ax.axvline(c, color=colour, lw=1.5 if chosen else 0.8, ls="-" if chosen else "--")
        ax.text(c, 0.96 - 0.075 * i, f"r={r:g} ", transform=label_at, ha="right", va="top", fontsize=7,
                color=colour, bbox=dict(boxstyle="square,pad=0.1", fc="w", ec="none", alpha=0.7))
    handles = [Line2D([], [], color="r", lw=1.5, label=f"cut-off of ratio {ratio:g}"),
               Line2D([], [], color="tab:blue", lw=0.8, ls="--", label="cut-offs of the other ratios")]
    off = sorted(r for r in cutoffs if r not in on_axis)
    if off:
        handles.append(Line2D([], [], color="none", label=f"ratio {', '.join(f'{r:g}' for r in off)}: cut-off 0"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    ax.set(xlabel="block energy (sum of squares, non-zero blocks)", ylabel="blocks (log)")
    ax.set_title(title, fontsize=9)
    return fig


def plot_code_lengths(symbols: np.ndarray, bits: int, title: str = ""):
    """The quantized value symbols of a configuration's streams: their histogram over images,
    and each level's Huffman code length beside its information content (-log2 p) under the
    pooled histogram. The level axes tick at integer levels. Returns the figure."""
    levels = np.arange(2 ** bits)
    freq = np.bincount(symbols, minlength=len(levels)) if len(symbols) else np.zeros(len(levels), int)
    lengths = huffman_lengths(freq)
    p = freq / max(freq.sum(), 1)
    info = np.where(p > 0, -np.log2(np.where(p > 0, p, 1)), 0)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.3))
    a1.bar(levels, freq, log=bool(freq.any()))
    a1.set(xlabel=f"quantized level ({bits} bits)", ylabel="count over images (log)", title="value symbols")
    a2.bar(levels, lengths, label="Huffman code length")
    a2.plot(levels, info, "r.", label="-log2 p (ideal)")
    a2.set(xlabel=f"quantized level ({bits} bits)", ylabel="bits", title="code length (pooled histogram)")
    a2.legend(fontsize=7)
    for a in (a1, a2):
        if len(levels) <= 16:
            a.set_xticks(levels)
        else:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(-0.6, len(levels) - 0.4)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


SPLIT_MARKERS = {"layer1": "o", "layer2": "s", "layer3": "^", "layer4": "D"}


def card_histories(paths, family: Callable[[dict], str]) -> pd.DataFrame:
    """The training histories recorded in the cards at ``paths``, one row per evaluation: ``run``
    (the card's file stem), ``family`` (``family(card)``: a label in words), ``split_at``, ``seed``
    and the history's columns (``step``, ``val_accuracy``, ...)."""
    frames = []
    for p in paths:
        card = json.loads(Path(p).read_text())
        frames.append(pd.DataFrame(card["history"]).assign(run=Path(p).stem, family=family(card),
                                                          split_at=card.get("split_at"), seed=card.get("seed")))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["step", "val_accuracy", "run", "family", "split_at", "seed"])


def finetuning_family(card: dict) -> str:
    """A fine-tuning run's family in words, from its card's schedule: what is trained and with
    which losses (learning rate and steps are the run's own; the x axis shows the steps)."""
    s = card.get("schedule", {})
    kd, gl = float(s.get("distill_weight", 0)), float(s.get("group_lasso_weight", 0))
    what = "tail only" if s.get("train") == "tail" else "whole network"
    losses = (["distillation"] if kd > 0 else []) + (["group-lasso"] if gl > 0 else [])
    return f"{what}, {' + '.join(losses) if losses else 'cross-entropy only'}"


def bottleneck_family(card: dict) -> str:
    """A learned bottleneck's family: its rate weight (lambda)."""
    return f"rate weight {float(card['lmbda']):g}"


def plot_training_curves(runs: pd.DataFrame, reference: float | None = None,
                         panels: dict[str, str] | None = None, title: str = ""):
    """Training curves (validation, every evaluation) of several runs: one colour per family,
    one marker per split, every seed of a family drawn alike.

    ``runs`` has a row per evaluation (``card_histories``): ``run``, ``family``, ``split_at``,
    ``step`` and one column per panel (``panels``: column -> axis label; default validation
    accuracy). ``reference`` (the uncompressed model's validation accuracy) shades the band
    within one point below it on the accuracy panel, whose y axis starts below the lowest
    accuracy after the first evaluation (the first, before any training, is named in the
    panel's title where it falls below the axis). One legend, right of the axes: families,
    splits, the band. Returns the figure.
    """
    panels = panels or {"val_accuracy": "validation accuracy (%)"}
    fig, axs = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.8, 3.4), squeeze=False,
                            layout="constrained")
    axs = axs[0]
    families = list(dict.fromkeys(runs["family"]))
    colours = dict(zip(families, sns.color_palette(n_colors=max(len(families), 1))))
    splits = sorted(set(runs["split_at"].dropna()))
    markers = {s: SPLIT_MARKERS.get(s, m) for s, m in zip(splits, itertools.cycle("ovPX*"))}
    for ax, (col, label) in zip(axs, panels.items()):
        scale = 100 if col == "val_accuracy" else 1
        for _, h in runs.groupby("run", sort=False):
            h = h.sort_values("step")
            ax.plot(h["step"], scale * h[col].astype(float), lw=1, ms=3.5, alpha=0.85,
                    color=colours[h["family"].iloc[0]], marker=markers.get(h["split_at"].iloc[0], "o"))
        ax.set(xlabel="step (64 images each)", ylabel=label)
        if col == "val_accuracy" and len(runs):
            first = runs["step"] == runs.groupby("run")["step"].transform("min")
            later = 100 * runs.loc[~first, col].astype(float).dropna()
            if len(later):
                top = max([later.max()] + ([100 * reference] if reference is not None else []))
                ax.set_ylim(later.min() - 2, top + 1)
                start = 100 * runs.loc[first, col].astype(float).dropna()
                if len(start) and start.max() < later.min() - 2:
                    ax.set_title(f"before training (step {int(runs.loc[first, 'step'].min())}): "
                                 f"{start.min():.0f}-{start.max():.0f}%, below the axis", fontsize=8)
            if reference is not None:
                ax.axhspan(100 * reference - 1, 100 * reference, color="0.85", zorder=0)
                ax.axhline(100 * reference, color="k", lw=0.8, zorder=1)
    handles = [Line2D([], [], color=colours[f], lw=2, label=f) for f in families]
    handles += [Line2D([], [], color="0.3", marker=markers[s], ls="none", label=f"after {s}") for s in splits]
    if reference is not None:
        handles.append(Patch(facecolor="0.85", edgecolor="k", lw=0.8,
                             label=f"within one point below uncompressed ({100 * reference:.1f}%)"))
    fig.legend(handles=handles, fontsize=7, loc="outside right center")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_feature_maps(image: Tensor, maps: dict, channels=(0, 1, 2, 3)):
    """Input image plus a few channels of each map in ``maps`` ({label: [C, H, W]}). Returns the figure."""
    fig, axs = plt.subplots(len(maps), len(channels) + 1, figsize=(1.6 * (len(channels) + 1), 1.6 * len(maps)),
                            squeeze=False)
    for r, (label, m) in enumerate(maps.items()):
        axs[r, 0].imshow(image[0] if image.shape[0] == 1 else image.permute(1, 2, 0), cmap="gray")
        axs[r, 0].set_ylabel(label, fontsize=7)
        for j, ch in enumerate(channels):
            axs[r, j + 1].imshow(m[ch], cmap="viridis")
            axs[r, 0].set_title("input" if r == 0 else "", fontsize=7)
            axs[r, j + 1].set_title(f"channel {ch}" if r == 0 else "", fontsize=7)
    for a in axs.flat:
        a.set_xticks([]), a.set_yticks([])
    return fig



def pick_row(results: pd.DataFrame, mode: str, block_size: int, ratio: float, bits: int,
             finetuned: bool = False) -> pd.Series | None:
    """The block-sparse results row of one configuration (the most accurate where several seeds
    or splits share it), or None where the results have none."""
    d = results[(results["method"] == "blocksparse") & (results["mode"] == mode)
                & (results["block_size"] == block_size) & (results["bits"] == bits)
                & (results["finetuned"].fillna(False).astype(bool) == bool(finetuned))]
    d = d[(d["ratio"].astype(float) - float(ratio)).abs() < 1e-12]
    return None if d.empty else d.loc[d["accuracy"].astype(float).idxmax()]


def plot_explorer(results: pd.DataFrame, reference: float | None, row: pd.Series | None,
                  image: Tensor | None = None, decoded: Tensor | None = None, channels=(0, 1, 2, 3)):
    """One configuration of the study in context: the accuracy-bpp figure with the configuration
    highlighted (its 95% interval as an error bar), its stream's bytes by section, and (given
    one example ``image`` and its ``decoded`` features [C, H, W]) a few decoded channels.
    ``row`` is a results row (``pick_row``) or None (nothing measured there). Returns the figure."""
    fig = plt.figure(figsize=(11, 3.6))
    grid = fig.add_gridspec(2, 6)
    ax = fig.add_subplot(grid[:, :3])
    plot_accuracy_vs_bpp(results[results["method"] != "original-accounting"], reference, ax=ax)
    bars = fig.add_subplot(grid[0, 3:])
    if row is None:
        ax.set_title("no result for this combination (see the table above)", fontsize=8)
        bars.axis("off")
    else:
        acc = 100 * float(row["accuracy"])
        lo, hi = 100 * float(row["accuracy_lo"]), 100 * float(row["accuracy_hi"])
        ax.errorbar([float(row["bpp"])], [acc], yerr=[[acc - lo], [hi - acc]], fmt="*", ms=14, color="crimson",
                    ecolor="crimson", zorder=5)
        ax.set_title(f"{row['mode']} B={row['block_size']} ratio {row['ratio']:g} {row['bits']} bits"
                     f"{' fine-tuned' if _true(row['finetuned']) else ''}: {acc:.1f}% [{lo:.1f}, {hi:.1f}] "
                     f"(n={row['n_images']}) at {float(row['bpp']):.3f} bpp", fontsize=8)
        sections = [s for s in ("header", "tables", "positions", "values", "padding")
                    if f"{s}_bits" in row and not pd.isna(row[f"{s}_bits"])]
        bars.barh(sections, [float(row[f"{s}_bits"]) / 8 for s in sections], color="0.4")
        bars.set_xlabel(f"bytes per image (stream: {float(row['stream_bytes']):.1f} B)", fontsize=8)
        bars.tick_params(labelsize=7)
    if image is not None and decoded is not None:
        cols = [fig.add_subplot(grid[1, 3 + j]) for j in range(3)]
        cols[0].imshow(image[0] if image.shape[0] == 1 else image.permute(1, 2, 0), cmap="gray")
        cols[0].set_title("input", fontsize=7)
        for a, ch in zip(cols[1:], channels):
            a.imshow(decoded[ch], cmap="viridis")
            a.set_title(f"decoded channel {ch}", fontsize=7)
        for a in cols:
            a.set_xticks([]), a.set_yticks([])
    fig.tight_layout()
    return fig


LADDER_COLOURS = {"block-sparse": "tab:blue", "bottleneck": "tab:orange", "webp-finetuned": "tab:green", "webp": "tab:red"}


def plot_ladders(ladders: pd.DataFrame, splits: tuple[str, ...] = ("layer1", "layer2", "layer3"), floor: float = -6.0):
    """The protocol's evidence: every rung trained so far (``answer.ladder_table``), one panel per
    split, its val-select difference from the reference (points, 95% paired interval) against its
    rate; each family's rungs joined in ladder order, the line at -1 the rule's bound (a rung is
    within when its whole interval lies above it), the operating point ringed. Rungs more than
    ``-floor`` points below are drawn on the floor as down-pointing triangles. Returns the figure."""
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.6), sharex=True, sharey=True, squeeze=False)
    for ax, split_at in zip(axes[0], splits):
        g = ladders[ladders["split_at"] == split_at]
        for family, f in g.groupby("family", sort=False):
            low = 100 * f["diff"].astype(float) < floor
            ax.plot(f["bpp"][low].astype(float), np.full(int(low.sum()), floor), "v", ms=5,
                    color=LADDER_COLOURS.get(family, "0.3"))
            f = f[~low]
            d = 100 * f["diff"].astype(float)
            ax.errorbar(f["bpp"].astype(float), d, yerr=[d - 100 * f["diff_lo"].astype(float), 100 * f["diff_hi"].astype(float) - d],
                        color=LADDER_COLOURS.get(family, "0.3"), marker="o", ms=3.5, lw=1, elinewidth=0.7, capsize=2,
                        label=family)
            op = f[f["operating_point"].astype(bool)]
            ax.plot(op["bpp"].astype(float), 100 * op["diff"].astype(float), "o", ms=11, mfc="none", mec="k", mew=1.2)
        ax.axhline(-1, color="k", ls="--", lw=0.8)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_ylim(floor - 0.5, None)
        if len(g):
            _log_rate_axis(ax)
        ax.set(title=f"after {split_at}", xlabel="bits per input pixel (val-select)")
    axes[0][0].set_ylabel("val-select accuracy minus reference (points)")
    handles = [Line2D([], [], color=c, marker="o", ms=3.5, label=f) for f, c in LADDER_COLOURS.items()]
    handles += [Line2D([], [], color="k", ls="--", lw=0.8, label="one point below"),
                Line2D([], [], color="0.3", ls="", marker="v", ms=5, label=f"below {floor:g} points"),
                Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec="k", label="operating point")]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    fig.tight_layout()
    return fig


ANSWER_MARKERS = {"block-sparse": "o", "bottleneck": "s", "webp-finetuned": "D", "webp": "^"}
ANSWER_NAMES = {"block-sparse": "block-sparse", "bottleneck": "learned bottleneck",
                "webp-finetuned": "WebP, fine-tuned classifier", "webp": "WebP, shipped classifier"}


def _reference_words(reference: dict) -> str:
    seeds = len(reference.get("seeds", [])) or 1
    return (f"reference: uncompressed, fine-tuned\nwith the same budget, {seeds} seed{'s' * (seeds > 1)},\n"
            f"{reference.get('n_images', 0):,} test images")


def plot_answer(table: pd.DataFrame, reference: dict | None = None,
                splits: tuple[str, ...] = ("layer1", "layer2", "layer3")):
    """The protocol's answer (``answer.csv``): one panel per split, each tested operating point's test
    accuracy (mean over its seeds, 95% interval over seeds and images) against its rate in bits per input
    pixel, one colour per family; the reference (the uncompressed model fine-tuned with the same budget,
    ``report.answer_reference``) as a line with its interval shaded, the rule's bound one point below it
    dashed. Families with no tested row are named under the panel. Returns the figure."""
    fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits) + 2.2, 3.4), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    tested = table[table["status"] == "tested"]
    for ax, split_at in zip(axes[0], splits):
        g = tested[tested["split_at"] == split_at]
        if reference is not None:
            r = 100 * reference["estimate"]
            ax.axhspan(100 * reference["lo"], 100 * reference["hi"], color="0.85", lw=0)
            ax.axhline(r, color="0.3", lw=1)
            ax.axhline(r - 1, color="k", ls="--", lw=0.8)
        for _, row in g.iterrows():
            a = 100 * float(row["accuracy"])
            ax.errorbar(float(row["bpp"]), a, yerr=[[a - 100 * float(row["accuracy_lo"])],
                                                    [100 * float(row["accuracy_hi"]) - a]],
                        color=LADDER_COLOURS.get(row["family"], "0.3"), marker=ANSWER_MARKERS.get(row["family"], "o"),
                        ms=6, capsize=3, lw=0, elinewidth=1.2)
            ax.annotate(f"{float(row['bpp']):.2g} bpp", (float(row["bpp"]), a), xytext=(6, -12),
                        textcoords="offset points", fontsize=7)
        here = table[(table["split_at"] == split_at) & (table["status"] != "tested")]
        words = [f"{what}:\n" + ", ".join(ANSWER_NAMES.get(f, f) for f in here.loc[rows, "family"])
                 for what, rows in (("none within on validation, not tested", here["status"].str.startswith("no rung")),
                                    ("pending", here["status"].str.startswith("pending"))) if rows.any()]
        ax.set_title(f"after {split_at}", fontsize=10)
        ax.set_xlabel("\n".join(["bits per input pixel (test)"] + words), fontsize=8)
        _log_rate_axis(ax)
    rates = tested["bpp"].astype(float)
    if len(rates):
        axes[0][0].set_xlim(rates.min() / 2, rates.max() * 2)
    axes[0][0].set_ylabel("test accuracy (%)")
    handles = [Line2D([], [], color=c, marker=ANSWER_MARKERS[f], ls="", ms=6, label=ANSWER_NAMES.get(f, f))
               for f, c in LADDER_COLOURS.items() if f in set(tested["family"])]
    if reference is not None:
        handles += [Patch(color="0.85", label="reference, 95% interval"),
                    Line2D([], [], color="0.3", lw=1, label=_reference_words(reference)),
                    Line2D([], [], color="k", ls="--", lw=0.8, label="one point below")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False)
    return fig
