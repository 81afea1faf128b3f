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

from .protocol import PICK_THRESHOLD_V2_5, PICK_V2_4_SPLITS
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


MAX_LEGEND = 8  # entries per legend: beyond this a reader stops matching colours to names


def _np(x) -> np.ndarray:
    """A tensor (or array) as a numpy array: matplotlib's own conversion of a tensor warns under numpy 2."""
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _bpp(v: float) -> str:
    """A rate rounded for reading: three significant digits ("2.65", "0.63", "81.2"), whole above 100."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _reference(ax, reference: float, label: str = "shipped model, uncompressed") -> Patch:
    """Draw the reference accuracy (a line) and the band within one point below it (shaded);
    returns their one legend entry."""
    ax.axhspan(100 * reference - 1, 100 * reference, color="0.85", zorder=0)
    ax.axhline(100 * reference, color="k", lw=0.8, zorder=1)
    return Patch(facecolor="0.85", edgecolor="k", lw=0.8, label=f"{label} ({100 * reference:.2f}%),\nshaded: one point below")


def _n_images(d: pd.DataFrame) -> str:
    """The rows' number of test images in words: "1,000 test images" or "1,000-10,000 test images"."""
    n = sorted(int(v) for v in d["n_images"].dropna().unique()) if "n_images" in d else []
    return "" if not n else f"{n[0]:,} test images" if len(n) == 1 else f"{n[0]:,}-{n[-1]:,} test images"


FAMILY_NAMES = {"blocksparse": "block-sparse", "learned-bottleneck": "learned bottleneck (ResNet frozen)", "webp": "WebP",
                "jpeg": "JPEG", "avif": "AVIF", "png": "PNG", "webp-lossless": "WebP lossless",
                "dense": "dense (border zeroed)", "original-accounting": "original's estimate"}
# one colour per family, the same in every figure; block-sparse's selection modes are shades of its blue
FAMILY_COLOURS = {"block-sparse": "#2171b5", "block-sparse, global": "#08306b", "block-sparse, channel-wise": "#2171b5",
                  "block-sparse, region-wise": "#6baed6", "block-sparse, fine-tuned": "tab:purple",
                  "learned bottleneck (ResNet frozen)": "tab:olive", "WebP": "tab:red", "JPEG": "tab:orange",
                  "AVIF": "tab:green", "PNG": "tab:brown", "WebP lossless": "tab:pink", "dense (border zeroed)": "0.5",
                  "original's estimate": "k", "WebP, fine-tuned classifier": "tab:cyan"}
MARKERS = "osD^vP*Xph"


def _colours(families) -> dict:
    """Each family's colour: its own where ``FAMILY_COLOURS`` has one, else one of a palette."""
    other = [f for f in families if f not in FAMILY_COLOURS]
    palette = dict(zip(other, sns.color_palette("husl", max(len(other), 1))))
    return {f: FAMILY_COLOURS.get(f, palette.get(f)) for f in families}


def _family(row: pd.Series, by_mode: bool = False) -> str:
    """A results row's family, the colour of its curve: the method, fine-tuned or not (a learned
    bottleneck is always trained, so it never says so); ``by_mode``: block-sparse without
    fine-tuning is one family per selection mode."""
    name = FAMILY_NAMES.get(row["method"], str(row["method"]))
    tuned = _true(row.get("finetuned")) and row["method"] != "learned-bottleneck"
    if by_mode and row["method"] == "blocksparse" and not tuned and isinstance(row.get("mode"), str):
        return f"{name}, {row['mode']}"
    return name + (", fine-tuned" if tuned and row["method"] == "blocksparse" else
                   ", fine-tuned classifier" if tuned else "")


def _rate_rows(df: pd.DataFrame, rate: str) -> tuple[pd.DataFrame, bool]:
    """``df``'s rows with a rate and an accuracy, each with its ``family`` (block-sparse by mode where
    the rows hold one split and several modes), ``marker`` (its split, or "input image"), ``image``
    (coded on the input image) and ``curve``; and whether the rows hold several splits."""
    d = df[df["method"] != "uncompressed"].dropna(subset=[rate, "accuracy"]).copy()
    split = (d["split_at"] if "split_at" in d else pd.Series(pd.NA, index=d.index)).astype("string")
    mode = (d["mode"] if "mode" in d else pd.Series(pd.NA, index=d.index)).astype("string")
    several = split.dropna().nunique() > 1
    by_mode = not several and mode[d["method"] == "blocksparse"].dropna().nunique() > 1
    d["family"] = [_family(r, by_mode) for _, r in d.iterrows()]
    d["image"] = split.isna().to_numpy()
    d["marker"] = ["input image" if pd.isna(sp) else f"after {sp}" for sp in split]
    d["curve"] = d["family"] + "|" + d["marker"] + "|" + mode.fillna("")
    return d, several


def _rate_markers(d: pd.DataFrame, several: bool) -> dict:
    """Marker per split (``SPLIT_MARKERS``) where the rows hold several, else one for a feature map
    and one (a diamond) for the input image."""
    if several:
        return {m: "D" if m == "input image" else SPLIT_MARKERS.get(m.removeprefix("after "), "o")
                for m in sorted(set(d["marker"]))}
    return {m: "D" if m == "input image" else "o" for m in set(d["marker"])}


def _draw_rate_curves(ax, d: pd.DataFrame, rate: str, colour: dict, shape: dict) -> None:
    """Per curve (family, split, mode) its Pareto front, its rows' 95% intervals as grey bars."""
    for _, g in d.groupby("curve", sort=True):
        f = pareto(g, x=rate).sort_values(rate)
        acc = 100 * f["accuracy"].astype(float)
        ax.plot(f[rate].astype(float), acc, color=colour[f["family"].iloc[0]], marker=shape[f["marker"].iloc[0]],
                markersize=4, lw=1.2, label=f["curve"].iloc[0])
        e = f.dropna(subset=["accuracy_lo", "accuracy_hi"]) if "accuracy_lo" in f else f.iloc[:0]
        if len(e):
            ea = 100 * e["accuracy"].astype(float)
            ax.errorbar(e[rate].astype(float), ea, fmt="none", ecolor="0.6", elinewidth=0.6,
                        yerr=[ea - 100 * e["accuracy_lo"].astype(float), 100 * e["accuracy_hi"].astype(float) - ea])


def _front(ax, d: pd.DataFrame, rate: str, label: str) -> Line2D:
    """The Pareto front of all of ``d``'s rows, a grey dashed line (the other panel's best, for comparison)."""
    f = pareto(d, x=rate).sort_values(rate)
    return ax.plot(f[rate].astype(float), 100 * f["accuracy"].astype(float), color="0.45", ls="--", lw=1,
                   label=label)[0]


def plot_accuracy_vs_bpp(df: pd.DataFrame, reference: float | None = None, ax=None, logx: bool = True,
                         rate: str = "bpp", title: str | None = None):
    """Accuracy against rate: one colour per family (``_family``; block-sparse's selection modes in
    shades of its blue where the rows hold one split), one marker per split where the rows hold
    several (else a circle for a feature map, a diamond for the input image).

    Each curve is the Pareto front of one family, split and mode; accuracies carry their 95%
    interval as grey bars where the rows have one; the band within one point below ``reference``
    is shaded. ``rate`` names the column on the x axis (``bpp``: amortized real streams,
    ``bpp_self_contained``: tables in every stream). Legends sit outside the axes, at most
    ``MAX_LEGEND`` entries each: where the families would need more, a new figure gets two panels
    (feature-map codecs; image codecs on the input image), each with the other's best as a grey
    dashed line, and a given ``ax`` draws the image codecs as their one best front. ``title``
    (default: the split and the test images) names the configuration. Returns the figure.
    """
    d, several = _rate_rows(df, rate)
    colour, shape = _colours(sorted(set(d["family"]))), _rate_markers(d, several)

    def markers(rows):  # a panel names its markers where it holds several splits (or a split and the input)
        return sorted(set(rows["marker"])) if several and rows["marker"].nunique() > 1 else []

    def entries(rows, other=None):
        return rows["family"].nunique() + len(markers(rows)) + (other is not None) + (reference is not None)

    both = d["image"].any() and (~d["image"]).any()
    image, feature = d[d["image"]], d[~d["image"]]
    if ax is None and both and entries(d) > MAX_LEGEND:
        fig, axs = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True, sharey=True, layout="constrained")
        panels = [(axs[0], feature, image, "feature-map codecs", "best image codec (right)"),
                  (axs[1], image, feature, "image codecs, on the input image", "best feature-map codec (left)")]
    else:
        if ax is None:
            fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
        fig = ax.figure
        if both and entries(d) > MAX_LEGEND:  # too many families for one legend: the image codecs as one front
            panels = [(ax, feature, image, None, "best image codec (input image)")]
        else:
            panels = [(ax, d, None, None, None)]
    what = {"bpp": "real per-image streams", "bpp_self_contained": "self-contained streams"}.get(rate, rate)
    for i, (a, rows, other, name, other_label) in enumerate(panels):
        _draw_rate_curves(a, rows, rate, colour, shape)
        handles = [Line2D([], [], color=colour[f], lw=2, label=f) for f in sorted(set(rows["family"]))]
        if other is not None and len(other):
            handles.append(_front(a, other, rate, other_label))
        handles += [Line2D([], [], color="0.4", marker=shape[m], ls="", label=m) for m in markers(rows)]
        if reference is not None:
            handles.append(_reference(a, reference))
        if logx:
            _log_rate_axis(a)
        a.set_xlabel(f"bits per input pixel ({what})")
        if i == 0:
            a.set_ylabel("top-1 accuracy (%)")
        if name:
            a.set_title(name, fontsize=9)
        a.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    if title is None:
        splits = sorted(set(d.loc[~d["image"], "marker"]))
        title = "; ".join(p for p in [splits[0].replace("after", "feature maps after") if len(splits) == 1 else "",
                                      _n_images(d)] if p)
    if len(panels) == 2:
        fig.suptitle(title, fontsize=10)
    elif title:
        panels[0][0].set_title(title, fontsize=9)
    return fig


SPLIT_LINES = {"layer1": "-", "layer2": "--", "layer3": ":", "layer4": "-."}


def plot_split_points(sweeps: dict[str, pd.DataFrame], models: pd.DataFrame | None = None,
                      models_reference: float | None = None, ax=None):
    """The split point as a lever (bits per *input* pixel): per split (one marker and line style
    each), the Pareto front of its block-sparse sweep without fine-tuning (``sweeps``: split ->
    sweep rows, the uncompressed row included), its rows' 95% intervals shaded; and from
    ``models`` (the fine-tuned models' rows, any split) one point per configuration and recipe at
    the mean of its seeds, its bar spanning the seeds' 95% intervals. Two families, two colours:
    without fine-tuning, fine-tuned. The uncompressed accuracy is drawn per distinct number of
    test images (``models_reference``: the uncompressed model's on the fine-tuned models' test
    images, whose band one point below is shaded). A new figure gets a second panel zoomed on the
    fine-tuned models; the legend sits outside. Returns the figure."""
    from .analysis import model_groups, model_splits, with_recipe
    splits = sorted(set(sweeps) | model_splits(models))
    marker = {s: SPLIT_MARKERS.get(s, m) for s, m in zip(splits, itertools.cycle("ovPX*"))}
    style = {s: SPLIT_LINES.get(s, "-") for s in splits}
    sweep_colour, tuned_colour = FAMILY_COLOURS["block-sparse"], FAMILY_COLOURS["block-sparse, fine-tuned"]
    points, n_models = {}, None  # split -> [(bpp, accuracy, lo, hi)] in percent, one per configuration and recipe
    if models is not None and len(models):
        m = with_recipe(models)
        n_models = int(m["n_images"].max())
        for split, ms in m.groupby("split_at", sort=True):
            points[split] = [(float(g["bpp"].mean()), 100 * float(g["accuracy"].mean()),
                              100 * float(g["accuracy_lo"].min()), 100 * float(g["accuracy_hi"].max()))
                             for g in model_groups(ms)]
    zoom = ax is None and bool(points)
    if ax is None:
        fig, axs = plt.subplots(1, 2 if zoom else 1, figsize=(11.5, 4.2) if zoom else (8, 4.2), squeeze=False,
                                layout="constrained")
        axs = list(axs[0])
    else:
        fig, axs = ax.figure, [ax]
    references, n_sweep = {}, set()
    for a in axs:
        for split in sorted(sweeps):
            df = sweeps[split]
            u = df[df["method"] == "uncompressed"]
            if len(u):
                references[int(u["n_images"].iloc[0])] = float(u["accuracy"].iloc[0])
            front = pareto(df[df["method"] == "blocksparse"])
            if front.empty:
                continue
            n = int(front["n_images"].max())
            n_sweep.add(n)
            x = front["bpp"].astype(float).to_numpy()
            a.plot(x, 100 * front["accuracy"].astype(float), color=sweep_colour, marker=marker[split], ls=style[split],
                   ms=3.5, lw=1, label=f"after {split}, no fine-tuning ({n:,} images)")
            if {"accuracy_lo", "accuracy_hi"} <= set(front.columns) and front["accuracy_lo"].notna().all():
                a.fill_between(x, 100 * front["accuracy_lo"].astype(float), 100 * front["accuracy_hi"].astype(float),
                               color=sweep_colour, alpha=0.15, lw=0)
        for split, pts in points.items():
            x, y, lo, hi = (np.array(v) for v in zip(*pts))
            a.errorbar(x, y, yerr=[y - lo, hi - y], fmt=marker[split], ms=6, mfc=tuned_colour, mec="k", mew=0.5,
                       ecolor=tuned_colour, elinewidth=1, capsize=2, label=f"after {split}, fine-tuned ({n_models:,} images)")
    if models_reference is not None and n_models is not None:
        references.setdefault(n_models, float(models_reference))
    banded = n_models if n_models in references else max(references, default=None)
    handles = [Line2D([], [], color=sweep_colour, lw=2, label="no fine-tuning: front of the sweep\n(95% intervals shaded)"),
               Line2D([], [], color=tuned_colour, marker="o", mec="k", mew=0.5, ls="", ms=6,
                      label="fine-tuned: mean of the seeds\n(bar: their 95% intervals)")]
    handles += [Line2D([], [], color="0.3", marker=marker[s], ls=style[s], lw=1, ms=5, label=f"after {s}") for s in splits]
    for n, acc in sorted(references.items()):
        for a in axs:
            if n == banded:
                a.axhspan(100 * acc - 1, 100 * acc, color="0.85", zorder=0)
            a.axhline(100 * acc, color="k", lw=0.8, ls="-" if n == banded else ":", label=f"shipped model, uncompressed ({n:,} images)")
        handles.append(Patch(facecolor="0.85", edgecolor="k", lw=0.8, label=f"shipped model, uncompressed, {n:,} images\n({100 * acc:.2f}%), shaded: one point below")
                       if n == banded else Line2D([], [], color="k", lw=0.8, ls=":", label=f"shipped model, uncompressed, {n:,} images\n({100 * acc:.2f}%)"))
    for a in axs:
        _log_rate_axis(a)
        a.set(xlabel="bits per input pixel (real per-image streams)")
    axs[0].set_ylabel("top-1 accuracy (%)")
    if zoom:
        every = [p for pts in points.values() for p in pts]
        x0, x1 = min(p[0] for p in every) / 1.5, max(p[0] for p in every) * 1.5
        y0 = min([p[2] for p in every] + [100 * references[banded] - 1]) - 0.8
        y1 = max([p[3] for p in every] + [100 * a for a in references.values()]) + 0.6
        axs[1].set(xlim=(x0, x1), ylim=(y0, y1))
        axs[1].set_title("zoomed on the fine-tuned models", fontsize=9)
        axs[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="0.3", ls=":", lw=0.8))
        axs[0].set_title("every rate", fontsize=9)
    what = [f"sweeps on {', '.join(f'{n:,}' for n in sorted(n_sweep))}"] if n_sweep else []
    what += [f"fine-tuned models on {n_models:,} test images"] if n_models else []
    title = "block-sparse at each split point" + (f" ({', '.join(what)})" if what else "")
    if ax is None:
        fig.suptitle(title, fontsize=10)
        fig.legend(handles=handles, fontsize=7, loc="outside right center")
    else:
        ax.set_title(title, fontsize=8)
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return fig


BLOCK_LINES = {1: ":", 2: "-", 4: "--", 8: "-."}


def plot_accuracy_vs_ratio(df: "pd.DataFrame", ax=None, reference: float | None = None):
    """Block-sparse accuracy against the kept ratio: one line per mode (its colour, as in
    ``plot_accuracy_vs_bpp``) and block size (its marker and line style), each point the most
    accurate of the bit depths with its 95% interval; fine-tuned rows, where ``df`` has them, as
    purple points at the mean of their seeds (bar: the seeds' intervals), their mode written
    beside. ``reference`` (default: ``df``'s uncompressed row, where it has one) is drawn with
    the band one point below shaded. The title names the split and the test images. Returns the
    figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    fig = ax.figure
    bs = df[df["method"] == "blocksparse"]
    tuned = bs["finetuned"].fillna(False).astype(bool)
    d, t = bs[~tuned], bs[tuned]
    modes = sorted(set(d["mode"]) | set(t["mode"]))
    sizes = sorted(int(b) for b in set(d["block_size"]) | set(t["block_size"]))
    colour = {m: FAMILY_COLOURS.get(f"block-sparse, {m}", c) for m, c in zip(modes, sns.color_palette(n_colors=len(modes)))}
    marker = dict(zip(sizes, MARKERS))
    for (mode, b), g in d.groupby(["mode", "block_size"]):
        best = g.loc[g.groupby("ratio")["accuracy"].idxmax()].sort_values("ratio")
        x, acc = best["ratio"].astype(float), 100 * best["accuracy"].astype(float)
        ax.plot(x, acc, color=colour[mode], marker=marker[int(b)], ls=BLOCK_LINES.get(int(b), "-"), ms=4, lw=1.2,
                label=f"{mode}, B={b}")
        if best["accuracy_lo"].notna().all():
            ax.errorbar(x, acc, yerr=[acc - 100 * best["accuracy_lo"].astype(float),
                                      100 * best["accuracy_hi"].astype(float) - acc], fmt="none", ecolor="0.6", elinewidth=0.6)
    for (mode, b, r), g in t.groupby(["mode", "block_size", "ratio"]):
        acc = 100 * float(g["accuracy"].mean())
        lo, hi = 100 * float(g["accuracy_lo"].min()), 100 * float(g["accuracy_hi"].max())
        ax.errorbar([float(r)], [acc], yerr=[[acc - lo], [hi - acc]], fmt=marker[int(b)], ms=7,
                    mfc=FAMILY_COLOURS["block-sparse, fine-tuned"], mec="k", mew=0.5, ecolor=FAMILY_COLOURS["block-sparse, fine-tuned"],
                    capsize=2, label=f"{mode}, B={b}, fine-tuned")
        ax.annotate(f"{mode}, {len(g)} seed{'s' if len(g) > 1 else ''}", (float(r), acc), xytext=(6, -3),
                    textcoords="offset points", fontsize=7, color=FAMILY_COLOURS["block-sparse, fine-tuned"])
    handles = [Line2D([], [], color=colour[m], lw=2, label=m) for m in modes]
    handles += [Line2D([], [], color="0.3", marker=marker[b], ls=BLOCK_LINES.get(b, "-"), ms=4, label=f"B={b}") for b in sizes]
    if len(t):
        handles.append(Line2D([], [], ls="", marker="o", ms=7, mfc=FAMILY_COLOURS["block-sparse, fine-tuned"], mec="k",
                              mew=0.5, label="fine-tuned (mean of seeds)"))
    u = df[df["method"] == "uncompressed"]
    if reference is None and len(u) == 1:
        reference = float(u["accuracy"].iloc[0])
    if reference is not None:
        handles.append(_reference(ax, reference))
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(plain)
    ax.set(xlabel="ratio (fraction of blocks kept)", ylabel="top-1 accuracy (%)")
    bits = sorted(int(q) for q in d["bits"].dropna().unique())
    splits = sorted(set(bs["split_at"].dropna())) if "split_at" in bs else []
    ax.set_title("; ".join(p for p in ["block-sparse" + (f" after {', '.join(splits)}" if splits else ""), _n_images(bs),
                                       "each point the best of " + " and ".join(map(str, bits)) + " bits" if len(bits) > 1 else ""]
                           if p), fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return fig


def plot_block_partition(image: Tensor, blocks: Tensor, energy: Tensor, hw: tuple[int, int], channel: int = 0):
    """One channel cut into blocks: the input ``image`` [1, H, W], the channel's blocks ``blocks``
    [Hb, Wb, B, B] (``partition(...)[i, channel]``) with the grid drawn and the original ``hw``
    framed in red (outside it: padding), and the blocks' ``energy`` [Hb, Wb]. Returns the figure."""
    image, blocks, energy = _np(image), _np(blocks), _np(energy)
    nh, nw, b = blocks.shape[0], blocks.shape[1], blocks.shape[-1]
    fig, axs = plt.subplots(1, 3, figsize=(10.5, 3.3), layout="constrained")
    axs[0].imshow(image[0], cmap="gray")
    axs[0].set_title("input", fontsize=9)
    axs[1].imshow(blocks.transpose(0, 2, 1, 3).reshape(nh * b, nw * b), cmap="viridis")
    for k in range(nh + 1):
        axs[1].axhline(k * b - 0.5, color="w", lw=0.5)
    for k in range(nw + 1):
        axs[1].axvline(k * b - 0.5, color="w", lw=0.5)
    axs[1].add_patch(plt.Rectangle((-0.5, -0.5), hw[1], hw[0], fill=False, ec="r", lw=1))
    axs[1].set_title(f"channel {channel}, B={b} (border zeroed, padded)", fontsize=9)
    im = axs[2].imshow(energy, cmap="magma")
    fig.colorbar(im, ax=axs[2], label="block energy (sum of squares)")
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.3), layout="constrained")
    a1.bar(levels, freq, log=bool(freq.any()))
    a1.set(xlabel=f"quantized level ({bits} bits)", ylabel="count over images (log)", title="value symbols")
    a2.bar(levels, lengths, label="Huffman code length")
    a2.plot(levels, info, "r.", label="-log2 p (ideal)")
    a2.set(xlabel=f"quantized level ({bits} bits)", ylabel="bits", title="code length (pooled histogram)")
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    for a in (a1, a2):
        if len(levels) <= 16:
            a.set_xticks(levels)
        else:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlim(-0.6, len(levels) - 0.4)
    if title:
        fig.suptitle(title, fontsize=9)
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
    accuracy). ``reference`` (the reference's validation accuracy: the shipped model fine-tuned with
    the same budget, without a codec) shades the band
    within one point below it on the accuracy panel, whose y axis starts below the lowest
    accuracy after the first evaluation (the first, before any training, is named in the
    panel's title where it falls below the axis). One legend, right of the axes: families,
    splits, the band. Returns the figure.
    """
    panels = panels or {"val_accuracy": "validation accuracy (%)"}
    fig, axs = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.8, 3.4), squeeze=False, sharex=True,
                            layout="constrained")
    axs = axs[0]
    families = list(dict.fromkeys(runs["family"]))
    colours = dict(zip(families, sns.color_palette(n_colors=max(len(families), 1))))
    splits = sorted(set(runs["split_at"].dropna()))
    markers = {s: SPLIT_MARKERS.get(s, m) for s, m in zip(splits, itertools.cycle("ovPX*"))}
    for ax, (col, label) in zip(axs, panels.items()):
        scale = 100 if col == "val_accuracy" else 1
        floor = None  # accuracy panel: evaluations below it are drawn on it as down-pointing triangles
        if col == "val_accuracy" and len(runs):
            first = runs["step"] == runs.groupby("run")["step"].transform("min")
            later = 100 * runs.loc[~first, col].astype(float).dropna()
            if len(later):
                top = max([later.max()] + ([100 * reference] if reference is not None else []))
                floor = later.min() - 2
                ax.set_ylim(floor, top + 1)
                start = 100 * runs.loc[first, col].astype(float).dropna()
                below = start[start < floor]
                if len(below):
                    span = f"{below.min():.1f}%" if round(below.min(), 1) == round(below.max(), 1) else \
                        f"{below.min():.1f}-{below.max():.1f}%"
                    some = "" if len(below) == len(start) else f" ({len(below)} of {len(start)} runs)"
                    ax.set_title(f"before training (step {int(runs.loc[first, 'step'].min())}): {span}{some}, "
                                 "drawn on the axis as \u25bc", fontsize=8)
            if reference is not None:
                ax.axhspan(100 * reference - 1, 100 * reference, color="0.85", zorder=0)
                ax.axhline(100 * reference, color="k", lw=0.8, zorder=1)
        for _, h in runs.groupby("run", sort=False):
            h = h.sort_values("step")
            y = scale * h[col].astype(float)
            c, mk = colours[h["family"].iloc[0]], markers.get(h["split_at"].iloc[0], "o")
            low = (y < floor).to_numpy() if floor is not None else np.zeros(len(y), bool)
            ax.plot(h["step"][~low], y[~low], lw=1, ms=3.5, alpha=0.85, color=c, marker=mk)
            if low.any():  # on the axis, not a line running off it
                ax.plot(h["step"][low], np.full(int(low.sum()), floor), "v", ms=5, color=c, clip_on=False, zorder=3)
        ax.set(xlabel="step (64 images each)", ylabel=label)
    handles = [Line2D([], [], color=colours[f], lw=2, label=f) for f in families]
    handles += [Line2D([], [], color="0.3", marker=markers[s], ls="none", label=f"after {s}") for s in splits]
    if reference is not None:
        handles.append(Patch(facecolor="0.85", edgecolor="k", lw=0.8,
                             label=f"within one point below the reference\n(fine-tuned, no codec: {100 * reference:.1f}%)"))
    fig.legend(handles=handles, fontsize=7, loc="outside right center")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_feature_maps(image: Tensor, maps: dict, channels=(0, 1, 2, 3), title: str = ""):
    """The input image (once, top left), then a few ``channels`` of each map in ``maps``
    ({label: [C, H, W]}), one row per map, labelled on the left. Each channel's column shares one
    colour scale (the range over every map, so a sparser map reads darker, not rescaled), its
    colour bar under the column. ``title`` names the configuration. Returns the figure."""
    channels, arrays = list(channels), {label: _np(m) for label, m in maps.items()}
    rows = len(arrays)
    fig, axs = plt.subplots(rows, len(channels) + 1, figsize=(1.5 * (len(channels) + 1) + 0.8, 1.4 * rows + 1.0),
                            squeeze=False, layout="constrained")
    img = _np(image)
    axs[0, 0].imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray")
    axs[0, 0].set_title("input", fontsize=7)
    for j, ch in enumerate(channels):
        lo = float(min(a[ch].min() for a in arrays.values()))
        hi = float(max(a[ch].max() for a in arrays.values()))
        for r, a in enumerate(arrays.values()):
            im = axs[r, j + 1].imshow(a[ch], cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
        axs[0, j + 1].set_title(f"channel {ch}", fontsize=7)
        bar = fig.colorbar(im, ax=list(axs[:, j + 1]), location="bottom", aspect=12, shrink=0.9)
        bar.ax.tick_params(labelsize=6)
        bar.set_label(f"channel {ch} activation", fontsize=6)
    for r, label in enumerate(arrays):
        axs[r, 1].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    for a in axs.flat:
        a.set_xticks([]), a.set_yticks([])
    for a in axs[1:, 0]:
        a.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
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
    """One configuration of the study in context, laid out without overlaps (constrained layout,
    sub-figures): left, the accuracy-bpp figure (``plot_accuracy_vs_bpp``, its legend outside)
    with the configuration highlighted (its 95% interval as an error bar); right, its stream's
    bytes by section and (given one example ``image`` and its ``decoded`` features [C, H, W]) the
    input and three decoded channels on one colour scale. The title states the configuration and
    its numbers rounded for reading. ``row`` is a results row (``pick_row``) or None (nothing
    measured there). Returns the figure."""
    fig = plt.figure(figsize=(12.5, 4.8), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.45, 1])
    ax = left.subplots()
    plot_accuracy_vs_bpp(results[results["method"] != "original-accounting"], reference, ax=ax, title="")
    top, bottom = right.subfigures(2, 1, height_ratios=[1, 1.1])
    bars = top.subplots()
    if row is None:
        fig.suptitle("no result for this combination (see the table above)", fontsize=10)
        bars.axis("off")
    else:
        acc = 100 * float(row["accuracy"])
        lo, hi = 100 * float(row["accuracy_lo"]), 100 * float(row["accuracy_hi"])
        ax.errorbar([float(row["bpp"])], [acc], yerr=[[acc - lo], [hi - acc]], fmt="*", ms=14, color="crimson",
                    ecolor="crimson", zorder=5)
        split = f", after {row['split_at']}" if "split_at" in row and isinstance(row["split_at"], str) else ""
        fig.suptitle(f"{row['mode']}, B={row['block_size']}, ratio {float(row['ratio']):g}, {row['bits']} bits{split}"
                     f"{', fine-tuned' if _true(row['finetuned']) else ''}: {acc:.1f}% [{lo:.1f}, {hi:.1f}] "
                     f"(n={int(row['n_images']):,}) at {_bpp(float(row['bpp']))} bpp", fontsize=10)
        sections = [s for s in ("header", "tables", "positions", "values", "padding")
                    if f"{s}_bits" in row and not pd.isna(row[f"{s}_bits"])]
        drawn = bars.barh(sections, [float(row[f"{s}_bits"]) / 8 for s in sections], color="0.4")
        bars.bar_label(drawn, fmt="%.1f", fontsize=7, padding=2)
        bars.margins(x=0.18)
        bars.invert_yaxis()  # sections top to bottom in stream order
        n_rate = f", mean of {int(row['n_rate']):,} images" if "n_rate" in row and not pd.isna(row["n_rate"]) else ""
        bars.set_xlabel(f"bytes per image (stream {float(row['stream_bytes']):.1f} B{n_rate})", fontsize=8)
        bars.set_title("the stream, by section", fontsize=8)
        bars.tick_params(labelsize=7)
    if image is not None and decoded is not None:
        shown = list(channels)[:3]
        cols = bottom.subplots(1, len(shown) + 1)
        img = _np(image)
        cols[0].imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray")
        cols[0].set_title("input", fontsize=7)
        dec = _np(decoded)
        vmax = max(float(dec[list(shown)].max()), 1e-6)
        for a, ch in zip(cols[1:], shown):
            im = a.imshow(dec[ch], cmap="viridis", vmin=min(0.0, float(dec[list(shown)].min())), vmax=vmax)
            a.set_title(f"decoded ch. {ch}", fontsize=7)
        for a in cols:
            a.set_xticks([]), a.set_yticks([])
        bar = bottom.colorbar(im, ax=list(cols[1:]), location="bottom", aspect=25, shrink=0.8)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("decoded activation", fontsize=7)
    return fig


LADDER_COLOURS = {"block-sparse": "tab:blue", "bottleneck": "tab:orange", "webp-finetuned": "tab:green", "webp": "tab:red"}


def plot_ladders(ladders: pd.DataFrame, splits: tuple[str, ...] = ("layer1", "layer2", "layer3"), floor: float = -6.0,
                 picks: dict[str, float] | None = None):
    """The protocol's evidence: every rung trained so far (``answer.ladder_table``), one panel per
    split, its val-select difference from the reference (points, 95% paired interval) against its
    rate; each family's rungs joined in ladder order, the line at -1 the rule's bound (a rung is
    within when its whole interval lies above it), the operating point ringed. Rungs more than
    ``-floor`` points below are drawn on the floor as down-pointing triangles. ``picks``: split ->
    a pick's threshold (accuracy) drawn dotted where it is not the bound (v2.5's). Returns the figure."""
    picks = picks or {}
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits) + 1.6, 3.6), sharex=True, sharey=True, squeeze=False,
                             layout="constrained")
    highs = 100 * pd.to_numeric(ladders["diff_hi"], errors="coerce")
    top = max(0.5, float(highs.max()) + 0.3) if highs.notna().any() else 0.5  # every interval's upper end in view
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
        if split_at in picks:
            ax.axhline(-100 * picks[split_at], color="k", ls=":", lw=0.8)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_ylim(floor - 0.5, top)
        if len(g):
            _log_rate_axis(ax)
        ax.set(title=f"after {split_at}", xlabel="bits per input pixel (val-select)")
    axes[0][0].set_ylabel("val-select accuracy minus reference (points)")
    handles = [Line2D([], [], color=c, marker="o", ms=3.5, label=ANSWER_NAMES.get(f, f)) for f, c in LADDER_COLOURS.items()
               if f in set(ladders["family"])]
    handles += [Line2D([], [], color="k", ls="--", lw=0.8, label="one point below"),
                *[Line2D([], [], color="k", ls=":", lw=0.8, label=f"pick at -{100 * t:g} (v2.5: block-sparse, bottleneck)")
                  for t in sorted(set(picks.values()))],
                Line2D([], [], color="0.3", ls="", marker="v", ms=5, label=f"below {floor:g} points"),
                Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec="k", label="operating point")]
    fig.legend(handles=handles, fontsize=7, loc="outside right center")
    return fig


def plot_v2_walks(ladders: pd.DataFrame):
    """Protocol v2's walks so far (``report_v2.walk_ladders``), saved as ``figures/ladders_v2``: ``plot_ladders``
    with its floor at -4 points, since v2's rungs lie closer to the reference than v1's ladders, and
    v2.5's pick (``protocol.PICK_THRESHOLD_V2_5``) dotted after the splits whose walks it governs."""
    return plot_ladders(ladders, floor=-4.0, picks=dict.fromkeys(PICK_V2_4_SPLITS, PICK_THRESHOLD_V2_5))


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
