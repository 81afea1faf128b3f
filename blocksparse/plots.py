"""Plots: each takes data (and an optional ``ax``) and returns the figure; ``save_figure`` writes it."""
from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator
import pandas as pd
import seaborn as sns
from torch import Tensor

from .runtime import figures_dir
from .analysis import pareto


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


def _curve_label(row: pd.Series, name_layer1: bool = False) -> str:
    """The legend entry of a results row; a split other than the original's (layer1) is named,
    layer1 too with ``name_layer1`` (a figure that holds several splits)."""
    split = row.get("split_at")
    after = f" after {split}" if isinstance(split, str) and (split != "layer1" or name_layer1) else ""
    if row["method"] == "blocksparse":
        return f"{row['mode']}{after}{' (fine-tuned)' if _true(row['finetuned']) else ''}"
    if row["method"] == "dense":
        return "dense (border zeroed)"
    if row["method"] == "learned-bottleneck":  # always trained: no "(fine-tuned)"
        return f"learned-bottleneck{after}"
    return (f"{row['method']}{' (fine-tuned)' if _true(row.get('finetuned')) else ''}"
            f"{' (estimate)' if _true(row.get('rate_is_estimate')) else ''}")


def plot_accuracy_vs_bpp(df: pd.DataFrame, reference: float | None = None, ax=None, logx: bool = True,
                         rate: str = "bpp"):
    """Accuracy against rate, one hue per method (block-sparse: per mode, fine-tuned or not).

    Each curve is its Pareto front; accuracies carry their 95% interval as error bars where
    the rows have one. ``rate`` names the column on the x axis (``bpp``: amortized real streams,
    ``bpp_self_contained``: tables in every stream). Returns the figure.
    """
    fig, ax = _axes(ax)
    d = df[df["method"] != "uncompressed"].dropna(subset=[rate, "accuracy"]).copy()
    several = "split_at" in d and d["split_at"].dropna().nunique() > 1
    d["curve"] = d.apply(_curve_label, axis=1, name_layer1=several)
    fronts = pd.concat([pareto(g, x=rate) for _, g in d.groupby("curve")], ignore_index=True) if len(d) else d
    fronts = fronts.assign(acc=100 * fronts["accuracy"].astype(float))
    sns.lineplot(data=fronts, x=rate, y="acc", hue="curve", style="curve", markers=True, dashes=False,
                 estimator=None, sort=True, ax=ax, markersize=4)
    if "accuracy_lo" in fronts and fronts["accuracy_lo"].notna().any():
        e = fronts.dropna(subset=["accuracy_lo", "accuracy_hi"])
        ax.errorbar(e[rate].astype(float), e["acc"], fmt="none", ecolor="0.5", elinewidth=0.6,
                    yerr=[e["acc"] - 100 * e["accuracy_lo"].astype(float), 100 * e["accuracy_hi"].astype(float) - e["acc"]])
    if reference is not None:
        ax.axhline(100 * reference, color="k", lw=0.8, label="uncompressed")
        ax.axhline(100 * reference - 1, color="k", lw=0.8, ls=":", label="-1 point")
    if logx:
        _log_rate_axis(ax)
    what = {"bpp": "real per-image streams", "bpp_self_contained": "self-contained streams"}.get(rate, rate)
    ax.set(xlabel=f"bits per input pixel ({what})", ylabel="top-1 accuracy (%)")
    ax.legend(fontsize=7)
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
