"""Plots: each takes data (and an optional ``ax``) and returns the figure; ``save_figure`` writes it."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from torch import Tensor

from .runtime import figures_dir
from .analysis import pareto


def save_figure(fig, name: str, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``figures/<name>.<fmt>`` for each format; returns the paths."""
    d = figures_dir()
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.{f}" for f in formats]
    for p in paths:
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
    return paths


def _axes(ax):
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
        return fig, ax
    return ax.figure, ax


def _curve_label(row: pd.Series) -> str:
    if row["method"] == "blocksparse":
        return f"{row['mode']}{' (fine-tuned)' if row['finetuned'] is True else ''}"
    if row["method"] == "dense":
        return "dense (border zeroed)"
    tuned = row.get("finetuned") is True and row["method"] != "learned-bottleneck"  # a bottleneck is always trained
    return (f"{row['method']}{' (fine-tuned)' if tuned else ''}"
            f"{' (estimate)' if row.get('rate_is_estimate') is True else ''}")


def plot_accuracy_vs_bpp(df: pd.DataFrame, reference: float | None = None, ax=None, logx: bool = True,
                         rate: str = "bpp"):
    """Accuracy against rate, one hue per method (block-sparse: per mode, fine-tuned or not).

    Each curve is its Pareto front; accuracies carry their 95% interval as error bars where
    the rows have one. ``rate`` names the column on the x axis (``bpp``: amortized real streams,
    ``bpp_self_contained``: tables in every stream). Returns the figure.
    """
    fig, ax = _axes(ax)
    d = df[df["method"] != "uncompressed"].dropna(subset=[rate, "accuracy"]).copy()
    d["curve"] = d.apply(_curve_label, axis=1)
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
        ax.set_xscale("log")
    what = {"bpp": "real per-image streams", "bpp_self_contained": "self-contained streams"}.get(rate, rate)
    ax.set(xlabel=f"bits per input pixel ({what})", ylabel="top-1 accuracy (%)")
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

